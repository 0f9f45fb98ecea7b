//! Placement against a mocked local API server: the eviction of a breaching pod its owner
//! recreates and what each refusal leads to, the report (one event per breach) of one that
//! cannot be evicted, and the `PodsConform` condition applied as its own field manager,
//! only when it changes.

use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::{
    context::testing::{self, ApiServer, api_server, exchange, expect_event, store},
    controllers::testing::expect_event_again,
    model::{
        api::{NamespaceOffloadingStatus, OffloadingPhase, PodOffloadingStrategy},
        markers::PLACEMENT_FIELD_MANAGER,
    },
};

const STATUS_PATH: &str =
    "/apis/offloading.liqo.io/v1beta1/namespaces/shop/namespaceoffloadings/offloading/status";
const STRATEGY: &str = "podOffloadingStrategy Remote";

fn context(pods: Vec<Pod>) -> (Arc<Context>, ApiServer) {
    let (client, local) = api_server("local");
    let mut stores = testing::stores();
    stores.pods = store(pods);
    let shared = testing::shared(client, stores, testing::peers([]));
    (Arc::new(Context::new(shared)), local)
}

/// A pending pod of `shop` that lacks the affinity the Remote strategy imposes; owned by a
/// ReplicaSet (evictable) or bare (reported only).
fn pod(name: &str, owned: bool) -> Pod {
    let owners = if owned {
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-web", "controller": true}])
    } else {
        json!([])
    };
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": "shop", "uid": format!("uid-{name}"),
            "ownerReferences": owners,
        },
        "spec": {"containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": "Pending"},
    }))
    .unwrap()
}

/// A pending pod the webhook placed (it keeps to the Remote strategy).
fn placed(name: &str) -> Pod {
    let mut pod = pod(name, true);
    pod.spec.as_mut().unwrap().affinity = Some(
        serde_json::from_value(
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]}]}}}),
        )
        .unwrap(),
    );
    pod
}

/// The NamespaceOffloading of `shop`, Remote, its status first written by the offloading
/// controller (`Ready`) and holding these conditions of ours too.
fn offloading(pods_conform: Vec<Condition>) -> Arc<NamespaceOffloading> {
    let mut nso = testing::offloading("shop");
    nso.spec.pod_offloading_strategy = PodOffloadingStrategy::Remote;
    let mut conditions = vec![
        serde_json::from_value(json!({
            "type": "Ready", "status": "True", "reason": "Ready", "message": "",
            "lastTransitionTime": "2020-01-01T00:00:00Z", "observedGeneration": 1,
        }))
        .unwrap(),
    ];
    conditions.extend(pods_conform);
    nso.status = Some(NamespaceOffloadingStatus {
        offloading_phase: Some(OffloadingPhase::Ready),
        conditions,
        ..NamespaceOffloadingStatus::default()
    });
    Arc::new(nso)
}

/// What `PodsConform` says when every pod conforms (as last written).
fn all_conform() -> Condition {
    pods_conform_condition(&[], STRATEGY, Some(1), &[], &Time(Timestamp::UNIX_EPOCH))
}

/// `reconcile`, the local API server playing `script`, then hearing nothing more.
async fn reconcile_with<S>(
    ctx: &Arc<Context>,
    nso: &Arc<NamespaceOffloading>,
    local: &mut ApiServer,
    script: impl AsyncFnOnce(&mut ApiServer) -> S,
) -> (Result<Action, PlacementError>, S) {
    exchange(reconcile(nso.clone(), ctx.clone()), async {
        let out = script(local).await;
        local.nothing_more().await;
        out
    })
    .await
}

/// The eviction of pod `name`: path and body; the call, to answer.
async fn expect_eviction(local: &mut ApiServer, name: &str) -> testing::Call {
    let call = local
        .expect(
            Method::POST,
            &format!("/api/v1/namespaces/shop/pods/{name}/eviction"),
        )
        .await;
    assert_eq!(call.content_type.as_deref(), Some("application/json"));
    assert_eq!(call.body["metadata"]["name"], name, "{}", call.body);
    // Only the pod looked at. (kube 5 spells the field `delete_options`: see
    // `the_eviction_precondition_is_sent_as_the_api_names_it`.)
    let options = call
        .body
        .get("deleteOptions")
        .or_else(|| call.body.get("delete_options"))
        .unwrap_or_else(|| panic!("no delete options: {}", call.body));
    assert_eq!(
        options["preconditions"],
        json!({"uid": format!("uid-{name}")}),
        "{}",
        call.body
    );
    call
}

