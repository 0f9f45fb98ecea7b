//! Pods that break their namespace's placement: created before the offloading began, or
//! past the webhook some other way (bypassed, failure policy changed by hand), or left
//! pending with remote constraints when the offloading ends. Pure: the caller gives the
//! pods and node labels from its caches and carries out the remedies.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, Pod, Toleration};

use crate::{
    admission::pod::{node_violation, terms_conform},
    api::{NOT_ALLOWED_TAINT, NamespaceOffloadingSpec, PodOffloadingStrategy},
};

/// How a pod breaks the placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Breach {
    /// Bound to a node the strategy forbids.
    ForbiddenNode { node: String, why: &'static str },
    /// Not bound yet, and nothing keeps it off the nodes the strategy forbids (it lacks the
    /// constraints the webhook imposes).
    Unconstrained,
}

impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Breach::ForbiddenNode { node, why } => write!(f, "node {node:?} {why}"),
            Breach::Unconstrained => f.write_str(
                "it lacks the node affinity the offloading imposes, so the scheduler may place it on a forbidden node",
            ),
        }
    }
}

/// What is done about a breach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remedy {
    /// Not started and owned by a controller: evicted (PodDisruptionBudgets apply), so its
    /// owner creates it again and the webhook places it.
    Evict,
    /// Anything else (a bare pod, one already running): reported, never touched.
    Report,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub name: String,
    pub uid: String,
    pub breach: Breach,
    pub remedy: Remedy,
}

/// The pods of one namespace that break `spec`. While the offloading is `terminating`, a
/// pod not bound yet must not go to a virtual node any more (bound pods were placed before
/// and are left to the termination).
pub fn audit<'a>(
    spec: &NamespaceOffloadingSpec,
    terminating: bool,
    pods: impl IntoIterator<Item = &'a Pod>,
    virtual_node_labels: impl Fn(&str) -> Option<BTreeMap<String, String>>,
) -> Vec<Finding> {
    let local = NamespaceOffloadingSpec::local_only();
    let effective = if terminating { &local } else { spec };
    pods.into_iter()
        .filter(|pod| !finished(pod) && pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let pod_spec = pod.spec.as_ref()?;
            let breach = match pod_spec.node_name.as_deref().filter(|n| !n.is_empty()) {
                Some(_) if terminating => None,
                // Placed by the webhook: the scheduler honoured the constraints, so the node
                // needs no second look (a virtual node created a moment ago may not be in
                // the cache yet, and would pass for a local one).
                Some(_) if terms_conform(required_terms(pod), effective) => None,
                Some(node) => {
                    // Nodes missing from the virtual-node cache are local nodes.
                    let labels = virtual_node_labels(node).unwrap_or_default();
                    node_violation(effective, node, &labels).map(|why| Breach::ForbiddenNode {
                        node: node.to_owned(),
                        why,
                    })
                }
                None => {
                    let own = required_terms(pod);
                    let may_go_astray = effective.pod_offloading_strategy
                        == PodOffloadingStrategy::Remote
                        || tolerates_virtual_nodes(pod_spec.tolerations.as_deref());
                    (may_go_astray && !terms_conform(own, effective))
                        .then_some(Breach::Unconstrained)
                }
            }?;
            Some(Finding {
                name: pod.metadata.name.clone().unwrap_or_default(),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                breach,
                remedy: if not_started(pod) && controlled(pod) {
                    Remedy::Evict
                } else {
                    Remedy::Report
                },
            })
        })
        .collect()
}

fn required_terms(pod: &Pod) -> &[NodeSelectorTerm] {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default()
}

/// Whether a pod tolerates the taint that keeps ordinary pods off virtual nodes (without
/// it, no affinity is needed to keep the pod local).
fn tolerates_virtual_nodes(tolerations: Option<&[Toleration]>) -> bool {
    tolerations.unwrap_or_default().iter().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == "NoExecute");
        let exists = t.operator.as_deref() == Some("Exists");
        let key = t.key.as_deref().unwrap_or_default();
        effect_ok
            && ((key.is_empty() && exists)
                || (key == NOT_ALLOWED_TAINT && (exists || t.value.as_deref() == Some("true"))))
    })
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// No container of it has run: recreating it loses nothing.
fn not_started(pod: &Pod) -> bool {
    phase(pod) == "Pending"
}

