//! NamespaceOffloading reconciliation: select clusters by their virtual nodes, create the
//! remote namespaces we own, report per-cluster conditions and the phase, keep the
//! scheduling label on the local namespace, and on termination delete what we created.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::join_all;
use k8s_openapi::{
    api::core::v1::{Namespace, Node},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::{EventType, Recorder},
        finalizer::{self, Event as Finalizer, finalizer},
        reflector::Store,
    },
};

use super::{
    is_not_found,
    peers::{Peer, Peers},
    remote_namespace::{self, Ownership},
};
use crate::{
    api::{
        NamespaceOffloading, NamespaceOffloadingStatus, OFFLOADING_NAME, OffloadingPhase,
        REMOTE_CLUSTER_ID_LABEL, RemoteCluster, SCHEDULING_ENABLED_LABEL, TYPE_LABEL, VIRTUAL_NODE,
    },
    selector,
    status::{self, ClusterState},
    webhooks::FIELD_MANAGER,
};

pub const FINALIZER: &str = "offloading.liqo.io/remote-namespaces";
/// Annotation saying what is wrong with an invalid `clusterSelector`.
pub const SELECTOR_ERROR_ANNOTATION: &str = "offloading.liqo.io/selector-error";
/// How long one call to a remote API server may take: an unreachable cluster costs this
/// much at most, and concurrently with the others.
pub const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);
/// Re-check everything this often even without events.
pub const RESYNC: Duration = Duration::from_secs(300);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub struct Context {
    pub client: Client,
    pub peers: Peers,
    pub recorder: Recorder,
    pub local_cluster_id: String,
    /// Virtual nodes, from a watch.
    pub nodes: Store<Node>,
    /// Enforces placement; at termination, pods still waiting with remote constraints are
    /// sent back before the offloading is gone.
    pub placement: Arc<super::placement::Context>,
    /// RemoteClusters, from a watch: which clusters are peered even before they connect.
    pub remote_clusters: Store<RemoteCluster>,
    /// Consecutive failures per (namespace, cluster), for per-cluster backoff.
    pub failures: Mutex<HashMap<(String, String), u32>>,
    pub metrics: Arc<super::metrics::ControllerMetrics>,
}

impl Context {
    /// The live (not being deleted) RemoteCluster for a cluster ID.
    fn remote_cluster_of(&self, cluster_id: &str) -> Option<Arc<RemoteCluster>> {
        self.remote_clusters.state().into_iter().find(|rc| {
            rc.metadata.deletion_timestamp.is_none() && rc.cluster_id() == Some(cluster_id)
        })
    }

