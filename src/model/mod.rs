//! Floor 1: the model and its rules, pure. The API types, the marker names, and every
//! decision that needs no I/O: admission, status, selection, placement conformance,
//! and the forging of what goes into remote clusters. Nothing here calls an API server
//! or imports from a higher floor, so all of it is unit-tested directly.

pub mod admission;
pub mod api;
pub(crate) mod conformance;
pub(crate) mod forge;
#[cfg(test)]
mod fuzz;
pub(crate) mod identity;
pub(crate) mod labels;
pub mod markers;
pub(crate) mod preconditions;
pub(crate) mod quantity;
pub(crate) mod reason;
pub(crate) mod reflection_policy;
pub(crate) mod remote_namespace;
pub(crate) mod selector;
pub(crate) mod selector_text;
pub(crate) mod status;
pub(crate) mod translation;
pub(crate) mod virtual_node;
