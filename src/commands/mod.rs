//! Floor 6, the command line: `run` (the manager) and the subcommands around it (peering,
//! the CRDs and webhook configurations, certificates). `main.rs` only calls [`main`].

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

/// Parses the command line and runs the command; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::plumbing::crypto::install_crypto_provider();
    let result = match cli.command {
        Command::Run(args) => {
            print::init_tracing();
            block_on(async { manager::run(*args).await.map_err(|e| e.to_string()) })
        }
        Command::Peer(args) => block_on(peer::peer(*args)),
        Command::Unpeer {
            name,
            namespace,
            local_kubeconfig,
        } => block_on(peer::unpeer(&name, &namespace, local_kubeconfig.as_deref())),
        Command::Crd => print::print_crd(),
        Command::WebhookConfig { service } => print::print_webhook_config(&service),
        Command::Certs {
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
