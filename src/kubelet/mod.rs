//! The kubelet API of the virtual nodes, the part of Liqo's virtual kubelet that makes
//! `kubectl logs`, `exec`, `attach` and `port-forward` work for offloaded pods: the API
//! server calls the node's advertised address (one listener serves every virtual node),
//! and each call is relayed to the twin's cluster (`relay`). `route` is the pure mapping
//! of paths; `server` the TLS listener; `authz` who may call (as a kubelet's webhook
//! authorization decides).

pub mod authz;
pub mod relay;
pub mod route;
pub mod server;

use crate::model::virtual_node::KubeletEndpoint;

/// The kubelet API, ready to serve: its listener and TLS, and what nodes advertise.
pub struct Serving {
    pub listener: tokio::net::TcpListener,
    pub tls: std::sync::Arc<rustls::ServerConfig>,
    pub endpoint: KubeletEndpoint,
}
