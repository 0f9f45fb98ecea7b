//! Namespace offloading for multi-cluster Kubernetes, keeping Liqo's `offloading.liqo.io`
//! API: see README.md and docs/.
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod client;
pub mod controller;
pub mod crypto;
pub mod identity;
pub mod kubelet;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod peer;
pub mod placement;
pub mod preflight;
pub mod reason;
pub mod reflection;
pub mod run;
pub mod selector;
pub mod server;
pub mod status;
pub mod watches;
pub mod webhooks;
