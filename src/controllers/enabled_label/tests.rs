//! Quick offloading against a mocked local API server: what the label creates, what its
//! removal deletes (only ours, only the object looked at), what a refusal leads to, and the
//! stale scheduling label taken off.

use std::collections::BTreeMap;

use http::Method;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde_json::{Value, json};

use super::*;
use crate::{
    context::testing::{self, ApiServer, api_server, exchange, reason_of, store, success},
    controllers::testing::{expect_cluster_event, requeue_after},
};

const OFFLOADINGS: &str = "/apis/offloading.liqo.io/v1beta1/namespaces/shop/namespaceoffloadings";
const OFFLOADING: &str =
    "/apis/offloading.liqo.io/v1beta1/namespaces/shop/namespaceoffloadings/offloading";
const NAMESPACE: &str = "/api/v1/namespaces/shop";

fn context(offloadings: Vec<NamespaceOffloading>) -> (Arc<Context>, ApiServer) {
    let (client, local) = api_server("local");
    let mut stores = testing::stores();
    stores.offloadings = store(offloadings);
    let shared = testing::shared(client, stores, testing::peers([]));
    let ctx = Context {
        shared,
        unbacked_since: Mutex::default(),
        created: Mutex::default(),
    };
    (Arc::new(ctx), local)
}

/// Namespace `shop` with these labels.
fn namespace(labels: &[(&str, &str)]) -> Arc<Namespace> {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": "shop", "uid": "ns-shop", "labels": labels},
        }))
        .unwrap(),
    )
}

fn enabled() -> Arc<Namespace> {
    namespace(&[(ENABLED_LABEL, "true")])
}

fn plain() -> Arc<Namespace> {
    namespace(&[])
}

/// The NamespaceOffloading the label created.
fn label_created() -> NamespaceOffloading {
    let mut nso = testing::offloading("shop");
    nso.metadata.annotations =
        Some([(CREATED_BY_ANNOTATION.to_owned(), ENABLED_LABEL.to_owned())].into());
    nso
}

/// One a user created.
fn users() -> NamespaceOffloading {
    testing::offloading("shop")
}

fn being_deleted(mut nso: NamespaceOffloading) -> NamespaceOffloading {
    nso.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    nso
}

/// `reconcile`, the local API server playing `script`, then hearing nothing more.
async fn reconcile_with(
    ctx: &Arc<Context>,
    ns: Arc<Namespace>,
    script: impl AsyncFnOnce(&mut ApiServer),
    local: &mut ApiServer,
) -> Result<Action, EnabledLabelError> {
    let (done, ()) = exchange(reconcile(ns, ctx.clone()), async {
        script(local).await;
        local.nothing_more().await;
    })
    .await;
    done
}

/// The next event, about namespace `shop`: its type, reason and note.
async fn expect_namespace_event(local: &mut ApiServer) -> (String, String, String) {
    let event = expect_cluster_event(local, "Namespace", "shop").await;
    assert_eq!(event["regarding"]["uid"], "ns-shop", "{event}");
    assert_eq!(event["action"], "QuickOffloading", "{event}");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        text(&event["type"]),
        text(&event["reason"]),
        text(&event["note"]),
    )
}

fn api_code(result: Result<Action, EnabledLabelError>) -> u16 {
    match result {
        Err(EnabledLabelError(kube::Error::Api(s))) => s.code,
        other => panic!("expected the API's refusal, got {other:?}"),
    }
}

// The label set.

