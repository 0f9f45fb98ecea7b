//! The chaos soak (`scripts/soak`): the test bed's three clusters, peered as in
//! `tests/support/topology.rs` (two managers on cluster 1, leader-elected), an app of
//! Deployments, Services and ConfigMaps in several offloaded namespaces, and faults landing
//! at random from a seeded RNG. After each burst of faults, the soak polls until every
//! invariant holds (and still does after a quiet period), and fails with the broken one
//! if they do not within the cap ([`CONVERGE_CAP`] unless told otherwise).

pub mod app;
pub mod cmd;
pub mod faults;
pub mod foreign;
pub mod invariants;
pub mod managers;
pub mod report;
pub mod run;
pub mod setup;

use std::time::Duration;

/// How long the product may take, by default, to reconverge after a burst before the soak fails. Covers
/// a leader failover (up to 20 s), an API server restart and the retries' backoff.
pub const CONVERGE_CAP: Duration = Duration::from_secs(180);

/// No verdict is given this soon after a burst: invariants polled meanwhile count towards
/// the time to converge, but must still hold once this has passed.
pub const QUIET: Duration = Duration::from_secs(5);

/// How often invariants are polled while converging.
pub const POLL: Duration = Duration::from_secs(2);

/// One call to an API server; a frozen one never answers.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The remote clusters (cluster 1 offloads to them).
pub const REMOTES: [usize; 2] = [2, 3];

/// Cluster labels, as in the reference topology.
pub const LABELS: [&str; 3] = ["", "region=eu,provider=azure", "region=us,provider=aws"];

/// The namespace the managers run in (identity ConfigMap, leader Lease).
pub const MANAGER_NAMESPACE: &str = "liqo";

#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error(transparent)]
    Testbed(#[from] crate::TestbedError),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: no answer within {CALL_TIMEOUT:?}")]
    Timeout { what: String },
    #[error("kubectl {args} failed: {stderr}")]
    Kubectl { args: String, stderr: String },
    #[error("{0}")]
    Setup(String),
    #[error("cannot inject {fault}: {reason}")]
    Fault { fault: String, reason: String },
}

/// Runs an API call within [`CALL_TIMEOUT`], naming it in the error.
pub async fn call<T>(
    what: impl Into<String>,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, SoakError> {
    let what = what.into();
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(SoakError::Kube { what, source }),
        Err(_) => Err(SoakError::Timeout { what }),
    }
}
