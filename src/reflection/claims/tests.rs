//! The claim provisioner against mocked API servers: the local one (placeholder volumes,
//! status, events) and cluster `c2`'s (our claims), with the stores filled by hand.

use std::sync::Arc;

use http::Method;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::runtime::controller::Action;
use serde_json::json;

use super::*;
use crate::{
    context::{
        Stores,
        testing::{
            self, ApiServer, api_server, exchange, expect_event, offloading, store, virtual_node,
            watched,
        },
    },
    model::markers::SCHEDULING_ENABLED_LABEL,
};

const REMOTE_NAMESPACE: &str = "shop-c1";
const CLAIMS_PATH: &str = "/api/v1/namespaces/shop-c1/persistentvolumeclaims";
const CLAIM_PATH: &str = "/api/v1/namespaces/shop-c1/persistentvolumeclaims/data";

/// Local claim `shop/data` of our class, placed by the scheduler on `c2`'s virtual node.
fn claim() -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": "data", "namespace": "shop", "uid": "u-1",
            "annotations": {forge::SELECTED_NODE_ANNOTATION: "liqo-c2",
                            "volume.kubernetes.io/storage-provisioner": forge::PROVISIONER}},
        "spec": {"storageClassName": "liqo", "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Pending"},
    }))
    .unwrap()
}

/// The same, bound here to its placeholder volume.
fn bound() -> PersistentVolumeClaim {
    let mut claim = claim();
    claim.spec.as_mut().unwrap().volume_name = Some("offloading-u-1".into());
    claim.status = Some(
        serde_json::from_value(json!({"phase": "Bound", "capacity": {"storage": "1Gi"}})).unwrap(),
    );
    claim
}

fn ours_there(status: serde_json::Value) -> PersistentVolumeClaim {
    let mut there = forge::remote_claim(
        &claim(),
        testing::LOCAL_CLUSTER_ID,
        REMOTE_NAMESPACE,
        &ClassMapping::new(),
    )
    .unwrap();
    there.metadata.uid = Some("r-1".into());
    there.status = Some(serde_json::from_value(status).unwrap());
    there
}

struct World {
    ctx: Arc<Context>,
    local: ApiServer,
    remote: ApiServer,
}

fn world(remote_claims: Vec<PersistentVolumeClaim>) -> World {
    let (local_client, local) = api_server("local");
    let (remote_client, remote) = api_server("c2");
    let mut peer = testing::peer("c2", remote_client);
    peer.claims = watched(remote_claims, true);
    peer.namespaces = watched(
        [crate::model::remote_namespace::desired(
            REMOTE_NAMESPACE,
            testing::LOCAL_CLUSTER_ID,
            "shop",
        )],
        true,
    );
    let mut nso = offloading("shop");
    nso.status = Some(crate::model::api::NamespaceOffloadingStatus {
        remote_namespace_name: Some(REMOTE_NAMESPACE.into()),
        remote_namespaces_conditions: [(
            "c2".to_owned(),
            vec![crate::model::api::RemoteNamespaceCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: None,
                reason: Some("NamespaceCreated".into()),
                message: None,
            }],
        )]
        .into(),
        ..Default::default()
    });
    let namespace: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "shop", "labels": {SCHEDULING_ENABLED_LABEL: "true"}}}),
    )
    .unwrap();
    let stores = Stores {
        nodes: store([virtual_node("c2")]),
        offloadings: store([nso]),
        namespaces: store([namespace]),
        ..testing::stores()
    };
    let shared = testing::shared(local_client, stores, testing::peers([("c2", peer)]));
    World {
        ctx: Arc::new(Context {
            shared,
            classes: [("liqo".to_owned(), "fast".to_owned())].into(),
        }),
        local,
        remote,
    }
}

#[tokio::test(start_paused = true)]
async fn a_claim_placed_on_a_virtual_node_is_created_there_then_its_volume_here() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![]);
    let (result, ()) = exchange(reconcile(Arc::new(claim()), ctx), async {
        let call = remote.expect(Method::POST, CLAIMS_PATH).await;
        assert_eq!(call.body["metadata"]["name"], "data");
        assert_eq!(call.body["spec"]["storageClassName"], "fast");
        assert_eq!(
            call.body["metadata"]["annotations"]["offloading.liqo.io/origin-claim-uid"],
            "u-1"
        );
        call.created();
        let call = local
            .expect(Method::POST, "/api/v1/persistentvolumes")
            .await;
        assert_eq!(call.body["metadata"]["name"], "offloading-u-1");
        assert_eq!(call.body["spec"]["claimRef"]["uid"], "u-1");
        call.created();
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(SOON));
}

