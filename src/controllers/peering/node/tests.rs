//! The virtual node and its Lease against a mocked local API server: what `apply` sends
//! for a missing node, an up-to-date one and a changed one, the Lease at every heartbeat
//! while the remote answers, `delete`, and their failures.

use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::{
    context::testing::{self, ApiServer, api_server, exchange, reason_of, store, success},
    model::{
        markers::{NOT_ALLOWED_TAINT, REMOTE_CLUSTER_ID_LABEL, TYPE_LABEL, VIRTUAL_NODE},
        virtual_node::KubeletEndpoint,
    },
};

const NODE: &str = "/api/v1/nodes/liqo-c2";
const NODE_STATUS: &str = "/api/v1/nodes/liqo-c2/status";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/liqo-c2";
/// When the node in the store was last written (recognisable).
const EARLIER: &str = "1970-01-01T00:00:00Z";

fn context(nodes: Vec<Node>, kubelet: Option<KubeletEndpoint>) -> (Context, ApiServer) {
    let (client, local) = api_server("local");
    let mut stores = testing::stores();
    stores.nodes = store(nodes);
    let shared = testing::shared(client, stores, testing::peers([]));
    (Context { shared, kubelet }, local)
}

fn labels(region: &str) -> BTreeMap<String, String> {
    [("region".to_owned(), region.to_owned())].into()
}

fn cpus(n: &str) -> BTreeMap<String, Quantity> {
    [("cpu".to_owned(), Quantity(n.into()))].into()
}

/// The node as an earlier `apply` left it (at [`EARLIER`]).
fn applied(region: &str, cpu: &str, reachable: bool) -> Node {
    let earlier = Time(Timestamp::UNIX_EPOCH);
    virtual_node::node("c2", &labels(region), &cpus(cpu), reachable, None, &earlier)
}

/// The labels the node of a cluster labelled `region` must carry, exactly.
fn expected_labels(region: &str) -> Value {
    json!({
        "region": region,
        TYPE_LABEL: VIRTUAL_NODE,
        REMOTE_CLUSTER_ID_LABEL: "c2",
        "kubernetes.io/hostname": "liqo-c2",
        "kubernetes.io/role": "agent",
    })
}

/// A server-side apply, forced, as our field manager.
fn assert_applied(call: &testing::Call) {
    assert_eq!(
        call.param("fieldManager"),
        Some(FIELD_MANAGER),
        "{}",
        call.path
    );
    assert_eq!(call.param("force"), Some("true"), "{}", call.path);
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/apply-patch+yaml"),
        "{}",
        call.path
    );
}

/// The node's apply (without status); answered; returns its body.
async fn expect_node_apply(local: &mut ApiServer) -> Value {
    let call = local.expect(Method::PATCH, NODE).await;
    assert_applied(&call);
    let body = call.body.clone();
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["kind"], "Node", "{body}");
    assert_eq!(body["metadata"]["name"], "liqo-c2", "{body}");
    assert_eq!(
        body.get("status"),
        None,
        "the status is applied on its own: {body}"
    );
    call.ok(&body);
    body
}

/// The node status's apply; answered; returns the status.
async fn expect_status_apply(local: &mut ApiServer) -> Value {
    let call = local.expect(Method::PATCH, NODE_STATUS).await;
    assert_applied(&call);
    let body = call.body.clone();
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["kind"], "Node", "{body}");
    let status = body["status"].clone();
    call.ok(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "liqo-c2"}, "status": status}));
    status
}

/// The Lease's apply; answered; returns its spec.
async fn expect_lease_apply(local: &mut ApiServer) -> Value {
    let call = local.expect(Method::PATCH, LEASE).await;
    assert_applied(&call);
    let body = call.body.clone();
    assert_eq!(body["apiVersion"], "coordination.k8s.io/v1", "{body}");
    assert_eq!(body["kind"], "Lease", "{body}");
    assert_eq!(body["metadata"]["name"], "liqo-c2", "{body}");
    assert_eq!(body["metadata"]["namespace"], "kube-node-lease", "{body}");
    let spec = body["spec"].clone();
    assert_eq!(spec["holderIdentity"], testing::HOLDER, "{spec}");
    assert_eq!(spec["leaseDurationSeconds"], 40, "{spec}");
    call.ok(&body);
    spec
}

fn renew_time(spec: &Value) -> Timestamp {
    spec["renewTime"]
        .as_str()
        .unwrap_or_else(|| panic!("no renewTime: {spec}"))
        .parse()
        .unwrap()
}

