//! The status writer against a mocked local API server: the server-side apply of the
//! status, the event on a phase change, the selector annotation, and their failures.

use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::{
    context::testing::{self, ApiServer, api_server, exchange, expect_event, reason_of},
    model::{reason::Reason, status::ClusterState},
};

const STATUS_PATH: &str =
    "/apis/offloading.liqo.io/v1beta1/namespaces/shop/namespaceoffloadings/offloading/status";
const OBJECT_PATH: &str =
    "/apis/offloading.liqo.io/v1beta1/namespaces/shop/namespaceoffloadings/offloading";
const REMOTE_NAME: &str = "shop-c1";

fn context() -> (Context, ApiServer) {
    let (client, local) = api_server("local");
    let shared = testing::shared(client, testing::stores(), testing::peers([]));
    (Context::for_tests(shared), local)
}

fn states(list: &[(&str, ClusterState)]) -> BTreeMap<String, ClusterState> {
    list.iter()
        .map(|(id, s)| ((*id).to_owned(), s.clone()))
        .collect()
}

fn ready_and_unselected() -> BTreeMap<String, ClusterState> {
    states(&[
        ("c2", ClusterState::Ready),
        ("c3", ClusterState::NotSelected),
    ])
}

/// The status apply: its path, parameters and content type; answers it and returns the
/// status it applies.
async fn expect_apply(local: &mut ApiServer, nso: &NamespaceOffloading) -> Value {
    let call = local.expect(Method::PATCH, STATUS_PATH).await;
    assert_eq!(call.param("fieldManager"), Some(FIELD_MANAGER));
    assert_eq!(call.param("force"), Some("true"));
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(call.body["apiVersion"], "offloading.liqo.io/v1beta1");
    assert_eq!(call.body["kind"], "NamespaceOffloading");
    let status = call.body["status"].clone();
    let mut answer = serde_json::to_value(nso).unwrap();
    answer["status"] = status.clone();
    call.ok(&answer);
    status
}