#[tokio::test(start_paused = true)]
async fn a_claim_of_another_provisioner_or_bound_here_is_left_alone() {
    let mut other = claim();
    other.metadata.annotations.as_mut().unwrap().insert(
        "volume.kubernetes.io/storage-provisioner".into(),
        "rancher.io/local-path".into(),
    );
    let mut here = claim();
    here.spec.as_mut().unwrap().volume_name = Some("pv-disk-7".into());
    for claim in [other, here] {
        let World {
            ctx,
            mut local,
            mut remote,
        } = world(vec![]);
        let (result, ()) = exchange(reconcile(Arc::new(claim), ctx), async {
            remote.nothing_more().await;
            local.nothing_more().await;
        })
        .await;
        assert_eq!(result.unwrap(), Action::await_change());
    }
}

#[tokio::test(start_paused = true)]
async fn the_remote_status_is_mirrored_on_the_bound_claim() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![ours_there(
        json!({"phase": "Bound", "capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"]}),
    )]);
    let (result, ()) = exchange(reconcile(Arc::new(bound()), ctx), async {
        let call = local
            .expect(
                Method::PATCH,
                "/api/v1/namespaces/shop/persistentvolumeclaims/data/status",
            )
            .await;
        assert_eq!(call.body["status"]["capacity"]["storage"], "2Gi");
        assert_eq!(
            call.body["status"]["conditions"][0]["type"],
            forge::CLAIM_CONDITION
        );
        assert_eq!(call.body["status"]["conditions"][0]["status"], "True");
        assert!(call.body["status"]["phase"].is_null(), "{}", call.body);
        call.ok(&serde_json::to_value(bound()).unwrap());
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_name_taken_there_is_reported_and_left_alone() {
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![]);
    let (result, ()) = exchange(reconcile(Arc::new(claim()), ctx), async {
        remote
            .expect(Method::POST, CLAIMS_PATH)
            .await
            .fail(409, "AlreadyExists");
        remote.expect(Method::GET, CLAIM_PATH).await.ok(&json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": REMOTE_NAMESPACE, "uid": "x-1"},
        }));
        let event = expect_event(&mut local, "shop", "PersistentVolumeClaim", "data").await;
        assert_eq!(event["reason"], "ReflectionConflict");
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(LATER));
}

#[tokio::test(start_paused = true)]
async fn a_deleted_claim_no_pod_uses_takes_its_remote_claim_and_volume_along() {
    let mut deleted = bound();
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![ours_there(json!({"phase": "Bound"}))]);
    let (result, ()) = exchange(reconcile(Arc::new(deleted), ctx), async {
        let call = remote.expect(Method::DELETE, CLAIM_PATH).await;
        assert_eq!(call.body, json!({"preconditions": {"uid": "r-1"}}));
        call.ok(&serde_json::to_value(ours_there(json!({}))).unwrap());
        local
            .expect(Method::GET, "/api/v1/persistentvolumes/offloading-u-1")
            .await
            .ok(&placeholder("data", "u-1"));
        let call = local
            .expect(Method::DELETE, "/api/v1/persistentvolumes/offloading-u-1")
            .await;
        assert_eq!(call.body["preconditions"]["uid"], "pv-1");
        call.ok(&testing::success());
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

/// The placeholder volume `offloading-<uid>` as the PV controller leaves it, bound to
/// claim `name` of `shop` with uid `claim_uid`.
fn placeholder(name: &str, claim_uid: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume",
           "metadata": {"name": "offloading-u-1", "uid": "pv-1"},
           "spec": {"claimRef": {"namespace": "shop", "name": name, "uid": claim_uid},
                    "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}})
}

#[tokio::test(start_paused = true)]
async fn a_volume_of_that_name_bound_to_another_claim_is_never_deleted() {
    let mut deleted = bound();
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![ours_there(json!({"phase": "Bound"}))]);
    let (result, ()) = exchange(reconcile(Arc::new(deleted), ctx), async {
        remote
            .expect(Method::DELETE, CLAIM_PATH)
            .await
            .ok(&serde_json::to_value(ours_there(json!({}))).unwrap());
        local
            .expect(Method::GET, "/api/v1/persistentvolumes/offloading-u-1")
            .await
            .ok(&placeholder("someone-elses", "u-9"));
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_deleted_claim_an_offloaded_pod_still_uses_keeps_its_remote_claim() {
    let mut deleted = bound();
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    let World {
        ctx,
        mut local,
        mut remote,
    } = world(vec![ours_there(json!({"phase": "Bound"}))]);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"nodeName": "liqo-c2", "containers": [{"name": "db", "image": "pg"}],
                 "volumes": [{"name": "pg", "persistentVolumeClaim": {"claimName": "data"}}]},
    }))
    .unwrap();
    let mut shared = ctx.shared.clone();
    shared.stores.pods = store([pod]);
    let ctx = Arc::new(Context {
        shared,
        classes: ClassMapping::new(),
    });
    let (result, ()) = exchange(reconcile(Arc::new(deleted), ctx), async {
        remote.nothing_more().await;
        local.nothing_more().await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}
