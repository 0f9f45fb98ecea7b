//! The twin reconciler against mocked API servers: the local one (status, events,
//! deletions of local pods) and cluster `c2`'s (the twins), with the stores filled by hand.

use std::{sync::Arc, time::Duration};

use http::Method;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodStatus};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::*;
use crate::{
    context::{
        Stores,
        testing::{
            self, ApiServer, api_server, exchange, expect_event, offloading, reason_of, store,
            virtual_node, watched,
        },
    },
    model::{
        api::NamespaceOffloadingSpec,
        markers::{ORIGIN_CLUSTER_LABEL, ORIGIN_POD_UID_ANNOTATION},
    },
    plumbing::client::REMOTE_TIMEOUT,
};

/// Where `shop`'s twins go in `c2`: DefaultName, `<namespace>-<local cluster ID>`.
const REMOTE_NAMESPACE: &str = "shop-c1";
const TWIN_PATH: &str = "/api/v1/namespaces/shop-c1/pods/web";
const TWINS_PATH: &str = "/api/v1/namespaces/shop-c1/pods";
const LOCAL_PATH: &str = "/api/v1/namespaces/shop/pods/web";
const LOCAL_STATUS_PATH: &str = "/api/v1/namespaces/shop/pods/web/status";

/// Local pod `shop/web`, uid `u-1`, bound to `c2`'s virtual node, pending.
fn pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
        "spec": {"nodeName": "liqo-c2", "containers": [{"name": "app", "image": "nginx"}]},
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    }))
    .unwrap()
}

/// The same pod, being deleted with a grace period of 30 s.
fn deleted_pod() -> Pod {
    let mut pod = pod();
    pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    pod.metadata.deletion_grace_period_seconds = Some(30);
    pod
}

fn running() -> PodStatus {
    serde_json::from_value(json!({
        "phase": "Running", "podIP": "10.244.2.7", "podIPs": [{"ip": "10.244.2.7"}],
        "hostIP": "172.18.0.3", "startTime": "2026-11-25T10:00:00Z",
        "conditions": [{"type": "Ready", "status": "True"}],
    }))
    .unwrap()
}

/// Our twin of `local` in `c2`, as the peer's watch holds it: uid `twin-1`, running.
fn twin_of(local: &Pod) -> Pod {
    let mut twin = forge::twin(
        local,
        &NamespaceOffloadingSpec::label_default(),
        testing::LOCAL_CLUSTER_ID,
        REMOTE_NAMESPACE,
    );
    twin.metadata.uid = Some("twin-1".into());
    twin.status = Some(running());
    twin
}

/// A pod of that name there that is not ours (another cluster's), in full.
fn foreign() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": REMOTE_NAMESPACE, "uid": "other-1",
                     "labels": {ORIGIN_CLUSTER_LABEL: "c9"}},
        "spec": {"containers": [{"name": "x", "image": "busybox"}]},
    }))
    .unwrap()
}

/// That pod as the peer's pod watch holds it (not ours: reduced to its requests).
fn foreign_watched() -> Pod {
    let mut pod = foreign();
    pod.metadata.labels = None;
    pod.metadata.annotations = None;
    pod
}

fn offloaded_namespace() -> Namespace {
    serde_json::from_value(json!({
        "metadata": {"name": "shop", "labels": {SCHEDULING_ENABLED_LABEL: "true"}},
    }))
    .unwrap()
}

/// This cluster, offloading `shop` to `c2`, and the two API servers.
struct World {
    ctx: Arc<Context>,
    local: ApiServer,
    remote: ApiServer,
}

/// `shop`'s offloading, its remote namespace in `c2` reported as `reason` (`Ready=True`
/// for NamespaceCreated).
fn offloading_with(reason: &str) -> crate::model::api::NamespaceOffloading {
    let mut nso = offloading("shop");
    nso.status = Some(crate::model::api::NamespaceOffloadingStatus {
        remote_namespace_name: Some(REMOTE_NAMESPACE.into()),
        remote_namespaces_conditions: [(
            "c2".to_owned(),
            vec![crate::model::api::RemoteNamespaceCondition {
                type_: "Ready".into(),
                status: if reason == "NamespaceCreated" {
                    "True"
                } else {
                    "False"
                }
                .into(),
                last_transition_time: None,
                reason: Some(reason.into()),
                message: Some(format!("{reason}: as the offloading says")),
            }],
        )]
        .into(),
        ..Default::default()
    });
    nso
}

/// The local stores: `c2`'s virtual node, `shop`'s offloading (Ready in `c2`) and
/// namespace.
fn local_stores() -> Stores {
    Stores {
        nodes: store([virtual_node("c2")]),
        offloadings: store([offloading_with("NamespaceCreated")]),
        namespaces: store([offloaded_namespace()]),
        ..testing::stores()
    }
}

/// `c2` connected, its pod watch listed and holding `remote_pods`.
fn world(remote_pods: Vec<Pod>) -> World {
    world_with(local_stores(), remote_pods, |_| {})
}

fn world_with(stores: Stores, remote_pods: Vec<Pod>, edit: impl FnOnce(&mut Peer)) -> World {
    let (local_client, local) = api_server("local");
    let (remote_client, remote) = api_server("c2");
    let mut peer = testing::peer("c2", remote_client);
    peer.pods = watched(remote_pods, true);
    peer.namespaces = watched(
        [crate::model::remote_namespace::desired(
            REMOTE_NAMESPACE,
            testing::LOCAL_CLUSTER_ID,
            "shop",
        )],
        true,
    );
    edit(&mut peer);
    let ctx = testing::shared(local_client, stores, testing::peers([("c2", peer)]));
    World {
        ctx: Arc::new(ctx),
        local,
        remote,
    }
}

fn the_pods_condition(body: &Value) -> &Value {
    let conditions = body["status"]["conditions"].as_array().unwrap();
    let ours: Vec<&Value> = conditions
        .iter()
        .filter(|c| c["type"] == TWIN_CONDITION)
        .collect();
    assert_eq!(ours.len(), 1, "{body}");
    ours[0]
}

