//! The writes every worker makes the same way: events for people, the status of a
//! NamespaceOffloading (each writer its own fields).

use kube::{Client, ResourceExt, runtime::events::Recorder};

use crate::model::api::NamespaceOffloading;

/// Publishes an event about `object`. Events are for people: a failure is logged, never fatal.
pub(crate) async fn record_event<K: kube::Resource<DynamicType = ()>>(
    recorder: &Recorder,
    object: &K,
    type_: kube::runtime::events::EventType,
    reason: &str,
    note: &str,
    action: &str,
) {
    let event = kube::runtime::events::Event {
        type_,
        // The API's limits: 128 characters for the reason, 1 kB for the note.
        reason: reason.chars().take(128).collect(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::debug!(error = %e, "cannot publish event");
    }
}

/// Applies `status` (the fields one writer owns) to a NamespaceOffloading's status, as
/// `field_manager` (server-side apply keeps each writer's conditions apart).
pub(crate) async fn apply_offloading_status(
    client: &Client,
    nso: &NamespaceOffloading,
    field_manager: &str,
    status: serde_json::Value,
) -> Result<(), kube::Error> {
    let api = kube::Api::<NamespaceOffloading>::namespaced(
        client.clone(),
        &nso.namespace().unwrap_or_default(),
    );
    let body = serde_json::json!({
        "apiVersion": "offloading.liqo.io/v1alpha1", "kind": "NamespaceOffloading",
        "status": status,
    });
    let params = kube::api::PatchParams::apply(field_manager).force();
    api.patch_status(&nso.name_any(), &params, &kube::api::Patch::Apply(body))
        .await?;
    Ok(())
}
