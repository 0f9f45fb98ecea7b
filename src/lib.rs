//! Namespace offloading for multi-cluster Kubernetes, keeping Liqo's `offloading.liqo.io`
//! API: see README.md and docs/.
#![forbid(unsafe_code)]

pub mod testbed;
pub mod tls;
