//! Namespace offloading for multi-cluster Kubernetes, keeping Liqo's `offloading.liqo.io`
//! API: see README.md and docs/.
//!
//! The crate is built in floors, each a folder, each importing only from the floors below
//! it (`tests/layers.rs` checks this on every file):
//!
//! | floor | folders | what it holds |
//! |---|---|---|
//! | 1 | [`model`] | the API types, the marker names, and every pure rule: admission, status, selection, placement conformance, forging of remote objects |
//! | 2 | [`plumbing`] | I/O building blocks: clients, shared watches, metrics, HTTPS serving, certificates, leader election, preflight |
//! | 3 | [`context`] | the peered clusters (a client and watches each) and the writes every worker shares |
//! | 4 | [`controllers`], [`reflection`], [`webhooks`], [`kubelet`] | the workers; none imports another |
//! | 5 | [`manager`] | `run`: wires the workers to the watches, the election and the servers |
//! | 6 | [`commands`] | the command line: `run` and the subcommands around it |
#![forbid(unsafe_code)]

pub mod model;

pub mod plumbing;

pub(crate) mod context;

pub(crate) mod controllers;
pub(crate) mod kubelet;
pub(crate) mod reflection;
pub mod webhooks;

pub mod manager;

pub mod commands;
