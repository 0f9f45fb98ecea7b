//! Calls to a peered cluster: each within [`REMOTE_TIMEOUT`], its failure naming the
//! cluster.

use crate::plumbing::client::REMOTE_TIMEOUT;

/// A call to a peered cluster that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RemoteError {
    #[error("in cluster {cluster_id}: {source}")]
    Api {
        cluster_id: String,
        #[source]
        source: kube::Error,
    },
    #[error("in cluster {0}: no answer within {REMOTE_TIMEOUT:?}")]
    Timeout(String),
}

impl RemoteError {
    /// Whether the cluster itself failed (no answer in time, or none at all) rather than
    /// refusing one call: the next calls there would fail the same way.
    pub(crate) fn cluster_down(&self) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::Api { source, .. } => !matches!(source, kube::Error::Api(_)),
        }
    }
}

/// Runs a call to `cluster_id` within [`REMOTE_TIMEOUT`].
pub(crate) async fn remote<T>(
    cluster_id: &str,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, RemoteError> {
    match tokio::time::timeout(REMOTE_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|source| RemoteError::Api {
            cluster_id: cluster_id.to_owned(),
            source,
        }),
        Err(_) => Err(RemoteError::Timeout(cluster_id.to_owned())),
    }
}
