//! Reflection into the peered clusters, the job Liqo's virtual kubelet does: `pods` runs
//! offloaded pods there as twins, `namespace_objects` copies what they need to start
//! (ConfigMaps, Secrets, ServiceAccounts) and what reaches them (Services, EndpointSlices);
//! `forge`, `objects`, `services` and `translation` are the pure translations between a
//! local object and its remote counterpart.

pub mod events;
pub mod forge;
pub mod namespace_objects;
pub mod objects;
pub mod pods;
pub mod services;
pub mod translation;

use crate::client::REMOTE_TIMEOUT;

/// A call to a peered cluster that failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("in cluster {cluster_id}: {source}")]
    Api {
        cluster_id: String,
        #[source]
        source: kube::Error,
    },
    #[error("in cluster {0}: no answer within {REMOTE_TIMEOUT:?}")]
    Timeout(String),
}

/// Runs a call to `cluster_id` within [`REMOTE_TIMEOUT`].
pub async fn remote<T>(
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
