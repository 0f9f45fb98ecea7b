//! The writes every worker makes the same way: events for people, the status of a
//! NamespaceOffloading (each writer its own fields).

use kube::{Client, Resource, ResourceExt, runtime::events::Recorder};

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
        "apiVersion": NamespaceOffloading::api_version(&()), "kind": NamespaceOffloading::kind(&()),
        "status": status,
    });
    let params = kube::api::PatchParams::apply(field_manager).force();
    api.patch_status(&nso.name_any(), &params, &kube::api::Patch::Apply(body))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::Method;
    use kube::runtime::events::EventType;
    use serde_json::json;

    use super::*;
    use crate::{
        context::testing::{self, api_server, exchange, expect_event, offloading, reason_of},
        model::reason::{Reason, classify},
    };

    const STATUS_PATH: &str =
        "/apis/offloading.liqo.io/v1beta1/namespaces/shop/namespaceoffloadings/offloading/status";

    #[tokio::test(start_paused = true)]
    async fn the_status_is_applied_server_side_as_its_field_manager() {
        let (client, mut server) = api_server("local");
        let nso = offloading("shop");
        let status = json!({"offloadingPhase": "Ready", "remoteNamespaceName": "shop-c1"});
        let (written, ()) = exchange(
            apply_offloading_status(&client, &nso, "some-writer", status.clone()),
            async {
                let call = server.expect(Method::PATCH, STATUS_PATH).await;
                assert_eq!(call.param("fieldManager"), Some("some-writer"));
                assert_eq!(call.param("force"), Some("true"));
                assert_eq!(
                    call.content_type.as_deref(),
                    Some("application/apply-patch+yaml")
                );
                assert_eq!(
                    call.body,
                    json!({
                        "apiVersion": "offloading.liqo.io/v1beta1",
                        "kind": "NamespaceOffloading",
                        "status": status,
                    })
                );
                let mut answer = serde_json::to_value(&nso).unwrap();
                answer["status"] = status.clone();
                call.ok(&answer);
                server.nothing_more().await;
            },
        )
        .await;
        written.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_status_write_is_an_error_of_its_kind() {
        for (code, reason) in [
            (404, Reason::Invalid),
            (409, Reason::Conflict),
            (403, Reason::Forbidden),
            (500, Reason::ServerError),
        ] {
            let (client, mut server) = api_server("local");
            let nso = offloading("shop");
            let (written, ()) = exchange(
                apply_offloading_status(&client, &nso, "w", json!({})),
                async {
                    server
                        .expect(Method::PATCH, STATUS_PATH)
                        .await
                        .fail(code, reason_of(code));
                    server.nothing_more().await;
                },
            )
            .await;
            let error = written.unwrap_err();
            assert!(
                matches!(&error, kube::Error::Api(s) if s.code == code),
                "{code}: {error:?}"
            );
            assert_eq!(classify(&error), reason, "{code}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_is_cut_to_the_api_limits_and_its_failure_is_not_fatal() {
        let (client, mut server) = api_server("local");
        let recorder = testing::shared(client, testing::stores(), testing::peers([])).recorder;
        let nso = offloading("shop");
        let long_reason = "R".repeat(200);
        let long_note = "n".repeat(3000);
        let ((), ()) = exchange(
            record_event(
                &recorder,
                &nso,
                EventType::Warning,
                &long_reason,
                &long_note,
                "Act",
            ),
            async {
                let event =
                    expect_event(&mut server, "shop", "NamespaceOffloading", "offloading").await;
                assert_eq!(event["type"], "Warning");
                assert_eq!(event["reason"], "R".repeat(128));
                assert_eq!(event["note"], "n".repeat(1000));
                assert_eq!(event["action"], "Act");
                assert_eq!(event["regarding"]["uid"], "nso-shop");
                server.nothing_more().await;
            },
        )
        .await;
        // Refused: logged, and the caller goes on.
        let ((), ()) = exchange(
            record_event(&recorder, &nso, EventType::Normal, "Other", "x", "Act"),
            async {
                server
                    .expect(
                        Method::POST,
                        "/apis/events.k8s.io/v1/namespaces/shop/events",
                    )
                    .await
                    .fail(403, "Forbidden");
                server.nothing_more().await;
            },
        )
        .await;
    }
}