/// What a first write of `states` applies (as the API server then holds it).
async fn first_status(
    phase: OffloadingPhase,
    states: &BTreeMap<String, ClusterState>,
) -> NamespaceOffloadingStatus {
    let (ctx, mut local) = context();
    let nso = testing::offloading("shop");
    let (written, status) = exchange(write(&nso, &ctx, REMOTE_NAME, phase, states), async {
        let status = expect_apply(&mut local, &nso).await;
        // Only a first phase someone should look at is announced.
        if crate::model::status::phase_event(None, phase).is_some() {
            expect_event(&mut local, "shop", "NamespaceOffloading", "offloading").await;
        }
        local.nothing_more().await;
        status
    })
    .await;
    written.unwrap();
    serde_json::from_value(status).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_status_is_applied_server_side_with_each_clusters_conditions_and_the_phase() {
    let (ctx, mut local) = context();
    let nso = testing::offloading("shop");
    let states = ready_and_unselected();
    let (written, ()) = exchange(
        write(&nso, &ctx, REMOTE_NAME, OffloadingPhase::Ready, &states),
        async {
            let status = expect_apply(&mut local, &nso).await;
            assert_eq!(status["remoteNamespaceName"], REMOTE_NAME);
            assert_eq!(status["offloadingPhase"], "Ready");
            assert_eq!(status["observedGeneration"], 1);
            let c2 = &status["remoteNamespacesConditions"]["c2"];
            assert_eq!(c2.as_array().unwrap().len(), 1, "{c2}");
            assert_eq!(c2[0]["type"], "Ready");
            assert_eq!(c2[0]["status"], "True");
            assert_eq!(c2[0]["reason"], "NamespaceCreated");
            assert_eq!(c2[0]["message"], "namespace shop-c1 exists in this cluster");
            assert!(c2[0]["lastTransitionTime"].is_string(), "{c2}");
            let c3 = &status["remoteNamespacesConditions"]["c3"];
            assert_eq!(c3[0]["type"], "OffloadingRequired");
            assert_eq!(c3[0]["status"], "False");
            assert_eq!(c3[0]["reason"], "ClusterNotSelected");
            let conditions = status["conditions"].as_array().unwrap();
            assert_eq!(conditions.len(), 1, "{status}");
            assert_eq!(conditions[0]["type"], "Ready");
            assert_eq!(conditions[0]["status"], "True");
            assert_eq!(conditions[0]["reason"], "Ready");
            assert_eq!(conditions[0]["observedGeneration"], 1);
            // The first healthy phase is the normal course: the status says it, no event.
            local.nothing_more().await;
        },
    )
    .await;
    written.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_status_is_not_written_again() {
    let states = ready_and_unselected();
    let mut status = first_status(OffloadingPhase::Ready, &states).await;
    // The placement controller's condition is its own: it makes no difference here.
    status.conditions.push(
        serde_json::from_value(json!({
            "type": "PodsConform", "status": "True", "reason": "AllPodsConform", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }))
        .unwrap(),
    );
    let mut nso = testing::offloading("shop");
    nso.status = Some(status);
    let (ctx, mut local) = context();
    let (written, ()) = exchange(
        write(&nso, &ctx, REMOTE_NAME, OffloadingPhase::Ready, &states),
        local.nothing_more(),
    )
    .await;
    written.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_status_just_written_is_not_written_again_while_the_store_lags() {
    let states = ready_and_unselected();
    let (ctx, mut local) = context();
    let nso = testing::offloading("shop");
    let (written, ()) = exchange(
        write(&nso, &ctx, REMOTE_NAME, OffloadingPhase::Ready, &states),
        async {
            expect_apply(&mut local, &nso).await;
            local.nothing_more().await;
        },
    )
    .await;
    written.unwrap();
    // Woken again before the store shows the write: the same object, the same version.
    let (again, ()) = exchange(
        write(&nso, &ctx, REMOTE_NAME, OffloadingPhase::Ready, &states),
        local.nothing_more(),
    )
    .await;
    again.unwrap();
    // Something else to say is written, store lag or not.
    let failing = states_with_c2_failing();
    let (changed, ()) = exchange(
        write(
            &nso,
            &ctx,
            REMOTE_NAME,
            OffloadingPhase::SomeFailed,
            &failing,
        ),
        async {
            let status = expect_apply(&mut local, &nso).await;
            assert_eq!(status["offloadingPhase"], "SomeFailed");
            expect_event(&mut local, "shop", "NamespaceOffloading", "offloading").await;
            local.nothing_more().await;
        },
    )
    .await;
    changed.unwrap();
}

fn states_with_c2_failing() -> BTreeMap<String, ClusterState> {
    states(&[
        (
            "c2",
            ClusterState::failed(Reason::Forbidden, "may not create namespaces"),
        ),
        ("c3", ClusterState::Ready),
    ])
}

#[tokio::test(start_paused = true)]
async fn a_change_within_the_same_phase_is_written_without_an_event() {
    let before = states(&[
        ("c2", ClusterState::Ready),
        ("c3", ClusterState::failed(Reason::AlreadyExists, "taken")),
    ]);
    let mut nso = testing::offloading("shop");
    nso.status = Some(first_status(OffloadingPhase::SomeFailed, &before).await);
    let after = states(&[
        ("c2", ClusterState::Ready),
        ("c3", ClusterState::failed(Reason::Forbidden, "not allowed")),
    ]);
    let (ctx, mut local) = context();
    let (written, ()) = exchange(
        write(&nso, &ctx, REMOTE_NAME, OffloadingPhase::SomeFailed, &after),
        async {
            let status = expect_apply(&mut local, &nso).await;
            assert_eq!(
                status["remoteNamespacesConditions"]["c3"][0]["reason"],
                "Forbidden"
            );
            local.nothing_more().await;
        },
    )
    .await;
    written.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_phase_change_is_announced_with_the_failures_and_times_move_only_where_status_does() {
    let mut nso = testing::offloading("shop");
    let before = first_status(OffloadingPhase::Ready, &ready_and_unselected()).await;
    // Make the earlier times recognisable.
    let mut before_json = serde_json::to_value(&before).unwrap();
    let earlier = "2020-01-01T00:00:00Z";
    before_json["remoteNamespacesConditions"]["c2"][0]["lastTransitionTime"] = earlier.into();
    before_json["conditions"][0]["lastTransitionTime"] = earlier.into();
    nso.status = Some(serde_json::from_value(before_json).unwrap());
    let after = states(&[
        ("c2", ClusterState::Ready),
        (
            "c3",
            ClusterState::failed(Reason::AlreadyExists, "namespace shop-c1 is not ours"),
        ),
    ]);
    let (ctx, mut local) = context();
    let (written, ()) = exchange(
        write(&nso, &ctx, REMOTE_NAME, OffloadingPhase::SomeFailed, &after),
        async {
            let status = expect_apply(&mut local, &nso).await;
            assert_eq!(status["offloadingPhase"], "SomeFailed");
            let c2 = &status["remoteNamespacesConditions"]["c2"][0];
            assert_eq!(c2["lastTransitionTime"], earlier, "still Ready: {c2}");
            let c3 = &status["remoteNamespacesConditions"]["c3"][0];
            assert_eq!(
                (&c3["type"], &c3["status"], &c3["reason"]),
                (&json!("Ready"), &json!("False"), &json!("AlreadyExists"))
            );
            let ready = &status["conditions"][0];
            assert_eq!(ready["status"], "False");
            assert_eq!(ready["reason"], "SomeFailed");
            assert_ne!(ready["lastTransitionTime"], earlier, "{ready}");
            let event = expect_event(&mut local, "shop", "NamespaceOffloading", "offloading").await;
            assert_eq!(event["type"], "Warning");
            assert_eq!(event["reason"], "SomeFailed");
            assert_eq!(
                event["note"],
                "offloading phase is now SomeFailed; c3: AlreadyExists: namespace shop-c1 is not ours"
            );
            local.nothing_more().await;
        },
    )
    .await;
    written.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_status_write_refused_is_an_error_and_announces_nothing() {
    for code in [404, 409, 403, 500] {
        let (ctx, mut local) = context();
        let nso = testing::offloading("shop");
        let states = ready_and_unselected();
        let (written, ()) = exchange(
            write(&nso, &ctx, REMOTE_NAME, OffloadingPhase::Ready, &states),
            async {
                local
                    .expect(Method::PATCH, STATUS_PATH)
                    .await
                    .fail(code, reason_of(code));
                local.nothing_more().await;
            },
        )
        .await;
        let error = written.unwrap_err();
        assert!(
            matches!(&error, kube::Error::Api(s) if s.code == code),
            "{code}: {error:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_event_that_cannot_be_recorded_does_not_fail_the_write() {
    let (ctx, mut local) = context();
    let nso = testing::offloading("shop");
    let states = states(&[(
        "c2",
        ClusterState::failed(Reason::Forbidden, "may not create namespaces"),
    )]);
    let (written, ()) = exchange(
        write(&nso, &ctx, REMOTE_NAME, OffloadingPhase::AllFailed, &states),
        async {
            expect_apply(&mut local, &nso).await;
            local
                .expect(
                    Method::POST,
                    "/apis/events.k8s.io/v1/namespaces/shop/events",
                )
                .await
                .fail(500, "InternalError");
            local.nothing_more().await;
        },
    )
    .await;
    written.unwrap();
}

// The selector annotation.

#[tokio::test(start_paused = true)]
async fn an_invalid_selector_is_named_in_an_annotation_and_an_event() {
    let (ctx, mut local) = context();
    let nso = testing::offloading("shop");
    let problems = vec!["first".to_owned(), "second".to_owned()];
    let (marked, ()) = exchange(mark_selector(&nso, &ctx, &problems), async {
        let call = local.expect(Method::PATCH, OBJECT_PATH).await;
        assert_eq!(
            call.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(
            call.body,
            json!({"metadata": {"annotations": {SELECTOR_ERROR_ANNOTATION: "first; second"}}})
        );
        call.ok(&serde_json::to_value(&nso).unwrap());
        let event = expect_event(&mut local, "shop", "NamespaceOffloading", "offloading").await;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "InvalidClusterSelector");
        assert_eq!(event["note"], "first; second");
        local.nothing_more().await;
    })
    .await;
    marked.unwrap();
}

fn marked(text: &str) -> NamespaceOffloading {
    let mut nso = testing::offloading("shop");
    nso.metadata.annotations =
        Some([(SELECTOR_ERROR_ANNOTATION.to_owned(), text.to_owned())].into());
    nso
}

#[tokio::test(start_paused = true)]
async fn a_selector_fixed_loses_its_annotation_without_an_event() {
    let (ctx, mut local) = context();
    let nso = marked("first");
    let (cleared, ()) = exchange(mark_selector(&nso, &ctx, &[]), async {
        let call = local.expect(Method::PATCH, OBJECT_PATH).await;
        assert_eq!(
            call.body,
            json!({"metadata": {"annotations": {SELECTOR_ERROR_ANNOTATION: null}}})
        );
        call.ok(&serde_json::to_value(&nso).unwrap());
        local.nothing_more().await;
    })
    .await;
    cleared.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_selector_annotation_that_already_says_it_is_not_written() {
    let (ctx, mut local) = context();
    let cases = [
        (
            marked("first; second"),
            vec!["first".into(), "second".into()],
        ),
        (testing::offloading("shop"), Vec::<String>::new()),
    ];
    for (nso, problems) in cases {
        let (result, ()) =
            exchange(mark_selector(&nso, &ctx, &problems), local.nothing_more()).await;
        result.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_selector_annotation_refused_is_an_error_and_announces_nothing() {
    for code in [404, 409, 403, 500] {
        let (ctx, mut local) = context();
        let nso = testing::offloading("shop");
        let (result, ()) = exchange(mark_selector(&nso, &ctx, &["bad".to_owned()]), async {
            local
                .expect(Method::PATCH, OBJECT_PATH)
                .await
                .fail(code, reason_of(code));
            local.nothing_more().await;
        })
        .await;
        assert!(
            matches!(&result, Err(kube::Error::Api(s)) if s.code == code),
            "{code}: {result:?}"
        );
    }
}
