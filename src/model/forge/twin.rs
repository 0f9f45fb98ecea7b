//! Pure translation between a local pod and its twin in a remote cluster: the twin to
//! create (the pod's spec without what only made sense here), whether a remote pod is our
//! twin, and the local status the twin's stands for.

use k8s_openapi::api::core::v1::{NodeSelectorTerm, Pod, PodSpec, PodStatus};
use kube::api::ObjectMeta;

use crate::model::markers::{ORIGIN_NAMESPACE_ANNOTATION, ORIGIN_POD_UID_ANNOTATION};
use crate::model::{
    admission::pod::{imposed_terms, virtual_node_toleration},
    api::NamespaceOffloadingSpec,
    markers::{ORIGIN_CLUSTER_LABEL, TYPE_LABEL},
};

/// Why a pod cannot run remotely as it is.
pub(crate) fn unsupported(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    for volume in spec.volumes.iter().flatten() {
        let kind = if volume.persistent_volume_claim.is_some() {
            "a PersistentVolumeClaim"
        } else if volume.host_path.is_some() {
            "a hostPath"
        } else if volume.ephemeral.is_some() {
            "a generic ephemeral volume"
        } else {
            continue;
        };
        return Some(format!(
            "volume {:?} is {kind}, which lives in this cluster: the pod cannot run in a remote cluster; keep it local (podOffloadingStrategy Local, or a nodeSelector on a local node)",
            volume.name
        ));
    }
    if spec.host_network == Some(true) {
        return Some(
            "the pod uses hostNetwork, which has no meaning on a remote cluster's nodes".into(),
        );
    }
    None
}

