//! `NamespaceOffloading`: where a namespace's pods may run and which clusters get its twin.
//!
//! Served as `offloading.liqo.io/v1beta1` (Liqo 1.x, the storage version, the type the
//! code uses) and `v1alpha1` (Liqo 0.x, [`v1alpha1`]). Both have the same schema, as in
//! Liqo (whose v1alpha1 gained `SelectedName` and `spec.remoteNamespaceName` in 0.10.2), so
//! the API server converts between them by changing `apiVersion` alone (`None` conversion:
//! no webhook on the read path). See docs/migrating-from-liqo.md, "API versions".

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
    version = "v1beta1",
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
#[x_kube(validation = Rule::new("self == oldSelf").message(IMMUTABLE))]
#[x_kube(validation = Rule::new(SELECTED_NAME_NEEDS_NAME.0).message(SELECTED_NAME_NEEDS_NAME.1))]
#[x_kube(validation = Rule::new(NAME_NEEDS_SELECTED_NAME.0).message(NAME_NEEDS_SELECTED_NAME.1))]
#[serde(rename_all = "camelCase")]
pub struct NamespaceOffloadingSpec {
    /// How remote namespaces are named: `DefaultName` (`<namespace>-<local-cluster-id>`,
    /// conflict-free), `EnforceSameName` (`<namespace>`) or `SelectedName`
    /// (`spec.remoteNamespaceName`).
    #[serde(default)]
    pub namespace_mapping_strategy: NamespaceMappingStrategy,
    /// The remote namespaces' name with `SelectedName` (required then, refused otherwise):
    /// a DNS label of at most 63 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "dns_label_schema")]
    pub remote_namespace_name: Option<String>,
    /// Where the namespace's pods may run: `Local`, `Remote` or `LocalAndRemote`.
    #[serde(default)]
    pub pod_offloading_strategy: PodOffloadingStrategy,
    /// Which remote clusters to offload to, in NodeAffinity syntax against the labels of
    /// the virtual nodes standing for them. Default: every remote cluster.
    #[serde(default = "default_cluster_selector")]
    pub cluster_selector: NodeSelector,
}

/// A namespace name: a DNS-1123 label. Not nullable, so an explicit `null` is dropped by
/// the API server rather than kept as a value that `has()` sees.
fn dns_label_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 63,
        "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        "description": "The remote namespaces' name with `SelectedName` (required then, refused otherwise): a DNS label of at most 63 characters."
    })
}

