//! How a peering reports, against a mocked local API server: the `Connected` condition,
//! the status applied only when it changed, and the event when the connection changes.

use http::Method;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::*;
use crate::{
    context::testing::{self, ApiServer, api_server, exchange, reason_of},
    controllers::testing::expect_cluster_event,
    model::{
        api::{RemoteClusterSpec, remote_cluster::SecretKeyRef},
        reason::Reason,
    },
};

const STATUS_PATH: &str = "/apis/offloading.liqo.io/v1alpha1/remoteclusters/rc-c2/status";
const EARLIER: &str = "2020-01-01T00:00:00Z";

fn context() -> (Context, ApiServer) {
    let (client, local) = api_server("local");
    let shared = testing::shared(client, testing::stores(), testing::peers([]));
    (
        Context {
            shared,
            kubelet: None,
        },
        local,
    )
}

fn remote_cluster(status: Option<RemoteClusterStatus>) -> RemoteCluster {
    let mut rc = RemoteCluster::new(
        "rc-c2",
        RemoteClusterSpec {
            kubeconfig_secret: SecretKeyRef {
                namespace: "liqo".into(),
                name: "c2-kubeconfig".into(),
                key: None,
            },
            cluster_id: None,
            cluster_labels: None,
            identity_namespace: None,
            resources: None,
            address_translation: vec![],
        },
    );
    rc.metadata.uid = Some("rc-uid".into());
    rc.status = status;
    rc
}

fn earlier() -> Time {
    Time(EARLIER.parse::<Timestamp>().unwrap())
}

fn unreachable() -> Problem {
    Problem::new(Reason::Unreachable, "the remote API server does not answer")
}

/// The status of a peering of `c2`, labelled `region`, connected or not since [`EARLIER`].
fn status_of(connected: &Result<(), Problem>, region: &str) -> RemoteClusterStatus {
    RemoteClusterStatus {
        cluster_id: Some("c2".into()),
        cluster_labels: [("region".to_owned(), region.to_owned())].into(),
        virtual_node: Some("liqo-c2".into()),
        conditions: vec![connected_condition(connected, &[], &earlier())],
    }
}

/// The status apply: path, parameters, content type; answered; returns the status.
async fn expect_apply(local: &mut ApiServer, rc: &RemoteCluster) -> Value {
    let call = local.expect(Method::PATCH, STATUS_PATH).await;
    assert_eq!(call.param("fieldManager"), Some(FIELD_MANAGER));
    assert_eq!(call.param("force"), Some("true"));
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(call.body["apiVersion"], "offloading.liqo.io/v1alpha1");
    assert_eq!(call.body["kind"], "RemoteCluster");
    let status = call.body["status"].clone();
    let mut answer = serde_json::to_value(rc).unwrap();
    answer["status"] = status.clone();
    call.ok(&answer);
    status
}