#[tokio::test(start_paused = true)]
async fn the_label_creates_the_default_offloading_marked_as_ours_and_says_so() {
    let (ctx, mut local) = context(vec![]);
    let action = reconcile_with(
        &ctx,
        enabled(),
        async |local| {
            let call = local.expect(Method::POST, OFFLOADINGS).await;
            assert_eq!(call.content_type.as_deref(), Some("application/json"));
            let body = &call.body;
            assert_eq!(body["apiVersion"], "offloading.liqo.io/v1beta1");
            assert_eq!(body["kind"], "NamespaceOffloading");
            assert_eq!(
                body["metadata"],
                json!({
                    "name": "offloading",
                    "namespace": "shop",
                    "annotations": {CREATED_BY_ANNOTATION: ENABLED_LABEL},
                    // Created with it: the offloading controller writes nothing to add it.
                    "finalizers": [crate::model::markers::OFFLOADING_FINALIZER],
                })
            );
            assert_eq!(
                body["spec"],
                serde_json::to_value(NamespaceOffloadingSpec::label_default()).unwrap()
            );
            assert_eq!(body["spec"]["namespaceMappingStrategy"], "DefaultName");
            assert_eq!(body["spec"]["podOffloadingStrategy"], "LocalAndRemote");
            call.created();
            let (type_, reason, _) = expect_namespace_event(local).await;
            assert_eq!(
                (type_.as_str(), reason.as_str()),
                ("Normal", "OffloadingEnabled")
            );
        },
        &mut local,
    )
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn an_offloading_just_created_is_not_created_again_while_the_store_catches_up() {
    let (ctx, mut local) = context(vec![]);
    let created = reconcile_with(
        &ctx,
        enabled(),
        async |local| {
            local.expect(Method::POST, OFFLOADINGS).await.created();
            expect_namespace_event(local).await;
        },
        &mut local,
    )
    .await;
    assert_eq!(created.unwrap(), Action::await_change());
    // The webhook's label on the namespace wakes it again before the store has the object:
    // nothing is sent, and it looks again once the creation should have shown.
    let again = reconcile_with(&ctx, enabled(), async |_| {}, &mut local).await;
    let again = again.unwrap();
    assert_ne!(again, Action::await_change());
    assert_ne!(again, Action::requeue(REJECTED_RETRY));
    // Past that, a creation that never showed (deleted meanwhile) is made again.
    let (ctx, mut local) = context(vec![]);
    let long_ago = std::time::Instant::now() - CREATED_SETTLE;
    ctx.created.lock().unwrap().insert("shop".into(), long_ago);
    let retried = reconcile_with(
        &ctx,
        enabled(),
        async |local| {
            local.expect(Method::POST, OFFLOADINGS).await.created();
            expect_namespace_event(local).await;
        },
        &mut local,
    )
    .await;
    assert_eq!(retried.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn the_label_with_our_offloading_already_there_sends_nothing() {
    for nso in [label_created(), being_deleted(label_created())] {
        let (ctx, mut local) = context(vec![nso]);
        let action = reconcile_with(&ctx, enabled(), async |_| {}, &mut local).await;
        assert_eq!(action.unwrap(), Action::await_change());
    }
}

#[tokio::test(start_paused = true)]
async fn the_label_on_a_namespace_with_its_own_offloading_only_says_it_changes_nothing() {
    let (ctx, mut local) = context(vec![users()]);
    let action = reconcile_with(
        &ctx,
        enabled(),
        async |local| {
            let (type_, reason, note) = expect_namespace_event(local).await;
            assert_eq!(
                (type_.as_str(), reason.as_str()),
                ("Normal", "OffloadingAlreadyConfigured")
            );
            assert!(note.contains("its own NamespaceOffloading"), "{note}");
        },
        &mut local,
    )
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn an_offloading_created_meanwhile_is_fine() {
    let (ctx, mut local) = context(vec![]);
    let action = reconcile_with(
        &ctx,
        enabled(),
        async |local| {
            local
                .expect(Method::POST, OFFLOADINGS)
                .await
                .fail(409, "AlreadyExists");
        },
        &mut local,
    )
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_creation_refused_for_good_is_said_on_the_namespace_and_retried_much_later() {
    for code in [403, 422] {
        let (ctx, mut local) = context(vec![]);
        let action = reconcile_with(
            &ctx,
            enabled(),
            async |local| {
                local
                    .expect(Method::POST, OFFLOADINGS)
                    .await
                    .fail(code, reason_of(code));
                let (type_, reason, note) = expect_namespace_event(local).await;
                assert_eq!(
                    (type_.as_str(), reason.as_str()),
                    ("Warning", "OffloadingRejected")
                );
                assert!(
                    note.ends_with(&format!(
                        "cannot create the default NamespaceOffloading: {} (from mocked API server local)",
                        reason_of(code)
                    )),
                    "{note}"
                );
            },
            &mut local,
        )
        .await;
        assert_eq!(action.unwrap(), Action::requeue(REJECTED_RETRY), "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn any_other_refused_creation_is_an_error_without_an_event() {
    // 409 Conflict is not AlreadyExists.
    for (code, reason) in [(500, "InternalError"), (409, "Conflict")] {
        let (ctx, mut local) = context(vec![]);
        let action = reconcile_with(
            &ctx,
            enabled(),
            async |local| {
                local
                    .expect(Method::POST, OFFLOADINGS)
                    .await
                    .fail(code, reason);
            },
            &mut local,
        )
        .await;
        assert_eq!(api_code(action), code);
    }
}

// The label removed.

#[tokio::test(start_paused = true)]
async fn the_label_removed_deletes_our_offloading_with_its_uid_as_precondition() {
    let (ctx, mut local) = context(vec![label_created()]);
    let action = reconcile_with(
        &ctx,
        plain(),
        async |local| {
            let call = local.expect(Method::DELETE, OFFLOADING).await;
            assert_eq!(call.body["preconditions"], json!({"uid": "nso-shop"}));
            let mut gone = serde_json::to_value(being_deleted(label_created())).unwrap();
            gone["metadata"]["finalizers"] = json!(["offloading.liqo.io/remote-namespaces"]);
            call.ok(&gone);
            let (type_, reason, _) = expect_namespace_event(local).await;
            assert_eq!(
                (type_.as_str(), reason.as_str()),
                ("Normal", "OffloadingDisabled")
            );
        },
        &mut local,
    )
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn without_the_label_a_users_offloading_or_one_going_away_is_left_alone() {
    for nso in [
        users(),
        being_deleted(users()),
        being_deleted(label_created()),
    ] {
        let (ctx, mut local) = context(vec![nso]);
        let action = reconcile_with(&ctx, plain(), async |_| {}, &mut local).await;
        assert_eq!(action.unwrap(), Action::await_change());
    }
    // The label set to anything but "true" is no label.
    let (ctx, mut local) = context(vec![users()]);
    let off = namespace(&[(ENABLED_LABEL, "false")]);
    let action = reconcile_with(&ctx, off, async |_| {}, &mut local).await;
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_delete_that_found_it_gone_or_replaced_looks_again_soon_without_an_event() {
    for (code, reason) in [(404, "NotFound"), (409, "Conflict")] {
        let (ctx, mut local) = context(vec![label_created()]);
        let action = reconcile_with(
            &ctx,
            plain(),
            async |local| {
                local
                    .expect(Method::DELETE, OFFLOADING)
                    .await
                    .fail(code, reason);
            },
            &mut local,
        )
        .await;
        assert_eq!(
            action.unwrap(),
            Action::requeue(Duration::from_secs(1)),
            "{code}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_delete_is_an_error_without_an_event() {
    for code in [403, 500] {
        let (ctx, mut local) = context(vec![label_created()]);
        let action = reconcile_with(
            &ctx,
            plain(),
            async |local| {
                local
                    .expect(Method::DELETE, OFFLOADING)
                    .await
                    .fail(code, reason_of(code));
            },
            &mut local,
        )
        .await;
        assert_eq!(api_code(action), code);
    }
}

#[tokio::test(start_paused = true)]
async fn a_namespace_being_deleted_is_left_alone_and_forgotten() {
    let (ctx, mut local) = context(vec![label_created()]);
    ctx.unbacked_since
        .lock()
        .unwrap()
        .insert("shop".into(), Instant::now());
    let mut ns = (*plain()).clone();
    ns.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    let action = reconcile_with(&ctx, Arc::new(ns), async |_| {}, &mut local).await;
    assert_eq!(action.unwrap(), Action::await_change());
    assert!(ctx.unbacked_since.lock().unwrap().is_empty());
}

// The scheduling label left without a NamespaceOffloading.

fn marked() -> Arc<Namespace> {
    namespace(&[(SCHEDULING_ENABLED_LABEL, "true")])
}

fn marked_since(ctx: &Context, ago: Duration) {
    let since = Instant::now().checked_sub(ago).unwrap();
    ctx.unbacked_since
        .lock()
        .unwrap()
        .insert("shop".into(), since);
}

#[tokio::test(start_paused = true)]
async fn a_scheduling_label_without_an_offloading_is_given_its_grace_first() {
    let (ctx, mut local) = context(vec![]);
    let action = reconcile_with(&ctx, marked(), async |_| {}, &mut local).await;
    let wait = requeue_after(&action.unwrap()).unwrap();
    assert!(
        wait <= STALE_MARK_GRACE && wait > STALE_MARK_GRACE - Duration::from_secs(1),
        "{wait:?}"
    );
    assert!(ctx.unbacked_since.lock().unwrap().contains_key("shop"));
    // Later, only the rest of it.
    marked_since(&ctx, Duration::from_secs(20));
    let action = reconcile_with(&ctx, marked(), async |_| {}, &mut local).await;
    let wait = requeue_after(&action.unwrap()).unwrap();
    assert!(
        wait <= Duration::from_secs(10) && wait > Duration::from_secs(9),
        "{wait:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_scheduling_label_without_an_offloading_past_its_grace_is_taken_off() {
    let (ctx, mut local) = context(vec![]);
    marked_since(&ctx, STALE_MARK_GRACE + Duration::from_secs(1));
    let action = reconcile_with(
        &ctx,
        marked(),
        async |local| {
            let call = local.expect(Method::PATCH, NAMESPACE).await;
            assert_eq!(
                call.content_type.as_deref(),
                Some("application/merge-patch+json")
            );
            assert_eq!(
                call.body,
                json!({"metadata": {"labels": {SCHEDULING_ENABLED_LABEL: null}}})
            );
            call.ok(&json!({"metadata": {"name": "shop", "uid": "ns-shop"}}));
        },
        &mut local,
    )
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
    assert!(ctx.unbacked_since.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_refused_removal_of_the_scheduling_label_is_an_error() {
    for code in [403, 500] {
        let (ctx, mut local) = context(vec![]);
        marked_since(&ctx, STALE_MARK_GRACE);
        let action = reconcile_with(
            &ctx,
            marked(),
            async |local| {
                local
                    .expect(Method::PATCH, NAMESPACE)
                    .await
                    .fail(code, reason_of(code));
            },
            &mut local,
        )
        .await;
        assert_eq!(api_code(action), code);
    }
}

#[tokio::test(start_paused = true)]
async fn a_scheduling_label_backed_by_an_offloading_or_the_label_stays_and_is_forgotten() {
    // Backed by a NamespaceOffloading: nothing sent.
    let (ctx, mut local) = context(vec![users()]);
    marked_since(&ctx, STALE_MARK_GRACE * 2);
    let action = reconcile_with(&ctx, marked(), async |_| {}, &mut local).await;
    assert_eq!(action.unwrap(), Action::await_change());
    assert!(ctx.unbacked_since.lock().unwrap().is_empty());
    // Backed by the enabled label: the offloading is created, the scheduling label kept.
    let (ctx, mut local) = context(vec![]);
    marked_since(&ctx, STALE_MARK_GRACE * 2);
    let both = namespace(&[(SCHEDULING_ENABLED_LABEL, "true"), (ENABLED_LABEL, "true")]);
    let action = reconcile_with(
        &ctx,
        both,
        async |local| {
            local.expect(Method::POST, OFFLOADINGS).await.created();
            let (_, reason, _) = expect_namespace_event(local).await;
            assert_eq!(reason, "OffloadingEnabled");
        },
        &mut local,
    )
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
    assert!(ctx.unbacked_since.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_deleted_object_answer_may_be_a_status() {
    let (ctx, mut local) = context(vec![label_created()]);
    let action = reconcile_with(
        &ctx,
        plain(),
        async |local| {
            local
                .expect(Method::DELETE, OFFLOADING)
                .await
                .ok(&success());
            expect_namespace_event(local).await;
        },
        &mut local,
    )
    .await;
    assert_eq!(action.unwrap(), Action::await_change());
}
