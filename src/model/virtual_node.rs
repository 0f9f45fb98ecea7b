//! The Node that stands for a remote cluster: `liqo-<remote-cluster-id>`, labelled with
//! the remote's cluster labels (what `clusterSelector` matches), tainted so ordinary pods
//! stay off, with allocatable resources and a Ready condition, plus the node Lease that
//! tells Kubernetes it is alive.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{
            DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec,
            NodeStatus, Taint,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{MicroTime, Time},
    },
};
use kube::api::ObjectMeta;

use crate::model::{
    api::remote_cluster::virtual_node_name,
    markers::{NOT_ALLOWED_TAINT, REMOTE_CLUSTER_ID_LABEL, TYPE_LABEL, VIRTUAL_NODE},
};

/// Where the API server reaches the virtual nodes' kubelet API: written into each
/// virtual node's status (`addresses`, `daemonEndpoints.kubeletEndpoint.Port`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KubeletEndpoint {
    pub(crate) address: std::net::IpAddr,
    pub(crate) port: u16,
}

/// The node annotation metrics-server (0.7+) scrapes instead of `/metrics/resource`.
pub(crate) const RESOURCE_METRICS_PATH_ANNOTATION: &str = "metrics.k8s.io/resource-metrics-path";

/// The path of `node`'s resource metrics on the manager's kubelet API: one listener serves
/// every virtual node, so the path says which one is meant (kwok's form for its nodes).
pub(crate) fn resource_metrics_path(node: &str) -> String {
    format!("/metrics/nodes/{node}/metrics/resource")
}

/// Node leases live here, as the kubelet's do.
pub(crate) const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a lease holds without renewal; renewed at a quarter of this.
pub(crate) const LEASE_SECONDS: i32 = 40;

/// The labels of the virtual node: the remote's cluster labels, then ours (which win, so
/// a remote cannot pretend to be a local node).
pub(crate) fn labels(
    remote_cluster_id: &str,
    cluster_labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = cluster_labels.clone();
    labels.insert(TYPE_LABEL.into(), VIRTUAL_NODE.into());
    labels.insert(REMOTE_CLUSTER_ID_LABEL.into(), remote_cluster_id.into());
    labels.insert(
        "kubernetes.io/hostname".into(),
        virtual_node_name(remote_cluster_id),
    );
    labels.insert("kubernetes.io/role".into(), "agent".into());
    labels
}

/// The whole Node, for server-side apply (status is applied separately). With `kubelet`,
/// the node advertises where the API server reaches its kubelet API (logs, exec).
pub(crate) fn node(
    remote_cluster_id: &str,
    cluster_labels: &BTreeMap<String, String>,
    allocatable: &BTreeMap<String, Quantity>,
    reachable: bool,
    kubelet: Option<&KubeletEndpoint>,
    now: &Time,
) -> Node {
    let (status, reason, message) = if reachable {
        (
            "True",
            "RemoteClusterReachable",
            "the remote cluster's API server answers",
        )
    } else {
        (
            "False",
            "RemoteClusterUnreachable",
            "the remote cluster's API server does not answer",
        )
    };
    Node {
        metadata: ObjectMeta {
            name: Some(virtual_node_name(remote_cluster_id)),
            labels: Some(labels(remote_cluster_id, cluster_labels)),
            // Where metrics-server finds this node's usage on the kubelet API.
            annotations: kubelet.map(|_| {
                BTreeMap::from([(
                    RESOURCE_METRICS_PATH_ANNOTATION.to_owned(),
                    resource_metrics_path(&virtual_node_name(remote_cluster_id)),
                )])
            }),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: Some(vec![Taint {
                key: NOT_ALLOWED_TAINT.into(),
                value: Some("true".into()),
                effect: "NoExecute".into(),
                time_added: None,
            }]),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            allocatable: Some(allocatable.clone()),
            capacity: Some(allocatable.clone()),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(now.clone()),
            }]),
            addresses: kubelet.map(|k| {
                vec![
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: k.address.to_string(),
                    },
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: virtual_node_name(remote_cluster_id),
                    },
                ]
            }),
            daemon_endpoints: kubelet.map(|k| NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(k.port),
                }),
            }),
            ..NodeStatus::default()
        }),
    }
}

