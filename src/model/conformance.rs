//! Pods that break their namespace's placement: created before the offloading began, or
//! past the webhook some other way (bypassed, failure policy changed by hand), or left
//! pending with remote constraints when the offloading ends. Pure: the caller gives the
//! pods and node labels from its caches and carries out the remedies.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{NodeSelectorTerm, Pod, Toleration},
    apimachinery::pkg::apis::meta::v1::Time,
};

use crate::model::{
    admission::pod::{node_violation, opted_in, opts_in, terms_conform},
    api::{NamespaceOffloadingSpec, PodOffloadingStrategy},
    markers::NOT_ALLOWED_TAINT,
};

/// How a pod breaks the placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Breach {
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
pub(crate) enum Remedy {
    /// Not started, and owned by a controller that creates a missing pod again (ReplicaSet,
    /// StatefulSet, ReplicationController): evicted, so its owner creates it again and the
    /// webhook places it.
    Evict,
    /// Anything else (a bare pod, one that ran something, a Job's pod whose loss would count
    /// as a failure): reported, never touched.
    Report,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) name: String,
    pub(crate) uid: String,
    /// The controller that would recreate it, when evicted.
    pub(crate) owner_uid: Option<String>,
    pub(crate) breach: Breach,
    pub(crate) remedy: Remedy,
}

/// The owners that replace a pod that goes away, as the same workload: evicting loses
/// nothing. (A Job counts a lost pod as a failure; a DaemonSet's pod is pinned to its node.)
const RECREATING_OWNERS: [&str; 3] = ["ReplicaSet", "StatefulSet", "ReplicationController"];

/// The pods of one namespace that break `spec`, sorted by name. Once the offloading is
/// ending (`ending_since`, its deletion time), a pod not bound yet must not go to a
/// virtual node any more, nor may one created since then be there; pods bound before are
/// left to the termination. A pod naming the offloading `runtime_class` is held to the
/// placement it opted in to (the selected clusters only).
pub(crate) fn audit<'a>(
    spec: &NamespaceOffloadingSpec,
    runtime_class: &str,
    ending_since: Option<&Time>,
    pods: impl IntoIterator<Item = &'a Pod>,
    virtual_node_labels: impl Fn(&str) -> Option<BTreeMap<String, String>>,
) -> Vec<Finding> {
    let local = NamespaceOffloadingSpec::local_only();
    let effective = if ending_since.is_some() { &local } else { spec };
    let mut findings: Vec<Finding> = pods
        .into_iter()
        .filter(|pod| !finished(pod) && pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let pod_spec = pod.spec.as_ref()?;
            let opted = (ending_since.is_none()
                && opts_in(pod_spec.runtime_class_name.as_deref(), runtime_class))
            .then(|| opted_in(spec));
            let effective = opted.as_ref().unwrap_or(effective);
            let own = required_terms(pod);
            let breach = match pod_spec.node_name.as_deref().filter(|n| !n.is_empty()) {
                Some(node) if ending_since.is_some() => {
                    let created_since = match (&pod.metadata.creation_timestamp, ending_since) {
                        (Some(created), Some(since)) => created.0 >= since.0,
                        _ => false,
                    };
                    let on_virtual = virtual_node_labels(node).is_some();
                    (on_virtual && created_since).then(|| Breach::ForbiddenNode {
                        node: node.to_owned(),
                        why: "is a virtual node, and the pod was sent there after the offloading began to end",
                    })
                }
                // Placed by the webhook: the scheduler honoured the constraints, so the node
                // needs no second look (a virtual node created a moment ago may not be in
                // the cache yet, and would pass for a local one).
                Some(_) if terms_conform(own, effective) => None,
                Some(node) => {
                    // Nodes missing from the virtual-node cache are local nodes.
                    let labels = virtual_node_labels(node).unwrap_or_default();
                    node_violation(effective, node, &labels).map(|why| Breach::ForbiddenNode {
                        node: node.to_owned(),
                        why,
                    })
                }
                None => {
                    let may_go_astray = effective.pod_offloading_strategy
                        == PodOffloadingStrategy::Remote
                        || tolerates_virtual_nodes(pod_spec.tolerations.as_deref());
                    (may_go_astray && !terms_conform(own, effective))
                        .then_some(Breach::Unconstrained)
                }
            }?;
            let owner = recreating_owner(pod);
            Some(Finding {
                name: pod.metadata.name.clone().unwrap_or_default(),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                owner_uid: owner.clone(),
                breach,
                remedy: if not_started(pod) && owner.is_some() {
                    Remedy::Evict
                } else {
                    Remedy::Report
                },
            })
        })
        .collect();
    findings.sort_by(|a, b| a.name.cmp(&b.name));
    findings
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

/// No container of it (init containers included) has run: recreating it loses nothing.
/// A pod stays `Pending` while its init containers run, so the phase alone is not enough.
fn not_started(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let containers = status.into_iter().flat_map(|s| {
        s.init_container_statuses
            .iter()
            .flatten()
            .chain(s.container_statuses.iter().flatten())
    });
    phase(pod) == "Pending"
        && containers.into_iter().all(|c| {
            c.restart_count == 0
                && c.state
                    .as_ref()
                    .is_none_or(|s| s.running.is_none() && s.terminated.is_none())
        })
}

