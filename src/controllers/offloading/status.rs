//! How an offloading reports: its status (per-cluster conditions, phase, `Ready`), the
//! annotation naming an invalid selector, and an event when the phase changes.

use std::collections::BTreeMap;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};

use super::context::Context;
use crate::model::markers::SELECTOR_ERROR_ANNOTATION;
use crate::model::{
    api::{NamespaceOffloading, NamespaceOffloadingStatus, OffloadingPhase},
    markers::FIELD_MANAGER,
    status::{self, ClusterState},
};

pub(crate) async fn mark_selector(
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
        record(
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

pub(crate) async fn write(
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
            let changed = |c: &crate::model::api::RemoteNamespaceCondition| {
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
    let uid = nso.uid().unwrap_or_default();
    let version = nso.resource_version().unwrap_or_default();
    let just_written = ctx.written.lock().is_ok_and(|w| {
        w.get(&uid)
            .is_some_and(|(v, s)| *v == version && same_but_times(s, &status))
    });
    if just_written {
        // The store has not shown our last write yet; it said this already.
        return Ok(());
    }
    let body = serde_json::to_value(&status).map_err(kube::Error::SerdeError)?;
    crate::context::writes::apply_offloading_status(&ctx.client, nso, FIELD_MANAGER, body).await?;
    if let Ok(mut w) = ctx.written.lock() {
        w.insert(uid, (version, status));
    }
    if let Some(announce) = status::phase_event(previous.offloading_phase, phase) {
        let type_ = match announce {
            status::Announce::Warning => EventType::Warning,
            status::Announce::Normal => EventType::Normal,
        };
        let failures: Vec<String> = states
            .iter()
            .filter_map(|(id, s)| match s {
                ClusterState::Failed(p) => Some(format!("{id}: {p}")),
                _ => None,
            })
            .collect();
        let note = if failures.is_empty() {
            format!("offloading phase is now {phase:?}")
        } else {
            format!("offloading phase is now {phase:?}; {}", failures.join("; "))
        };
        record(ctx, nso, type_, &format!("{phase:?}"), &note).await;
    }
    if previous.offloading_phase != Some(phase) {
        tracing::info!(
            namespace = nso.namespace().unwrap_or_default(),
            ?phase,
            "offloading phase changed"
        );
    }
    Ok(())
}

/// Whether two statuses say the same, whatever their conditions' times (a condition that
/// is new in both got `now` twice).
fn same_but_times(a: &NamespaceOffloadingStatus, b: &NamespaceOffloadingStatus) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    for s in [&mut a, &mut b] {
        for c in s.remote_namespaces_conditions.values_mut().flatten() {
            c.last_transition_time = None;
        }
        for c in &mut s.conditions {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
    }
    a == b
}

/// Forgets what was written for an offloading that is gone.
pub(crate) fn forget(ctx: &Context, nso: &NamespaceOffloading) {
    if let Ok(mut w) = ctx.written.lock() {
        w.remove(&nso.uid().unwrap_or_default());
    }
}

/// Records an event on the offloading, unless its namespace is being deleted: the API
/// server refuses anything new there, events included, so the write would be wasted.
pub(crate) async fn record(
    ctx: &Context,
    nso: &NamespaceOffloading,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let namespace = nso.namespace().unwrap_or_default();
    let ending = ctx
        .stores
        .namespaces
        .get(&kube::runtime::reflector::ObjectRef::new(&namespace))
        .is_some_and(|ns| ns.metadata.deletion_timestamp.is_some());
    if ending {
        return;
    }
    crate::context::writes::record_event(&ctx.recorder, nso, type_, reason, note, "Offloading")
        .await;
}

#[cfg(test)]
mod tests;