/// The `PodsConform` apply: path, field manager, content type, and that it carries that
/// condition alone; answered; returns the condition.
async fn expect_condition(local: &mut ApiServer, nso: &NamespaceOffloading) -> Value {
    let call = local.expect(Method::PATCH, STATUS_PATH).await;
    assert_eq!(call.param("fieldManager"), Some(PLACEMENT_FIELD_MANAGER));
    assert_eq!(call.param("force"), Some("true"));
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(call.body["apiVersion"], "offloading.liqo.io/v1beta1");
    assert_eq!(call.body["kind"], "NamespaceOffloading");
    let status = call.body["status"].clone();
    assert_eq!(
        status.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["conditions"],
        "only its own field: {status}"
    );
    let conditions = status["conditions"].as_array().unwrap().clone();
    assert_eq!(conditions.len(), 1, "only its own condition: {status}");
    assert_eq!(conditions[0]["type"], PODS_CONFORM);
    assert_eq!(conditions[0]["observedGeneration"], 1);
    let mut answer = serde_json::to_value(nso).unwrap();
    answer["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(conditions[0].clone());
    call.ok(&answer);
    conditions[0].clone()
}

/// `nso` as it is once `condition` was applied.
fn with_condition(nso: &NamespaceOffloading, condition: &Value) -> Arc<NamespaceOffloading> {
    let mut nso = nso.clone();
    nso.status
        .as_mut()
        .unwrap()
        .conditions
        .push(serde_json::from_value(condition.clone()).unwrap());
    Arc::new(nso)
}

fn text(event: &Value, field: &str) -> String {
    event[field].as_str().unwrap_or_default().to_owned()
}

// Eviction.

#[tokio::test(start_paused = true)]
async fn a_breaching_pod_its_owner_recreates_is_evicted_and_the_condition_says_all_conform() {
    let (ctx, mut local) = context(vec![pod("web-1", true), placed("web-2")]);
    let nso = offloading(vec![]);
    let (done, ()) = reconcile_with(&ctx, &nso, &mut local, async |local| {
        expect_eviction(local, "web-1")
            .await
            .answer(201, &testing::success());
        let event = expect_event(local, "shop", "Pod", "web-1").await;
        assert_eq!(text(&event, "type"), "Normal");
        assert_eq!(text(&event, "reason"), "EvictedForPlacement");
        assert_eq!(text(&event, "action"), "EnforcePlacement");
        assert!(
            text(&event, "note").ends_with(&format!("({STRATEGY})")),
            "{event}"
        );
        let condition = expect_condition(local, &nso).await;
        assert_eq!(condition["status"], "True");
        assert_eq!(condition["reason"], "AllPodsConform");
    })
    .await;
    assert_eq!(done.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn the_eviction_precondition_is_sent_as_the_api_names_it() {
    let (ctx, mut local) = context(vec![pod("web-1", true)]);
    let nso = offloading(vec![all_conform()]);
    let (_, ()) = reconcile_with(&ctx, &nso, &mut local, async |local| {
        let call = local
            .expect(Method::POST, "/api/v1/namespaces/shop/pods/web-1/eviction")
            .await;
        assert_eq!(
            call.body["deleteOptions"]["preconditions"]["uid"], "uid-web-1",
            "{}",
            call.body
        );
        call.answer(201, &testing::success());
        expect_event(local, "shop", "Pod", "web-1").await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_pod_gone_or_replaced_before_its_eviction_counts_as_evicted_away() {
    for (code, reason) in [(404, "NotFound"), (409, "Conflict")] {
        let (ctx, mut local) = context(vec![pod("web-1", true)]);
        let nso = offloading(vec![]);
        let (done, ()) = reconcile_with(&ctx, &nso, &mut local, async |local| {
            expect_eviction(local, "web-1").await.fail(code, reason);
            let condition = expect_condition(local, &nso).await;
            assert_eq!(condition["status"], "True", "{code}");
        })
        .await;
        assert_eq!(done.unwrap(), Action::await_change(), "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_eviction_is_reported_once_written_once_and_retried() {
    for (code, reason) in [
        (429, "TooManyRequests"),
        (403, "Forbidden"),
        (500, "InternalError"),
    ] {
        let (ctx, mut local) = context(vec![pod("web-1", true)]);
        let nso = offloading(vec![]);
        let (done, condition) = reconcile_with(&ctx, &nso, &mut local, async |local| {
            expect_eviction(local, "web-1").await.fail(code, reason);
            let event = expect_event(local, "shop", "Pod", "web-1").await;
            assert_eq!(text(&event, "type"), "Warning");
            assert_eq!(text(&event, "reason"), "BreaksOffloadingStrategy");
            assert!(
                text(&event, "note").contains(&format!(
                    "({STRATEGY}; its eviction failed: {reason} (from mocked API server local) ({reason}))"
                )),
                "{event}"
            );
            let event = expect_event(local, "shop", "NamespaceOffloading", "offloading").await;
            assert_eq!(text(&event, "type"), "Warning");
            assert_eq!(text(&event, "reason"), "PodsBreakStrategy");
            assert!(
                text(&event, "note").starts_with(&format!(
                    "1 pod(s) break the placement ({STRATEGY}): web-1 ("
                )),
                "{event}"
            );
            let condition = expect_condition(local, &nso).await;
            assert_eq!(condition["status"], "False");
            assert_eq!(condition["reason"], "PodsBreakStrategy");
            assert!(
                condition["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("1 pod(s) break the placement ({STRATEGY}): web-1 (")),
                "{condition}"
            );
            condition
        })
        .await;
        assert_eq!(done.unwrap(), Action::requeue(RETRY), "{code}");
        // Tried again, refused again: no second event, no write.
        let nso = with_condition(&nso, &condition);
        let (done, ()) = reconcile_with(&ctx, &nso, &mut local, async |local| {
            expect_eviction(local, "web-1").await.fail(code, reason);
        })
        .await;
        assert_eq!(done.unwrap(), Action::requeue(RETRY), "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn after_three_evictions_of_one_owners_pods_they_are_reported_instead() {
    let (ctx, mut local) = context(vec![pod("web-1", true)]);
    let nso = offloading(vec![all_conform()]);
    for round in 0..3 {
        let (done, ()) = reconcile_with(&ctx, &nso, &mut local, async |local| {
            expect_eviction(local, "web-1")
                .await
                .answer(201, &testing::success());
            let event = if round == 0 {
                expect_event(local, "shop", "Pod", "web-1").await
            } else {
                expect_event_again(local, "shop").await
            };
            assert_eq!(text(&event, "reason"), "EvictedForPlacement");
        })
        .await;
        assert_eq!(done.unwrap(), Action::await_change(), "{round}");
    }
    let (done, ()) = reconcile_with(&ctx, &nso, &mut local, async |local| {
        let event = expect_event(local, "shop", "Pod", "web-1").await;
        assert_eq!(text(&event, "reason"), "BreaksOffloadingStrategy");
        assert!(
            text(&event, "note").contains(
                "its owner's new pods keep breaking it (3 evictions in 5 min), so the webhook does not reach them"
            ),
            "{event}"
        );
        expect_event(local, "shop", "NamespaceOffloading", "offloading").await;
        let condition = expect_condition(local, &nso).await;
        assert_eq!(condition["status"], "False");
    })
    .await;
    // Nothing to retry: evicting again would not help.
    assert_eq!(done.unwrap(), Action::await_change());
}

// Report.

#[tokio::test(start_paused = true)]
async fn pods_that_cannot_be_evicted_get_one_event_each_and_the_condition_is_written_once() {
    let (ctx, mut local) = context(vec![pod("job-a", false), pod("job-b", false)]);
    let nso = offloading(vec![all_conform()]);
    let (done, condition) = reconcile_with(&ctx, &nso, &mut local, async |local| {
        for name in ["job-a", "job-b"] {
            let event = expect_event(local, "shop", "Pod", name).await;
            assert_eq!(text(&event, "type"), "Warning");
            assert_eq!(text(&event, "reason"), "BreaksOffloadingStrategy");
            assert!(
                text(&event, "note").contains(&format!("({STRATEGY}); it was not placed")),
                "{event}"
            );
        }
        let event = expect_event(local, "shop", "NamespaceOffloading", "offloading").await;
        let note = text(&event, "note");
        assert!(
            note.starts_with(&format!(
                "2 pod(s) break the placement ({STRATEGY}): job-a ("
            )),
            "{note}"
        );
        assert!(note.contains("; job-b ("), "{note}");
        let condition = expect_condition(local, &nso).await;
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "PodsBreakStrategy");
        // The time moved with the status.
        assert_ne!(condition["lastTransitionTime"], "1970-01-01T00:00:00Z");
        condition
    })
    .await;
    assert_eq!(done.unwrap(), Action::await_change());
    // Again, with the condition written: nothing at all.
    let mut nso = (*nso).clone();
    nso.status.as_mut().unwrap().conditions.pop();
    let nso = with_condition(&nso, &condition);
    let (done, ()) = reconcile_with(&ctx, &nso, &mut local, async |_| {}).await;
    assert_eq!(done.unwrap(), Action::await_change());
}

// The condition.

#[tokio::test(start_paused = true)]
async fn an_unchanged_condition_is_not_written() {
    let (ctx, mut local) = context(vec![placed("web-2")]);
    let nso = offloading(vec![all_conform()]);
    let (done, ()) = reconcile_with(&ctx, &nso, &mut local, async |_| {}).await;
    assert_eq!(done.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_new_generation_is_written_again() {
    let (ctx, mut local) = context(vec![]);
    let mut nso = (*offloading(vec![all_conform()])).clone();
    nso.metadata.generation = Some(2);
    let nso = Arc::new(nso);
    let (done, ()) = reconcile_with(&ctx, &nso, &mut local, async |local| {
        let call = local.expect(Method::PATCH, STATUS_PATH).await;
        let condition = &call.body["status"]["conditions"][0];
        assert_eq!(condition["observedGeneration"], 2, "{condition}");
        assert_eq!(condition["status"], "True", "{condition}");
        // Still True: its time stays.
        assert_eq!(condition["lastTransitionTime"], "1970-01-01T00:00:00Z");
        call.ok(&serde_json::to_value(&*nso).unwrap());
    })
    .await;
    assert_eq!(done.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn before_the_offloading_controllers_first_status_the_condition_is_not_written() {
    let (ctx, mut local) = context(vec![pod("job-a", false)]);
    let mut nso = testing::offloading("shop");
    nso.spec.pod_offloading_strategy = PodOffloadingStrategy::Remote;
    let nso = Arc::new(nso);
    let (done, ()) = reconcile_with(&ctx, &nso, &mut local, async |local| {
        expect_event(local, "shop", "Pod", "job-a").await;
        expect_event(local, "shop", "NamespaceOffloading", "offloading").await;
    })
    .await;
    assert_eq!(done.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn an_offloading_being_deleted_is_left_to_the_offloading_controller() {
    let (ctx, mut local) = context(vec![pod("web-1", true), pod("job-a", false)]);
    let mut nso = (*offloading(vec![])).clone();
    nso.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    let nso = Arc::new(nso);
    let (done, ()) = reconcile_with(&ctx, &nso, &mut local, async |_| {}).await;
    assert_eq!(done.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_refused_condition_write_is_an_error_but_an_offloading_gone_is_done() {
    for (code, reason) in [
        (404, "NotFound"),
        (409, "Conflict"),
        (403, "Forbidden"),
        (500, "InternalError"),
    ] {
        let (ctx, mut local) = context(vec![]);
        let nso = offloading(vec![]);
        let (done, ()) = reconcile_with(&ctx, &nso, &mut local, async |local| {
            local
                .expect(Method::PATCH, STATUS_PATH)
                .await
                .fail(code, reason);
        })
        .await;
        if code == 404 {
            assert_eq!(done.unwrap(), Action::await_change());
        } else {
            match done {
                Err(PlacementError::Status(kube::Error::Api(s))) => assert_eq!(s.code, code),
                other => panic!("{code}: {other:?}"),
            }
        }
    }
}
