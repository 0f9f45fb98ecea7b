//! Trust boundaries, on the seed's reference topology (tests/support/topology.rs): the
//! product writes only where it owns, hands no credentials from one cluster to another, and
//! answers only those who may ask. docs/security.md lists each guarantee with its test here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

/// 5 and 6: copies keep what restricts; twins the remote cluster accepts.
mod copies;
/// 2: no home credentials in a twin.
mod credentials;
/// 3: the kubelet API authorizes first and reaches only our twins.
mod kubelet;
/// 1: twins and copies only in remote namespaces that are ours.
mod namespaces;
/// 4: deleting a virtual node is not unpeering.
mod nodes;
/// 8: peers are who they say.
mod peering;
/// 9: bounded servers.
mod servers;
/// 7: the webhooks' side effects only for what they review.
mod webhooks;
