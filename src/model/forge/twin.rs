//! Pure translation between a local pod and its twin in a remote cluster: the twin to
//! create (the pod's spec without what only made sense here), whether a remote pod is our
//! twin, and the local status the twin's stands for.
//!
//! No credential of this cluster goes into a twin: neither the token volume this cluster's
//! ServiceAccount admission injected (`kube-api-access-*`) nor any volume or variable of a
//! service-account token Secret. The twin runs as the remote account of the same name
//! (copied, or that cluster's own `default`), and that cluster's admission mounts its own
//! token, or none when the pod, or its account here, said no.
//!
//! What the remote's admission derives (`priority`, `preemptionPolicy`, `overhead`) is left
//! for it to derive: copied, it gets the twin refused as soon as the classes differ. A
//! PriorityClass the remote lacks is dropped (said on the pod); a missing RuntimeClass keeps
//! the pod from running there, since dropping it could run a sandboxed workload unsandboxed.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, NodeSelectorTerm, Pod, PodSpec, PodStatus, Volume};
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
        // Claims are provisioned in the twin's cluster, or say why not (`forge::claims`).
        let kind = if volume.host_path.is_some() {
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
/// our markers, and the spec without its node, the placement our webhook imposed, this
/// cluster's token volume and what the remote's admission derives. `adapt` then fits it to
/// what the two clusters hold.
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
    // What the offloading RuntimeClass's scheduling put there: remotely every node is real.
    if let Some(selector) = spec.node_selector.as_mut() {
        selector.remove(TYPE_LABEL);
    }
    if spec.node_selector.as_ref().is_some_and(|s| s.is_empty()) {
        spec.node_selector = None;
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
    // This cluster's token goes nowhere else. Mounted here means the account here allowed
    // it: the remote's admission then mounts its own, as its account of that name says.
    // Not mounted here (the pod or its account said no): none there either.
    let mounted_here = drop_volumes(&mut spec, is_injected_token);
    if spec.automount_service_account_token.is_none() && !mounted_here {
        spec.automount_service_account_token = Some(false);
    }
    // The remote's Priority and RuntimeClass admission set these from its own classes, and
    // refuse a pod whose values differ from theirs.
    spec.priority = None;
    spec.preemption_policy = None;
    spec.overhead = None;
    spec
}

/// Prefix of the token volume the ServiceAccount admission plugin injects.
const INJECTED_TOKEN_VOLUME: &str = "kube-api-access-";

/// The volume this cluster's ServiceAccount admission added: its token, CA and namespace.
fn is_injected_token(volume: &Volume) -> bool {
    volume.name.starts_with(INJECTED_TOKEN_VOLUME)
        && volume.projected.as_ref().is_some_and(|p| {
            p.sources
                .iter()
                .flatten()
                .any(|s| s.service_account_token.is_some())
        })
}

/// Every container of the spec, init ones too (ephemeral ones are never in a new pod).
fn containers(spec: &mut PodSpec) -> impl Iterator<Item = &mut Container> {
    spec.containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
}

/// Removes the volumes `drop` picks and their mounts; whether any was removed.
fn drop_volumes(spec: &mut PodSpec, drop: impl Fn(&Volume) -> bool) -> bool {
    let Some(volumes) = spec.volumes.as_mut() else {
        return false;
    };
    let gone: BTreeSet<String> = volumes
        .iter()
        .filter(|v| drop(v))
        .map(|v| v.name.clone())
        .collect();
    if gone.is_empty() {
        return false;
    }
    volumes.retain(|v| !gone.contains(&v.name));
    if volumes.is_empty() {
        spec.volumes = None;
    }
    let unmount = |mounts: &mut Option<Vec<k8s_openapi::api::core::v1::VolumeMount>>| {
        if let Some(m) = mounts.as_mut() {
            m.retain(|m| !gone.contains(&m.name));
        }
        if mounts.as_ref().is_some_and(Vec::is_empty) {
            *mounts = None;
        }
    };
    for container in containers(spec) {
        unmount(&mut container.volume_mounts);
    }
    for container in spec.ephemeral_containers.iter_mut().flatten() {
        unmount(&mut container.volume_mounts);
    }
    true
}

/// What the remote cluster has, as the peer's watches hold it (`None`: not listed yet).
#[derive(Debug, Default, Clone)]
pub(crate) struct RemoteClasses {
    pub(crate) priority: Option<BTreeSet<String>>,
    pub(crate) runtime: Option<BTreeSet<String>>,
}

/// The placement the webhook gave `pod`: its namespace's, or, for a pod that opted in by
/// the offloading RuntimeClass, the remote one (whose terms the twin must shed).
pub(crate) fn placement_of<'a>(
    pod: &Pod,
    offloading: &'a NamespaceOffloadingSpec,
    runtime_class: &str,
) -> std::borrow::Cow<'a, NamespaceOffloadingSpec> {
    use crate::model::admission::pod::{opted_in, opts_in};
    let class = pod
        .spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref());
    if opts_in(class, runtime_class) {
        std::borrow::Cow::Owned(opted_in(offloading))
    } else {
        std::borrow::Cow::Borrowed(offloading)
    }
}