fn ready(status: &Value) -> &Value {
    let conditions = status["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 1, "{status}");
    assert_eq!(conditions[0]["type"], "Ready", "{status}");
    &conditions[0]
}

fn api_code(result: Result<(), kube::Error>) -> u16 {
    match result {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("expected the API's refusal, got {other:?}"),
    }
}

// apply.

#[tokio::test(start_paused = true)]
async fn a_missing_node_is_applied_then_its_status_then_its_lease() {
    let (ctx, mut local) = context(vec![], None);
    let allocatable: BTreeMap<String, Quantity> = [
        ("cpu".to_owned(), Quantity("8".into())),
        ("memory".to_owned(), Quantity("16Gi".into())),
    ]
    .into();
    let (applied, ()) = exchange(
        apply(&ctx, "c2", &labels("eu"), Some(&allocatable), true),
        async {
            let node = expect_node_apply(&mut local).await;
            assert_eq!(node["metadata"]["labels"], expected_labels("eu"));
            assert_eq!(
                node["spec"]["taints"],
                json!([{"key": NOT_ALLOWED_TAINT, "value": "true", "effect": "NoExecute"}])
            );
            let status = expect_status_apply(&mut local).await;
            let resources = json!({"cpu": "8", "memory": "16Gi"});
            assert_eq!(status["allocatable"], resources);
            assert_eq!(status["capacity"], resources);
            let ready = ready(&status);
            assert_eq!(ready["status"], "True");
            assert_eq!(ready["reason"], "RemoteClusterReachable");
            assert!(ready["lastHeartbeatTime"].is_string(), "{ready}");
            assert!(ready["lastTransitionTime"].is_string(), "{ready}");
            // Without a kubelet endpoint, none is advertised.
            assert_eq!(status.get("addresses"), None, "{status}");
            assert_eq!(status.get("daemonEndpoints"), None, "{status}");
            let lease = expect_lease_apply(&mut local).await;
            renew_time(&lease);
            local.nothing_more().await;
        },
    )
    .await;
    applied.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_up_to_date_node_is_not_written_and_its_lease_is_renewed_at_each_heartbeat() {
    let (ctx, mut local) = context(vec![applied("eu", "8", true)], None);
    let mut renewed = Vec::new();
    for _ in 0..2 {
        let (applied, spec) = exchange(
            apply(&ctx, "c2", &labels("eu"), Some(&cpus("8")), true),
            async {
                let spec = expect_lease_apply(&mut local).await;
                local.nothing_more().await;
                spec
            },
        )
        .await;
        applied.unwrap();
        renewed.push(renew_time(&spec));
    }
    assert!(renewed[1] >= renewed[0], "{renewed:?}");
    // Renewed now, not at the node's last write.
    assert!(renewed[0] > Timestamp::UNIX_EPOCH, "{renewed:?}");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_up_to_date_node_hears_nothing() {
    let (ctx, mut local) = context(vec![applied("eu", "8", false)], None);
    let (applied, ()) = exchange(
        apply(&ctx, "c2", &labels("eu"), None, false),
        local.nothing_more(),
    )
    .await;
    applied.unwrap();
}

#[tokio::test(start_paused = true)]
async fn changed_labels_are_applied_and_the_ready_condition_keeps_its_times() {
    let (ctx, mut local) = context(vec![applied("eu", "8", true)], None);
    let (applied, ()) = exchange(
        apply(&ctx, "c2", &labels("us"), Some(&cpus("8")), true),
        async {
            let node = expect_node_apply(&mut local).await;
            assert_eq!(node["metadata"]["labels"], expected_labels("us"));
            let status = expect_status_apply(&mut local).await;
            assert_eq!(status["allocatable"], json!({"cpu": "8"}));
            let ready = ready(&status);
            assert_eq!(ready["status"], "True");
            assert_eq!(ready["lastHeartbeatTime"], EARLIER, "{ready}");
            assert_eq!(ready["lastTransitionTime"], EARLIER, "{ready}");
            expect_lease_apply(&mut local).await;
            local.nothing_more().await;
        },
    )
    .await;
    applied.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_label_someone_else_added_makes_the_node_applied_again_with_ours_only() {
    let mut node = applied("eu", "8", true);
    node.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("team".into(), "a".into());
    let (ctx, mut local) = context(vec![node], None);
    let (applied, ()) = exchange(
        apply(&ctx, "c2", &labels("eu"), Some(&cpus("8")), true),
        async {
            let node = expect_node_apply(&mut local).await;
            assert_eq!(node["metadata"]["labels"], expected_labels("eu"));
            expect_status_apply(&mut local).await;
            expect_lease_apply(&mut local).await;
            local.nothing_more().await;
        },
    )
    .await;
    applied.unwrap();
}

#[tokio::test(start_paused = true)]
async fn changed_allocatable_is_applied() {
    let (ctx, mut local) = context(vec![applied("eu", "8", true)], None);
    let (applied, ()) = exchange(
        apply(&ctx, "c2", &labels("eu"), Some(&cpus("16")), true),
        async {
            let node = expect_node_apply(&mut local).await;
            assert_eq!(node["metadata"]["labels"], expected_labels("eu"));
            let status = expect_status_apply(&mut local).await;
            assert_eq!(status["allocatable"], json!({"cpu": "16"}));
            assert_eq!(status["capacity"], json!({"cpu": "16"}));
            assert_eq!(ready(&status)["lastTransitionTime"], EARLIER);
            expect_lease_apply(&mut local).await;
            local.nothing_more().await;
        },
    )
    .await;
    applied.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_node_gone_unreachable_is_marked_not_ready_keeps_its_allocatable_and_its_lease_lapses() {
    let (ctx, mut local) = context(vec![applied("eu", "8", true)], None);
    let (applied, ()) = exchange(apply(&ctx, "c2", &labels("eu"), None, false), async {
        let node = expect_node_apply(&mut local).await;
        assert_eq!(node["metadata"]["labels"], expected_labels("eu"));
        let status = expect_status_apply(&mut local).await;
        assert_eq!(status["allocatable"], json!({"cpu": "8"}));
        let ready = ready(&status);
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "RemoteClusterUnreachable");
        // The status changed: so did its time.
        assert_ne!(ready["lastTransitionTime"], EARLIER, "{ready}");
        // No Lease: it is not renewed while the remote does not answer.
        local.nothing_more().await;
    })
    .await;
    applied.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_kubelet_endpoint_is_advertised_and_a_node_without_it_is_applied_again() {
    let kubelet = KubeletEndpoint {
        address: [10, 1, 2, 3].into(),
        port: 10250,
    };
    let (ctx, mut local) = context(vec![applied("eu", "8", true)], Some(kubelet));
    let (applied, ()) = exchange(
        apply(&ctx, "c2", &labels("eu"), Some(&cpus("8")), true),
        async {
            expect_node_apply(&mut local).await;
            let status = expect_status_apply(&mut local).await;
            assert_eq!(
                status["addresses"],
                json!([
                    {"type": "InternalIP", "address": "10.1.2.3"},
                    {"type": "Hostname", "address": "liqo-c2"},
                ])
            );
            assert_eq!(
                status["daemonEndpoints"],
                json!({"kubeletEndpoint": {"Port": 10250}})
            );
            expect_lease_apply(&mut local).await;
            local.nothing_more().await;
        },
    )
    .await;
    applied.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_refused_node_apply_is_returned_and_nothing_follows() {
    for code in [409, 403, 500] {
        let (ctx, mut local) = context(vec![], None);
        let (applied, ()) = exchange(
            apply(&ctx, "c2", &labels("eu"), Some(&cpus("8")), true),
            async {
                local
                    .expect(Method::PATCH, NODE)
                    .await
                    .fail(code, reason_of(code));
                local.nothing_more().await;
            },
        )
        .await;
        assert_eq!(api_code(applied), code);
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_status_apply_is_returned_and_the_lease_is_not_renewed() {
    for code in [409, 403, 500] {
        let (ctx, mut local) = context(vec![], None);
        let (applied, ()) = exchange(
            apply(&ctx, "c2", &labels("eu"), Some(&cpus("8")), true),
            async {
                expect_node_apply(&mut local).await;
                local
                    .expect(Method::PATCH, NODE_STATUS)
                    .await
                    .fail(code, reason_of(code));
                local.nothing_more().await;
            },
        )
        .await;
        assert_eq!(api_code(applied), code);
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_lease_renewal_is_returned() {
    for code in [409, 403, 500] {
        let (ctx, mut local) = context(vec![applied("eu", "8", true)], None);
        let (applied, ()) = exchange(
            apply(&ctx, "c2", &labels("eu"), Some(&cpus("8")), true),
            async {
                local
                    .expect(Method::PATCH, LEASE)
                    .await
                    .fail(code, reason_of(code));
                local.nothing_more().await;
            },
        )
        .await;
        assert_eq!(api_code(applied), code);
    }
}

// up_to_date.

#[test]
fn up_to_date_compares_labels_taints_allocatable_conditions_and_advertised_endpoints() {
    let desired = applied("eu", "8", true);
    assert!(up_to_date(&desired, &desired));
    assert!(!up_to_date(&applied("us", "8", true), &desired), "labels");
    assert!(
        !up_to_date(&applied("eu", "4", true), &desired),
        "allocatable"
    );
    assert!(!up_to_date(&applied("eu", "8", false), &desired), "Ready");
    let mut untainted = desired.clone();
    untainted.spec = None;
    assert!(!up_to_date(&untainted, &desired), "taints");
    let mut no_status = desired.clone();
    no_status.status = None;
    assert!(!up_to_date(&no_status, &desired), "no status");
    // Endpoints advertised before and no longer configured are left as they are.
    let now = Time(Timestamp::UNIX_EPOCH);
    let kubelet = KubeletEndpoint {
        address: [10, 1, 2, 3].into(),
        port: 10250,
    };
    let advertised =
        virtual_node::node("c2", &labels("eu"), &cpus("8"), true, Some(&kubelet), &now);
    assert!(up_to_date(&advertised, &desired), "endpoints not wanted");
    assert!(!up_to_date(&desired, &advertised), "endpoints wanted");
    assert!(up_to_date(&advertised, &advertised));
}

// delete.

#[tokio::test(start_paused = true)]
async fn delete_removes_the_node_then_its_lease() {
    let (ctx, mut local) = context(vec![applied("eu", "8", true)], None);
    let (deleted, ()) = exchange(delete(&ctx, "c2"), async {
        let call = local.expect(Method::DELETE, NODE).await;
        assert_eq!(call.body, json!({}), "no precondition");
        call.ok(&serde_json::to_value(applied("eu", "8", true)).unwrap());
        let call = local.expect(Method::DELETE, LEASE).await;
        assert_eq!(call.body, json!({}), "no precondition");
        call.ok(&success());
        local.nothing_more().await;
    })
    .await;
    deleted.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_node_and_lease_already_gone_are_done() {
    let (ctx, mut local) = context(vec![], None);
    let (deleted, ()) = exchange(delete(&ctx, "c2"), async {
        local
            .expect(Method::DELETE, NODE)
            .await
            .fail(404, "NotFound");
        local
            .expect(Method::DELETE, LEASE)
            .await
            .fail(404, "NotFound");
        local.nothing_more().await;
    })
    .await;
    deleted.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_refused_node_delete_is_returned_once_the_lease_delete_was_tried() {
    for code in [409, 403, 500] {
        let (ctx, mut local) = context(vec![], None);
        let (deleted, ()) = exchange(delete(&ctx, "c2"), async {
            local
                .expect(Method::DELETE, NODE)
                .await
                .fail(code, reason_of(code));
            local.expect(Method::DELETE, LEASE).await.ok(&success());
            local.nothing_more().await;
        })
        .await;
        assert_eq!(api_code(deleted), code);
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_lease_delete_is_returned() {
    for (node, code) in [(200, 409), (200, 403), (404, 500)] {
        let (ctx, mut local) = context(vec![], None);
        let (deleted, ()) = exchange(delete(&ctx, "c2"), async {
            let call = local.expect(Method::DELETE, NODE).await;
            if node == 200 {
                call.ok(&success());
            } else {
                call.fail(node, reason_of(node));
            }
            local
                .expect(Method::DELETE, LEASE)
                .await
                .fail(code, reason_of(code));
            local.nothing_more().await;
        })
        .await;
        assert_eq!(api_code(deleted), code);
    }
}

#[tokio::test(start_paused = true)]
async fn a_taint_another_controller_added_is_not_applied_away() {
    let mut node = applied("eu", "8", false);
    node.spec
        .as_mut()
        .unwrap()
        .taints
        .as_mut()
        .unwrap()
        .push(k8s_openapi::api::core::v1::Taint {
            key: "example.com/maintenance".into(),
            value: None,
            effect: "NoSchedule".into(),
            time_added: None,
        });
    let (ctx, mut local) = context(vec![node], None);
    // Otherwise as applied: nothing to send.
    let (applied, ()) = exchange(
        apply(&ctx, "c2", &labels("eu"), None, false),
        local.nothing_more(),
    )
    .await;
    applied.unwrap();
}

#[tokio::test(start_paused = true)]
async fn our_taint_put_back_keeps_the_taints_of_others() {
    let taint = |key: &str| k8s_openapi::api::core::v1::Taint {
        key: key.into(),
        value: None,
        effect: "NoExecute".into(),
        time_added: None,
    };
    let mut node = applied("eu", "8", false);
    // An admin's taint is kept; the lifecycle controller's would evict the pods after 300 s
    // while their twins run on, so it goes.
    node.spec.as_mut().unwrap().taints = Some(vec![
        taint("node.kubernetes.io/unreachable"),
        taint("example.com/maintenance"),
    ]);
    let (ctx, mut local) = context(vec![node], None);
    let (applied, ()) = exchange(apply(&ctx, "c2", &labels("eu"), None, false), async {
        let node = expect_node_apply(&mut local).await;
        assert_eq!(
            node["spec"]["taints"],
            json!([
                {"key": NOT_ALLOWED_TAINT, "value": "true", "effect": "NoExecute"},
                {"key": "example.com/maintenance", "effect": "NoExecute"},
            ])
        );
        expect_status_apply(&mut local).await;
        local.nothing_more().await;
    })
    .await;
    applied.unwrap();
}
