//! NamespaceOffloading reconciliation: select clusters by their virtual nodes, create the
//! remote namespaces we own, report per-cluster conditions and the phase, keep the
//! scheduling label on the local namespace, and on termination delete what we created.
//!
//! `selection` decides which clusters, `remote` acts on each of them, `status` reports;
//! `context` is what they read.

mod context;
mod remote;
mod selection;
mod status;

pub(crate) use context::Context;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use futures::future::join_all;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{self, Event as Finalizer, finalizer},
        reflector::ObjectRef,
    },
};

use crate::model::{
    admission::offloading::offloadable,
    api::{NamespaceOffloading, OFFLOADING_NAME, OffloadingPhase},
    markers::{OFFLOADING_FINALIZER, SCHEDULING_ENABLED_LABEL},
    reason::{Reason, classify, is_not_found},
    remote_namespace, selector,
    status::ClusterState,
};
use crate::plumbing::backoff;

/// Re-check everything this often even without events.
pub(crate) const RESYNC: Duration = Duration::from_secs(300);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub(crate) enum OffloadingError {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// Termination goes on: some remote namespaces still exist.
    #[error("waiting for remote namespaces to be deleted: {0}")]
    Waiting(String),
    #[error(transparent)]
    Finalizer(#[from] Box<finalizer::Error<OffloadingError>>),
}

/// This worker's name in metrics and in the backoff's keys.
pub(crate) const WORKER: &str = "offloading";

pub(crate) async fn reconcile(
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
    finalizer(&api, OFFLOADING_FINALIZER, nso, |event| async {
        match event {
            Finalizer::Apply(nso) => apply(&nso, &ctx).await,
            Finalizer::Cleanup(nso) => cleanup(&nso, &ctx).await,
        }
    })
    .await
    .map_err(|e| OffloadingError::Finalizer(Box::new(e)))
}

pub(crate) fn error_policy(
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
            finalizer::Error::RemoveFinalizer(e) if is_not_found(e) => {
                return Action::await_change();
            }
            // The finalizer was added meanwhile (by the reconcile of the event before,
            // which the store had not caught up with): kube's patch tests the list first.
            finalizer::Error::AddFinalizer(e)
                if matches!(classify(e), Reason::Invalid | Reason::Conflict) =>
            {
                tracing::debug!(namespace = nso.namespace().unwrap_or_default(), %error, "finalizer added meanwhile");
                return Action::requeue(Duration::from_millis(500));
            }
            _ => {}
        }
    }
    let reason = match error {
        OffloadingError::Kube(_) => "kubernetes",
        OffloadingError::Waiting(_) => "waiting",
        OffloadingError::Finalizer(_) => "finalizer",
    };
    ctx.metrics.error(WORKER, reason);
    tracing::warn!(namespace = nso.namespace().unwrap_or_default(), %error, "offloading reconcile failed");
    Action::requeue(ctx.backoff.failed(&backoff::key(WORKER, &*nso)))
}

async fn apply(nso: &NamespaceOffloading, ctx: &Context) -> Result<Action, OffloadingError> {
    let namespace = nso.namespace().unwrap_or_default();
    let remote_name = nso
        .spec
        .remote_name(&namespace, &ctx.replica.local_cluster_id);
    // The system namespaces and the manager's own are never offloaded, even when their
    // offloading got past the webhook (made before it refused them, or with it bypassed):
    // no cluster is selected (what was made there goes) and their pods stay home.
    let refused = offloadable(&namespace, &ctx.replica.own_namespace).err();
    // First, so that a namespace the admission webhook marked stays marked even while the
    // remote calls below take their time.
    let label_due = mark_namespace(ctx, nso, &namespace, refused.is_none()).await?;
    let problems = selector::validate(&nso.spec.cluster_selector, "spec.clusterSelector");
    status::mark_selector(nso, ctx, &problems).await?;
    if let Some(why) = &refused {
        status::record(ctx, nso, EventType::Warning, "OffloadingRefused", why).await;
    }

    // Another namespace of this cluster got this remote name first: nothing is made (what
    // this one made before seeing it goes), and every selected cluster says why.
    let all = ctx.stores.offloadings.state();
    let claimed = remote_namespace::earlier_claimant(
        nso,
        &remote_name,
        all.iter().map(|n| &**n),
        &ctx.replica.local_cluster_id,
    )
    .map(|holder| {
        remote_namespace::claimed_message(&remote_name, &holder.namespace().unwrap_or_default())
    });

    let selector_valid = problems.is_empty();
    let wanted = selection::clusters(nso, &ctx.stores.nodes, selector_valid && refused.is_none());
    let states: BTreeMap<String, ClusterState> = join_all(wanted.iter().map(|(id, selected)| {
        let remote_name = &remote_name;
        let namespace = &namespace;
        let claimed = &claimed;
        async move {
            let state = remote::ensure(
                ctx,
                id,
                (
                    *selected && claimed.is_none(),
                    selection::was_ready(nso, id),
                ),
                selector_valid,
                remote_name,
                namespace,
            )
            .await;
            let state = match claimed {
                Some(why) if *selected => ClusterState::failed(Reason::NameClaimed, why.clone()),
                _ => state,
            };
            (id.clone(), state)
        }
    }))
    .await
    .into_iter()
    .collect();

    ctx.metrics.remote_namespaces(&namespace, &states);
    let phase = crate::model::status::phase(false, !selector_valid || refused.is_some(), &states);
    status::write(nso, ctx, &remote_name, phase, &states).await?;
    let look = next_look(ctx, &namespace, &states);
    Ok(Action::requeue(label_due.map_or(look, |due| due.min(look))))
}