/// The twin of `pod` to create in `remote_namespace`: same name, labels and annotations,
/// our markers, and the spec without its node, the placement our webhook imposed, and the
/// token of a local service account.
pub(crate) fn twin(
    pod: &Pod,
    offloading: &NamespaceOffloadingSpec,
    local_cluster_id: &str,
    remote_namespace: &str,
) -> Pod {
    let mut labels = pod.metadata.labels.clone().unwrap_or_default();
    labels.insert(ORIGIN_CLUSTER_LABEL.into(), local_cluster_id.into());
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    annotations.insert(
        ORIGIN_NAMESPACE_ANNOTATION.into(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    annotations.insert(
        ORIGIN_POD_UID_ANNOTATION.into(),
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name.clone(),
            namespace: Some(remote_namespace.into()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: pod.spec.as_ref().map(|s| twin_spec(s, offloading)),
        status: None,
    }
}

fn twin_spec(local: &PodSpec, offloading: &NamespaceOffloadingSpec) -> PodSpec {
    let mut spec = local.clone();
    // The remote scheduler places it on the remote cluster's own nodes.
    spec.node_name = None;
    let ours = virtual_node_toleration();
    if let Some(tolerations) = spec.tolerations.as_mut() {
        tolerations.retain(|t| *t != ours);
    }
    if spec.tolerations.as_ref().is_some_and(Vec::is_empty) {
        spec.tolerations = None;
    }
    let imposed: Vec<_> = imposed_terms(offloading)
        .into_iter()
        .flat_map(|t| t.match_expressions.unwrap_or_default())
        .collect();
    if let Some(node) = spec
        .affinity
        .as_mut()
        .and_then(|a| a.node_affinity.as_mut())
    {
        if let Some(required) = node
            .required_during_scheduling_ignored_during_execution
            .as_mut()
        {
            let terms: Vec<NodeSelectorTerm> = required
                .node_selector_terms
                .iter()
                .map(|t| NodeSelectorTerm {
                    match_expressions: t.match_expressions.as_ref().map(|e| {
                        e.iter()
                            // Ours, and any word on virtual nodes: remotely every node is real.
                            .filter(|r| !imposed.contains(r) && r.key != TYPE_LABEL)
                            .cloned()
                            .collect()
                    }),
                    match_fields: t.match_fields.clone(),
                })
                .filter(|t| {
                    t.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
                        || t.match_fields.as_ref().is_some_and(|f| !f.is_empty())
                })
                .collect();
            let mut unique: Vec<NodeSelectorTerm> = Vec::with_capacity(terms.len());
            for t in terms {
                if !unique.contains(&t) {
                    unique.push(t);
                }
            }
            required.node_selector_terms = unique;
        }
        if node
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .is_some_and(|r| r.node_selector_terms.is_empty())
        {
            node.required_during_scheduling_ignored_during_execution = None;
        }
    }
    if let Some(affinity) = spec.affinity.as_mut()
        && affinity.node_affinity.as_ref().is_some_and(|n| {
            n.required_during_scheduling_ignored_during_execution
                .is_none()
                && n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
                    .is_none_or(Vec::is_empty)
        })
    {
        affinity.node_affinity = None;
    }
    if spec.affinity.as_ref().is_some_and(|a| {
        a.node_affinity.is_none() && a.pod_affinity.is_none() && a.pod_anti_affinity.is_none()
    }) {
        spec.affinity = None;
    }
    // The local service account's token means nothing there: the twin runs as the remote
    // namespace's account of the same name (reflected), without a local token mounted.
    spec.automount_service_account_token = Some(false);
    spec
}

/// Whose a remote pod is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TwinOwner {
    /// Our twin of this local pod.
    This,
    /// Ours, but of an earlier pod of the same name (deleted and created again).
    Stale,
    /// Not ours: never touched.
    Other,
}

pub(crate) fn owner(remote: &Pod, local: &Pod, local_cluster_id: &str) -> TwinOwner {
    let label = |k: &str| remote.metadata.labels.as_ref().and_then(|l| l.get(k));
    let annotation = |k: &str| remote.metadata.annotations.as_ref().and_then(|a| a.get(k));
    let ours = label(ORIGIN_CLUSTER_LABEL).map(String::as_str) == Some(local_cluster_id)
        && annotation(ORIGIN_NAMESPACE_ANNOTATION) == local.metadata.namespace.as_ref();
    if !ours {
        TwinOwner::Other
    } else if annotation(ORIGIN_POD_UID_ANNOTATION) == local.metadata.uid.as_ref() {
        TwinOwner::This
    } else {
        TwinOwner::Stale
    }
}

/// The local pod's status as the twin's says (what `kubectl get pods -o wide` shows):
/// phase, conditions, IPs, start time, container statuses. The host IP stays the remote
/// node's.
pub(crate) fn local_status(twin: &PodStatus, current: Option<&PodStatus>) -> PodStatus {
    PodStatus {
        phase: twin.phase.clone(),
        conditions: twin.conditions.clone(),
        message: twin.message.clone(),
        reason: twin.reason.clone(),
        pod_ip: twin.pod_ip.clone(),
        pod_ips: twin.pod_ips.clone(),
        host_ip: twin.host_ip.clone(),
        host_ips: twin.host_ips.clone(),
        start_time: twin.start_time.clone(),
        container_statuses: twin.container_statuses.clone(),
        init_container_statuses: twin.init_container_statuses.clone(),
        ephemeral_container_statuses: twin.ephemeral_container_statuses.clone(),
        qos_class: twin
            .qos_class
            .clone()
            .or_else(|| current.and_then(|c| c.qos_class.clone())),
        ..PodStatus::default()
    }
}

/// Whether the local status already says what the twin's does.
pub(crate) fn status_current(local: Option<&PodStatus>, wanted: &PodStatus) -> bool {
    let Some(local) = local else {
        return false;
    };
    local.phase == wanted.phase
        && local.conditions == wanted.conditions
        && local.pod_ip == wanted.pod_ip
        && local.pod_ips == wanted.pod_ips
        && local.start_time == wanted.start_time
        && local.container_statuses == wanted.container_statuses
        && local.init_container_statuses == wanted.init_container_statuses
        && local.message == wanted.message
        && local.reason == wanted.reason
}

/// Labels that mark a remote pod as one of our twins (the peer's pod watch selects on it).
pub(crate) fn twin_selector(local_cluster_id: &str) -> String {
    format!("{ORIGIN_CLUSTER_LABEL}={local_cluster_id}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::model::api::PodOffloadingStrategy;

    fn offloading(strategy: PodOffloadingStrategy) -> NamespaceOffloadingSpec {
        serde_json::from_value(json!({
            "podOffloadingStrategy": strategy,
            "clusterSelector": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "region", "operator": "In", "values": ["eu"]}]}]},
        }))
        .unwrap()
    }

    /// A pod as our webhook stored it: its own term ANDed with the imposed one, and our
    /// toleration beside its own.
    fn admitted() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                         "labels": {"app": "web"},
                         "annotations": {"note": "x", "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {
                "nodeName": "liqo-c2",
                "containers": [{"name": "app", "image": "nginx"}],
                "tolerations": [
                    {"key": "virtual-node.liqo.io/not-allowed", "operator": "Exists", "effect": "NoExecute"},
                    {"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "disk", "operator": "In", "values": ["ssd"]},
                        {"key": "region", "operator": "In", "values": ["eu"]},
                        {"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]}]}}},
            },
        }))
        .unwrap()
    }

    #[test]
    fn the_twin_keeps_the_pod_but_not_what_placed_it_here() {
        let twin = twin(
            &admitted(),
            &offloading(PodOffloadingStrategy::Remote),
            "c1",
            "shop-c1",
        );
        let v = serde_json::to_value(&twin).unwrap();
        assert_eq!(v["metadata"]["namespace"], "shop-c1");
        assert_eq!(v["metadata"]["name"], "web-1");
        assert_eq!(v["metadata"]["labels"]["app"], "web");
        assert_eq!(v["metadata"]["labels"][ORIGIN_CLUSTER_LABEL], "c1");
        assert_eq!(v["metadata"]["annotations"]["note"], "x");
        assert_eq!(
            v["metadata"]["annotations"][ORIGIN_POD_UID_ANNOTATION],
            "u-1"
        );
        assert_eq!(
            v["metadata"]["annotations"][ORIGIN_NAMESPACE_ANNOTATION],
            "shop"
        );
        assert!(
            v["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .is_null()
        );
        assert!(v["spec"]["nodeName"].is_null());
        // The pod's own toleration and requirement stay; ours go.
        assert_eq!(
            v["spec"]["tolerations"],
            json!([{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}])
        );
        assert_eq!(
            v["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"],
            json!([{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}])
        );
        assert_eq!(v["spec"]["automountServiceAccountToken"], false);
    }

    #[test]
    fn a_pod_with_only_the_imposed_placement_has_no_affinity_remotely() {
        let mut pod = admitted();
        let spec = pod.spec.as_mut().unwrap();
        spec.tolerations = Some(vec![virtual_node_toleration()]);
        spec.affinity = Some(
            serde_json::from_value(
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "region", "operator": "In", "values": ["eu"]},
                {"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]}]}}}),
            )
            .unwrap(),
        );
        let twin = twin(
            &pod,
            &offloading(PodOffloadingStrategy::LocalAndRemote),
            "c1",
            "shop-c1",
        );
        let spec = twin.spec.unwrap();
        assert!(spec.affinity.is_none(), "{:?}", spec.affinity);
        assert!(spec.tolerations.is_none());
    }

    #[test]
    fn ownership_needs_our_cluster_namespace_and_uid() {
        let local = admitted();
        let ours = twin(
            &local,
            &offloading(PodOffloadingStrategy::Remote),
            "c1",
            "shop-c1",
        );
        assert_eq!(owner(&ours, &local, "c1"), TwinOwner::This);
        assert_eq!(owner(&ours, &local, "c9"), TwinOwner::Other);
        let mut again = local.clone();
        again.metadata.uid = Some("u-2".into());
        assert_eq!(owner(&ours, &again, "c1"), TwinOwner::Stale);
        let mut elsewhere = local.clone();
        elsewhere.metadata.namespace = Some("other".into());
        assert_eq!(owner(&ours, &elsewhere, "c1"), TwinOwner::Other);
        let stranger: Pod = serde_json::from_value(json!({"metadata": {"name": "web-1"}})).unwrap();
        assert_eq!(owner(&stranger, &local, "c1"), TwinOwner::Other);
    }

    #[test]
    fn volumes_that_live_here_keep_the_pod_local_with_a_reason() {
        let mut pod = admitted();
        assert!(unsupported(&pod).is_none());
        pod.spec.as_mut().unwrap().volumes = Some(vec![
            serde_json::from_value(
                json!({"name": "data", "persistentVolumeClaim": {"claimName": "data"}}),
            )
            .unwrap(),
        ]);
        let why = unsupported(&pod).unwrap();
        assert!(
            why.contains("\"data\"") && why.contains("PersistentVolumeClaim"),
            "{why}"
        );
    }

    #[test]
    fn the_local_status_follows_the_twin() {
        let twin: PodStatus = serde_json::from_value(json!({
            "phase": "Running", "podIP": "10.244.2.7", "podIPs": [{"ip": "10.244.2.7"}],
            "hostIP": "172.18.0.3", "startTime": "2026-11-25T10:00:00Z",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "image": "nginx", "imageID": "", "ready": true, "restartCount": 0, "started": true}],
        }))
        .unwrap();
        let local = local_status(&twin, None);
        assert_eq!(local.phase.as_deref(), Some("Running"));
        assert_eq!(local.pod_ip.as_deref(), Some("10.244.2.7"));
        assert!(status_current(
            Some(&local),
            &local_status(&twin, Some(&local))
        ));
        assert!(!status_current(None, &local));
        let pending = PodStatus {
            phase: Some("Pending".into()),
            ..PodStatus::default()
        };
        assert!(!status_current(Some(&pending), &local));
    }
}