/// The uid of the controller that would create the pod again, if it is one that does.
fn recreating_owner(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .filter(|o| RECREATING_OWNERS.contains(&o.kind.as_str()))
        .map(|o| o.uid.clone())
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
        owned_by(name, spec, phase, if owned { "ReplicaSet" } else { "" })
    }

    fn owned_by(name: &str, spec: Value, phase: &str, kind: &str) -> Pod {
        let owners = if kind.is_empty() {
            json!([])
        } else {
            json!([{"apiVersion": "apps/v1", "kind": kind, "name": "owner", "uid": "owner-uid", "controller": true}])
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
        let findings = audit(&remote, "liqo", None, &pods, virtual_nodes);
        let got = remedies(&findings);
        assert_eq!(
            got,
            [
                ("bare", Remedy::Report),
                ("local", Remedy::Evict),
                ("running-local", Remedy::Report),
                ("unconstrained", Remedy::Evict),
            ]
        );
        assert!(
            findings[1].breach.to_string().contains("is a local node"),
            "{}",
            findings[1].breach
        );
        assert_eq!(findings[1].owner_uid.as_deref(), Some("owner-uid"));
    }

    #[test]
    fn a_pod_the_webhook_placed_is_trusted_even_on_a_node_the_cache_does_not_know_yet() {
        let remote = spec("Remote", None);
        let mut placed = remote_terms();
        placed["nodeName"] = json!("liqo-new");
        let pods = [pod("placed", placed, "Pending", true)];
        assert!(audit(&remote, "liqo", None, &pods, virtual_nodes).is_empty());
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
        let findings = audit(&both, "liqo", None, &pods, virtual_nodes);
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
        let findings = audit(&local, "liqo", None, &pods, virtual_nodes);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].remedy, Remedy::Report);
    }

    #[test]
    fn a_pod_opted_in_by_runtime_class_is_held_to_the_remote_placement() {
        let local = spec("Local", None);
        let opted = |name: &str, extra: Value| {
            let mut spec = json!({"runtimeClassName": "liqo"});
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            pod(name, spec, "Running", true)
        };
        let pods = [
            // Where it asked to be: fine in a Local namespace.
            opted("on-virtual", json!({"nodeName": "liqo-eu"})),
            // On a local node: breaks what it opted in to.
            opted("on-local", json!({"nodeName": "local-1"})),
        ];
        let findings = audit(&local, "liqo", None, &pods, virtual_nodes);
        assert_eq!(remedies(&findings), vec![("on-local", Remedy::Report)]);
        // Without the opt-in configured, the class means nothing.
        let findings = audit(&local, "", None, &pods, virtual_nodes);
        assert_eq!(remedies(&findings), vec![("on-virtual", Remedy::Report)]);
    }

    fn remedies(findings: &[Finding]) -> Vec<(&str, Remedy)> {
        findings
            .iter()
            .map(|f| (f.name.as_str(), f.remedy))
            .collect()
    }

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn once_ending_no_pod_goes_remote_and_pods_bound_before_are_left_alone() {
        let remote = spec("Remote", None);
        let mut placed_before = pod(
            "placed-before",
            json!({"nodeName": "liqo-eu"}),
            "Pending",
            true,
        );
        placed_before.metadata.creation_timestamp = Some(at(100));
        // Admitted from a cache that had not seen the deletion yet, then bound remotely.
        let mut sent_after = pod(
            "sent-after",
            json!({"nodeName": "liqo-eu"}),
            "Pending",
            true,
        );
        sent_after.metadata.creation_timestamp = Some(at(200));
        let pods = [
            pod("waiting", remote_terms(), "Pending", true),
            pod("bare-waiting", remote_terms(), "Pending", false),
            placed_before,
            sent_after,
            pod("no-toleration", json!({}), "Pending", true),
        ];
        let findings = audit(&remote, "liqo", Some(&at(150)), &pods, virtual_nodes);
        let got = remedies(&findings);
        assert_eq!(
            got,
            [
                ("bare-waiting", Remedy::Report),
                ("sent-after", Remedy::Evict),
                ("waiting", Remedy::Evict)
            ]
        );
    }

    #[test]
    fn only_pods_that_never_ran_and_whose_owner_recreates_them_are_evicted() {
        let remote = spec("Remote", None);
        let mut init_running = pod(
            "init-running",
            json!({"nodeName": "node-1"}),
            "Pending",
            true,
        );
        init_running.status = Some(
            serde_json::from_value(json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "migrate", "image": "m", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}))
            .unwrap(),
        );
        let pods = [
            owned_by("job-pod", json!({"nodeName": "node-1"}), "Pending", "Job"),
            owned_by(
                "sts-pod",
                json!({"nodeName": "node-1"}),
                "Pending",
                "StatefulSet",
            ),
            init_running,
        ];
        let findings = audit(&remote, "liqo", None, &pods, virtual_nodes);
        let got = remedies(&findings);
        assert_eq!(
            got,
            [
                ("init-running", Remedy::Report),
                ("job-pod", Remedy::Report),
                ("sts-pod", Remedy::Evict)
            ]
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
        assert!(audit(&remote, "liqo", None, &pods, virtual_nodes).is_empty());
    }
}
