//! Floor 4, the controllers: peering (RemoteCluster → virtual node and a connected
//! client), offloading (NamespaceOffloading → remote namespaces and status), the
//! `liqo.io/enabled` label (quick offloading) and placement. Their pure building blocks
//! are in `model` (`remote_namespace`, `virtual_node`, `quantity`, `status`,
//! `conformance`); `manager::controllers` wires them to the shared watches.

pub(crate) mod enabled_label;
pub(crate) mod offloading;
pub(crate) mod peering;
pub(crate) mod placement;
#[cfg(test)]
pub(crate) mod testing;
