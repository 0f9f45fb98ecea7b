//! The user-facing API, key for key Liqo's `offloading.liqo.io` (NamespaceOffloading in
//! v1beta1 and v1alpha1; our RemoteCluster in v1alpha1).

pub mod offloading;
pub mod remote_cluster;

pub use offloading::{
    NamespaceMappingStrategy, NamespaceOffloading, NamespaceOffloadingSpec,
    NamespaceOffloadingStatus, OffloadingPhase, PodOffloadingStrategy, RemoteNamespaceCondition,
};
pub use remote_cluster::{RemoteCluster, RemoteClusterSpec, RemoteClusterStatus};

/// The only NamespaceOffloading name with any effect: one configuration per namespace.
pub const OFFLOADING_NAME: &str = "offloading";

/// The longest valid DNS-1123 label, and so namespace name.
pub(crate) const DNS1123_LABEL_MAX: usize = 63;

/// Whether a node with these labels stands for a remote cluster.
pub(crate) fn is_virtual_node(labels: &std::collections::BTreeMap<String, String>) -> bool {
    use crate::model::markers::{TYPE_LABEL, VIRTUAL_NODE};
    labels.get(TYPE_LABEL).map(String::as_str) == Some(VIRTUAL_NODE)
}
