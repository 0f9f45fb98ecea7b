//! The remote namespace of one cluster against a mocked API server of cluster `c2` (and a
//! local one, which must hear nothing): what `ensure` and `remove` send for each state,
//! and where they say the cluster stands.

use std::{collections::BTreeSet, time::Duration};

use http::Method;
use serde_json::json;

use super::*;
use crate::{
    context::{
        Stores,
        testing::{self, ApiServer, api_server, exchange, reason_of, store, watched},
    },
    model::{
        api::RemoteCluster,
        markers::{ORIGIN_CLUSTER_LABEL, ORIGIN_NAMESPACE_LABEL, REMOTE_NAMESPACE_ANNOTATION},
    },
};

const NAME: &str = "shop-c1";
const ORIGIN: &str = "shop";
const NAMESPACES: &str = "/api/v1/namespaces";
const NAMESPACE: &str = "/api/v1/namespaces/shop-c1";

/// Selected, not said Ready before, with a valid selector.
const SELECTED: (bool, bool) = (true, false);
/// No longer selected where ours was Ready.
const DESELECTED: (bool, bool) = (false, true);

/// Ours, as we create it, with the uid the API server gave it.
fn ours() -> Namespace {
    let mut ns = remote_namespace::desired(NAME, testing::LOCAL_CLUSTER_ID, ORIGIN);
    ns.metadata.uid = Some("ns-1".into());
    ns
}

fn ours_terminating() -> Namespace {
    let mut ns = ours();
    ns.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    ns
}

/// Namespaces of our name that are not ours: without our annotation, another cluster's,
/// and that of another local namespace (`shop-c1` offloaded with EnforceSameName).
fn foreign() -> Vec<Namespace> {
    let mut unmarked = ours();
    unmarked.metadata.annotations = None;
    unmarked.metadata.labels = None;
    let mut theirs = remote_namespace::desired(NAME, "c9", ORIGIN);
    theirs.metadata.uid = Some("ns-9".into());
    let mut sibling = remote_namespace::desired(NAME, testing::LOCAL_CLUSTER_ID, NAME);
    sibling.metadata.uid = Some("ns-2".into());
    vec![unmarked, theirs, sibling]
}

fn json_of(ns: &Namespace) -> serde_json::Value {
    serde_json::to_value(ns).unwrap()
}

struct World {
    ctx: Context,
    local: ApiServer,
    remote: ApiServer,
    /// How long the last `ensure` or `remove` took.
    took: Duration,
}

/// `c2` connected; its namespace watch listed (or not) and holding `namespaces`.
fn connected(namespaces: Vec<Namespace>, listed: bool) -> World {
    world_with(testing::stores(), |peer| {
        peer.namespaces = watched(namespaces, listed);
    })
}

fn world_with(stores: Stores, edit: impl FnOnce(&mut Peer)) -> World {
    let (local_client, local) = api_server("local");
    let (remote_client, remote) = api_server("c2");
    let mut peer = testing::peer("c2", remote_client);
    edit(&mut peer);
    let shared = testing::shared(local_client, stores, testing::peers([("c2", peer)]));
    World {
        ctx: Context::for_tests(shared),
        local,
        remote,
        took: Duration::ZERO,
    }
}

impl World {
    /// `ensure` for `c2`, the API servers playing `script`; then neither hears more.
    async fn ensure<S>(
        &mut self,
        selected: (bool, bool),
        may_delete: bool,
        script: impl AsyncFnOnce(&mut ApiServer) -> S,
    ) -> (ClusterState, S) {
        let World {
            ctx,
            local,
            remote,
            took,
        } = self;
        let ((state, elapsed), out) = exchange(
            timed(ensure(ctx, "c2", selected, may_delete, NAME, ORIGIN)),
            async {
                let out = script(remote).await;
                remote.nothing_more().await;
                local.nothing_more().await;
                out
            },
        )
        .await;
        *took = elapsed;
        (state, out)
    }

    /// `remove` for `c2`, likewise.
    async fn remove<S>(
        &mut self,
        script: impl AsyncFnOnce(&mut ApiServer) -> S,
    ) -> (Option<ClusterState>, S) {
        let World {
            ctx,
            local,
            remote,
            took,
        } = self;
        let ((state, elapsed), out) = exchange(timed(remove(ctx, "c2", NAME, ORIGIN)), async {
            let out = script(remote).await;
            remote.nothing_more().await;
            local.nothing_more().await;
            out
        })
        .await;
        *took = elapsed;
        (state, out)
    }
}