#[tokio::test(start_paused = true)]
async fn a_first_connection_is_announced_then_the_status_applied() {
    let (ctx, mut local) = context();
    let rc = remote_cluster(None);
    let status = status_of(&Ok(()), "eu");
    let (written, ()) = exchange(write(&ctx, &rc, status, true), async {
        let event = expect_cluster_event(&mut local, "RemoteCluster", "rc-c2").await;
        assert_eq!(event["type"], "Normal");
        assert_eq!(event["reason"], "Connected");
        assert_eq!(
            event["note"],
            "the remote API server answers with these credentials"
        );
        assert_eq!(event["action"], "Peering");
        assert_eq!(event["regarding"]["uid"], "rc-uid");
        let status = expect_apply(&mut local, &rc).await;
        assert_eq!(status["clusterID"], "c2");
        assert_eq!(status["clusterLabels"], json!({"region": "eu"}));
        assert_eq!(status["virtualNode"], "liqo-c2");
        let conditions = status["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 1, "{status}");
        assert_eq!(conditions[0]["type"], "Connected");
        assert_eq!(conditions[0]["status"], "True");
        assert_eq!(conditions[0]["reason"], "Connected");
        assert_eq!(conditions[0]["lastTransitionTime"], EARLIER);
        local.nothing_more().await;
    })
    .await;
    written.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_status_is_neither_written_nor_announced() {
    for connected in [Ok(()), Err(unreachable())] {
        let (ctx, mut local) = context();
        let status = status_of(&connected, "eu");
        let rc = remote_cluster(Some(status.clone()));
        let (written, ()) = exchange(
            write(&ctx, &rc, status, connected.is_ok()),
            local.nothing_more(),
        )
        .await;
        written.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_change_while_still_connected_is_written_without_an_event() {
    let (ctx, mut local) = context();
    let rc = remote_cluster(Some(status_of(&Ok(()), "eu")));
    let (written, ()) = exchange(write(&ctx, &rc, status_of(&Ok(()), "us"), true), async {
        let status = expect_apply(&mut local, &rc).await;
        assert_eq!(status["clusterLabels"], json!({"region": "us"}));
        assert_eq!(status["conditions"][0]["status"], "True");
        local.nothing_more().await;
    })
    .await;
    written.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lost_connection_is_announced_as_a_warning_with_the_cause() {
    let (ctx, mut local) = context();
    let rc = remote_cluster(Some(status_of(&Ok(()), "eu")));
    let status = status_of(&Err(unreachable()), "eu");
    let (written, ()) = exchange(write(&ctx, &rc, status, false), async {
        let event = expect_cluster_event(&mut local, "RemoteCluster", "rc-c2").await;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "Disconnected");
        assert_eq!(event["note"], "the remote API server does not answer");
        let status = expect_apply(&mut local, &rc).await;
        let connected = &status["conditions"][0];
        assert_eq!(connected["type"], "Connected");
        assert_eq!(connected["status"], "False");
        assert_eq!(connected["reason"], "Unreachable");
        assert_eq!(
            connected["message"],
            "the remote API server does not answer"
        );
        local.nothing_more().await;
    })
    .await;
    written.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_connection_regained_is_announced() {
    let (ctx, mut local) = context();
    let rc = remote_cluster(Some(status_of(&Err(unreachable()), "eu")));
    let (written, ()) = exchange(write(&ctx, &rc, status_of(&Ok(()), "eu"), true), async {
        let event = expect_cluster_event(&mut local, "RemoteCluster", "rc-c2").await;
        assert_eq!(event["type"], "Normal");
        assert_eq!(event["reason"], "Connected");
        let status = expect_apply(&mut local, &rc).await;
        assert_eq!(status["conditions"][0]["status"], "True");
        local.nothing_more().await;
    })
    .await;
    written.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_refused_status_write_is_returned() {
    for code in [404, 409, 403, 500] {
        let (ctx, mut local) = context();
        let rc = remote_cluster(Some(status_of(&Ok(()), "eu")));
        let (written, ()) = exchange(write(&ctx, &rc, status_of(&Ok(()), "us"), true), async {
            local
                .expect(Method::PATCH, STATUS_PATH)
                .await
                .fail(code, reason_of(code));
            local.nothing_more().await;
        })
        .await;
        let error = written.unwrap_err();
        assert!(
            matches!(&error, kube::Error::Api(s) if s.code == code),
            "{code}: {error:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_event_does_not_stop_the_status_write() {
    let (ctx, mut local) = context();
    let rc = remote_cluster(None);
    let (written, ()) = exchange(write(&ctx, &rc, status_of(&Ok(()), "eu"), true), async {
        local
            .expect(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events",
            )
            .await
            .fail(403, "Forbidden");
        expect_apply(&mut local, &rc).await;
        local.nothing_more().await;
    })
    .await;
    written.unwrap();
}

#[test]
fn the_connected_condition_says_why_and_keeps_its_time_while_its_status_holds() {
    let now = Time(Timestamp::now());
    let up = connected_condition(&Ok(()), &[], &earlier());
    assert_eq!(
        (
            up.type_.as_str(),
            up.status.as_str(),
            up.reason.as_str(),
            up.message.as_str()
        ),
        (
            "Connected",
            "True",
            "Connected",
            "the remote API server answers with these credentials"
        )
    );
    assert_eq!(up.observed_generation, None);
    let still = connected_condition(&Ok(()), std::slice::from_ref(&up), &now);
    assert_eq!(still.last_transition_time, earlier());
    let down = connected_condition(
        &Err(Problem::new(Reason::Forbidden, "not allowed")),
        std::slice::from_ref(&up),
        &now,
    );
    assert_eq!(
        (
            down.status.as_str(),
            down.reason.as_str(),
            down.message.as_str()
        ),
        ("False", "Forbidden", "not allowed")
    );
    assert_eq!(down.last_transition_time, now);
}

// The watches' condition.

#[test]
fn the_watches_condition_names_what_fails_and_what_still_lists() {
    use crate::context::peers::WatchState;
    let state = |kind, listed, failure: Option<&str>| WatchState {
        kind,
        listed,
        failure: failure.map(str::to_owned),
    };
    let now = Time(Timestamp::from_second(1_800_000_000).unwrap());
    let all = [state("pods", true, None), state("services", true, None)];
    let c = watches_condition(&all, &[], &now);
    assert_eq!(
        (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
        (WATCHES_LISTED, "True", "Listed")
    );
    assert_eq!(c.message, "all 2 watches of this cluster have listed");

    let failing = [
        state("pods", false, Some("connection refused")),
        state("services", false, None),
    ];
    let c = watches_condition(&failing, &[], &now);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "WatchFailing")
    );
    assert!(
        c.message.contains("pods (connection refused)"),
        "{}",
        c.message
    );
    assert!(!c.message.contains("services"), "{}", c.message);

    let listing = [state("pods", true, None), state("services", false, None)];
    let c = watches_condition(&listing, &[], &now);
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Listing"));
    assert_eq!(c.message, "watches not listed yet: services");

    // The transition time holds while the status does.
    let earlier = watches_condition(
        &all,
        &[],
        &Time(Timestamp::from_second(1_700_000_000).unwrap()),
    );
    let again = watches_condition(&all, std::slice::from_ref(&earlier), &now);
    assert_eq!(again.last_transition_time, earlier.last_transition_time);
}