/// Per-cluster backoff: each failing cluster doubles its own delay; the next reconcile
/// comes when the soonest is due.
fn next_look(ctx: &Context, namespace: &str, states: &BTreeMap<String, ClusterState>) -> Duration {
    let mut soonest = RESYNC;
    if let Ok(mut failures) = ctx.failures.lock() {
        for (id, state) in states {
            let key = (namespace.to_owned(), id.clone());
            match state {
                ClusterState::Failed(_) | ClusterState::Pending => {
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
    soonest
}

/// How long after an offloading's creation its namespace's scheduling label is left to the
/// admission webhook, which sets it just before the object is stored: a store that does
/// not show it yet is most likely behind, and writing it again would be a wasted request.
const LABEL_GRACE: Duration = Duration::from_secs(5);

/// Sets the scheduling label when it is wanted and missing, unless the offloading is young
/// enough for the webhook's own label to be on its way: then, when to look again.
async fn mark_namespace(
    ctx: &Context,
    nso: &NamespaceOffloading,
    namespace: &str,
    on: bool,
) -> Result<Option<Duration>, kube::Error> {
    if on {
        let age = nso.metadata.creation_timestamp.as_ref().map(|t| {
            k8s_openapi::jiff::Timestamp::now()
                .duration_since(t.0)
                .unsigned_abs()
        });
        let left = age
            .and_then(|age| LABEL_GRACE.checked_sub(age))
            .filter(|l| !l.is_zero());
        let missing = ctx
            .stores
            .namespaces
            .get(&ObjectRef::new(namespace))
            .is_some_and(|ns| {
                ns.labels()
                    .get(SCHEDULING_ENABLED_LABEL)
                    .map(String::as_str)
                    != Some("true")
            });
        if missing && left.is_some() {
            return Ok(left);
        }
    }
    set_scheduling_label(ctx, namespace, on).await?;
    Ok(None)
}

/// Sets or clears `liqo.io/scheduling-enabled` on the local namespace (read from the
/// shared watch; written only when it differs).
async fn set_scheduling_label(ctx: &Context, namespace: &str, on: bool) -> Result<(), kube::Error> {
    let Some(ns) = ctx.stores.namespaces.get(&ObjectRef::new(namespace)) else {
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
    match Api::<Namespace>::all(ctx.client.clone())
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn cleanup(nso: &NamespaceOffloading, ctx: &Context) -> Result<Action, OffloadingError> {
    let namespace = nso.namespace().unwrap_or_default();
    // From the immutable spec, not from the status (which anyone allowed to write the status
    // subresource could point at another namespace).
    let remote_name = nso
        .spec
        .remote_name(&namespace, &ctx.replica.local_cluster_id);
    // The scheduling label stays until the end: the pod webhook gives new pods the Local
    // placement while the offloading terminates. No pod still waiting for a node goes to a
    // remote cluster either (best effort: a pod that cannot be evicted is reported, and
    // never holds up the termination).
    crate::controllers::placement::enforce_at_end(nso, &ctx.placement).await;

    // Every cluster with a peering: connected ones, and those whose RemoteCluster has not
    // connected yet (just after a restart): termination waits for them. A cluster whose
    // peering was removed counts as done: nothing can be deleted there.
    let mut ids: BTreeSet<String> = ctx.peers.cluster_ids().into_iter().collect();
    ids.extend(
        ctx.peered_cluster_ids()
            .into_iter()
            .filter(|id| selection::may_hold_ours(nso, id)),
    );
    let uid = nso.uid().unwrap_or_default();
    let cleaned = |id: &String| {
        ctx.cleaned
            .lock()
            .is_ok_and(|c| c.contains(&(uid.clone(), id.clone())))
    };
    ids.retain(|id| !cleaned(id));
    let remaining: Vec<(String, ClusterState)> = join_all(ids.into_iter().map(|id| {
        let remote_name = &remote_name;
        let namespace = &namespace;
        async move {
            let state = remote::remove(ctx, &id, remote_name, namespace).await;
            (id, state)
        }
    }))
    .await
    .into_iter()
    .filter_map(|(id, state)| match state {
        Some(s) => Some((id, s)),
        None => {
            if let Ok(mut c) = ctx.cleaned.lock() {
                c.insert((uid.clone(), id));
            }
            None
        }
    })
    .collect();
    if remaining.is_empty()
        && let Ok(mut c) = ctx.cleaned.lock()
    {
        c.retain(|(u, _)| *u != uid);
    }

    let states: BTreeMap<String, ClusterState> = remaining.iter().cloned().collect();
    ctx.metrics.remote_namespaces(&namespace, &states);
    let only_ours = nso.finalizers().iter().all(|f| f == OFFLOADING_FINALIZER);
    let lasted = nso.metadata.deletion_timestamp.as_ref().map(|t| {
        k8s_openapi::jiff::Timestamp::now()
            .duration_since(t.0)
            .unsigned_abs()
    });
    if crate::model::status::termination_worth_writing(
        nso.status.as_ref().and_then(|s| s.offloading_phase),
        &states,
        only_ours,
        lasted,
    ) {
        status::write(
            nso,
            ctx,
            &remote_name,
            OffloadingPhase::Terminating,
            &states,
        )
        .await?;
    }
    if remaining.is_empty() {
        // While another finalizer keeps the object, it is still ending: new pods stay local
        // (the webhook) until it is gone, and the label-offloading controller then clears
        // the label.
        if only_ours {
            set_scheduling_label(ctx, &namespace, false).await?;
        }
        ctx.placement.forget(&namespace);
        status::forget(ctx, nso);
        status::record(
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

#[cfg(test)]
mod tests;