const IMMUTABLE: &str = "spec is immutable: delete the NamespaceOffloading and create it again with the new configuration";
const SELECTED_NAME_NEEDS_NAME: (&str, &str) = (
    "self.namespaceMappingStrategy != 'SelectedName' || has(self.remoteNamespaceName)",
    "spec.remoteNamespaceName is required with namespaceMappingStrategy SelectedName: set the name the remote namespaces get",
);
const NAME_NEEDS_SELECTED_NAME: (&str, &str) = (
    "self.namespaceMappingStrategy == 'SelectedName' || !has(self.remoteNamespaceName)",
    "spec.remoteNamespaceName is used only with namespaceMappingStrategy SelectedName: remove it, or set namespaceMappingStrategy to SelectedName",
);

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum NamespaceMappingStrategy {
    EnforceSameName,
    #[default]
    DefaultName,
    /// The name in `spec.remoteNamespaceName` (Liqo 0.10.2 on).
    SelectedName,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum PodOffloadingStrategy {
    Local,
    Remote,
    #[default]
    LocalAndRemote,
}

impl NamespaceMappingStrategy {
    pub const VALUES: [&'static str; 3] = ["EnforceSameName", "DefaultName", "SelectedName"];
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
            remote_namespace_name: None,
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

    /// The name the remote namespaces get. A `SelectedName` without its name (which the
    /// CRD and the webhook refuse) falls back to the conflict-free default.
    pub(crate) fn remote_name(&self, namespace: &str, local_cluster_id: &str) -> String {
        match (self.namespace_mapping_strategy, &self.remote_namespace_name) {
            (NamespaceMappingStrategy::EnforceSameName, _) => namespace.to_owned(),
            (NamespaceMappingStrategy::SelectedName, Some(name)) => name.clone(),
            (NamespaceMappingStrategy::DefaultName | NamespaceMappingStrategy::SelectedName, _) => {
                format!("{namespace}-{local_cluster_id}")
            }
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

/// `offloading.liqo.io/v1alpha1`, served for Liqo 0.x manifests: the same schema as
/// v1beta1, so objects of either version read back in the other unchanged. Used only for
/// its schema.
pub mod v1alpha1 {
    use k8s_openapi::api::core::v1::NodeSelector;
    use kube::{CustomResource, KubeSchema};
    use serde::{Deserialize, Serialize};

    use crate::model::api::offloading::{
        IMMUTABLE, NAME_NEEDS_SELECTED_NAME, NamespaceMappingStrategy, NamespaceOffloadingStatus,
        PodOffloadingStrategy, SELECTED_NAME_NEEDS_NAME, default_cluster_selector,
    };

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
    #[x_kube(validation = Rule::new("self == oldSelf").message(IMMUTABLE))]
    #[x_kube(validation = Rule::new(SELECTED_NAME_NEEDS_NAME.0).message(SELECTED_NAME_NEEDS_NAME.1))]
    #[x_kube(validation = Rule::new(NAME_NEEDS_SELECTED_NAME.0).message(NAME_NEEDS_SELECTED_NAME.1))]
    #[serde(rename_all = "camelCase")]
    pub struct NamespaceOffloadingSpec {
        /// How remote namespaces are named: `DefaultName` (`<namespace>-<local-cluster-id>`,
        /// conflict-free), `EnforceSameName` (`<namespace>`) or `SelectedName`
        /// (`spec.remoteNamespaceName`).
        #[serde(default)]
        pub namespace_mapping_strategy: NamespaceMappingStrategy,
        /// The remote namespaces' name with `SelectedName` (required then, refused otherwise):
        /// a DNS label of at most 63 characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(schema_with = "crate::model::api::offloading::dns_label_schema")]
        pub remote_namespace_name: Option<String>,
        /// Where the namespace's pods may run: `Local`, `Remote` or `LocalAndRemote`.
        #[serde(default)]
        pub pod_offloading_strategy: PodOffloadingStrategy,
        /// Which remote clusters to offload to, in NodeAffinity syntax against the labels of
        /// the virtual nodes standing for them. Default: every remote cluster.
        #[serde(default = "default_cluster_selector")]
        pub cluster_selector: NodeSelector,
    }
}

/// The CRD of NamespaceOffloading: both served versions, v1beta1 stored.
pub fn crd() -> Result<
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    String,
> {
    use kube::CustomResourceExt;
    kube::core::crd::merge_crds(
        vec![
            v1alpha1::NamespaceOffloading::crd(),
            NamespaceOffloading::crd(),
        ],
        "v1beta1",
    )
    .map_err(|e| format!("cannot merge the versions of the NamespaceOffloading CRD: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

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
        assert_eq!(spec.remote_name("web", "id"), "web-id");
    }

    #[test]
    fn crd_keeps_liqo_names_and_spec_immutability() {
        let crd = serde_json::to_value(crd().unwrap()).unwrap();
        assert_eq!(
            crd["metadata"]["name"],
            "namespaceoffloadings.offloading.liqo.io"
        );
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!(["nsof", "nso"])
        );
        let versions = crd["spec"]["versions"].as_array().unwrap();
        let names: Vec<_> = versions
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["v1beta1", "v1alpha1"]);
        // One storage version, and no conversion webhook: the schemas have the same fields.
        let stored: Vec<_> = versions.iter().filter(|v| v["storage"] == true).collect();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0]["name"], "v1beta1");
        assert!(crd["spec"]["conversion"].is_null());
        let props = |v: &Value| -> Vec<String> {
            let mut keys: Vec<String> =
                v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect();
            keys.sort();
            keys
        };
        assert_eq!(props(&versions[0]), props(&versions[1]));
        for version in versions {
            assert!(version["served"] == true);
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
            assert_eq!(spec["properties"]["remoteNamespaceName"]["maxLength"], 63);
            assert!(spec["properties"]["remoteNamespaceName"]["nullable"].is_null());
            let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"];
            assert!(status["properties"]["remoteNamespacesConditions"].is_object());
            assert!(status["properties"]["observedGeneration"].is_object());
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
        // The same schema, rules and all: nothing to convert, nothing one version lacks.
        let spec = |v: &Value| v["schema"]["openAPIV3Schema"]["properties"]["spec"].clone();
        assert_eq!(spec(&versions[0]), spec(&versions[1]));
        assert!(
            spec(&versions[0])["x-kubernetes-validations"]
                .to_string()
                .contains("has(self.remoteNamespaceName)")
        );
    }

    #[test]
    fn the_remote_name_follows_the_mapping_strategy() {
        let mut spec = NamespaceOffloadingSpec::label_default();
        assert_eq!(spec.remote_name("web", "id"), "web-id");
        spec.namespace_mapping_strategy = NamespaceMappingStrategy::EnforceSameName;
        assert_eq!(spec.remote_name("web", "id"), "web");
        spec.namespace_mapping_strategy = NamespaceMappingStrategy::SelectedName;
        spec.remote_namespace_name = Some("shop".into());
        assert_eq!(spec.remote_name("web", "id"), "shop");
        // A SelectedName that lost its name (refused at admission): the conflict-free one.
        spec.remote_namespace_name = None;
        assert_eq!(spec.remote_name("web", "id"), "web-id");
    }
}
