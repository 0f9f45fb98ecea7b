//! How a peering reports: the RemoteCluster's status (`Connected` condition, cluster ID
//! and labels, virtual node) and an event when the connection changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};

use super::context::Context;
use crate::model::{
    api::{RemoteCluster, RemoteClusterStatus},
    markers::FIELD_MANAGER,
    reason::Problem,
    status::transition_time,
};

pub(crate) const CONNECTED: &str = "Connected";
/// Whether every watch of the cluster has listed (since its last error): until one has,
/// nothing is decided from its store.
pub(crate) const WATCHES_LISTED: &str = "WatchesListed";

/// Why the `WatchesListed` condition is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WatchesReason {
    /// Every watch has listed.
    Listed,
    /// Some watch has not listed yet, and has not failed.
    Listing,
    /// Some watch failed and is retrying (with backoff) until it lists again.
    WatchFailing,
}

impl WatchesReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Listed => "Listed",
            Self::Listing => "Listing",
            Self::WatchFailing => "WatchFailing",
        }
    }
}

/// The `WatchesListed` condition for the watches' states.
pub(crate) fn watches_condition(
    states: &[crate::context::peers::WatchState],
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let failing: Vec<String> = states
        .iter()
        .filter(|s| !s.listed)
        .filter_map(|s| s.failure.as_ref().map(|f| format!("{} ({f})", s.kind)))
        .collect();
    let listing: Vec<&str> = states
        .iter()
        .filter(|s| !s.listed && s.failure.is_none())
        .map(|s| s.kind)
        .collect();
    let (reason, message) = if !failing.is_empty() {
        (
            WatchesReason::WatchFailing,
            format!(
                "watches failing, retried with backoff: {}; nothing is decided from them until they list again",
                failing.join(", ")
            ),
        )
    } else if !listing.is_empty() {
        (
            WatchesReason::Listing,
            format!("watches not listed yet: {}", listing.join(", ")),
        )
    } else {
        (
            WatchesReason::Listed,
            format!("all {} watches of this cluster have listed", states.len()),
        )
    };
    let status = if reason == WatchesReason::Listed {
        "True"
    } else {
        "False"
    };
    Condition {
        type_: WATCHES_LISTED.into(),
        status: status.into(),
        reason: reason.as_str().into(),
        message,
        observed_generation: None,
        last_transition_time: transition_time(previous, WATCHES_LISTED, status, now),
    }
}

pub(crate) fn connected_condition(
    connected: &Result<(), Problem>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let (status, reason, message) = match connected {
        Ok(()) => (
            "True",
            CONNECTED.to_owned(),
            "the remote API server answers with these credentials".to_owned(),
        ),
        Err(p) => ("False", p.reason.to_string(), p.message.clone()),
    };
    Condition {
        type_: CONNECTED.into(),
        status: status.into(),
        reason,
        message,
        observed_generation: None,
        last_transition_time: transition_time(previous, CONNECTED, status, now),
    }
}

/// Writes the status if it changed; logs and announces a change of connection.
pub(crate) async fn write(
    ctx: &Context,
    rc: &RemoteCluster,
    status: RemoteClusterStatus,
    connected: bool,
) -> Result<(), kube::Error> {
    let name = rc.name_any();
    let previous = rc.status.clone().unwrap_or_default();
    let was = previous
        .conditions
        .iter()
        .find(|c| c.type_ == CONNECTED)
        .map(|c| c.status.clone());
    if let Some(condition) = status.conditions.iter().find(|c| c.type_ == CONNECTED)
        && was.as_deref() != Some(condition.status.as_str())
    {
        tracing::info!(
            remote_cluster = %name,
            cluster_id = status.cluster_id.as_deref().unwrap_or_default(),
            connected = %condition.status,
            reason = %condition.reason,
            message = %condition.message,
            "peering connection changed"
        );
        let (type_, reason) = if connected {
            (EventType::Normal, "Connected")
        } else {
            (EventType::Warning, "Disconnected")
        };
        record(ctx, rc, type_, reason, &condition.message).await;
    }
    if Some(&status) == rc.status.as_ref() {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": "offloading.liqo.io/v1alpha1", "kind": "RemoteCluster",
        "status": status,
    });
    Api::<RemoteCluster>::all(ctx.client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

pub(crate) async fn record(
    ctx: &Context,
    rc: &RemoteCluster,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    crate::context::writes::record_event(&ctx.recorder, rc, type_, reason, note, "Peering").await;
}

#[cfg(test)]
mod tests;
