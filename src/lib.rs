//! Namespace offloading for multi-cluster Kubernetes, keeping Liqo's `offloading.liqo.io`
//! API: see README.md and docs/.
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod controller;
pub mod identity;
pub mod leader;
pub mod metrics;
pub mod peer;
pub mod placement;
pub mod preflight;
pub mod run;
pub mod selector;
pub mod server;
pub mod status;
pub mod testbed;
pub mod tls;
pub mod webhooks;
