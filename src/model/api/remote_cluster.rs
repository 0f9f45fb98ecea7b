//! `RemoteCluster`: a peering with another cluster, whose credentials are a kubeconfig in a
//! Secret. The controller connects, reads the remote's published identity, and keeps a
//! virtual node standing for it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Condition};
use kube::{CustomResource, KubeSchema};
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
    /// How this cluster's endpoint addresses appear in the remote one, for networks that
    /// NAT between clusters: each address in `from` is written there as the same host in
    /// `to`. Empty (the default): addresses pass through unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub address_translation: Vec<AddressTranslation>,
}

/// One CIDR-to-CIDR rule of `addressTranslation`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = Rule::new(
    "isCIDR(self.from) && isCIDR(self.to) && cidr(self.from).ip().family() == cidr(self.to).ip().family() && cidr(self.from).prefixLength() == cidr(self.to).prefixLength()"
).message("from and to must be CIDRs of the same family and prefix length, like 10.244.0.0/16 and 10.250.0.0/16"))]
pub struct AddressTranslation {
    /// Addresses as this cluster knows them (its pod CIDR), like `10.244.0.0/16`.
    #[schemars(length(max = 43))]
    pub from: String,
    /// The same addresses as the remote cluster reaches them, like `10.250.0.0/16`.
    #[schemars(length(max = 43))]
    pub to: String,
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
pub(crate) fn virtual_node_name(remote_cluster_id: &str) -> String {
    format!("liqo-{remote_cluster_id}")
}

impl RemoteCluster {
    /// The cluster ID this peering stands for: reported by its status, or set in its spec.
    pub(crate) fn cluster_id(&self) -> Option<&str> {
        self.status
            .as_ref()
            .and_then(|s| s.cluster_id.as_deref())
            .or(self.spec.cluster_id.as_deref())
    }
}

/// A live RemoteCluster other than `name` that stands for `cluster_id`.
pub(crate) fn claimed_elsewhere<'a>(
    all: impl IntoIterator<Item = &'a RemoteCluster>,
    name: &str,
    cluster_id: &str,
) -> Option<&'a RemoteCluster> {
    use kube::ResourceExt;
    all.into_iter().find(|other| {
        other.name_any() != name
            && other.metadata.deletion_timestamp.is_none()
            && other.cluster_id() == Some(cluster_id)
    })
}

/// The older live RemoteCluster that already stands for `cluster_id`, if `me` duplicates
/// one. The first one created keeps the peering; the later one is the duplicate.
pub(crate) fn duplicate_of<'a>(
    all: impl IntoIterator<Item = &'a RemoteCluster>,
    me: &RemoteCluster,
    cluster_id: &str,
) -> Option<&'a RemoteCluster> {
    use kube::ResourceExt;
    let key = |rc: &RemoteCluster| (rc.creation_timestamp().map(|t| t.0), rc.name_any());
    let mine = key(me);
    let older = all.into_iter().filter(|other| key(other) < mine);
    claimed_elsewhere(older, &me.name_any(), cluster_id)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rc(name: &str, created: &str, id: Option<&str>) -> RemoteCluster {
        serde_json::from_value(json!({
            "apiVersion": "offloading.liqo.io/v1alpha1", "kind": "RemoteCluster",
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"kubeconfigSecret": {"namespace": "liqo", "name": format!("remote-{name}-kubeconfig")}},
            "status": {"clusterID": id},
        }))
        .unwrap()
    }

    #[test]
    fn the_later_of_two_peerings_for_one_cluster_is_the_duplicate() {
        let first = rc("eu", "2026-01-01T00:00:00Z", Some("c2"));
        let again = rc("eu-again", "2026-01-02T00:00:00Z", Some("c2"));
        let other = rc("us", "2025-01-01T00:00:00Z", Some("c3"));
        let all = vec![first.clone(), again.clone(), other];
        assert_eq!(
            duplicate_of(&all, &again, "c2").map(|r| r.metadata.name.clone()),
            Some(Some("eu".into()))
        );
        assert!(duplicate_of(&all, &first, "c2").is_none());
        // Same second: the name decides, so exactly one of the two is the duplicate.
        let twin = rc("a-twin", "2026-01-01T00:00:00Z", Some("c2"));
        let all = vec![first.clone(), twin.clone()];
        assert!(duplicate_of(&all, &first, "c2").is_some());
        assert!(duplicate_of(&all, &twin, "c2").is_none());
        // One being deleted no longer counts.
        let mut going = first.clone();
        going.metadata.deletion_timestamp = going.metadata.creation_timestamp.clone();
        assert!(duplicate_of(&[going, again.clone()], &again, "c2").is_none());
    }
}