    /// Cluster IDs of every live RemoteCluster that knows its cluster ID.
    fn peered_cluster_ids(&self) -> Vec<String> {
        self.remote_clusters
            .state()
            .iter()
            .filter(|rc| rc.metadata.deletion_timestamp.is_none())
            .filter_map(|rc| rc.cluster_id().map(str::to_owned))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OffloadingError {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// Termination goes on: some remote namespaces still exist.
    #[error("waiting for remote namespaces to be deleted: {0}")]
    Waiting(String),
    #[error(transparent)]
    Finalizer(#[from] Box<finalizer::Error<OffloadingError>>),
}

pub async fn reconcile(
    nso: Arc<NamespaceOffloading>,
    ctx: Arc<Context>,
) -> Result<Action, OffloadingError> {
    // Other names have no effect (the webhook rejects them; this covers it being bypassed).
    if nso.name_any() != OFFLOADING_NAME {
        return Ok(Action::await_change());
    }
    let _timer = ctx.metrics.reconcile("offloading");
    let namespace = nso.namespace().unwrap_or_default();
    let api = Api::<NamespaceOffloading>::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, nso, |event| async {
        match event {
            Finalizer::Apply(nso) => apply(&nso, &ctx).await,
            Finalizer::Cleanup(nso) => cleanup(&nso, &ctx).await,
        }
    })
    .await
    .map_err(|e| OffloadingError::Finalizer(Box::new(e)))
}

pub fn error_policy(
    nso: Arc<NamespaceOffloading>,
    error: &OffloadingError,
    ctx: Arc<Context>,
) -> Action {
    if let OffloadingError::Finalizer(e) = error {
        match &**e {
            finalizer::Error::CleanupFailed(OffloadingError::Waiting(_)) => {
                return Action::requeue(Duration::from_secs(2));
            }
            // A late event for an object whose deletion already completed.
            finalizer::Error::RemoveFinalizer(e) if super::is_not_found(e) => {
                return Action::await_change();
            }
            _ => {}
        }
    }
    let reason = match error {
        OffloadingError::Kube(_) => "kubernetes",
        OffloadingError::Waiting(_) => "waiting",
        OffloadingError::Finalizer(_) => "finalizer",
    };
    ctx.metrics.error("offloading", reason);
    tracing::warn!(namespace = nso.namespace().unwrap_or_default(), %error, "offloading reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Every known remote cluster (from the virtual nodes), and whether the selector picks
/// it. A cluster is selected when any of its virtual nodes matches.
fn clusters(
    nso: &NamespaceOffloading,
    nodes: &Store<Node>,
    selector_valid: bool,
) -> BTreeMap<String, bool> {
    let mut out: BTreeMap<String, bool> = BTreeMap::new();
    for node in nodes.state() {
        let labels = node.labels();
        if labels.get(TYPE_LABEL).map(String::as_str) != Some(VIRTUAL_NODE) {
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

async fn with_timeout<T>(
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, (String, String)> {
    match tokio::time::timeout(REMOTE_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(kube::Error::Api(s))) if s.code == 403 => Err((
            "Forbidden".into(),
            format!(
                "the credentials of this peering may not manage namespaces there: {}",
                s.message
            ),
        )),
        Ok(Err(kube::Error::Api(s))) if s.code == 422 => Err((
            "Invalid".into(),
            format!(
                "the remote API server rejected the namespace: {}",
                s.message
            ),
        )),
        Ok(Err(e)) => Err((
            "Unreachable".into(),
            format!("the remote API server failed: {e}"),
        )),
        Err(_) => Err((
            "Unreachable".into(),
            format!("the remote API server did not answer within {REMOTE_TIMEOUT:?}"),
        )),
    }
}

/// A cluster whose peering heartbeat fails is not contacted (its calls would only time
/// out): it is reported at once and tried again when the peering reconnects, which
/// updates its virtual node and so wakes every NamespaceOffloading.
fn unreachable(peer: &Peer) -> Option<ClusterState> {
    let (reason, why) = peer.unreachable.as_ref()?;
    Some(ClusterState::failed(
        reason,
        format!(
            "{why} (RemoteCluster {}); retried when its peering reconnects",
            peer.remote_cluster
        ),
    ))
}

/// Brings one cluster to what the configuration wants; reports where it stands.
async fn ensure_cluster(
    ctx: &Context,
    cluster_id: &str,
    selected: bool,
    may_delete: bool,
    remote_name: &str,
    origin: &str,
) -> ClusterState {
    let Some(peer) = ctx.peers.get(cluster_id) else {
        return match (selected, ctx.remote_cluster_of(cluster_id)) {
            (false, _) => ClusterState::NotSelected,
            // Its RemoteCluster exists but has not connected yet (e.g. just after start-up).
            (true, Some(_)) => ClusterState::Pending,
            (true, None) => ClusterState::failed(
                "NoCredentials",
                format!(
                    "no RemoteCluster gives credentials for cluster {cluster_id}: peer it with `namespace-offloading peer`"
                ),
            ),
        };
    };
    if let Some(state) = unreachable(&peer) {
        return if selected {
            state
        } else {
            ClusterState::NotSelected
        };
    }
    let api = Api::<Namespace>::all(peer.client.clone());
    let existing = match with_timeout(api.get_opt(remote_name)).await {
        Ok(existing) => existing,
        Err((reason, message)) if selected => return ClusterState::failed(&reason, message),
        Err(_) => return ClusterState::NotSelected,
    };
    let ownership = remote_namespace::ownership(existing.as_ref(), &ctx.local_cluster_id, origin);
    match (ownership, selected, existing) {
        // No longer selected (its labels changed): remove what we created there, unless
        // the selector is invalid (then nothing is selected, but nothing is removed either).
        (Ownership::Ours, false, Some(existing)) if may_delete => {
            match with_timeout(
                api.delete(remote_name, &remote_namespace::delete_exactly(&existing)),
            )
            .await
            {
                Ok(_) => ClusterState::NotSelected,
                Err((reason, message)) => ClusterState::failed(
                    &reason,
                    format!(
                        "this cluster is no longer selected, but deleting namespace {remote_name} failed: {message}"
                    ),
                ),
            }
        }
        (_, false, _) => ClusterState::NotSelected,
        (Ownership::Missing, true, _) => {
            let desired = remote_namespace::desired(remote_name, &ctx.local_cluster_id, origin);
            match with_timeout(api.create(&PostParams::default(), &desired)).await {
                Ok(_) => ClusterState::Ready,
                Err((reason, message)) => ClusterState::failed(&reason, message),
            }
        }
        (Ownership::Ours, true, _) => ClusterState::Ready,
        (Ownership::OursTerminating, true, _) => ClusterState::failed(
            "Terminating",
            format!(
                "namespace {remote_name} is being deleted in this cluster; it is created again once gone"
            ),
        ),
        (Ownership::Conflict(message), true, _) => ClusterState::failed("AlreadyExists", message),
    }
}

async fn apply(nso: &NamespaceOffloading, ctx: &Context) -> Result<Action, OffloadingError> {
    let namespace = nso.namespace().unwrap_or_default();
    let remote_name = nso
        .spec
        .remote_namespace_name(&namespace, &ctx.local_cluster_id);
    // First, so that a namespace the admission webhook marked stays marked even while the
    // remote calls below take their time.
    set_scheduling_label(ctx, &namespace, true).await?;
    let problems = selector::validate(&nso.spec.cluster_selector, "spec.clusterSelector");
    mark_selector(nso, ctx, &problems).await?;

    let selector_valid = problems.is_empty();
    let wanted = clusters(nso, &ctx.nodes, selector_valid);
    let states: BTreeMap<String, ClusterState> = join_all(wanted.iter().map(|(id, selected)| {
        let remote_name = &remote_name;
        let namespace = &namespace;
        async move {
            let state =
                ensure_cluster(ctx, id, *selected, selector_valid, remote_name, namespace).await;
            (id.clone(), state)
        }
    }))
    .await
    .into_iter()
    .collect();

    ctx.metrics.remote_namespaces(&namespace, &states);
    let phase = status::phase(false, !problems.is_empty(), &states);
    write_status(nso, ctx, &remote_name, phase, &states).await?;

    // Per-cluster backoff: each failing cluster doubles its own delay; the next
    // reconcile comes when the soonest is due.
    let mut soonest = RESYNC;
    if let Ok(mut failures) = ctx.failures.lock() {
        for (id, state) in &states {
            let key = (namespace.clone(), id.clone());
            match state {
                ClusterState::Failed { .. } | ClusterState::Pending => {
                    let n = failures.entry(key).or_default();
                    *n = n.saturating_add(1);
                    // 1 s, 2 s, 4 s ... up to MAX_BACKOFF.
                    let delay = Duration::from_secs(1u64 << (*n - 1).min(6)).min(MAX_BACKOFF);
                    soonest = soonest.min(delay);
                }
                _ => {
                    failures.remove(&key);
                }
            }
        }
    }
    Ok(Action::requeue(soonest))
}

async fn mark_selector(
    nso: &NamespaceOffloading,
    ctx: &Context,
    problems: &[String],
) -> Result<(), kube::Error> {
    let current = nso.annotations().get(SELECTOR_ERROR_ANNOTATION).cloned();
    let wanted = (!problems.is_empty()).then(|| problems.join("; "));
    if current == wanted {
        return Ok(());
    }
    let api = Api::<NamespaceOffloading>::namespaced(
        ctx.client.clone(),
        &nso.namespace().unwrap_or_default(),
    );
    let patch =
        serde_json::json!({"metadata": {"annotations": {SELECTOR_ERROR_ANNOTATION: wanted}}});
    api.patch(
        &nso.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    if let Some(message) = wanted {
        publish(
            ctx,
            nso,
            EventType::Warning,
            "InvalidClusterSelector",
            &message,
        )
        .await;
    }
    Ok(())
}

async fn set_scheduling_label(ctx: &Context, namespace: &str, on: bool) -> Result<(), kube::Error> {
    let api = Api::<Namespace>::all(ctx.client.clone());
    let Some(ns) = api.get_opt(namespace).await? else {
        return Ok(());
    };
    let has = ns
        .labels()
        .get(SCHEDULING_ENABLED_LABEL)
        .map(String::as_str)
        == Some("true");
    if has == on || (!on && ns.metadata.deletion_timestamp.is_some()) {
        return Ok(());
    }
    let value = on.then_some("true");
    let patch = serde_json::json!({"metadata": {"labels": {SCHEDULING_ENABLED_LABEL: value}}});
    match api
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn write_status(
    nso: &NamespaceOffloading,
    ctx: &Context,
    remote_name: &str,
    phase: OffloadingPhase,
    states: &BTreeMap<String, ClusterState>,
) -> Result<(), kube::Error> {
    let now = Time(Timestamp::now());
    let previous = nso.status.clone().unwrap_or_default();
    let conditions = states
        .iter()
        .map(|(id, state)| {
            let before = previous
                .remote_namespaces_conditions
                .get(id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let after = status::cluster_conditions(state, remote_name, before, &now);
            let changed = |c: &crate::api::RemoteNamespaceCondition| {
                !before
                    .iter()
                    .any(|b| b.type_ == c.type_ && b.status == c.status && b.reason == c.reason)
            };
            for c in after.iter().filter(|c| changed(c)) {
                tracing::info!(
                    namespace = nso.namespace().unwrap_or_default(),
                    cluster_id = %id,
                    condition = %c.type_,
                    status = %c.status,
                    reason = c.reason.as_deref().unwrap_or_default(),
                    message = c.message.as_deref().unwrap_or_default(),
                    "remote namespace condition changed"
                );
            }
            (id.clone(), after)
        })
        .collect();
    let generation = nso.metadata.generation;
    let status = NamespaceOffloadingStatus {
        remote_namespace_name: Some(remote_name.to_owned()),
        offloading_phase: Some(phase),
        remote_namespaces_conditions: conditions,
        observed_generation: generation,
        conditions: vec![status::ready_condition(
            phase,
            generation,
            &previous.conditions,
            &now,
        )],
    };
    // The other conditions (PodsConform) belong to the placement controller.
    let mut current = previous.clone();
    current.conditions.retain(|c| c.type_ == status::READY);
    if nso.status.is_some() && current == status {
        return Ok(());
    }
    let api = Api::<NamespaceOffloading>::namespaced(
        ctx.client.clone(),
        &nso.namespace().unwrap_or_default(),
    );
    let body = serde_json::json!({
        "apiVersion": "offloading.liqo.io/v1alpha1", "kind": "NamespaceOffloading",
        "status": status,
    });
    api.patch_status(
        &nso.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    if previous.offloading_phase != Some(phase) {
        let type_ = match phase {
            OffloadingPhase::SomeFailed
            | OffloadingPhase::AllFailed
            | OffloadingPhase::NoClusterSelected => EventType::Warning,
            _ => EventType::Normal,
        };
        let failures: Vec<String> = states
            .iter()
            .filter_map(|(id, s)| match s {
                ClusterState::Failed { reason, message } => {
                    Some(format!("{id}: {reason}: {message}"))
                }
                _ => None,
            })
            .collect();
        let note = if failures.is_empty() {
            format!("offloading phase is now {phase:?}")
        } else {
            format!("offloading phase is now {phase:?}; {}", failures.join("; "))
        };
        tracing::info!(
            namespace = nso.namespace().unwrap_or_default(),
            ?phase,
            "offloading phase changed"
        );
        publish(ctx, nso, type_, &format!("{phase:?}"), &note).await;
    }
    Ok(())
}

async fn cleanup(nso: &NamespaceOffloading, ctx: &Context) -> Result<Action, OffloadingError> {
    let namespace = nso.namespace().unwrap_or_default();
    // From the immutable spec, not from the status (which anyone allowed to write the status
    // subresource could point at another namespace).
    let remote_name = nso
        .spec
        .remote_namespace_name(&namespace, &ctx.local_cluster_id);
    // The scheduling label stays until the end: the pod webhook gives new pods the Local
    // placement while the offloading terminates. No pod still waiting for a node goes to a
    // remote cluster either (best effort: a pod that cannot be evicted is reported, and
    // never holds up the termination).
    super::placement::enforce_at_end(nso, &ctx.placement).await;

    // Every cluster with a peering: connected ones, and those whose RemoteCluster has not
    // connected yet (just after a restart): termination waits for them. A cluster whose
    // peering was removed counts as done: nothing can be deleted there.
    let mut ids: BTreeSet<String> = ctx.peers.cluster_ids().into_iter().collect();
    ids.extend(
        ctx.peered_cluster_ids()
            .into_iter()
            .filter(|id| may_hold_ours(nso, id)),
    );
    let remaining: Vec<(String, ClusterState)> = join_all(ids.into_iter().map(|id| {
        let remote_name = &remote_name;
        let namespace = &namespace;
        async move {
            let Some(peer) = ctx.peers.get(&id) else {
                let waiting = ClusterState::failed(
                    "NotConnected",
                    format!("waiting for the peering of cluster {id} to connect, to delete namespace {remote_name} there; `namespace-offloading unpeer` gives it up"),
                );
                return (id, Some(waiting));
            };
            if let Some(state) = unreachable(&peer) {
                return (id, Some(state));
            }
            let api = Api::<Namespace>::all(peer.client.clone());
            let state = match with_timeout(api.get_opt(remote_name)).await {
                Err((reason, message)) => Some(ClusterState::failed(&reason, message)),
                Ok(existing) => {
                    match (
                        remote_namespace::ownership(
                            existing.as_ref(),
                            &ctx.local_cluster_id,
                            namespace,
                        ),
                        existing,
                    ) {
                        (Ownership::Missing | Ownership::Conflict(_), _) => None,
                        (Ownership::Ours, Some(existing)) => {
                            let params = remote_namespace::delete_exactly(&existing);
                            Some(match with_timeout(api.delete(remote_name, &params)).await {
                                Ok(_) => deleting(remote_name),
                                Err((reason, message)) => ClusterState::failed(
                                    &reason,
                                    format!("cannot delete namespace {remote_name}: {message}"),
                                ),
                            })
                        }
                        (Ownership::Ours | Ownership::OursTerminating, _) => {
                            Some(deleting(remote_name))
                        }
                    }
                }
            };
            (id, state)
        }
    }))
        .await
        .into_iter()
        .filter_map(|(id, state)| state.map(|s| (id, s)))
        .collect();

    let states: BTreeMap<String, ClusterState> = remaining.iter().cloned().collect();
    ctx.metrics.remote_namespaces(&namespace, &states);
    write_status(
        nso,
        ctx,
        &remote_name,
        OffloadingPhase::Terminating,
        &states,
    )
    .await?;
    if remaining.is_empty() {
        // While another finalizer keeps the object, it is still ending: new pods stay local
        // (the webhook) until it is gone, and the quick-offloading controller then clears
        // the label.
        if nso.finalizers().iter().all(|f| f == FINALIZER) {
            set_scheduling_label(ctx, &namespace, false).await?;
        }
        ctx.placement.forget(&namespace);
        publish(
            ctx,
            nso,
            EventType::Normal,
            "OffloadingTerminated",
            "every remote namespace is gone",
        )
        .await;
        Ok(Action::await_change())
    } else {
        let ids: Vec<&str> = remaining.iter().map(|(id, _)| id.as_str()).collect();
        Err(OffloadingError::Waiting(ids.join(", ")))
    }
}

/// Whether this offloading's status says a namespace of ours may exist in that cluster: it
/// got as far as a `Ready` condition there (created, or failing/terminating after trying).
/// A RemoteCluster that never connected (only `OffloadingRequired`) holds nothing of ours
/// and must not keep terminations waiting.
fn may_hold_ours(nso: &NamespaceOffloading, cluster_id: &str) -> bool {
    nso.status
        .as_ref()
        .and_then(|s| s.remote_namespaces_conditions.get(cluster_id))
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == status::READY && c.reason.as_deref() != Some("NoCredentials"))
        })
}

fn deleting(remote_name: &str) -> ClusterState {
    ClusterState::failed(
        "Terminating",
        format!("namespace {remote_name} is being deleted in this cluster, with everything in it"),
    )
}

async fn publish(
    ctx: &Context,
    nso: &NamespaceOffloading,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    super::publish(&ctx.recorder, nso, type_, reason, note, "Offloading").await;
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
    }
}