/// The local pod's status patch saying why it has no twin, and then its event.
async fn expect_report(local: &mut ApiServer, reason: &str, message: &str) {
    let call = local.expect(Method::PATCH, LOCAL_STATUS_PATH).await;
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let condition = the_pods_condition(&call.body);
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], reason);
    assert_eq!(condition["message"], message);
    call.ok(&serde_json::to_value(pod()).unwrap());
    let event = expect_event(local, "shop", "Pod", "web").await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], format!("RemotePod{reason}"));
    assert_eq!(event["note"], message);
    assert_eq!(event["regarding"]["uid"], "u-1");
}

fn server_error(result: Result<Action, PodError>) -> Reason {
    match result {
        Err(PodError::Remote(RemoteError::Api { cluster_id, source })) => {
            assert_eq!(cluster_id, "c2");
            classify(&source)
        }
        other => panic!("expected a remote API error, got {other:?}"),
    }
}

// Creating twins.

#[tokio::test(start_paused = true)]
async fn a_twin_is_created_for_a_pod_on_a_virtual_node() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![]);
    let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
        let call = remote.expect(Method::POST, TWINS_PATH).await;
        let twin = &call.body;
        assert_eq!(twin["metadata"]["name"], "web");
        assert_eq!(twin["metadata"]["namespace"], REMOTE_NAMESPACE);
        assert_eq!(twin["metadata"]["labels"]["app"], "web");
        assert_eq!(
            twin["metadata"]["labels"][ORIGIN_CLUSTER_LABEL],
            testing::LOCAL_CLUSTER_ID
        );
        assert_eq!(
            twin["metadata"]["annotations"][ORIGIN_NAMESPACE_ANNOTATION],
            "shop"
        );
        assert_eq!(
            twin["metadata"]["annotations"][ORIGIN_POD_UID_ANNOTATION],
            "u-1"
        );
        assert!(twin["metadata"]["uid"].is_null(), "{twin}");
        assert!(twin["spec"]["nodeName"].is_null(), "{twin}");
        assert_eq!(twin["spec"]["containers"][0]["image"], "nginx");
        assert!(twin["status"].is_null(), "{twin}");
        call.created();
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(SOON));
}

#[tokio::test(start_paused = true)]
async fn a_create_conflict_with_our_own_unseen_twin_waits_for_the_watch() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![]);
    let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
        remote
            .expect(Method::POST, TWINS_PATH)
            .await
            .fail(409, "AlreadyExists");
        remote
            .expect(Method::GET, TWIN_PATH)
            .await
            .ok(&serde_json::to_value(twin_of(&pod())).unwrap());
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(SOON));
}

fn name_taken() -> String {
    "a pod named web that this cluster did not create exists in namespace shop-c1 of cluster c2: it is left alone; rename or delete it there".into()
}

#[tokio::test(start_paused = true)]
async fn a_pod_of_that_name_that_is_not_ours_is_left_alone_and_reported() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![foreign_watched()]);
    let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
        // The create is refused; what is there is read, and nothing else is sent there
        // (no delete, no update).
        remote
            .expect(Method::POST, TWINS_PATH)
            .await
            .fail(409, "AlreadyExists");
        remote
            .expect(Method::GET, TWIN_PATH)
            .await
            .ok(&serde_json::to_value(foreign()).unwrap());
        expect_report(&mut local, "NameTaken", &name_taken()).await;
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn a_name_taken_already_reported_is_not_reported_again() {
    let mut reported = pod();
    reported.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: TWIN_CONDITION.into(),
        status: "False".into(),
        reason: Some("NameTaken".into()),
        message: Some(name_taken()),
        ..PodCondition::default()
    }]);
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![foreign_watched()]);
    let (result, ()) = exchange(reconcile(Arc::new(reported), ctx), async {
        remote
            .expect(Method::POST, TWINS_PATH)
            .await
            .fail(409, "AlreadyExists");
        remote
            .expect(Method::GET, TWIN_PATH)
            .await
            .ok(&serde_json::to_value(foreign()).unwrap());
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn a_create_the_remote_refuses_is_reported_on_the_pod() {
    for code in [403, 422] {
        let World {
            ctx,
            mut local,
            mut remote,
        } = world(vec![]);
        let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
            remote
                .expect(Method::POST, TWINS_PATH)
                .await
                .fail(code, reason_of(code));
            let why = format!(
                "cluster c2 refused the pod: {} (from mocked API server c2)",
                reason_of(code)
            );
            expect_report(&mut local, "Refused", &why).await;
            remote.nothing_more().await;
            local.nothing_more().await;
        })
        .await;
        assert_eq!(
            result.unwrap(),
            Action::requeue(Duration::from_secs(30)),
            "{code}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_twin_refused_for_an_account_not_made_there_yet_is_tried_again_soon() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![]);
    let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
        remote.expect(Method::POST, TWINS_PATH).await.answer(
            403,
            &testing::status(
                403,
                "Forbidden",
                "pods \"web\" is forbidden: error looking up service account shop-c1/default: serviceaccount \"default\" not found",
            ),
        );
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(SOON));
}

#[tokio::test(start_paused = true)]
async fn a_twin_waits_for_the_copy_of_its_service_account() {
    let mut with_account = pod();
    with_account.spec.as_mut().unwrap().service_account_name = Some("app".into());
    let account: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "app", "namespace": "shop"}})).unwrap();
    let stores = Stores {
        service_accounts: store([account]),
        ..local_stores()
    };
    let World {
        ctx,
        mut local,
        mut remote,
    } = world_with(stores, vec![], |_| {});
    let (result, ()) = exchange(reconcile(Arc::new(with_account), ctx), async {
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(SOON));
}

