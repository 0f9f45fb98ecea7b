//! Floor 2: the I/O building blocks every worker stands on: API clients, the shared
//! watches of the local cluster, metrics, HTTPS serving, certificates, the leader
//! election, preflight checks, the cluster identity ConfigMap and the retry backoff. Nothing here knows of
//! peers or of a particular controller.

pub(crate) mod backoff;
pub mod certs;
pub mod client;
pub mod crypto;
pub mod https;
pub(crate) mod identity;
pub(crate) mod leader;
pub mod metrics;
pub mod preflight;
pub(crate) mod scope;
pub(crate) mod scoped;
pub(crate) mod watches;