/// What `code` gives, and how long it took.
async fn timed<T>(code: impl Future<Output = T>) -> (T, Duration) {
    let started = tokio::time::Instant::now();
    let out = code.await;
    (out, started.elapsed())
}

/// Gave up after the remote timeout, not sooner, not much later.
fn gave_up_in_time(took: Duration) {
    assert!(
        took >= REMOTE_TIMEOUT && took < REMOTE_TIMEOUT + Duration::from_secs(1),
        "{took:?}"
    );
}

fn failed(state: &ClusterState) -> &Problem {
    match state {
        ClusterState::Failed(p) => p,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn conflict_message(found: &Namespace) -> String {
    match remote_namespace::ownership(Some(found), testing::LOCAL_CLUSTER_ID, ORIGIN) {
        Ownership::Conflict(message) => message,
        other => panic!("{other:?}"),
    }
}

// ensure: creating ours.

#[tokio::test(start_paused = true)]
async fn a_missing_remote_namespace_is_created_with_our_ownership_markers() {
    let mut world = connected(vec![], true);
    let (state, ()) = world
        .ensure(SELECTED, true, async |remote| {
            let call = remote.expect(Method::POST, NAMESPACES).await;
            let ns = &call.body;
            assert_eq!(ns["metadata"]["name"], NAME);
            assert_eq!(
                ns["metadata"]["annotations"],
                json!({REMOTE_NAMESPACE_ANNOTATION: testing::LOCAL_CLUSTER_ID})
            );
            assert_eq!(
                ns["metadata"]["labels"],
                json!({ORIGIN_NAMESPACE_LABEL: ORIGIN, ORIGIN_CLUSTER_LABEL: testing::LOCAL_CLUSTER_ID})
            );
            call.created();
        })
        .await;
    assert_eq!(state, ClusterState::Ready);
}

#[tokio::test(start_paused = true)]
async fn before_the_watch_has_listed_the_api_server_is_asked_first() {
    let mut missing = connected(vec![], false);
    let (state, ()) = missing
        .ensure(SELECTED, true, async |remote| {
            remote
                .expect(Method::GET, NAMESPACE)
                .await
                .fail(404, "NotFound");
            remote.expect(Method::POST, NAMESPACES).await.created();
        })
        .await;
    assert_eq!(state, ClusterState::Ready);

    let mut there = connected(vec![], false);
    let (state, ()) = there
        .ensure(SELECTED, true, async |remote| {
            remote
                .expect(Method::GET, NAMESPACE)
                .await
                .ok(&json_of(&ours()));
        })
        .await;
    assert_eq!(state, ClusterState::Ready);
}

#[tokio::test(start_paused = true)]
async fn our_remote_namespace_is_left_as_it_is() {
    let mut world = connected(vec![ours()], true);
    let (state, ()) = world.ensure(SELECTED, true, async |_| {}).await;
    assert_eq!(state, ClusterState::Ready);
}

#[tokio::test(start_paused = true)]
async fn our_remote_namespace_being_deleted_is_waited_for() {
    let mut world = connected(vec![ours_terminating()], true);
    let (state, ()) = world.ensure(SELECTED, true, async |_| {}).await;
    let problem = failed(&state);
    assert_eq!(problem.reason, Reason::Terminating);
    assert!(problem.message.contains("being deleted"), "{problem}");
}

#[tokio::test(start_paused = true)]
async fn a_foreign_remote_namespace_is_never_written() {
    for found in foreign() {
        // The watch holds only ours: the create finds the name taken, and reads it.
        let mut world = connected(vec![], true);
        let (state, ()) = world
            .ensure(SELECTED, true, async |remote| {
                remote
                    .expect(Method::POST, NAMESPACES)
                    .await
                    .fail(409, "AlreadyExists");
                remote
                    .expect(Method::GET, NAMESPACE)
                    .await
                    .ok(&json_of(&found));
            })
            .await;
        assert_eq!(
            state,
            ClusterState::failed(Reason::AlreadyExists, conflict_message(&found))
        );
        // Before the watch lists, it is read first, and not even a create is tried.
        let mut world = connected(vec![], false);
        let (state, ()) = world
            .ensure(SELECTED, true, async |remote| {
                remote
                    .expect(Method::GET, NAMESPACE)
                    .await
                    .ok(&json_of(&found));
            })
            .await;
        assert_eq!(
            state,
            ClusterState::failed(Reason::AlreadyExists, conflict_message(&found))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_name_found_taken_by_ours_or_gone_meanwhile_is_not_a_conflict() {
    for (found, wanted) in [
        (Some(ours()), ClusterState::Ready),
        (None, ClusterState::Pending),
    ] {
        let mut world = connected(vec![], true);
        let (state, ()) = world
            .ensure(SELECTED, true, async |remote| {
                remote
                    .expect(Method::POST, NAMESPACES)
                    .await
                    .fail(409, "AlreadyExists");
                let read = remote.expect(Method::GET, NAMESPACE).await;
                match &found {
                    Some(ns) => read.ok(&json_of(ns)),
                    None => read.fail(404, "NotFound"),
                }
            })
            .await;
        assert_eq!(state, wanted);
    }
    let mut world = connected(vec![], true);
    let (state, ()) = world
        .ensure(SELECTED, true, async |remote| {
            remote
                .expect(Method::POST, NAMESPACES)
                .await
                .fail(409, "AlreadyExists");
            remote
                .expect(Method::GET, NAMESPACE)
                .await
                .ok(&json_of(&ours_terminating()));
        })
        .await;
    assert_eq!(failed(&state).reason, Reason::Terminating);
}

#[tokio::test(start_paused = true)]
async fn a_create_that_fails_is_reported_with_its_reason() {
    for (code, reason, says) in [
        (
            403,
            Reason::Forbidden,
            "the credentials of this peering may not create namespaces there: ",
        ),
        (
            422,
            Reason::Invalid,
            "the remote API server refused to create namespaces: ",
        ),
        (
            409,
            Reason::Conflict,
            "the remote API server failed to create namespaces: ",
        ),
        (
            500,
            Reason::ServerError,
            "the remote API server failed to create namespaces: ",
        ),
    ] {
        let mut world = connected(vec![], true);
        let (state, ()) = world
            .ensure(SELECTED, true, async |remote| {
                remote
                    .expect(Method::POST, NAMESPACES)
                    .await
                    .fail(code, reason_of(code));
            })
            .await;
        let problem = failed(&state);
        assert_eq!(problem.reason, reason, "{code}");
        assert!(problem.message.starts_with(says), "{code}: {problem}");
        assert!(
            problem.message.contains(reason_of(code)),
            "{code}: {problem}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_create_without_answer_is_unreachable_after_the_remote_timeout() {
    let mut world = connected(vec![], true);
    let (state, _unanswered) = world
        .ensure(SELECTED, true, async |remote| {
            remote.expect(Method::POST, NAMESPACES).await.unanswered()
        })
        .await;
    gave_up_in_time(world.took);
    assert_eq!(
        state,
        ClusterState::failed(
            Reason::Unreachable,
            "the remote API server did not answer within 5s"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_read_that_fails_is_reported_only_for_a_selected_cluster() {
    for (selected, wanted) in [
        (SELECTED, Some(Reason::ServerError)),
        ((false, false), None),
    ] {
        let mut world = connected(vec![], false);
        let (state, ()) = world
            .ensure(selected, true, async |remote| {
                remote
                    .expect(Method::GET, NAMESPACE)
                    .await
                    .fail(500, "InternalError");
            })
            .await;
        match wanted {
            Some(reason) => assert_eq!(failed(&state).reason, reason),
            None => assert_eq!(state, ClusterState::NotSelected),
        }
    }
    let mut world = connected(vec![], false);
    let (state, _unanswered) = world
        .ensure(SELECTED, true, async |remote| {
            remote.expect(Method::GET, NAMESPACE).await.unanswered()
        })
        .await;
    gave_up_in_time(world.took);
    assert_eq!(failed(&state).reason, Reason::Unreachable);
}

// ensure: a cluster no longer selected.

#[tokio::test(start_paused = true)]
async fn a_cluster_no_longer_selected_loses_exactly_our_namespace() {
    // 404: it went meanwhile, which is as good.
    for code in [200, 404] {
        let mut world = connected(vec![ours()], true);
        let (state, ()) = world
            .ensure(DESELECTED, true, async |remote| {
                let call = remote.expect(Method::DELETE, NAMESPACE).await;
                assert_eq!(
                    call.body,
                    json!({"propagationPolicy": "Background", "preconditions": {"uid": "ns-1"}})
                );
                if code == 200 {
                    call.ok(&json_of(&ours_terminating()));
                } else {
                    call.fail(404, "NotFound");
                }
            })
            .await;
        assert_eq!(state, ClusterState::NotSelected, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_cluster_no_longer_selected_whose_delete_fails_says_so() {
    for (code, reason) in [
        (409, Reason::Conflict),
        (403, Reason::Forbidden),
        (500, Reason::ServerError),
    ] {
        let mut world = connected(vec![ours()], true);
        let (state, ()) = world
            .ensure(DESELECTED, true, async |remote| {
                remote
                    .expect(Method::DELETE, NAMESPACE)
                    .await
                    .fail(code, reason_of(code));
            })
            .await;
        let problem = failed(&state);
        assert_eq!(problem.reason, reason, "{code}");
        assert!(
            problem.message.starts_with(
                "this cluster is no longer selected, but deleting namespace shop-c1 failed: "
            ),
            "{problem}"
        );
    }
    let mut world = connected(vec![ours()], true);
    let (state, _unanswered) = world
        .ensure(DESELECTED, true, async |remote| {
            remote.expect(Method::DELETE, NAMESPACE).await.unanswered()
        })
        .await;
    gave_up_in_time(world.took);
    assert_eq!(failed(&state).reason, Reason::Unreachable);
}

#[tokio::test(start_paused = true)]
async fn a_foreign_remote_namespace_is_never_deleted() {
    for found in foreign() {
        // Ours is not in the watch: the API server is asked before concluding.
        let mut world = connected(vec![], true);
        let (state, ()) = world
            .ensure(DESELECTED, true, async |remote| {
                remote
                    .expect(Method::GET, NAMESPACE)
                    .await
                    .ok(&json_of(&found));
            })
            .await;
        assert_eq!(state, ClusterState::NotSelected);
    }
}

#[tokio::test(start_paused = true)]
async fn with_an_invalid_selector_nothing_is_deleted() {
    let mut world = connected(vec![ours()], true);
    let (state, ()) = world.ensure(DESELECTED, false, async |_| {}).await;
    assert_eq!(state, ClusterState::NotSelected);
}

#[tokio::test(start_paused = true)]
async fn a_cluster_never_ready_and_not_selected_is_not_looked_up() {
    let mut world = connected(vec![], true);
    let (state, ()) = world.ensure((false, false), true, async |_| {}).await;
    assert_eq!(state, ClusterState::NotSelected);
}

// ensure: clusters not connected.

fn remote_cluster(cluster_id: &str) -> RemoteCluster {
    serde_json::from_value(json!({
        "apiVersion": "offloading.liqo.io/v1alpha1", "kind": "RemoteCluster",
        "metadata": {"name": format!("rc-{cluster_id}")},
        "spec": {"kubeconfigSecret": {"namespace": "liqo", "name": "kc"}, "clusterID": cluster_id},
    }))
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_cluster_without_a_connection_is_pending_or_lacks_credentials() {
    let (client, mut local) = api_server("local");
    let stores = Stores {
        remote_clusters: store([remote_cluster("c2")]),
        ..testing::stores()
    };
    let ctx = Context::for_tests(testing::shared(client, stores, testing::peers([])));
    let ((pending, none, not_selected), ()) = exchange(
        async {
            (
                ensure(&ctx, "c2", SELECTED, true, NAME, ORIGIN).await,
                ensure(&ctx, "c3", SELECTED, true, NAME, ORIGIN).await,
                ensure(&ctx, "c3", (false, true), true, NAME, ORIGIN).await,
            )
        },
        local.nothing_more(),
    )
    .await;
    assert_eq!(pending, ClusterState::Pending);
    assert_eq!(failed(&none).reason, Reason::NoCredentials);
    assert_eq!(not_selected, ClusterState::NotSelected);
}

fn unreachable_world() -> World {
    world_with(testing::stores(), |peer| {
        peer.namespaces = watched([ours()], true);
        peer.unreachable = Some(Problem::new(Reason::Unreachable, "connection refused"));
    })
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_cluster_is_not_contacted() {
    let mut world = unreachable_world();
    let (state, ()) = world.ensure(SELECTED, true, async |_| {}).await;
    assert_eq!(
        state,
        ClusterState::failed(
            Reason::Unreachable,
            "connection refused (RemoteCluster rc-c2); retried when its peering reconnects"
        )
    );
    let (state, ()) = world.ensure(DESELECTED, true, async |_| {}).await;
    assert_eq!(state, ClusterState::NotSelected);
    let (state, ()) = world.remove(async |_| {}).await;
    assert_eq!(failed(&state.unwrap()).reason, Reason::Unreachable);
}

// remove, at termination.

fn deleting() -> ClusterState {
    ClusterState::failed(
        Reason::Terminating,
        "namespace shop-c1 is being deleted in this cluster, with everything in it",
    )
}

#[tokio::test(start_paused = true)]
async fn at_termination_our_namespace_is_deleted_with_its_uid_as_precondition() {
    let mut world = connected(vec![ours()], true);
    let (state, ()) = world
        .remove(async |remote| {
            let call = remote.expect(Method::DELETE, NAMESPACE).await;
            assert_eq!(
                call.body,
                json!({"propagationPolicy": "Background", "preconditions": {"uid": "ns-1"}})
            );
            call.ok(&json_of(&ours_terminating()));
        })
        .await;
    assert_eq!(state, Some(deleting()));
}

#[tokio::test(start_paused = true)]
async fn at_termination_a_delete_that_finds_it_gone_is_not_an_error() {
    let mut world = connected(vec![ours()], true);
    let (state, ()) = world
        .remove(async |remote| {
            remote
                .expect(Method::DELETE, NAMESPACE)
                .await
                .fail(404, "NotFound");
        })
        .await;
    // Reported as being deleted; the next look (below) finds nothing and is done.
    assert_eq!(state, Some(deleting()));
    let mut next = connected(vec![], true);
    let (state, ()) = next
        .remove(async |remote| {
            remote
                .expect(Method::GET, NAMESPACE)
                .await
                .fail(404, "NotFound");
        })
        .await;
    assert_eq!(state, None);
}

#[tokio::test(start_paused = true)]
async fn at_termination_the_watchs_word_alone_is_not_enough() {
    // Not in the watch (its label edited?): asked, found ours, deleted.
    let mut world = connected(vec![], true);
    let (state, ()) = world
        .remove(async |remote| {
            remote
                .expect(Method::GET, NAMESPACE)
                .await
                .ok(&json_of(&ours()));
            let call = remote.expect(Method::DELETE, NAMESPACE).await;
            assert_eq!(call.body["preconditions"], json!({"uid": "ns-1"}));
            call.ok(&json_of(&ours_terminating()));
        })
        .await;
    assert_eq!(state, Some(deleting()));
}

#[tokio::test(start_paused = true)]
async fn at_termination_a_foreign_namespace_is_never_deleted() {
    for found in foreign() {
        let mut world = connected(vec![], true);
        let (state, ()) = world
            .remove(async |remote| {
                remote
                    .expect(Method::GET, NAMESPACE)
                    .await
                    .ok(&json_of(&found));
            })
            .await;
        assert_eq!(state, None);
    }
}

#[tokio::test(start_paused = true)]
async fn at_termination_ours_already_going_is_waited_for() {
    let mut world = connected(vec![ours_terminating()], true);
    let (state, ()) = world.remove(async |_| {}).await;
    assert_eq!(state, Some(deleting()));
}

#[tokio::test(start_paused = true)]
async fn at_termination_a_delete_that_fails_says_why() {
    for (code, reason) in [
        // The uid precondition failed: another namespace of that name meanwhile.
        (409, Reason::Conflict),
        (403, Reason::Forbidden),
        (500, Reason::ServerError),
    ] {
        let mut world = connected(vec![ours()], true);
        let (state, ()) = world
            .remove(async |remote| {
                remote
                    .expect(Method::DELETE, NAMESPACE)
                    .await
                    .fail(code, reason_of(code));
            })
            .await;
        let state = state.unwrap();
        let problem = failed(&state);
        assert_eq!(problem.reason, reason, "{code}");
        assert!(
            problem
                .message
                .starts_with("cannot delete namespace shop-c1: "),
            "{problem}"
        );
    }
    let mut world = connected(vec![ours()], true);
    let (state, _unanswered) = world
        .remove(async |remote| remote.expect(Method::DELETE, NAMESPACE).await.unanswered())
        .await;
    gave_up_in_time(world.took);
    assert_eq!(failed(&state.unwrap()).reason, Reason::Unreachable);
}

#[tokio::test(start_paused = true)]
async fn at_termination_a_read_that_fails_says_why() {
    let mut world = connected(vec![], false);
    let (state, ()) = world
        .remove(async |remote| {
            remote
                .expect(Method::GET, NAMESPACE)
                .await
                .fail(403, "Forbidden");
        })
        .await;
    assert_eq!(failed(&state.unwrap()).reason, Reason::Forbidden);
}

#[tokio::test(start_paused = true)]
async fn at_termination_an_unconnected_cluster_is_waited_for() {
    let (client, mut local) = api_server("local");
    let ctx = Context::for_tests(testing::shared(
        client,
        testing::stores(),
        testing::peers([]),
    ));
    let (state, ()) = exchange(remove(&ctx, "c2", NAME, ORIGIN), local.nothing_more()).await;
    assert_eq!(failed(&state.unwrap()).reason, Reason::NotConnected);
}

#[test]
fn the_foreign_namespaces_are_conflicts_each_with_its_own_message() {
    let messages: BTreeSet<String> = foreign().iter().map(conflict_message).collect();
    assert_eq!(messages.len(), 3);
}
