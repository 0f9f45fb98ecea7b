//! Clients for the API servers we talk to: the local one (a kubeconfig file, `$KUBECONFIG`,
//! or the in-cluster account) and each peered cluster (a kubeconfig from a Secret). Every
//! client names itself in the User-Agent, so an API server's audit log tells our requests
//! apart, and a remote cluster's tells which cluster's manager called.

use std::{path::Path, time::Duration};

use http::{HeaderValue, header::USER_AGENT};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig, KubeconfigError},
};

/// Our User-Agent towards the local API server.
pub const LOCAL_USER_AGENT: &str = concat!("namespace-offloading/", env!("CARGO_PKG_VERSION"));
/// How long one call to a remote API server may take: an unreachable cluster costs this
/// much at most, and concurrently with the others.
pub(crate) const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: KubeconfigError,
    },
    #[error("cannot parse the kubeconfig: {0}")]
    Parse(#[source] KubeconfigError),
    #[error("unusable kubeconfig: {0}")]
    Unusable(#[source] KubeconfigError),
    #[error("no kubeconfig: set $KUBECONFIG or --kubeconfig, or run in a cluster ({0})")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot build a client: {0}")]
    Build(#[source] kube::Error),
}

/// The User-Agent of our calls to a peered cluster, naming the cluster they come from.
pub fn remote_user_agent(local_cluster_id: &str) -> String {
    format!("{LOCAL_USER_AGENT} peer-of/{local_cluster_id}")
}

/// A client for the local cluster: `path`, or else `$KUBECONFIG`, `~/.kube/config` or the
/// in-cluster service account.
pub(crate) async fn local(path: Option<&Path>) -> Result<Client, ClientError> {
    build(local_config(path).await?, LOCAL_USER_AGENT)
}

/// The local cluster's connection settings, found as [`local`] finds them.
pub(crate) async fn local_config(path: Option<&Path>) -> Result<Config, ClientError> {
    Ok(match path {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|source| ClientError::Read {
                path: path.display().to_string(),
                source,
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(ClientError::Unusable)?
        }
        None => Config::infer().await.map_err(ClientError::Infer)?,
    })
}

/// A client for a peered cluster from its kubeconfig's text. Connecting gives up after
/// [`REMOTE_TIMEOUT`], so a cluster that does not answer never holds up the others.
pub(crate) async fn remote(
    kubeconfig: &str,
    local_cluster_id: &str,
) -> Result<Client, ClientError> {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig).map_err(ClientError::Parse)?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(ClientError::Unusable)?;
    config.connect_timeout = Some(REMOTE_TIMEOUT);
    build(config, &remote_user_agent(local_cluster_id))
}

fn build(mut config: Config, user_agent: &str) -> Result<Client, ClientError> {
    // A cluster ID is a label value, so the header is always valid; if not, go without.
    if let Ok(value) = HeaderValue::from_str(user_agent) {
        config.headers.push((USER_AGENT, value));
    }
    Client::try_from(config).map_err(ClientError::Build)
}
