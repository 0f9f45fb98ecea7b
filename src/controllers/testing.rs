//! For the controllers' unit tests: what several of them check the same way, beyond
//! `context::testing` (events about cluster-scoped objects, repeated events, when an
//! action requeues).

use std::time::Duration;

use http::Method;
use kube::runtime::controller::Action;
use serde_json::Value;

use crate::context::testing::{ApiServer, HOLDER, REPORTER};

/// The event the recorder publishes next through `server` about the cluster-scoped object
/// of `kind` named `name` (such events go to the `default` namespace); answered as
/// created. Returns its body.
pub(crate) async fn expect_cluster_event(server: &mut ApiServer, kind: &str, name: &str) -> Value {
    let call = server
        .expect(
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/default/events",
        )
        .await;
    let event = call.body.clone();
    assert_eq!(event["regarding"]["kind"], kind, "{event}");
    assert_eq!(event["regarding"]["name"], name, "{event}");
    assert_eq!(event["regarding"].get("namespace"), None, "{event}");
    assert_eq!(event["reportingController"], REPORTER, "{event}");
    assert_eq!(event["reportingInstance"], HOLDER, "{event}");
    call.created();
    event
}

/// An event the recorder already published once, published again in `namespace`: the
/// recorder then patches the earlier one's series. Answered; returns its body.
pub(crate) async fn expect_event_again(server: &mut ApiServer, namespace: &str) -> Value {
    let call = server.any().await;
    let events = format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events/");
    assert_eq!(call.method, Method::PATCH, "{} {}", call.method, call.path);
    assert!(call.path.starts_with(&events), "{}", call.path);
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let event = call.body.clone();
    assert!(event["series"]["count"].as_u64() >= Some(2), "{event}");
    call.ok(&event);
    event
}

/// When `action` reconciles again (`None`: only on a change). `Action` keeps it private;
/// its `Debug` says it.
pub(crate) fn requeue_after(action: &Action) -> Option<Duration> {
    let debug = format!("{action:?}");
    if debug == "Action { requeue_after: None }" {
        return None;
    }
    let seconds = debug
        .strip_prefix("Action { requeue_after: Some(")
        .and_then(|rest| rest.strip_suffix("s) }"))
        .unwrap_or_else(|| panic!("unexpected {debug}"));
    Some(Duration::from_secs_f64(seconds.parse().unwrap_or_else(
        |_| panic!("a requeue not in seconds: {debug}"),
    )))
}

mod tests {
    use super::*;

    #[test]
    fn the_requeue_is_read_from_the_action() {
        assert_eq!(requeue_after(&Action::await_change()), None);
        assert_eq!(
            requeue_after(&Action::requeue(Duration::from_secs(300))),
            Some(Duration::from_secs(300))
        );
        let almost = requeue_after(&Action::requeue(Duration::from_millis(29_999))).unwrap();
        assert!(
            almost.abs_diff(Duration::from_millis(29_999)) < Duration::from_micros(1),
            "{almost:?}"
        );
    }
}
