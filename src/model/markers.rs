//! Every name that says "ours" or "Liqo's": the labels, annotations, taint, finalizers,
//! field managers and object names the product writes or reads. Each says who writes it
//! and who reads it; nothing else in the crate spells one of these strings.

// Namespaces in this cluster.

/// Namespace label: quick offloading with the default configuration. Written by users;
/// read by `controllers::enabled_label`, which creates the NamespaceOffloading, and by the
/// API server as a namespaceSelector of the pod webhook (`webhooks::registration`).
pub const ENABLED_LABEL: &str = "liqo.io/enabled";
/// Namespace label set while offloading is active. Written by `controllers::offloading`
/// (and by the NamespaceOffloading webhook at admission, so pods created a moment later
/// are seen); read by the API server as the pod webhook's namespaceSelector, and by
/// `reflection::pods` and `controllers::enabled_label`.
pub const SCHEDULING_ENABLED_LABEL: &str = "liqo.io/scheduling-enabled";

// The NamespaceOffloading.

/// Finalizer that holds a NamespaceOffloading until its remote namespaces are gone.
/// Written and removed by `controllers::offloading`.
pub const OFFLOADING_FINALIZER: &str = "offloading.liqo.io/remote-namespaces";
/// Annotation saying what is wrong with an invalid `clusterSelector`. Written by
/// `controllers::offloading`; read by people (`kubectl describe`).
pub const SELECTOR_ERROR_ANNOTATION: &str = "offloading.liqo.io/selector-error";
/// Marks a NamespaceOffloading created by [`ENABLED_LABEL`] (value: that label). Written
/// and read by `controllers::enabled_label`, which deletes only what it created.
pub const CREATED_BY_ANNOTATION: &str = "offloading.liqo.io/created-by";

// Virtual nodes.

/// Node label marking a node that stands for a remote cluster (value [`VIRTUAL_NODE`]).
/// Written by `controllers::peering`; read by admission, selection, placement and reflection.
pub const TYPE_LABEL: &str = "liqo.io/type";
/// The value of [`TYPE_LABEL`] on virtual nodes.
pub const VIRTUAL_NODE: &str = "virtual-node";
/// Node label naming the remote cluster a virtual node stands for. Written by
/// `controllers::peering`; read by selection, reflection and the kubelet API.
pub const REMOTE_CLUSTER_ID_LABEL: &str = "liqo.io/remote-cluster-id";
/// Taint key keeping ordinary pods off virtual nodes (`=true:NoExecute`). Written by
/// `controllers::peering` on the node; the pod webhook adds its toleration to offloaded pods.
pub const NOT_ALLOWED_TAINT: &str = "virtual-node.liqo.io/not-allowed";
/// Finalizer that holds a RemoteCluster until its virtual node is gone. Written and
/// removed by `controllers::peering`.
pub const PEERING_FINALIZER: &str = "offloading.liqo.io/peering";
/// RemoteCluster annotation (`"true"`): its kubeconfig's user may get credentials from a
/// program (an exec plugin or an auth provider), which the controller then runs. Written by
/// the `peer` command given `--allow-exec-credentials`; read by `controllers::peering`.
pub const ALLOW_EXEC_CREDENTIALS_ANNOTATION: &str = "offloading.liqo.io/allow-exec-credentials";
/// RemoteCluster annotation (`"true"`): the remote publishes no identity, so that the
/// credentials reach the cluster of `spec.clusterID` is taken on trust. Written by the `peer`
/// command when it peers such a cluster with `--cluster-id`; read by `controllers::peering`,
/// which otherwise refuses credentials that reach a cluster without an identity.
pub const UNVERIFIED_IDENTITY_ANNOTATION: &str = "offloading.liqo.io/unverified-identity";

// What we create in remote clusters.

