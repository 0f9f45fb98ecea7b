//! `NamespaceOffloading`: where a namespace's pods may run and which clusters get its twin.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::markers::{TYPE_LABEL, VIRTUAL_NODE};

/// The offloading configuration of the namespace it lives in. Only the object named
/// `offloading` has any effect; its spec cannot change once created.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "offloading.liqo.io",
    version = "v1alpha1",
    kind = "NamespaceOffloading",
    namespaced,
    shortname = "nsof",
    shortname = "nso",
    status = "NamespaceOffloadingStatus",
    printcolumn = r#"{"name":"NamespaceMappingStrategy","type":"string","jsonPath":".spec.namespaceMappingStrategy"}"#,
    printcolumn = r#"{"name":"PodOffloadingStrategy","type":"string","jsonPath":".spec.podOffloadingStrategy"}"#,
    printcolumn = r#"{"name":"OffloadingPhase","type":"string","jsonPath":".status.offloadingPhase"}"#,
    printcolumn = r#"{"name":"RemoteNamespaceName","type":"string","jsonPath":".status.remoteNamespaceName","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
// Kept true by the API server itself, so even with the webhook down the spec stays as
// created (the webhook gives the friendlier message first).
#[x_kube(validation = Rule::new("self == oldSelf").message(
    "spec is immutable: delete the NamespaceOffloading and create it again with the new configuration"
))]
#[serde(rename_all = "camelCase")]
pub struct NamespaceOffloadingSpec {
    /// How remote namespaces are named: `DefaultName` (`<namespace>-<local-cluster-id>`,
    /// conflict-free) or `EnforceSameName` (`<namespace>`).
    #[serde(default)]
    pub namespace_mapping_strategy: NamespaceMappingStrategy,
    /// Where the namespace's pods may run: `Local`, `Remote` or `LocalAndRemote`.
    #[serde(default)]
    pub pod_offloading_strategy: PodOffloadingStrategy,
    /// Which remote clusters to offload to, in NodeAffinity syntax against the labels of
    /// the virtual nodes standing for them. Default: every remote cluster.
    #[serde(default = "default_cluster_selector")]
    pub cluster_selector: NodeSelector,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum NamespaceMappingStrategy {
    EnforceSameName,
    #[default]
    DefaultName,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum PodOffloadingStrategy {
    Local,
    Remote,
    #[default]
    LocalAndRemote,
}

impl NamespaceMappingStrategy {
    pub const VALUES: [&'static str; 2] = ["EnforceSameName", "DefaultName"];
}

impl PodOffloadingStrategy {
    pub const VALUES: [&'static str; 3] = ["Local", "Remote", "LocalAndRemote"];
}

/// `liqo.io/type In (virtual-node)`: every remote cluster.
pub(crate) fn virtual_node_requirement() -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: TYPE_LABEL.into(),
        operator: "In".into(),
        values: Some(vec![VIRTUAL_NODE.into()]),
    }
}

/// The selector used when `clusterSelector` is omitted or has no terms.
pub(crate) fn default_cluster_selector() -> NodeSelector {
    NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: Some(vec![virtual_node_requirement()]),
            match_fields: None,
        }],
    }
}

impl NamespaceOffloadingSpec {
    /// What the `liqo.io/enabled=true` label stands for: every default (every remote
    /// cluster, DefaultName, LocalAndRemote).
    pub(crate) fn label_default() -> Self {
        Self {
            namespace_mapping_strategy: NamespaceMappingStrategy::default(),
            pod_offloading_strategy: PodOffloadingStrategy::default(),
            cluster_selector: default_cluster_selector(),
        }
    }

    /// The placement of a namespace whose offloading is ending or absent: local nodes only.
    pub(crate) fn local_only() -> Self {
        Self {
            pod_offloading_strategy: PodOffloadingStrategy::Local,
            ..Self::label_default()
        }
    }

    /// The name the remote namespaces get.
    pub(crate) fn remote_namespace_name(&self, namespace: &str, local_cluster_id: &str) -> String {
        match self.namespace_mapping_strategy {
            NamespaceMappingStrategy::EnforceSameName => namespace.to_owned(),
            NamespaceMappingStrategy::DefaultName => format!("{namespace}-{local_cluster_id}"),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceOffloadingStatus {
    /// The name of the namespaces created in the selected remote clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_namespace_name: Option<String>,
    /// The overall state, derived from `remoteNamespacesConditions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offloading_phase: Option<OffloadingPhase>,
    /// Per remote cluster ID, the conditions of its remote namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remote_namespaces_conditions: BTreeMap<String, Vec<RemoteNamespaceCondition>>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, for `kubectl wait --for=condition=Ready`, and `PodsConform` (whether every
    /// pod of the namespace keeps to the placement). Keyed by type, so each writer owns its
    /// own entry under server-side apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum OffloadingPhase {
    Ready,
    NoClusterSelected,
    InProgress,
    SomeFailed,
    AllFailed,
    Terminating,
}

/// Shaped like core/v1 `NamespaceCondition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteNamespaceCondition {
    /// `Ready` or `OffloadingRequired`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn omitted_fields_take_liqo_defaults() {
        let spec: NamespaceOffloadingSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(
            spec.namespace_mapping_strategy,
            NamespaceMappingStrategy::DefaultName
        );
        assert_eq!(
            spec.pod_offloading_strategy,
            PodOffloadingStrategy::LocalAndRemote
        );
        assert_eq!(spec.cluster_selector, default_cluster_selector());
        assert_eq!(spec.remote_namespace_name("web", "id"), "web-id");
    }

    #[test]
    fn crd_keeps_liqo_names_and_spec_immutability() {
        let crd = serde_json::to_value(NamespaceOffloading::crd()).unwrap();
        assert_eq!(
            crd["metadata"]["name"],
            "namespaceoffloadings.offloading.liqo.io"
        );
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!(["nsof", "nso"])
        );
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"]["status"].is_object());
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["x-kubernetes-validations"][0]["rule"],
            "self == oldSelf"
        );
        assert_eq!(
            spec["properties"]["podOffloadingStrategy"]["default"],
            "LocalAndRemote"
        );
        let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"];
        assert!(status["properties"]["remoteNamespacesConditions"].is_object());
        let columns: Vec<_> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            [
                "NamespaceMappingStrategy",
                "PodOffloadingStrategy",
                "OffloadingPhase",
                "RemoteNamespaceName",
                "Age"
            ]
        );
    }
}