#[tokio::test(start_paused = true)]
async fn a_twin_whose_account_is_not_copied_in_time_is_not_sent_as_another() {
    let mut with_account = pod();
    let spec = with_account.spec.as_mut().unwrap();
    spec.service_account_name = Some("app".into());
    with_account.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    let account: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "app", "namespace": "shop"}})).unwrap();
    let stores = Stores {
        service_accounts: store([account]),
        ..local_stores()
    };
    let World {
        ctx,
        mut local,
        mut remote,
    } = world_with(stores, vec![], |_| {});
    let (result, ()) = exchange(reconcile(Arc::new(with_account), ctx), async {
        let why = "cluster c2: ServiceAccount app has no copy of ours in namespace shop-c1 yet (its events say why: a name taken there, a refusal), and the pod is not sent there to run as another account";
        expect_report(&mut local, "AccountNotCopied", why).await;
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn a_pod_naming_a_class_its_cluster_never_lists_says_so() {
    let mut classy = pod();
    classy.spec.as_mut().unwrap().priority_class_name = Some("high".into());
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![]);
    // Just created: it waits quietly for the peer's class watches to list.
    let (result, ()) = exchange(reconcile(Arc::new(classy.clone()), ctx.clone()), async {
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(SOON));
    // Long after: it says why it waits (the credentials cannot list them, say).
    classy.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    let (result, ()) = exchange(reconcile(Arc::new(classy), ctx), async {
        let why = "cluster c2: the pod names a priority or runtime class, and that cluster's classes are not listed yet (the peering's credentials need list and watch on PriorityClasses and RuntimeClasses there)";
        expect_report(&mut local, "ClassesNotKnown", why).await;
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn a_remote_server_error_on_create_is_returned() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![]);
    let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
        remote
            .expect(Method::POST, TWINS_PATH)
            .await
            .fail(500, "InternalError");
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(server_error(result), Reason::ServerError);
}

#[tokio::test(start_paused = true)]
async fn a_remote_that_does_not_answer_is_given_up_after_the_remote_timeout() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![]);
    let started = tokio::time::Instant::now();
    let (result, _unanswered) = exchange(
        async {
            let result = reconcile(Arc::new(pod()), ctx).await;
            (result, started.elapsed())
        },
        async {
            let call = remote.expect(Method::POST, TWINS_PATH).await;
            call.unanswered()
        },
    )
    .await;
    let (result, took) = result;
    match result {
        Err(PodError::Remote(RemoteError::Timeout(cluster_id))) => assert_eq!(cluster_id, "c2"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        took >= REMOTE_TIMEOUT && took < REMOTE_TIMEOUT + Duration::from_secs(1),
        "{took:?}"
    );
    let ((), ()) = exchange(async {}, async {
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_cannot_run_remotely_is_reported_and_gets_no_twin() {
    let mut pvc = pod();
    pvc.spec.as_mut().unwrap().volumes = Some(vec![
        serde_json::from_value(json!({"name": "data", "hostPath": {"path": "/srv"}})).unwrap(),
    ]);
    let why = forge::unsupported(&pvc).unwrap();
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![]);
    let (result, ()) = exchange(reconcile(Arc::new(pvc), ctx), async {
        expect_report(&mut local, "Unsupported", &why).await;
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_ended_gets_no_new_twin() {
    let mut ended = pod();
    ended.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![]);
    let (result, ()) = exchange(reconcile(Arc::new(ended), ctx), async {
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

// Our twin's status.

#[tokio::test(start_paused = true)]
async fn our_twins_status_is_reflected_onto_the_local_pod() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![twin_of(&pod())]);
    let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
        let call = local.expect(Method::PATCH, LOCAL_STATUS_PATH).await;
        assert_eq!(
            call.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        let status = &call.body["status"];
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "10.244.2.7");
        assert_eq!(status["hostIP"], "172.18.0.3");
        assert_eq!(
            status["conditions"],
            json!([{"type": "Ready", "status": "True"}])
        );
        // The twin says none: the local pod's is kept.
        assert_eq!(status["qosClass"], "BestEffort");
        call.ok(&serde_json::to_value(pod()).unwrap());
        local.nothing_more().await;
        remote.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_status_already_reflected_is_not_written_again() {
    let mut current = pod();
    current.status = Some(forge::local_status(&running(), current.status.as_ref()));
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![twin_of(&current)]);
    let (result, ()) = exchange(reconcile(Arc::new(current), ctx), async {
        local.nothing_more().await;
        remote.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_status_write_refused_locally_is_returned_unless_the_pod_is_gone() {
    for (code, fails) in [(404, false), (409, true), (403, true), (500, true)] {
        let World {
            ctx,
            mut local,
            mut remote,
        } = world(vec![twin_of(&pod())]);
        let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
            local
                .expect(Method::PATCH, LOCAL_STATUS_PATH)
                .await
                .fail(code, reason_of(code));
            local.nothing_more().await;
            remote.nothing_more().await;
        })
        .await;
        match result {
            Ok(action) => {
                assert!(!fails, "{code}: {action:?}");
                assert_eq!(action, Action::await_change());
            }
            Err(PodError::Local(kube::Error::Api(s))) => {
                assert!(fails, "{code}");
                assert_eq!(s.code, code);
            }
            Err(other) => panic!("{code}: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_twin_of_an_earlier_pod_of_that_name_is_deleted_first() {
    // 200: deleted; 404: already gone; both wait for the watch to show it gone.
    for code in [200, 404] {
        let mut earlier = pod();
        earlier.metadata.uid = Some("u-0".into());
        let mut stale = twin_of(&earlier);
        stale.metadata.uid = Some("twin-0".into());
        let World {
            ctx,
            mut local,
            mut remote,
        } = world(vec![stale.clone()]);
        let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
            let call = remote.expect(Method::DELETE, TWIN_PATH).await;
            assert_eq!(call.body, json!({"preconditions": {"uid": "twin-0"}}));
            if code == 200 {
                call.ok(&serde_json::to_value(&stale).unwrap());
            } else {
                call.fail(404, "NotFound");
            }
            remote.nothing_more().await;
            local.nothing_more().await;
        })
        .await;
        assert_eq!(result.unwrap(), Action::requeue(SOON), "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_twin_that_cannot_be_deleted_is_an_error() {
    for (code, reason) in [
        (409, Reason::Conflict),
        (403, Reason::Forbidden),
        (500, Reason::ServerError),
    ] {
        let mut earlier = pod();
        earlier.metadata.uid = Some("u-0".into());
        let World {
            ctx,
            mut local,
            mut remote,
        } = world(vec![twin_of(&earlier)]);
        let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
            remote
                .expect(Method::DELETE, TWIN_PATH)
                .await
                .fail(code, reason_of(code));
            remote.nothing_more().await;
            local.nothing_more().await;
        })
        .await;
        assert_eq!(server_error(result), reason, "{code}");
    }
}

// Local deletion.

#[tokio::test(start_paused = true)]
async fn a_deleted_pods_twin_is_deleted_with_its_grace_period() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![twin_of(&pod())]);
    let (result, ()) = exchange(reconcile(Arc::new(deleted_pod()), ctx), async {
        let call = remote.expect(Method::DELETE, TWIN_PATH).await;
        assert_eq!(
            call.body,
            json!({"gracePeriodSeconds": 30, "preconditions": {"uid": "twin-1"}})
        );
        call.ok(&serde_json::to_value(twin_of(&pod())).unwrap());
        // Meanwhile its status still reaches the local pod.
        let call = local.expect(Method::PATCH, LOCAL_STATUS_PATH).await;
        assert_eq!(call.body["status"]["phase"], "Running");
        call.ok(&serde_json::to_value(pod()).unwrap());
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    // The local deletion completes once the watch shows the twin gone.
    assert_eq!(result.unwrap(), Action::requeue(SOON));
}

#[tokio::test(start_paused = true)]
async fn a_twin_already_gone_when_deleted_counts_as_deleted() {
    let mut deleted = deleted_pod();
    deleted.status = Some(forge::local_status(&running(), deleted.status.as_ref()));
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![twin_of(&deleted)]);
    let (result, ()) = exchange(reconcile(Arc::new(deleted), ctx), async {
        remote
            .expect(Method::DELETE, TWIN_PATH)
            .await
            .fail(404, "NotFound");
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(SOON));
}

#[tokio::test(start_paused = true)]
async fn a_twin_delete_that_fails_is_returned_and_the_local_pod_stays() {
    for (code, reason) in [
        (409, Reason::Conflict),
        (403, Reason::Forbidden),
        (500, Reason::ServerError),
    ] {
        let World {
            ctx,
            mut local,
            mut remote,
        } = world(vec![twin_of(&pod())]);
        let (result, ()) = exchange(reconcile(Arc::new(deleted_pod()), ctx), async {
            remote
                .expect(Method::DELETE, TWIN_PATH)
                .await
                .fail(code, reason_of(code));
            remote.nothing_more().await;
            local.nothing_more().await;
        })
        .await;
        assert_eq!(server_error(result), reason, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_twin_delete_without_answer_is_given_up_after_the_remote_timeout() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![twin_of(&pod())]);
    let started = tokio::time::Instant::now();
    let ((result, took), _unanswered) = exchange(
        async {
            let result = reconcile(Arc::new(deleted_pod()), ctx).await;
            (result, started.elapsed())
        },
        async { remote.expect(Method::DELETE, TWIN_PATH).await.unanswered() },
    )
    .await;
    assert!(
        matches!(&result, Err(PodError::Remote(RemoteError::Timeout(id))) if id == "c2"),
        "{result:?}"
    );
    assert!(
        took >= REMOTE_TIMEOUT && took < REMOTE_TIMEOUT + Duration::from_secs(1),
        "{took:?}"
    );
    let ((), ()) = exchange(async {}, async {
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_twin_already_being_deleted_is_not_deleted_again() {
    let mut going = twin_of(&pod());
    going.metadata.deletion_timestamp = deleted_pod().metadata.deletion_timestamp;
    let mut deleted = deleted_pod();
    deleted.status = Some(forge::local_status(&running(), deleted.status.as_ref()));
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![going]);
    let (result, ()) = exchange(reconcile(Arc::new(deleted), ctx), async {
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(SOON));
}

#[tokio::test(start_paused = true)]
async fn once_the_twin_is_gone_the_local_deletion_completes() {
    // 200: done; 404: already gone; 409: replaced meanwhile (uid precondition), left alone.
    for code in [200, 404, 409] {
        let World {
            ctx,
            mut local,
            mut remote,
        } = world(vec![]);
        let (result, ()) = exchange(reconcile(Arc::new(deleted_pod()), ctx), async {
            let call = local.expect(Method::DELETE, LOCAL_PATH).await;
            assert_eq!(
                call.body,
                json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "u-1"}})
            );
            if code == 200 {
                call.ok(&testing::success());
            } else {
                call.fail(code, reason_of(code));
            }
            local.nothing_more().await;
            remote.nothing_more().await;
        })
        .await;
        assert_eq!(result.unwrap(), Action::await_change(), "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_local_deletion_that_fails_is_returned() {
    for code in [403, 500] {
        let World {
            ctx,
            mut local,
            mut remote,
        } = world(vec![]);
        let (result, ()) = exchange(reconcile(Arc::new(deleted_pod()), ctx), async {
            local
                .expect(Method::DELETE, LOCAL_PATH)
                .await
                .fail(code, reason_of(code));
            local.nothing_more().await;
            remote.nothing_more().await;
        })
        .await;
        assert!(
            matches!(&result, Err(PodError::Local(kube::Error::Api(s))) if s.code == code),
            "{code}: {result:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_deleted_pod_with_only_a_foreign_pod_of_its_name_there_completes_locally() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![foreign_watched()]);
    let (result, ()) = exchange(reconcile(Arc::new(deleted_pod()), ctx), async {
        local
            .expect(Method::DELETE, LOCAL_PATH)
            .await
            .ok(&testing::success());
        local.nothing_more().await;
        remote.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

// Pods sent back, and pods that wait.

/// The event saying why the pod goes, then its deletion at once.
async fn expect_sent_back(local: &mut ApiServer, why: &str) {
    let event = expect_event(local, "shop", "Pod", "web").await;
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["reason"], "OffloadedPodDeleted");
    assert_eq!(
        event["note"],
        format!("deleted: {why}; its owner, if it has one, creates it again")
    );
    let call = local.expect(Method::DELETE, LOCAL_PATH).await;
    assert_eq!(
        call.body,
        json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "u-1"}})
    );
    call.ok(&testing::success());
}

#[tokio::test(start_paused = true)]
async fn a_pod_on_a_cluster_no_longer_selected_goes_with_its_twin() {
    let bound = pod();
    let twin = twin_of(&bound);
    // The offloading now selects region=us only; c2's node carries no such label.
    let mut nso = offloading_with("NamespaceCreated");
    nso.spec.cluster_selector = serde_json::from_value(json!({"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "region", "operator": "In", "values": ["us"]}]}]}))
    .unwrap();
    let stores = Stores {
        offloadings: store([nso]),
        ..local_stores()
    };
    let World {
        ctx,
        mut local,
        mut remote,
    } = world_with(stores, vec![twin], |_| {});
    let (result, ()) = exchange(reconcile(Arc::new(bound), ctx), async {
        let call = remote.expect(Method::DELETE, TWIN_PATH).await;
        assert_eq!(call.body["preconditions"]["uid"], "twin-1", "{}", call.body);
        call.ok(&testing::success());
        expect_sent_back(
            &mut local,
            "cluster c2 is no longer selected by the namespace's offloading",
        )
        .await;
        local.nothing_more().await;
        remote.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_pod_on_a_virtual_node_that_is_gone_is_sent_back() {
    let mut orphan = pod();
    orphan.spec.as_mut().unwrap().node_name = Some("liqo-c9".into());
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![]);
    let (result, ()) = exchange(reconcile(Arc::new(orphan), ctx), async {
        expect_sent_back(&mut local, "node liqo-c9 is gone: its cluster was unpeered").await;
        local.nothing_more().await;
        remote.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_pod_whose_virtual_node_was_deleted_but_still_peered_stays() {
    let mut bound = pod();
    bound.spec.as_mut().unwrap().node_name = Some("liqo-c9".into());
    let peering: RemoteCluster = serde_json::from_value(json!({
        "apiVersion": "offloading.liqo.io/v1alpha1", "kind": "RemoteCluster",
        "metadata": {"name": "cluster-9"},
        "spec": {"clusterID": "c9", "kubeconfigSecret": {"namespace": "liqo", "name": "c9"}},
    }))
    .unwrap();
    let stores = Stores {
        remote_clusters: store([peering]),
        ..local_stores()
    };
    let World {
        ctx,
        mut local,
        mut remote,
    } = world_with(stores, vec![], |_| {});
    let (result, ()) = exchange(reconcile(Arc::new(bound), ctx), async {
        local.nothing_more().await;
        remote.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(SOON));
}

#[tokio::test(start_paused = true)]
async fn no_twin_goes_into_a_remote_namespace_that_is_not_ours() {
    // The status says the name is taken there; the watch of ours does not hold it.
    let stores = Stores {
        offloadings: store([offloading_with("AlreadyExists")]),
        ..local_stores()
    };
    let World {
        ctx,
        mut local,
        mut remote,
    } = world_with(stores, vec![], |peer| peer.namespaces = watched([], true));
    let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
        expect_report(
            &mut local,
            "NamespaceNotOurs",
            "cluster c2: AlreadyExists: as the offloading says",
        )
        .await;
        local.nothing_more().await;
        remote.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn a_twin_waits_for_its_remote_namespace_to_be_ours_and_ready() {
    // Ours there, but not reported Ready yet; then reported Ready but not seen there.
    let not_ready = Stores {
        offloadings: store([offloading("shop")]),
        ..local_stores()
    };
    for (stores, ours) in [(not_ready, true), (local_stores(), false)] {
        let World {
            ctx,
            mut local,
            mut remote,
        } = world_with(stores, vec![], |peer| {
            if !ours {
                peer.namespaces = watched([], true);
            }
        });
        let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
            local.nothing_more().await;
            remote.nothing_more().await;
        })
        .await;
        assert_eq!(result.unwrap(), Action::requeue(SOON));
    }
}

#[tokio::test(start_paused = true)]
async fn a_pod_whose_namespace_is_no_longer_offloaded_is_sent_back() {
    let stores = Stores {
        nodes: store([virtual_node("c2")]),
        ..testing::stores()
    };
    let World {
        ctx,
        mut local,
        mut remote,
    } = world_with(stores, vec![twin_of(&pod())], |_| {});
    let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
        expect_sent_back(&mut local, "its namespace is no longer offloaded").await;
        local.nothing_more().await;
        remote.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_pod_whose_offloading_ends_is_sent_back() {
    let mut ending = offloading("shop");
    ending.metadata.deletion_timestamp = deleted_pod().metadata.deletion_timestamp;
    let stores = Stores {
        offloadings: store([ending]),
        ..local_stores()
    };
    let World {
        ctx,
        mut local,
        mut remote,
    } = world_with(stores, vec![twin_of(&pod())], |_| {});
    let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
        expect_sent_back(&mut local, "the namespace's offloading is ending").await;
        local.nothing_more().await;
        remote.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_pod_waits_while_its_offloading_is_not_seen_its_cluster_not_connected_or_unreachable() {
    let not_seen = Stores {
        offloadings: store([]),
        ..local_stores()
    };
    let worlds = [
        world_with(not_seen, vec![], |_| {}),
        world_with(local_stores(), vec![], |peer| {
            peer.unreachable = Some(crate::model::reason::Problem::new(
                Reason::Unreachable,
                "no answer",
            ));
        }),
    ];
    for World {
        ctx,
        mut local,
        mut remote,
    } in worlds
    {
        let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), async {
            local.nothing_more().await;
            remote.nothing_more().await;
        })
        .await;
        assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(10)));
    }
    // No peer for c2 at all.
    let (client, mut local) = api_server("local");
    let ctx = Arc::new(testing::shared(client, local_stores(), testing::peers([])));
    let (result, ()) = exchange(reconcile(Arc::new(pod()), ctx), local.nothing_more()).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn a_pod_on_a_real_node_or_no_node_is_not_ours() {
    let mut real = pod();
    real.spec.as_mut().unwrap().node_name = Some("worker-1".into());
    let mut unbound = pod();
    unbound.spec.as_mut().unwrap().node_name = None;
    for pod in [real, unbound] {
        let World {
            ctx,
            mut local,
            mut remote,
        } = world(vec![]);
        let (result, ()) = exchange(reconcile(Arc::new(pod), ctx), async {
            local.nothing_more().await;
            remote.nothing_more().await;
        })
        .await;
        assert_eq!(result.unwrap(), Action::await_change());
    }
}

// A pod gone without the graceful steps, and the sweep.

/// The pod's twin is deleted, and nothing else: neither the twin of an earlier pod of that
/// name elsewhere nor a pod not ours. Looked up where the offloading puts it, or found by
/// its origin once the offloading is gone too.
#[tokio::test(start_paused = true)]
async fn a_gone_pods_twin_is_deleted_and_nothing_else() {
    let mut earlier = pod();
    earlier.metadata.uid = Some("u-0".into());
    let mut stale = twin_of(&earlier);
    stale.metadata.namespace = Some("other-c1".into());
    stale.metadata.uid = Some("twin-0".into());
    let mut foreign_elsewhere = foreign_watched();
    foreign_elsewhere.metadata.namespace = Some("else".into());
    let without_offloading = Stores {
        offloadings: store([]),
        ..local_stores()
    };
    for stores in [local_stores(), without_offloading] {
        let twins = vec![stale.clone(), foreign_elsewhere.clone(), twin_of(&pod())];
        let World {
            ctx,
            mut local,
            mut remote,
        } = world_with(stores, twins, |_| {});
        let ((), ()) = exchange(delete_twin_of(&ctx, &pod()), async {
            let call = remote.expect(Method::DELETE, TWIN_PATH).await;
            assert_eq!(call.body, json!({"preconditions": {"uid": "twin-1"}}));
            call.ok(&serde_json::to_value(twin_of(&pod())).unwrap());
            remote.nothing_more().await;
            local.nothing_more().await;
        })
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_gone_pods_twin_already_being_deleted_is_left_to_finish() {
    let mut leaving = twin_of(&pod());
    leaving.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![leaving]);
    let ((), ()) = exchange(delete_twin_of(&ctx, &pod()), async {
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_gone_pods_twin_that_cannot_be_deleted_is_left_to_the_sweep() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![twin_of(&pod())]);
    let ((), ()) = exchange(delete_twin_of(&ctx, &pod()), async {
        remote
            .expect(Method::DELETE, TWIN_PATH)
            .await
            .fail(500, "InternalError");
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    let started = tokio::time::Instant::now();
    let (took, _unanswered) = exchange(
        async {
            delete_twin_of(&ctx, &pod()).await;
            started.elapsed()
        },
        async { remote.expect(Method::DELETE, TWIN_PATH).await.unanswered() },
    )
    .await;
    assert!(took >= REMOTE_TIMEOUT && took < REMOTE_TIMEOUT + Duration::from_secs(1));
}

/// A twin whose local pod is `shop/<name>` with uid `uid`.
fn twin_named(name: &str, uid: &str) -> Pod {
    let mut local = pod();
    local.metadata.name = Some(name.into());
    local.metadata.uid = Some(uid.into());
    let mut twin = twin_of(&local);
    twin.metadata.uid = Some(format!("twin-{name}"));
    twin
}

fn local_pod(name: &str, uid: &str) -> Pod {
    let mut local = pod();
    local.metadata.name = Some(name.into());
    local.metadata.uid = Some(uid.into());
    local
}

#[tokio::test(start_paused = true)]
async fn the_sweep_deletes_only_orphaned_twins() {
    let mut going = twin_named("going", "u-going");
    going.metadata.deletion_timestamp = deleted_pod().metadata.deletion_timestamp;
    let remote_pods = vec![
        // Its local pod is there: kept.
        twin_named("kept", "u-kept"),
        // Its local pod is gone: deleted.
        twin_named("orphan", "u-orphan"),
        // Its local pod was recreated (another uid): deleted.
        twin_named("stale", "u-old"),
        // Gone, but already being deleted: left to finish.
        going,
        // Not ours (no marker, as the watch holds others'): never touched.
        foreign_watched(),
    ];
    let local_pods = store([
        local_pod("kept", "u-kept"),
        local_pod("stale", "u-new"),
        local_pod("web", "u-1"),
    ]);
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(remote_pods);
    let ((), ()) = exchange(sweep(&ctx, &local_pods), async {
        // The store's order is not decided: two deletes, in either order.
        let mut deleted = Vec::new();
        for _ in 0..2 {
            let call = remote.any().await;
            assert_eq!(call.method, Method::DELETE, "{}", call.path);
            deleted.push((call.path.clone(), call.body.clone()));
            call.ok(&testing::success());
        }
        deleted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            deleted,
            vec![
                (
                    "/api/v1/namespaces/shop-c1/pods/orphan".to_owned(),
                    json!({"preconditions": {"uid": "twin-orphan"}})
                ),
                (
                    "/api/v1/namespaces/shop-c1/pods/stale".to_owned(),
                    json!({"preconditions": {"uid": "twin-stale"}})
                ),
            ]
        );
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_sweep_waits_for_a_listed_watch_and_a_reachable_cluster() {
    let unlisted = world_with(local_stores(), vec![], |peer| {
        peer.pods = watched([twin_named("orphan", "u-orphan")], false);
    });
    let unreachable = world_with(
        local_stores(),
        vec![twin_named("orphan", "u-orphan")],
        |peer| {
            peer.unreachable = Some(crate::model::reason::Problem::new(
                Reason::Unreachable,
                "no answer",
            ));
        },
    );
    for World {
        ctx,
        mut local,
        mut remote,
    } in [unlisted, unreachable]
    {
        let ((), ()) = exchange(sweep(&ctx, &store([])), async {
            remote.nothing_more().await;
            local.nothing_more().await;
        })
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_sweep_delete_that_fails_or_hangs_does_not_stop_the_sweep() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![twin_named("a", "u-a"), twin_named("b", "u-b")]);
    let ((), (paths, _unanswered)) = exchange(sweep(&ctx, &store([])), async {
        // Whichever comes first is never answered; the other one still comes.
        let first = remote.any().await;
        let first_path = first.path.clone();
        let unanswered = first.unanswered();
        let second = remote.any().await;
        let second_path = second.path.clone();
        second.fail(500, "InternalError");
        remote.nothing_more().await;
        local.nothing_more().await;
        (vec![first_path, second_path], unanswered)
    })
    .await;
    let mut paths = paths;
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/shop-c1/pods/a",
            "/api/v1/namespaces/shop-c1/pods/b"
        ]
    );
}

// Found by these tests, then fixed.

#[tokio::test(start_paused = true)]
async fn a_deleted_pod_is_not_removed_before_the_twins_watch_has_listed() {
    // The twin runs in c2, but the peer's pod watch has not listed yet (just connected).
    let World {
        ctx,
        mut local,
        mut remote,
    } = world_with(local_stores(), vec![], |peer| {
        peer.pods = watched([], false);
    });
    let (result, ()) = exchange(reconcile(Arc::new(deleted_pod()), ctx), async {
        // Not `DELETE /api/v1/namespaces/shop/pods/web` with grace 0: the twin is not
        // known gone, so the local pod waits (as the sweep and the virtual node's
        // allocatable wait for the listing).
        local.nothing_more().await;
        remote.nothing_more().await;
    })
    .await;
    assert!(
        matches!(&result, Ok(action) if *action != Action::await_change()),
        "{result:?}"
    );
}

// The home API (`--home-api-access=token`).

const TOKEN_PATH: &str = "/api/v1/namespaces/shop/serviceaccounts/web/token";
const HOME_SECRETS_PATH: &str = "/api/v1/namespaces/shop-c1/secrets";
const HOME_SECRET_PATH: &str = "/api/v1/namespaces/shop-c1/secrets/home-api-web";

/// `pod()` as this cluster's ServiceAccount admission leaves it: account `web`, its token
/// volume mounted.
fn pod_with_token() -> Pod {
    let mut pod = pod();
    let spec = pod.spec.as_mut().unwrap();
    spec.service_account_name = Some("web".into());
    spec.containers[0].volume_mounts = Some(
        serde_json::from_value(json!([{"name": "kube-api-access-x", "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]))
        .unwrap(),
    );
    spec.volumes = Some(
        serde_json::from_value(
            json!([{"name": "kube-api-access-x", "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}]),
        )
        .unwrap(),
    );
    pod
}

fn home() -> crate::model::forge::home_api::HomeApi {
    crate::model::forge::home_api::HomeApi {
        host: "api.home.example".into(),
        port: 6443,
        ca: "CA".into(),
    }
}

/// [`world_with`] of `pod_with_token`'s account copied there, and home access on.
fn home_world(remote_pods: Vec<Pod>, secrets: Vec<k8s_openapi::api::core::v1::Secret>) -> World {
    let account: k8s_openapi::api::core::v1::ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": REMOTE_NAMESPACE,
                     "labels": {ORIGIN_CLUSTER_LABEL: testing::LOCAL_CLUSTER_ID},
                     "annotations": {ORIGIN_NAMESPACE_ANNOTATION: "shop"}}}))
    .unwrap();
    let mut world = world_with(local_stores(), remote_pods, |peer| {
        peer.service_accounts = watched([account], true);
        peer.secrets = watched(secrets, true);
    });
    Arc::get_mut(&mut world.ctx).unwrap().replica.home_api = Some(Arc::new(home()));
    world
}

fn issued(token: &str) -> Value {
    let expires = k8s_openapi::jiff::Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(3600))
        .unwrap();
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
           "spec": {"audiences": ["https://127.0.0.1"]},
           "status": {"token": token, "expirationTimestamp": expires.to_string()}})
}

#[tokio::test(start_paused = true)]
async fn with_home_access_the_twin_gets_a_bound_home_token_in_a_secret_it_owns() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = home_world(vec![], vec![]);
    let (result, ()) = exchange(reconcile(Arc::new(pod_with_token()), ctx), async {
        let call = local.expect(Method::POST, TOKEN_PATH).await;
        assert_eq!(
            call.body["spec"]["boundObjectRef"],
            json!({"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "u-1"})
        );
        assert_eq!(call.body["spec"]["expirationSeconds"], 3600);
        call.answer(201, &issued("home-token"));
        let call = remote.expect(Method::POST, TWINS_PATH).await;
        let spec = &call.body["spec"];
        assert_eq!(
            spec["volumes"][0]["projected"]["sources"][0]["secret"]["name"], "home-api-web",
            "{spec}"
        );
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["containers"][0]["env"][0]["value"], "api.home.example");
        let mut twin = call.body.clone();
        twin["metadata"]["uid"] = "twin-1".into();
        call.answer(201, &twin);
        let call = remote.expect(Method::POST, HOME_SECRETS_PATH).await;
        let secret = &call.body;
        assert_eq!(secret["metadata"]["name"], "home-api-web");
        assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "twin-1");
        // base64 of "home-token"
        assert_eq!(secret["data"]["token"], "aG9tZS10b2tlbg==");
        call.created();
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(SOON));
}

#[tokio::test(start_paused = true)]
async fn a_pod_this_cluster_issues_no_token_for_gets_no_twin_and_says_why() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = home_world(vec![], vec![]);
    let (result, ()) = exchange(reconcile(Arc::new(pod_with_token()), ctx), async {
        local
            .expect(Method::POST, TOKEN_PATH)
            .await
            .fail(403, reason_of(403));
        let why = format!(
            "cluster c2: this cluster issues no token for ServiceAccount web bound to the pod: {} (from mocked API server local)",
            reason_of(403)
        );
        expect_report(&mut local, "HomeTokenNotIssued", &why).await;
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
}

#[tokio::test(start_paused = true)]
async fn a_running_twins_home_token_is_renewed_when_due_and_not_before() {
    let local_pod = pod_with_token();
    let asked = crate::model::forge::home_api::token_asked(&local_pod).unwrap();
    let with_home = crate::model::forge::home_api::with_home_access(&local_pod, &asked, &home());
    let mut twin = twin_of(&with_home);
    twin.status = Some(PodStatus {
        phase: Some("Pending".into()),
        ..PodStatus::default()
    });
    let secret_due_at = |at: &str| {
        crate::model::forge::home_api::secret(
            &local_pod,
            testing::LOCAL_CLUSTER_ID,
            REMOTE_NAMESPACE,
            "old",
            at.parse().unwrap(),
            &home(),
            Some(&twin),
        )
    };
    // Not due: nothing asked, looked at again when it is.
    let mut pending = local_pod.clone();
    pending.status = twin.status.clone();
    let World {
        ctx,
        mut local,
        mut remote,
    } = home_world(
        vec![twin.clone()],
        vec![secret_due_at("2999-01-01T00:00:00Z")],
    );
    let (result, ()) = exchange(reconcile(Arc::new(pending.clone()), ctx), async {
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    let planned = format!("{:?}", result.unwrap());
    assert!(planned.contains("requeue_after: Some"), "{planned}");
    // Due: a new token, applied over our Secret.
    let World {
        ctx,
        mut local,
        mut remote,
    } = home_world(
        vec![twin.clone()],
        vec![secret_due_at("2020-01-01T00:00:00Z")],
    );
    let (result, ()) = exchange(reconcile(Arc::new(pending), ctx), async {
        local
            .expect(Method::POST, TOKEN_PATH)
            .await
            .answer(201, &issued("new"));
        let call = remote.expect(Method::PATCH, HOME_SECRET_PATH).await;
        assert_eq!(call.param("fieldManager"), Some("namespace-offloading"));
        assert_eq!(call.body["data"]["token"], "bmV3");
        let body = call.body.clone();
        call.ok(&body);
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    // Next at 80% of the new token's hour.
    let planned = format!("{:?}", result.unwrap());
    assert!(
        planned.contains("requeue_after: Some(2879")
            || planned.contains("requeue_after: Some(2880"),
        "{planned}"
    );
}

// Claims.

/// The pod with volume `pg` of claim `data`.
fn with_claim() -> Pod {
    let mut pod = pod();
    pod.spec.as_mut().unwrap().volumes = Some(vec![
        serde_json::from_value(
            json!({"name": "pg", "persistentVolumeClaim": {"claimName": "data"}}),
        )
        .unwrap(),
    ]);
    pod
}

fn local_claim(volume: Option<&str>) -> k8s_openapi::api::core::v1::PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": "data", "namespace": "shop", "uid": "claim-1"},
        "spec": {"storageClassName": "liqo", "volumeName": volume,
                 "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_twin_waits_for_its_claim_there() {
    // Not provisioned yet; provisioned here but its claim there not seen yet.
    for volume in [None, Some("offloading-claim-1")] {
        let stores = Stores {
            claims: store([local_claim(volume)]),
            ..local_stores()
        };
        let World {
            ctx,
            mut local,
            mut remote,
        } = world_with(stores, vec![], |_| {});
        let (result, ()) = exchange(reconcile(Arc::new(with_claim()), ctx), async {
            remote.nothing_more().await;
            local.nothing_more().await;
        })
        .await;
        assert_eq!(result.unwrap(), Action::requeue(SOON), "{volume:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_twin_is_created_once_its_claim_is_there_and_names_it() {
    let claim = local_claim(Some("offloading-claim-1"));
    let there = crate::model::forge::claims::remote_claim(
        &claim,
        testing::LOCAL_CLUSTER_ID,
        REMOTE_NAMESPACE,
        &Default::default(),
    )
    .unwrap();
    let stores = Stores {
        claims: store([claim]),
        ..local_stores()
    };
    let World {
        ctx,
        mut local,
        mut remote,
    } = world_with(stores, vec![], |peer| {
        peer.claims = watched([there], true);
    });
    let (result, ()) = exchange(reconcile(Arc::new(with_claim()), ctx), async {
        let call = remote.expect(Method::POST, TWINS_PATH).await;
        assert_eq!(
            call.body["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "data"
        );
        call.created();
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(SOON));
}

#[tokio::test(start_paused = true)]
async fn a_pod_whose_claim_is_bound_here_is_unsupported() {
    let stores = Stores {
        claims: store([local_claim(Some("pv-disk-7"))]),
        ..local_stores()
    };
    let World {
        ctx,
        mut local,
        mut remote,
    } = world_with(stores, vec![], |_| {});
    let (result, ()) = exchange(reconcile(Arc::new(with_claim()), ctx), async {
        let call = local.expect(Method::PATCH, LOCAL_STATUS_PATH).await;
        let condition = the_pods_condition(&call.body);
        assert_eq!(condition["reason"], "Unsupported");
        let message = condition["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with("cluster c2: ")
                && message.contains("pv-disk-7")
                && message.contains("does not move"),
            "{message}"
        );
        call.ok(&serde_json::to_value(pod()).unwrap());
        let event = expect_event(&mut local, "shop", "Pod", "web").await;
        assert_eq!(event["reason"], "RemotePodUnsupported");
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
}
