//! Which clusters an offloading concerns: every cluster a virtual node stands for, and
//! whether the selector picks it; at termination, where something of ours may exist.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::{ResourceExt, runtime::reflector::Store};

use crate::model::{
    api::{NamespaceOffloading, is_virtual_node},
    markers::REMOTE_CLUSTER_ID_LABEL,
    reason::Reason,
    selector, status,
};

/// Every known remote cluster (from the virtual nodes), and whether the selector picks
/// it. A cluster is selected when any of its virtual nodes matches.
pub(crate) fn clusters(
    nso: &NamespaceOffloading,
    nodes: &Store<Node>,
    selector_valid: bool,
) -> BTreeMap<String, bool> {
    let mut out: BTreeMap<String, bool> = BTreeMap::new();
    for node in nodes.state() {
        let labels = node.labels();
        if !is_virtual_node(labels) {
            continue;
        }
        let Some(id) = labels.get(REMOTE_CLUSTER_ID_LABEL) else {
            continue;
        };
        let matched = selector_valid
            && selector::matches(&nso.spec.cluster_selector, &node.name_any(), labels);
        *out.entry(id.clone()).or_default() |= matched;
    }
    out
}

/// Whether this offloading's status says a namespace of ours may exist in that cluster: it
/// got as far as a `Ready` condition there (created, or failing/terminating after trying).
/// A RemoteCluster that never connected (only `OffloadingRequired`) holds nothing of ours
/// and must not keep terminations waiting.
pub(crate) fn may_hold_ours(nso: &NamespaceOffloading, cluster_id: &str) -> bool {
    nso.status
        .as_ref()
        .and_then(|s| s.remote_namespaces_conditions.get(cluster_id))
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.type_ == status::READY
                    && c.reason.as_deref() != Some(Reason::NoCredentials.as_str())
            })
        })
}

/// Whether the status last said our namespace exists in that cluster (`Ready=True`).
pub(crate) fn was_ready(nso: &NamespaceOffloading, cluster_id: &str) -> bool {
    nso.status
        .as_ref()
        .and_then(|s| s.remote_namespaces_conditions.get(cluster_id))
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == status::READY && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn with_conditions(conditions: serde_json::Value) -> NamespaceOffloading {
        serde_json::from_value(json!({
            "apiVersion": "offloading.liqo.io/v1alpha1", "kind": "NamespaceOffloading",
            "metadata": {"name": "offloading", "namespace": "web"},
            "spec": {},
            "status": {"remoteNamespacesConditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn termination_waits_only_where_something_of_ours_may_exist() {
        let nso = with_conditions(json!({
            "created": [{"type": "Ready", "status": "True", "reason": "NamespaceCreated"}],
            "down": [{"type": "Ready", "status": "False", "reason": "Unreachable"}],
            "never-connected": [{"type": "OffloadingRequired", "status": "True"}],
            "not-selected": [{"type": "OffloadingRequired", "status": "False"}],
            "no-credentials": [{"type": "Ready", "status": "False", "reason": "NoCredentials"}],
        }));
        assert!(may_hold_ours(&nso, "created"));
        assert!(may_hold_ours(&nso, "down"));
        assert!(!may_hold_ours(&nso, "never-connected"));
        assert!(!may_hold_ours(&nso, "not-selected"));
        assert!(!may_hold_ours(&nso, "no-credentials"));
        assert!(!may_hold_ours(&nso, "unknown"));
        assert!(was_ready(&nso, "created"));
        assert!(!was_ready(&nso, "down"));
        assert!(!was_ready(&nso, "not-selected"));
    }
}