/// The node lifecycle controller's taints for a node that is not Ready. Not kept: the
/// virtual node's readiness says whether the remote API answers, not whether the pods run
/// (their twins run on), and an unreachable remote must not get them evicted after their
/// 300 s toleration (the pods stay, docs/guide.md).
const LIFECYCLE_TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// Adds to `desired` the taints that others put on the existing node (a drain's
/// `unschedulable`, an admin's). Taints are one atomic list under server-side apply, so a
/// forced apply of ours alone would remove them.
pub(crate) fn keep_taints_of_others(desired: &mut Node, existing: Option<&Node>) {
    let others = existing
        .and_then(|n| n.spec.as_ref()?.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.key != NOT_ALLOWED_TAINT && !LIFECYCLE_TAINTS.contains(&t.key.as_str()));
    let spec = desired.spec.get_or_insert_with(NodeSpec::default);
    spec.taints
        .get_or_insert_with(Vec::new)
        .extend(others.cloned());
}

/// Whether two nodes carry the same taints, in any order.
pub(crate) fn same_taints(a: &Node, b: &Node) -> bool {
    let taints = |n: &Node| {
        let mut t: Vec<String> = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{}={}:{}",
                    t.key,
                    t.value.as_deref().unwrap_or(""),
                    t.effect
                )
            })
            .collect();
        t.sort_unstable();
        t
    };
    taints(a) == taints(b)
}

/// The node Lease, renewed while the remote is reachable.
pub(crate) fn lease(remote_cluster_id: &str, holder: &str, now: &MicroTime) -> Lease {
    let name = virtual_node_name(remote_cluster_id);
    Lease {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(LEASE_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(now.clone()),
            ..LeaseSpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::selector;

    #[test]
    fn virtual_node_is_selectable_by_cluster_labels_and_tainted() {
        let cluster_labels = BTreeMap::from([
            ("region".to_owned(), "eu".to_owned()),
            // A remote cannot claim to be a local node.
            (TYPE_LABEL.to_owned(), "local".to_owned()),
        ]);
        let allocatable = BTreeMap::from([("cpu".to_owned(), Quantity("8".into()))]);
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let kubelet = KubeletEndpoint {
            address: [10, 1, 2, 3].into(),
            port: 10250,
        };
        let n = node(
            "c2",
            &cluster_labels,
            &allocatable,
            true,
            Some(&kubelet),
            &now,
        );
        let status = n.status.clone().unwrap();
        assert_eq!(status.addresses.unwrap()[0].address, "10.1.2.3");
        assert_eq!(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
        let labels = n.metadata.labels.clone().unwrap();
        assert_eq!(n.metadata.name.as_deref(), Some("liqo-c2"));
        assert_eq!(
            n.metadata.annotations.as_ref().unwrap()[RESOURCE_METRICS_PATH_ANNOTATION],
            "/metrics/nodes/liqo-c2/metrics/resource"
        );
        assert_eq!(labels[TYPE_LABEL], VIRTUAL_NODE);
        assert_eq!(labels[REMOTE_CLUSTER_ID_LABEL], "c2");
        assert_eq!(labels["region"], "eu");
        let taint = &n.spec.unwrap().taints.unwrap()[0];
        assert_eq!(
            (taint.key.as_str(), taint.effect.as_str()),
            (NOT_ALLOWED_TAINT, "NoExecute")
        );
        let selected: k8s_openapi::api::core::v1::NodeSelector =
            serde_json::from_value(serde_json::json!(
            {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "region", "operator": "In", "values": ["eu"]},
                {"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]}]}))
            .unwrap();
        assert!(selector::matches(&selected, "liqo-c2", &labels));
        let down = node("c2", &cluster_labels, &allocatable, false, None, &now);
        assert_eq!(down.status.unwrap().conditions.unwrap()[0].status, "False");
    }
}
