//! Floor 1: the model and its rules, pure. The API types, the marker names, and every
//! decision that needs no I/O: admission, status, selection, placement conformance,
//! and the forging of what goes into remote clusters. Nothing here calls an API server
//! or imports from a higher floor, so all of it is unit-tested directly.

pub mod admission;
pub mod api;
pub mod conformance;
pub mod forge;
pub mod identity;
pub mod labels;
pub mod markers;
pub mod preconditions;
pub mod quantity;
pub mod reason;
pub mod remote_namespace;
pub mod selector;
pub mod status;
pub mod translation;
pub mod virtual_node;
