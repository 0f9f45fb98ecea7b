//! The offloading controller (work in progress, see issue 4): pure building blocks first.
//! `remote_namespace` decides what a remote namespace must look like and whether an
//! existing one is ours; `virtual_node` builds the Node that stands for a remote cluster.

pub mod quantity;
pub mod remote_namespace;
pub mod virtual_node;
