//! The kubelet API of the virtual nodes, the part of Liqo's virtual kubelet that makes
//! `kubectl logs`, `exec`, `attach` and `port-forward` work for offloaded pods: the API
//! server calls the node's advertised address (one listener serves every virtual node),
//! and each call is relayed to the twin's cluster (`relay`). `route` is the pure mapping
//! of paths; `server` the TLS listener; `authz` who may call (as a kubelet's webhook
//! authorization decides). `report` serves `/metrics/resource` and `/stats/summary` (what
//! `kubectl top` reads through metrics-server) from the remote metrics API, and `usage`
//! is their pure making.

pub(crate) mod authz;
pub(crate) mod relay;
pub(crate) mod report;
pub(crate) mod route;
pub(crate) mod server;
pub(crate) mod usage;

use crate::model::virtual_node::KubeletEndpoint;

/// The kubelet API, ready to serve: its listener and TLS, and what nodes advertise.
pub(crate) struct Serving {
    pub(crate) listener: tokio::net::TcpListener,
    pub(crate) tls: std::sync::Arc<rustls::ServerConfig>,
    pub(crate) endpoint: KubeletEndpoint,
}
