//! The user-facing API, key for key Liqo's `offloading.liqo.io/v1alpha1`.

pub mod offloading;
pub mod remote_cluster;

pub use offloading::{
    NamespaceMappingStrategy, NamespaceOffloading, NamespaceOffloadingSpec,
    NamespaceOffloadingStatus, OffloadingPhase, PodOffloadingStrategy, RemoteNamespaceCondition,
};
pub use remote_cluster::{RemoteCluster, RemoteClusterSpec, RemoteClusterStatus};

/// The only NamespaceOffloading name with any effect: one configuration per namespace.
pub const OFFLOADING_NAME: &str = "offloading";

/// Namespace label: quick offloading with the default configuration.
pub const ENABLED_LABEL: &str = "liqo.io/enabled";
/// Namespace label set while offloading is active; the pod webhook's namespaceSelector.
pub const SCHEDULING_ENABLED_LABEL: &str = "liqo.io/scheduling-enabled";
/// Node label marking a node that stands for a remote cluster (value [`VIRTUAL_NODE`]).
pub const TYPE_LABEL: &str = "liqo.io/type";
pub const VIRTUAL_NODE: &str = "virtual-node";
/// Node label naming the remote cluster a virtual node stands for.
pub const REMOTE_CLUSTER_ID_LABEL: &str = "liqo.io/remote-cluster-id";
/// Taint key keeping ordinary pods off virtual nodes (`=true:NoExecute`).
pub const NOT_ALLOWED_TAINT: &str = "virtual-node.liqo.io/not-allowed";
/// Remote namespace annotation: the ID of the cluster that owns it.
pub const REMOTE_NAMESPACE_ANNOTATION: &str = "liqo.io/remote-namespace";

/// The longest valid DNS-1123 label, and so namespace name.
pub const DNS1123_LABEL_MAX: usize = 63;

/// Our server-side-apply field manager (the placement controller and the webhook's
/// namespace marking have their own, so their fields stay apart).
pub const FIELD_MANAGER: &str = "namespace-offloading";

/// Whether a node with these labels stands for a remote cluster.
pub fn is_virtual_node(labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels.get(TYPE_LABEL).map(String::as_str) == Some(VIRTUAL_NODE)
}