fn controlled(pod: &Pod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn spec(strategy: &str, selector: Option<Value>) -> NamespaceOffloadingSpec {
        let mut v = json!({"podOffloadingStrategy": strategy});
        if let Some(s) = selector {
            v["clusterSelector"] = s;
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, spec: Value, phase: &str, owned: bool) -> Pod {
        let owners = if owned {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "rs", "controller": true}])
        } else {
            json!([])
        };
        let mut spec = spec;
        spec["containers"] = json!([{"name": "app", "image": "app"}]);
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "ownerReferences": owners},
            "spec": spec,
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn virtual_nodes(node: &str) -> Option<BTreeMap<String, String>> {
        match node {
            "liqo-eu" => Some(
                [
                    ("liqo.io/type".to_owned(), "virtual-node".to_owned()),
                    ("region".to_owned(), "eu".to_owned()),
                ]
                .into(),
            ),
            "liqo-us" => Some(
                [
                    ("liqo.io/type".to_owned(), "virtual-node".to_owned()),
                    ("region".to_owned(), "us".to_owned()),
                ]
                .into(),
            ),
            _ => None,
        }
    }

    fn remote_terms() -> Value {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]}]}}},
            "tolerations": [{"key": NOT_ALLOWED_TAINT, "operator": "Exists", "effect": "NoExecute"}]})
    }

    #[test]
    fn remote_pods_on_local_nodes_or_without_constraints_break_it() {
        let remote = spec("Remote", None);
        let pods = [
            pod("placed", json!({"nodeName": "liqo-eu"}), "Pending", true),
            pod("local", json!({"nodeName": "node-1"}), "Pending", true),
            pod(
                "running-local",
                json!({"nodeName": "node-1"}),
                "Running",
                true,
            ),
            pod("bare", json!({}), "Pending", false),
            pod("constrained", remote_terms(), "Pending", true),
            pod("unconstrained", json!({}), "Pending", true),
        ];
        let findings = audit(&remote, false, &pods, virtual_nodes);
        let got: Vec<(&str, Remedy)> = findings
            .iter()
            .map(|f| (f.name.as_str(), f.remedy))
            .collect();
        assert_eq!(
            got,
            [
                ("local", Remedy::Evict),
                ("running-local", Remedy::Report),
                ("bare", Remedy::Report),
                ("unconstrained", Remedy::Evict),
            ]
        );
        assert!(
            findings[0].breach.to_string().contains("is a local node"),
            "{}",
            findings[0].breach
        );
    }

    #[test]
    fn a_pod_the_webhook_placed_is_trusted_even_on_a_node_the_cache_does_not_know_yet() {
        let remote = spec("Remote", None);
        let mut placed = remote_terms();
        placed["nodeName"] = json!("liqo-new");
        let pods = [pod("placed", placed, "Pending", true)];
        assert!(audit(&remote, false, &pods, virtual_nodes).is_empty());
    }

    #[test]
    fn local_and_remote_only_cares_about_pods_that_may_reach_a_virtual_node() {
        let eu = json!({"nodeSelectorTerms": [{"matchExpressions": [{"key": "region", "operator": "In", "values": ["eu"]}]}]});
        let both = spec("LocalAndRemote", Some(eu));
        let pods = [
            // Created before the offloading, no toleration: it can only run locally.
            pod("old", json!({}), "Pending", true),
            pod("on-local", json!({"nodeName": "node-1"}), "Running", false),
            pod(
                "on-unselected",
                json!({"nodeName": "liqo-us"}),
                "Pending",
                true,
            ),
            // Tolerates everything and lacks the affinity: could land in "us".
            pod(
                "tolerates-all",
                json!({"tolerations": [{"operator": "Exists"}]}),
                "Pending",
                false,
            ),
        ];
        let findings = audit(&both, false, &pods, virtual_nodes);
        let names: Vec<&str> = findings.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["on-unselected", "tolerates-all"]);
        assert!(findings[0].breach.to_string().contains("does not select"));
    }

    #[test]
    fn local_pods_on_virtual_nodes_break_it() {
        let local = spec("Local", None);
        let pods = [
            pod("remote", json!({"nodeName": "liqo-eu"}), "Running", true),
            pod("plain", json!({}), "Pending", true),
        ];
        let findings = audit(&local, false, &pods, virtual_nodes);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].remedy, Remedy::Report);
    }

    #[test]
    fn once_terminating_pending_pods_with_remote_constraints_are_sent_back() {
        let remote = spec("Remote", None);
        let pods = [
            pod("waiting", remote_terms(), "Pending", true),
            pod("bare-waiting", remote_terms(), "Pending", false),
            // Bound before the end: left to the termination.
            pod("placed", json!({"nodeName": "liqo-eu"}), "Pending", true),
            pod("no-toleration", json!({}), "Pending", true),
        ];
        let findings = audit(&remote, true, &pods, virtual_nodes);
        let got: Vec<(&str, Remedy)> = findings
            .iter()
            .map(|f| (f.name.as_str(), f.remedy))
            .collect();
        assert_eq!(
            got,
            [("waiting", Remedy::Evict), ("bare-waiting", Remedy::Report)]
        );
    }

    #[test]
    fn finished_and_deleted_pods_are_left_alone() {
        let remote = spec("Remote", None);
        let mut gone = pod("gone", json!({"nodeName": "node-1"}), "Pending", true);
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let pods = [
            gone,
            pod("done", json!({"nodeName": "node-1"}), "Succeeded", true),
        ];
        assert!(audit(&remote, false, &pods, virtual_nodes).is_empty());
    }
}
