//! Floor 6, the command line: what users run (`offload`/`unoffload namespace`, `info`,
//! `list`, in liqoctl's words, also as kubectl plugins: docs/cli.md), and what the operator
//! runs (`run`, the manager, and the subcommands around it: peering, the CRDs and webhook
//! configurations, certificates). `main.rs` only calls [`main`].

pub(crate) mod cli;
pub(crate) mod inspect;
pub(crate) mod offload;
pub(crate) mod peer;
pub(crate) mod print;

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::manager;

/// Namespace offloading for multi-cluster Kubernetes (Liqo's offloading.liqo.io API).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    User(UserCommand),
    #[command(flatten)]
    Operator(OperatorCommand),
}

/// What users of offloaded namespaces run (liqoctl's habits); exit codes in docs/cli.md.
#[derive(Subcommand)]
enum UserCommand {
    /// Offload a namespace to the remote clusters (liqoctl's `offload namespace`).
    #[command(subcommand)]
    Offload(offload::OffloadTarget),
    /// End a namespace's offloading (liqoctl's `unoffload namespace`).
    #[command(subcommand)]
    Unoffload(offload::UnoffloadTarget),
    /// This cluster's ID and labels, and its peers: their labels, whether they answer,
    /// their virtual nodes.
    Info(inspect::InfoArgs),
    /// Every offloaded namespace: phase, strategies, and each remote cluster's state.
    List(inspect::ListArgs),
}

/// What the cluster's operator runs: the manager, peering, installation.
#[derive(Subcommand)]
enum OperatorCommand {
    /// Run the manager: the admission webhooks on every replica, and the peering, offloading,
    /// quick-offloading and placement controllers on the Lease holder.
    Run(Box<manager::RunArgs>),
    /// Peer with a remote cluster: store its kubeconfig and create a RemoteCluster.
    Peer(Box<peer::PeerArgs>),
    /// Remove a peering (the RemoteCluster and its credentials Secret).
    Unpeer {
        name: String,
        /// Namespace of the credentials Secret.
        #[arg(long, default_value = "liqo")]
        namespace: String,
        /// Kubeconfig of the local cluster; default: $KUBECONFIG or ~/.kube/config.
        #[arg(long)]
        local_kubeconfig: Option<PathBuf>,
    },
    /// Print the CRDs as YAML (committed as manifests/crd.yaml).
    Crd,
    /// Print the webhook configurations as YAML, for a manager behind a Service.
    WebhookConfig {
        /// The Service, as NAMESPACE/NAME[:PORT].
        #[arg(long, default_value = "liqo/namespace-offloading:443")]
        service: String,
    },
    /// Write a CA and a serving certificate it signs (ca.crt, ca.key, tls.crt, tls.key).
    Certs {
        /// Directory to write into (created if missing).
        #[arg(long, default_value = "certs/generated")]
        out: PathBuf,
        /// The webhook Service, as NAMESPACE/NAME: its DNS names go into the certificate.
        #[arg(long, default_value = "liqo/namespace-offloading")]
        service: String,
        /// More DNS names.
        #[arg(long)]
        dns_name: Vec<String>,
        /// IP addresses (e.g. 127.0.0.1 for a manager outside the cluster).
        #[arg(long)]
        ip: Vec<IpAddr>,
    },
}

fn block_on<F: Future<Output = Result<(), String>>>(f: F) -> Result<(), String> {
    tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(f)
}

/// The arguments, with the subcommand a kubectl plugin's name stands for: installed as
/// `kubectl-offload` (or `kubectl-unoffload`), `kubectl offload namespace web` runs
/// `offload namespace web`; as any other `kubectl-*` name, every subcommand is there
/// (`kubectl nso list`).
fn arguments() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let called = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .unwrap_or_default();
    if let Some(sub) = ["offload", "unoffload"]
        .into_iter()
        .find(|sub| called == format!("kubectl-{sub}"))
    {
        args.insert(1, sub.into());
    }
    args
}

/// Parses the command line and runs the command; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(arguments());
    crate::plumbing::crypto::install_crypto_provider();
    match cli.command {
        Command::User(command) => match block_on_cli(run_user(command)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                e.exit_code()
            }
        },
        Command::Operator(command) => run_operator(command),
    }
}

async fn run_user(command: UserCommand) -> Result<(), cli::CliError> {
    match command {
        UserCommand::Offload(offload::OffloadTarget::Namespace(args)) => {
            offload::offload(args).await
        }
        UserCommand::Unoffload(offload::UnoffloadTarget::Namespace(args)) => {
            offload::unoffload(args).await
        }
        UserCommand::Info(args) => inspect::info(args).await,
        UserCommand::List(args) => inspect::list(args).await,
    }
}

fn block_on_cli<F: Future<Output = Result<(), cli::CliError>>>(f: F) -> Result<(), cli::CliError> {
    tokio::runtime::Runtime::new()
        .map_err(|e| cli::CliError::Failed(format!("cannot start the async runtime: {e}")))?
        .block_on(f)
}

/// The operator's commands, which fail with exit code 1.
fn run_operator(command: OperatorCommand) -> ExitCode {
    let result = match command {
        OperatorCommand::Run(args) => {
            print::init_tracing();
            block_on(async { manager::run(*args).await.map_err(|e| e.to_string()) })
        }
        OperatorCommand::Peer(args) => block_on(peer::peer(*args)),
        OperatorCommand::Unpeer {
            name,
            namespace,
            local_kubeconfig,
        } => block_on(peer::unpeer(&name, &namespace, local_kubeconfig.as_deref())),
        OperatorCommand::Crd => print::print_crd(),
        OperatorCommand::WebhookConfig { service } => print::print_webhook_config(&service),
        OperatorCommand::Certs {
            out,
            service,
            dns_name,
            ip,
        } => print::write_certs(&out, &service, &dns_name, &ip),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
