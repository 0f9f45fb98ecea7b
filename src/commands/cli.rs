//! What the user-facing subcommands (`offload`, `unoffload`, `info`, `list`) share: the
//! cluster they talk to, the output formats, and the exit codes (docs/cli.md).

use std::{path::PathBuf, process::ExitCode};

use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};

/// Which cluster to talk to, as kubectl finds it.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct KubeArgs {
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, global = true)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use; default: its current context.
    #[arg(long, global = true)]
    pub(crate) context: Option<String>,
}

impl KubeArgs {
    pub(crate) async fn client(&self) -> Result<Client, CliError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let unusable = |e: kube::config::KubeconfigError| {
            CliError::Usage(format!("cannot use the kubeconfig: {e}"))
        };
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                    CliError::Usage(format!("cannot read kubeconfig {}: {e}", path.display()))
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(unusable)?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(unusable)?,
            (None, None) => kube::Config::infer().await.map_err(|e| {
                CliError::Usage(format!(
                    "cannot find a cluster to talk to ({e}): set $KUBECONFIG or pass --kubeconfig"
                ))
            })?,
        };
        Client::try_from(config)
            .map_err(|e| CliError::Usage(format!("cannot use the kubeconfig: {e}")))
    }
}

/// `-o yaml|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    Yaml,
    Json,
}

impl Output {
    pub(crate) fn render<T: serde::Serialize>(self, value: &T) -> Result<String, CliError> {
        match self {
            Output::Json => serde_json::to_string_pretty(value)
                .map(|s| s + "\n")
                .map_err(|e| CliError::Failed(format!("cannot write JSON: {e}"))),
            Output::Yaml => serde_saphyr::to_string(value)
                .map_err(|e| CliError::Failed(format!("cannot write YAML: {e}"))),
        }
    }
}

/// How a subcommand failed, which decides its exit code (documented in docs/cli.md).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The cluster refused, or could not be reached, or the result is a failure: 1.
    #[error("{0}")]
    Failed(String),
    /// Bad arguments (flags, a selector that does not parse, an unusable kubeconfig): 2,
    /// as clap's own usage errors.
    #[error("{0}")]
    Usage(String),
    /// The namespace named does not exist: 3.
    #[error("{0}")]
    NotFound(String),
    /// `--wait` ran out of `--timeout`: 4.
    #[error("{0}")]
    Timeout(String),
}

impl CliError {
    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Failed(_) => 1,
            CliError::Usage(_) => 2,
            CliError::NotFound(_) => 3,
            CliError::Timeout(_) => 4,
        })
    }

    /// An API error, with what was being done.
    pub(crate) fn api(doing: &str, e: kube::Error) -> Self {
        match e {
            kube::Error::Api(status) => CliError::Failed(format!(
                "the cluster refused to {doing}: {}",
                status.message
            )),
            other => CliError::Failed(format!("cannot {doing}: {other}")),
        }
    }
}