/// Leaves out of the twin the RuntimeClass by which its pod asked for the virtual nodes:
/// it means nothing in the remote cluster, which runs the twin with its default runtime.
pub(crate) fn without_opt_in(twin: &mut Pod, runtime_class: &str) {
    if let Some(spec) = twin.spec.as_mut()
        && crate::model::admission::pod::opts_in(spec.runtime_class_name.as_deref(), runtime_class)
    {
        spec.runtime_class_name = None;
    }
}

/// Something `adapt` changed that the pod's owner should hear of (an event on the pod).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Note {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

/// Why `adapt` cannot make a twin (yet).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unfit {
    /// The peer's watch of a class the pod names has not listed: look again soon.
    NotKnownYet,
    /// It cannot run there as it is; the pod says why.
    Unsupported(String),
}

/// Fits the twin to what the two clusters hold: volumes and variables of `token_secrets`
/// (this cluster's service-account tokens, never copied) go; a PriorityClass the remote
/// lacks is dropped; a RuntimeClass it lacks keeps the pod home.
pub(crate) fn adapt(
    twin: &mut Pod,
    token_secrets: &BTreeSet<String>,
    there: &RemoteClasses,
) -> Result<Vec<Note>, Unfit> {
    let mut notes = Vec::new();
    let Some(spec) = twin.spec.as_mut() else {
        return Ok(notes);
    };
    if let Some(class) = spec.runtime_class_name.as_deref() {
        let known = there.runtime.as_ref().ok_or(Unfit::NotKnownYet)?;
        if !known.contains(class) {
            return Err(Unfit::Unsupported(format!(
                "runtimeClassName {class:?} has no RuntimeClass in that cluster: the pod does not run there without it (create the RuntimeClass there, or keep the pod local)"
            )));
        }
    }
    if let Some(class) = spec.priority_class_name.clone() {
        let known = there.priority.as_ref().ok_or(Unfit::NotKnownYet)?;
        if !known.contains(&class) {
            spec.priority_class_name = None;
            notes.push(Note {
                reason: "PriorityClassDropped",
                message: format!(
                    "priorityClassName {class:?} has no PriorityClass in that cluster: the twin runs there with that cluster's default priority"
                ),
            });
        }
    }
    if !token_secrets.is_empty() {
        let dropped = drop_token_secrets(spec, token_secrets);
        if !dropped.is_empty() {
            notes.push(Note {
                reason: "HomeTokenDropped",
                message: format!(
                    "service-account token Secrets of this cluster stay here: {} left out of the twin (it runs with the remote cluster's own token)",
                    dropped.into_iter().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    Ok(notes)
}

/// Removes every use of those Secrets: volumes, projected sources, variables; returns the
/// Secrets that were used.
fn drop_token_secrets(spec: &mut PodSpec, tokens: &BTreeSet<String>) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut note = |name: &str| {
        let token = tokens.contains(name);
        if token {
            used.insert(name.to_owned());
        }
        token
    };
    for volume in spec.volumes.iter_mut().flatten() {
        if let Some(sources) = volume.projected.as_mut().and_then(|p| p.sources.as_mut()) {
            sources.retain(|s| !s.secret.as_ref().is_some_and(|s| note(&s.name)));
        }
    }
    let mut secret_volumes = BTreeSet::new();
    for volume in spec.volumes.iter().flatten() {
        let of_token = volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
            .is_some_and(&mut note);
        let emptied = volume
            .projected
            .as_ref()
            .is_some_and(|p| p.sources.as_ref().is_some_and(Vec::is_empty));
        if of_token || emptied {
            secret_volumes.insert(volume.name.clone());
        }
    }
    drop_volumes(spec, |v| secret_volumes.contains(&v.name));
    let mut variables = |container: &mut Container| {
        if let Some(env) = container.env.as_mut() {
            env.retain(|e| {
                !e.value_from
                    .as_ref()
                    .and_then(|f| f.secret_key_ref.as_ref())
                    .is_some_and(|r| note(&r.name))
            });
        }
        if let Some(from) = container.env_from.as_mut() {
            from.retain(|f| !f.secret_ref.as_ref().is_some_and(|r| note(&r.name)));
        }
    };
    for container in containers(spec) {
        variables(container);
    }
    used
}

/// The Secrets a pod refers to by name (volumes, projected sources, variables): which of
/// them are tokens here is asked of the local cluster before `adapt`.
pub(crate) fn secret_names(pod: &Pod) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Some(spec) = pod.spec.as_ref() else {
        return names;
    };
    for volume in spec.volumes.iter().flatten() {
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            names.insert(name);
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(secret) = &source.secret {
                names.insert(secret.name.clone());
            }
        }
    }
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for env in container.env.iter().flatten() {
            if let Some(r) = env
                .value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
            {
                names.insert(r.name.clone());
            }
        }
        for from in container.env_from.iter().flatten() {
            if let Some(r) = &from.secret_ref {
                names.insert(r.name.clone());
            }
        }
    }
    names
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

/// Our twin as the peer's pod watch keeps it: what reflection reads, not the whole pod
/// (memory scales with offloaded pods, and every twin is kept beside its local pod). Kept:
/// identity, deletion, our markers (labels and annotations), container names, the volumes
/// that may mount the home token's Secret, and the whole status (it becomes the local
/// pod's). Reflection never compares a twin's spec with its pod's: a pod's spec does not
/// change once it is bound, and a twin is replaced, not updated.
pub(crate) fn trim_twin(twin: &mut Pod) {
    let ours = |key: &String| key.starts_with("offloading.liqo.io/") || key.starts_with("liqo.io/");
    let meta = &mut twin.metadata;
    for map in [meta.labels.as_mut(), meta.annotations.as_mut()]
        .into_iter()
        .flatten()
    {
        map.retain(|k, _| ours(k));
    }
    meta.owner_references = None;
    let name_only = |c: &Container| Container {
        name: c.name.clone(),
        ..Container::default()
    };
    twin.spec = twin.spec.take().map(|spec| PodSpec {
        node_name: spec.node_name,
        containers: spec.containers.iter().map(name_only).collect(),
        init_containers: spec
            .init_containers
            .map(|cs| cs.iter().map(name_only).collect()),
        volumes: spec.volumes.map(|vs| {
            vs.into_iter()
                .filter(|v| {
                    v.projected
                        .as_ref()
                        .is_some_and(|p| p.sources.iter().flatten().any(|s| s.secret.is_some()))
                })
                .collect()
        }),
        ..PodSpec::default()
    });
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
        // A claim is not one of them: it is provisioned in the twin's cluster.
        pod.spec.as_mut().unwrap().volumes = Some(vec![
            serde_json::from_value(
                json!({"name": "data", "persistentVolumeClaim": {"claimName": "data"}}),
            )
            .unwrap(),
        ]);
        assert!(unsupported(&pod).is_none());
        pod.spec.as_mut().unwrap().volumes = Some(vec![
            serde_json::from_value(json!({"name": "data", "hostPath": {"path": "/srv"}})).unwrap(),
        ]);
        let why = unsupported(&pod).unwrap();
        assert!(
            why.contains("\"data\"") && why.contains("hostPath"),
            "{why}"
        );
    }

    /// A pod as this cluster's ServiceAccount admission leaves it: its token volume, mounted
    /// in every container.
    fn with_home_token() -> Pod {
        let mut pod = admitted();
        let spec = pod.spec.as_mut().unwrap();
        let mount = json!([{"name": "kube-api-access-x7k2p", "readOnly": true,
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]);
        spec.containers[0].volume_mounts = Some(serde_json::from_value(mount.clone()).unwrap());
        spec.init_containers = Some(vec![
            serde_json::from_value(
                json!({"name": "init", "image": "busybox", "volumeMounts": mount}),
            )
            .unwrap(),
        ]);
        spec.volumes = Some(
            serde_json::from_value(json!([
                {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}},
                // The pod's own: a token the remote cluster's kubelet asks its API server for.
                {"name": "vault", "projected": {"sources": [
                    {"serviceAccountToken": {"audience": "vault", "path": "token"}}]}},
            ]))
            .unwrap(),
        );
        pod
    }

    fn twin_of(pod: &Pod) -> PodSpec {
        twin(
            pod,
            &offloading(PodOffloadingStrategy::Remote),
            "c1",
            "shop-c1",
        )
        .spec
        .unwrap()
    }

    #[test]
    fn the_home_token_volume_stays_home_and_the_remote_mounts_its_own() {
        let spec = twin_of(&with_home_token());
        let volumes: Vec<&str> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, ["vault"]);
        assert!(spec.containers[0].volume_mounts.is_none());
        assert!(spec.init_containers.unwrap()[0].volume_mounts.is_none());
        // Mounted here: the remote's admission mounts its own, as its account says.
        assert_eq!(spec.automount_service_account_token, None);
    }

    #[test]
    fn no_token_here_means_none_there_and_the_pods_word_is_kept() {
        // Admitted without a token: the pod or its account here said no.
        assert_eq!(
            twin_of(&admitted()).automount_service_account_token,
            Some(false)
        );
        for said in [true, false] {
            let mut pod = with_home_token();
            pod.spec.as_mut().unwrap().automount_service_account_token = Some(said);
            assert_eq!(twin_of(&pod).automount_service_account_token, Some(said));
        }
        // A volume of that name that is no token is the pod's own.
        let mut pod = admitted();
        pod.spec.as_mut().unwrap().volumes = Some(vec![
            serde_json::from_value(json!({"name": "kube-api-access-mine", "emptyDir": {}}))
                .unwrap(),
        ]);
        assert_eq!(twin_of(&pod).volumes.unwrap().len(), 1);
    }

    #[test]
    fn what_the_remotes_admission_derives_is_left_to_it() {
        let mut pod = admitted();
        let spec = pod.spec.as_mut().unwrap();
        spec.priority = Some(1000);
        spec.priority_class_name = Some("high".into());
        spec.preemption_policy = Some("Never".into());
        spec.runtime_class_name = Some("gvisor".into());
        spec.overhead = Some(
            [(
                "cpu".to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("250m".into()),
            )]
            .into(),
        );
        let spec = twin_of(&pod);
        assert!(
            spec.priority.is_none() && spec.preemption_policy.is_none() && spec.overhead.is_none()
        );
        // The names stay for `adapt` to check against the remote's classes.
        assert_eq!(spec.priority_class_name.as_deref(), Some("high"));
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    }

    fn classes(priority: &[&str], runtime: &[&str]) -> RemoteClasses {
        let set = |names: &[&str]| Some(names.iter().map(|n| n.to_string()).collect());
        RemoteClasses {
            priority: set(priority),
            runtime: set(runtime),
        }
    }

    fn with_classes(priority: Option<&str>, runtime: Option<&str>) -> Pod {
        let mut pod = twin(
            &admitted(),
            &offloading(PodOffloadingStrategy::Remote),
            "c1",
            "shop-c1",
        );
        let spec = pod.spec.as_mut().unwrap();
        spec.priority_class_name = priority.map(Into::into);
        spec.runtime_class_name = runtime.map(Into::into);
        pod
    }

    #[test]
    fn a_priority_class_the_remote_lacks_is_dropped_and_said() {
        let none = BTreeSet::new();
        let mut pod = with_classes(Some("high"), None);
        assert_eq!(adapt(&mut pod, &none, &classes(&["high"], &[])), Ok(vec![]));
        assert_eq!(
            pod.spec.as_ref().unwrap().priority_class_name.as_deref(),
            Some("high")
        );
        let notes = adapt(&mut pod, &none, &classes(&["low"], &[])).unwrap();
        assert!(pod.spec.as_ref().unwrap().priority_class_name.is_none());
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].reason, "PriorityClassDropped");
        assert!(
            notes[0].message.contains("\"high\""),
            "{}",
            notes[0].message
        );
        // Not listed yet: no guess.
        let mut pod = with_classes(Some("high"), None);
        assert_eq!(
            adapt(&mut pod, &none, &RemoteClasses::default()),
            Err(Unfit::NotKnownYet)
        );
        // A pod naming no class needs no listing.
        let mut pod = with_classes(None, None);
        assert_eq!(
            adapt(&mut pod, &none, &RemoteClasses::default()),
            Ok(vec![])
        );
    }

    #[test]
    fn a_runtime_class_the_remote_lacks_keeps_the_pod_home() {
        let none = BTreeSet::new();
        let mut pod = with_classes(None, Some("gvisor"));
        assert_eq!(
            adapt(&mut pod, &none, &classes(&[], &["gvisor"])),
            Ok(vec![])
        );
        assert_eq!(
            pod.spec.as_ref().unwrap().runtime_class_name.as_deref(),
            Some("gvisor")
        );
        match adapt(&mut pod, &none, &classes(&[], &["runc"])) {
            Err(Unfit::Unsupported(why)) => assert!(
                why.contains("\"gvisor\"") && why.contains("RuntimeClass"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        let mut pod = with_classes(None, Some("gvisor"));
        assert_eq!(
            adapt(&mut pod, &none, &RemoteClasses::default()),
            Err(Unfit::NotKnownYet)
        );
    }

    #[test]
    fn a_pod_that_opted_in_by_runtime_class_runs_there_with_the_default_runtime() {
        // As the RuntimeClass admission and our webhook leave it.
        let local: Pod = serde_json::from_value(json!({
            "metadata": {"name": "batch-1", "namespace": "shop", "uid": "u-1"},
            "spec": {
                "nodeName": "liqo-c2",
                "runtimeClassName": "liqo",
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "region", "operator": "In", "values": ["eu"]},
                        {"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]}]}}},
                "nodeSelector": {"liqo.io/type": "virtual-node", "disk": "ssd"},
                "tolerations": [{"key": "virtual-node.liqo.io/not-allowed", "operator": "Exists", "effect": "NoExecute"}],
                "containers": [{"name": "job", "image": "busybox"}],
            },
        }))
        .unwrap();
        // A Local namespace, which the pod's class overrode with its selector.
        let namespace: NamespaceOffloadingSpec = serde_json::from_value(json!({
            "podOffloadingStrategy": "Local",
            "clusterSelector": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "region", "operator": "In", "values": ["eu"]}]}]},
        }))
        .unwrap();
        let placement = placement_of(&local, &namespace, "liqo");
        let mut twin = twin(&local, &placement, "c1", "shop-c1");
        without_opt_in(&mut twin, "liqo");
        let spec = twin.spec.unwrap();
        assert_eq!(spec.runtime_class_name, None);
        // The placement it got here is gone: remotely any node will do.
        assert!(spec.affinity.is_none(), "{:?}", spec.affinity);
        assert!(spec.tolerations.is_none());
        let selector = spec.node_selector.unwrap();
        assert_eq!(selector.len(), 1, "{selector:?}");
        assert_eq!(selector["disk"], "ssd");
        // Another class is the pod's own: kept (adapt checks the remote has it).
        let mut sandboxed = with_classes(None, Some("gvisor"));
        without_opt_in(&mut sandboxed, "liqo");
        assert_eq!(
            sandboxed.spec.unwrap().runtime_class_name.as_deref(),
            Some("gvisor")
        );
        // No opt-in configured: nothing is anyone's opt-in.
        let mut named = with_classes(None, Some("liqo"));
        without_opt_in(&mut named, "");
        assert_eq!(
            named.spec.unwrap().runtime_class_name.as_deref(),
            Some("liqo")
        );
    }

    #[test]
    fn token_secrets_of_this_cluster_are_left_out_of_the_twin() {
        let local: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1"},
            "spec": {
                "containers": [{"name": "app", "image": "nginx",
                    "env": [
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "web-token", "key": "token"}}},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                        {"name": "MODE", "value": "fast"}],
                    "envFrom": [{"secretRef": {"name": "web-token"}}, {"secretRef": {"name": "db"}}],
                    "volumeMounts": [{"name": "legacy", "mountPath": "/t"}, {"name": "bundle", "mountPath": "/b"},
                                     {"name": "only-token", "mountPath": "/o"}, {"name": "db", "mountPath": "/d"}]}],
                "volumes": [
                    {"name": "legacy", "secret": {"secretName": "web-token"}},
                    {"name": "db", "secret": {"secretName": "db"}},
                    {"name": "bundle", "projected": {"sources": [
                        {"secret": {"name": "web-token"}}, {"secret": {"name": "db"}}]}},
                    {"name": "only-token", "projected": {"sources": [{"secret": {"name": "web-token"}}]}}],
            },
        }))
        .unwrap();
        assert_eq!(
            secret_names(&local),
            ["db".to_string(), "web-token".to_string()].into()
        );
        let mut pod = twin(
            &local,
            &offloading(PodOffloadingStrategy::Remote),
            "c1",
            "shop-c1",
        );
        let notes = adapt(
            &mut pod,
            &["web-token".to_string()].into(),
            &RemoteClasses::default(),
        )
        .unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].reason, "HomeTokenDropped");
        assert!(
            notes[0].message.contains("web-token"),
            "{}",
            notes[0].message
        );
        let v = serde_json::to_value(pod.spec.unwrap()).unwrap();
        assert!(!v.to_string().contains("web-token"), "{v}");
        assert_eq!(
            v["volumes"],
            json!([{"name": "db", "secret": {"secretName": "db"}},
                   {"name": "bundle", "projected": {"sources": [{"secret": {"name": "db"}}]}}])
        );
        let container = &v["containers"][0];
        assert_eq!(container["env"].as_array().unwrap().len(), 2);
        assert_eq!(container["envFrom"], json!([{"secretRef": {"name": "db"}}]));
        assert_eq!(
            container["volumeMounts"],
            json!([{"name": "bundle", "mountPath": "/b"}, {"name": "db", "mountPath": "/d"}])
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

    #[test]
    fn a_stored_twin_keeps_what_reflection_reads() {
        let mut pod = twin(
            &admitted(),
            &offloading(PodOffloadingStrategy::Remote),
            "c1",
            "shop-c1",
        );
        let home = super::super::home_api::secret_name("web-1");
        let spec = pod.spec.as_mut().unwrap();
        spec.volumes = Some(serde_json::from_value(json!([
            {"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
            {"name": "home", "projected": {"sources": [{"secret": {"name": home}}]}},
            {"name": "data", "emptyDir": {}}])).unwrap());
        pod.metadata.uid = Some("remote-uid".into());
        pod.metadata.resource_version = Some("7".into());
        pod.status = Some(serde_json::from_value(json!({
            "phase": "Running", "podIP": "10.244.2.7",
            "containerStatuses": [{"name": "app", "image": "nginx", "imageID": "", "ready": true, "restartCount": 0}]})).unwrap());
        let full = pod.clone();
        trim_twin(&mut pod);

        // What reflection reads is unchanged.
        let local = admitted();
        assert_eq!(owner(&pod, &local, "c1"), TwinOwner::This);
        assert!(super::super::home_api::mounts_home_secret(&pod, &local));
        assert_eq!(pod.status, full.status);
        assert_eq!(pod.metadata.uid, full.metadata.uid);
        assert_eq!(
            pod.metadata.resource_version,
            full.metadata.resource_version
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name, full.spec.as_ref().unwrap().node_name);
        assert_eq!(spec.containers[0].name, "app");
        // What it does not read is gone.
        assert_eq!(spec.containers[0].image, None);
        assert_eq!(spec.volumes.as_ref().unwrap().len(), 1);
        assert!(spec.tolerations.is_none() && spec.affinity.is_none());
        let v = serde_json::to_value(&pod.metadata).unwrap();
        assert!(v["labels"].get("app").is_none() && v["annotations"].get("note").is_none());
        assert!(serde_json::to_vec(&pod).unwrap().len() < serde_json::to_vec(&full).unwrap().len());
    }
}
