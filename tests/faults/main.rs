//! Faults, on the seed's reference topology (tests/support/topology.rs): the product keeps
//! its promises while clusters refuse, freeze and change under it. docs/reliability.md
//! lists each promise with its test here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

/// 5: objects of namespaces not offloaded are not cached.
mod caches;
/// 2: one object a cluster refuses holds up no other.
mod refusals;
/// 4: a cluster deselected sends its pods back.
mod selection;
/// 1: a peer's watches that fail come back and catch up.
mod watches;