/// Remote namespace annotation: the ID of the cluster that owns it. Written by
/// `controllers::offloading` on the namespaces it creates; read by
/// `model::remote_namespace::ownership` before anything touches one.
pub const REMOTE_NAMESPACE_ANNOTATION: &str = "liqo.io/remote-namespace";
/// Label on our remote namespaces: the local namespace each stands for. Written by
/// `model::remote_namespace`; read by the peers' namespace watches to wake the local
/// NamespaceOffloading, and to attribute remote events.
pub const ORIGIN_NAMESPACE_LABEL: &str = "offloading.liqo.io/origin-namespace";
/// Label on our remote namespaces, twins and copies: the ID of the cluster that made them.
/// Written when they are forged; the peers' watches select on it (only ours are watched).
pub const ORIGIN_CLUSTER_LABEL: &str = "offloading.liqo.io/origin-cluster-id";
/// Annotation on twins and copies: the namespace of the local object they stand for.
/// Written by `model::forge`; read by the peers' watches and the ownership checks.
pub const ORIGIN_NAMESPACE_ANNOTATION: &str = "offloading.liqo.io/origin-namespace";
/// Annotation on a twin: the uid of the local pod it stands for. Written by
/// `model::forge::twin`; read by `model::forge::twin::owner` (a twin of a recreated pod
/// of the same name is not its twin).
pub const ORIGIN_POD_UID_ANNOTATION: &str = "offloading.liqo.io/origin-pod-uid";
/// Annotation on a remote claim: the uid of the local PersistentVolumeClaim it stands for.
/// Written by `model::forge::claims`; read by its ownership check (a claim made again here
/// under the same name does not take over the data of the one deleted).
pub const ORIGIN_CLAIM_UID_ANNOTATION: &str = "offloading.liqo.io/origin-claim-uid";
/// The EndpointSlice label naming who maintains a slice (Kubernetes' key), with our value
/// [`SLICE_MANAGER`] on the slices we write, so remote endpoint controllers leave them alone.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The namespace label naming the namespace (Kubernetes' key, set by the API server). Read
/// by the API server as the pod webhooks' namespaceSelector (`webhooks::registration`),
/// which leaves the system namespaces and the manager's own out.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Our value of [`MANAGED_BY_LABEL`]. Written by `model::forge::services`; the peers'
/// slice watches select on it.
pub const SLICE_MANAGER: &str = "namespace-offloading.liqo.io";

// Local pods.

/// The local pod condition that says why it has no twin (when it has none). Written by
/// `reflection::pods`; read by people and by the tests.
pub const TWIN_CONDITION: &str = "offloading.liqo.io/RemotePod";

// Field managers (server-side apply keeps each writer's fields apart).

/// Our field manager: the controllers' status, labels and the objects they apply.
pub const FIELD_MANAGER: &str = "namespace-offloading";
/// The placement controller's own, so its `PodsConform` condition stays apart from `Ready`.
pub const PLACEMENT_FIELD_MANAGER: &str = "namespace-offloading-placement";
/// The NamespaceOffloading webhook's, for the namespace label it sets at admission (the
/// controller keeps it with its own), so `kubectl get -o yaml --show-managed-fields`
/// tells which set it.
pub const WEBHOOK_FIELD_MANAGER: &str = "namespace-offloading-webhook";

// Our objects, by name and by label.

/// The recommended label naming the application (Kubernetes' key), with [`APP_NAME`], on
/// the objects we create in the manager's namespace (the identity ConfigMap, the
/// self-managed certificate Secret). Written by `plumbing::identity` and
/// `plumbing::certs::managed`; read by people and selectors.
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
/// Our value of [`APP_NAME_LABEL`].
pub const APP_NAME: &str = "namespace-offloading";
/// The `reportingController` of the events we record. Written by `context::Shared`'s
/// recorder; read by people (`kubectl get events`), and by the tests to tell our events.
pub const EVENT_REPORTER: &str = "namespace-offloading";

/// The ConfigMap publishing this cluster's identity, in the manager's namespace. Written
/// by `manager`; read by peers (`controllers::peering`, the `peer` command).
pub const IDENTITY_CONFIGMAP: &str = "namespace-offloading-identity";
/// The Lease the replicas elect a leader with. Written and read by `plumbing::leader`.
pub const LEADER_LEASE: &str = "namespace-offloading-leader";
/// The name of both webhook configurations. Written by `webhooks::registration`.
pub const WEBHOOK_CONFIGURATION: &str = "namespace-offloading";

// The self-managed certificate Secret's annotations. Written and read by
// `plumbing::certs::managed`, which renews before these dates.

/// When the serving certificate expires.
pub const SERVING_NOT_AFTER_ANNOTATION: &str = "offloading.liqo.io/serving-not-after";
/// When the CA expires.
pub const CA_NOT_AFTER_ANNOTATION: &str = "offloading.liqo.io/ca-not-after";
/// The names the serving certificate covers (a change of names issues a new one).
pub const SERVING_NAMES_ANNOTATION: &str = "offloading.liqo.io/serving-names";
