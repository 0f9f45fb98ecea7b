//! `RemoteCluster`: a peering with another cluster, whose credentials are a kubeconfig in a
//! Secret. The controller connects, reads the remote's published identity, and keeps a
//! virtual node standing for it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Condition};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A peered remote cluster (cluster-scoped).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "offloading.liqo.io",
    version = "v1alpha1",
    kind = "RemoteCluster",
    status = "RemoteClusterStatus",
    printcolumn = r#"{"name":"ClusterID","type":"string","jsonPath":".status.clusterID"}"#,
    printcolumn = r#"{"name":"Labels","type":"string","jsonPath":".status.clusterLabels"}"#,
    printcolumn = r#"{"name":"Connected","type":"string","jsonPath":".status.conditions[?(@.type==\"Connected\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RemoteClusterSpec {
    /// The Secret holding a kubeconfig for the remote cluster.
    pub kubeconfig_secret: SecretKeyRef,
    /// The remote's cluster ID, for a remote that publishes no identity.
    #[serde(default, rename = "clusterID", skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The remote's cluster labels, for a remote that publishes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_labels: Option<BTreeMap<String, String>>,
    /// Where the remote publishes its identity ConfigMap (default `liqo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_namespace: Option<String>,
    /// Resources the virtual node offers; default: the total of the remote's Ready nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<BTreeMap<String, Quantity>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    pub namespace: String,
    pub name: String,
    /// The key holding the kubeconfig (default `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteClusterStatus {
    /// The ID the remote cluster is known by.
    #[serde(default, rename = "clusterID", skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The labels selectors match against (on the virtual node too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_labels: BTreeMap<String, String>,
    /// The virtual node standing for this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_node: Option<String>,
    /// `Connected`: whether the remote API server answers with these credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The virtual node standing for a remote cluster.
pub fn virtual_node_name(remote_cluster_id: &str) -> String {
    format!("liqo-{remote_cluster_id}")
}
