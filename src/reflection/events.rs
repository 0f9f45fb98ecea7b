//! Events about twins, reflected onto the local pods they stand for, so `kubectl describe
//! pod` in this cluster explains why an offloaded pod is stuck (a failed scheduling there,
//! an image pull, an OOM kill). Each peer's watch of pod events passes on what changes
//! after its first listing; older events are not replayed at start-up.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::{
    Resource,
    runtime::{
        events::{Event, EventType, Recorder},
        reflector::{ObjectRef, Store},
    },
};

use crate::context::peers::RemoteEvent;

/// The local pod's reference and the event to record on it, if the remote event is about
/// the twin of a local pod running in that cluster (same name, bound to its virtual node).
pub(crate) fn reflected(
    remote: &RemoteEvent,
    local_pods: &Store<Pod>,
    virtual_node: &str,
) -> Option<(ObjectReference, Event)> {
    let about = &remote.event.involved_object;
    if about.kind.as_deref() != Some("Pod") {
        return None;
    }
    let name = about.name.as_deref()?;
    let pod = local_pods.get(&ObjectRef::new(name).within(&remote.origin_namespace))?;
    let bound = pod.spec.as_ref()?.node_name.as_deref()?;
    if bound != virtual_node {
        return None;
    }
    let reason = remote
        .event
        .reason
        .clone()
        .unwrap_or_else(|| "Remote".into());
    let message = remote.event.message.clone().unwrap_or_default();
    let event = Event {
        type_: if remote.event.type_.as_deref() == Some("Warning") {
            EventType::Warning
        } else {
            EventType::Normal
        },
        // The API's limits: 128 characters for the reason, 1 kB for the note.
        reason: reason.chars().take(128).collect(),
        note: Some(
            format!("{message} (in cluster {})", remote.cluster_id)
                .chars()
                .take(1000)
                .collect(),
        ),
        action: "Reflected".into(),
        secondary: None,
    };
    Some((pod.object_ref(&()), event))
}

/// Records each reflected event on its local pod, until the stream ends.
pub(crate) async fn run(
    mut events: futures::channel::mpsc::UnboundedReceiver<RemoteEvent>,
    local_pods: Store<Pod>,
    recorder: Recorder,
) {
    use futures::StreamExt;
    while let Some(remote) = events.next().await {
        let node = crate::model::api::remote_cluster::virtual_node_name(&remote.cluster_id);
        if let Some((pod, event)) = reflected(&remote, &local_pods, &node)
            && let Err(e) = recorder.publish(&event, &pod).await
        {
            tracing::debug!(error = %e, "cannot record a twin's event on its pod");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::Method;
    use kube::runtime::reflector;
    use serde_json::json;

    use super::*;
    use crate::context::testing::{self, ApiServer, api_server, exchange, expect_event, store};

    fn remote(kind: &str, name: &str) -> RemoteEvent {
        RemoteEvent {
            cluster_id: "c2".into(),
            origin_namespace: "shop".into(),
            event: serde_json::from_value(json!({
                "metadata": {"name": "web.1", "namespace": "shop-c1"},
                "involvedObject": {"kind": kind, "name": name, "namespace": "shop-c1", "uid": "twin"},
                "reason": "FailedScheduling", "type": "Warning",
                "message": "0/3 nodes are available: 3 Insufficient memory.",
            }))
            .unwrap(),
        }
    }

    #[test]
    fn a_twins_event_lands_on_the_local_pod_naming_the_cluster() {
        let (store, mut writer) = reflector::store::<Pod>();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "local"},
            "spec": {"nodeName": "liqo-c2", "containers": []},
        }))
        .unwrap();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(pod));
        let (at, event) = reflected(&remote("Pod", "web"), &store, "liqo-c2").unwrap();
        assert_eq!(at.uid.as_deref(), Some("local"));
        assert_eq!(at.namespace.as_deref(), Some("shop"));
        assert_eq!(event.reason, "FailedScheduling");
        assert!(matches!(event.type_, EventType::Warning));
        assert_eq!(
            event.note.as_deref(),
            Some("0/3 nodes are available: 3 Insufficient memory. (in cluster c2)")
        );
        // Not a pod, no such local pod, or a pod that runs elsewhere: nothing.
        assert!(reflected(&remote("Service", "web"), &store, "liqo-c2").is_none());
        assert!(reflected(&remote("Pod", "api"), &store, "liqo-c2").is_none());
        assert!(reflected(&remote("Pod", "web"), &store, "liqo-c3").is_none());
    }

    // `run`, recording through a mocked local API server.

    /// A remote event of `cluster_id` about pod `name` of `shop`'s remote namespace.
    fn about_pod(cluster_id: &str, name: &str, type_: &str, reason: &str) -> RemoteEvent {
        let mut event = remote("Pod", name);
        event.cluster_id = cluster_id.into();
        event.event.type_ = Some(type_.into());
        event.event.reason = Some(reason.into());
        event
    }

    /// Local pods of `shop`: `web` (uid `local`) on `c2`'s virtual node, `api` on a local
    /// node.
    fn local_pods() -> Store<Pod> {
        let pod = |name: &str, uid: &str, node: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "shop", "uid": uid},
                "spec": {"nodeName": node, "containers": []},
            }))
            .unwrap()
        };
        store([
            pod("web", "local", "liqo-c2"),
            pod("api", "api-1", "worker-1"),
        ])
    }

    /// `run` over `events` (then the stream ends), the local API server playing `script`;
    /// then it hears nothing more.
    async fn run_over(events: Vec<RemoteEvent>, script: impl AsyncFnOnce(&mut ApiServer)) {
        let (client, mut local) = api_server("local");
        let recorder = testing::shared(client, testing::stores(), testing::peers([])).recorder;
        let (tx, rx) = futures::channel::mpsc::unbounded();
        for event in events {
            tx.unbounded_send(event).unwrap();
        }
        drop(tx);
        let ((), ()) = exchange(run(rx, local_pods(), recorder), async {
            script(&mut local).await;
            local.nothing_more().await;
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn run_records_a_twins_events_on_its_local_pod() {
        run_over(
            vec![
                about_pod("c2", "web", "Warning", "FailedScheduling"),
                about_pod("c2", "web", "Normal", "Pulled"),
            ],
            async |local| {
                let event = expect_event(local, "shop", "Pod", "web").await;
                assert_eq!(event["regarding"]["uid"], "local", "{event}");
                assert_eq!(event["type"], "Warning", "{event}");
                assert_eq!(event["reason"], "FailedScheduling", "{event}");
                assert_eq!(event["action"], "Reflected", "{event}");
                assert_eq!(
                    event["note"],
                    "0/3 nodes are available: 3 Insufficient memory. (in cluster c2)",
                    "{event}"
                );
                let event = expect_event(local, "shop", "Pod", "web").await;
                assert_eq!(event["type"], "Normal", "{event}");
                assert_eq!(event["reason"], "Pulled", "{event}");
            },
        )
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn run_passes_over_events_not_about_a_twin_running_there() {
        let mut service = remote("Service", "web");
        service.event.reason = Some("Service".into());
        run_over(
            vec![
                service,
                // Not bound to c2's virtual node, no such local pod, or from another
                // cluster than the one web runs in.
                about_pod("c2", "api", "Warning", "Api"),
                about_pod("c2", "gone", "Warning", "Gone"),
                about_pod("c3", "web", "Warning", "FromC3"),
                // The loop went on past them all.
                about_pod("c2", "web", "Warning", "BackOff"),
            ],
            async |local| {
                let event = expect_event(local, "shop", "Pod", "web").await;
                assert_eq!(event["reason"], "BackOff", "{event}");
            },
        )
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_publish_does_not_stop_the_reflection() {
        run_over(
            vec![
                about_pod("c2", "web", "Warning", "Failed"),
                about_pod("c2", "web", "Warning", "BackOff"),
            ],
            async |local| {
                let call = local
                    .expect(
                        Method::POST,
                        "/apis/events.k8s.io/v1/namespaces/shop/events",
                    )
                    .await;
                assert_eq!(call.body["reason"], "Failed");
                call.fail(500, "InternalError");
                let event = expect_event(local, "shop", "Pod", "web").await;
                assert_eq!(event["reason"], "BackOff", "{event}");
            },
        )
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn run_keeps_to_the_apis_limits() {
        let mut long = about_pod("c2", "web", "Warning", &"R".repeat(200));
        long.event.message = Some("m".repeat(2000));
        run_over(vec![long], async |local| {
            let event = expect_event(local, "shop", "Pod", "web").await;
            assert_eq!(event["reason"], "R".repeat(128), "{event}");
            let note = event["note"].as_str().unwrap();
            assert_eq!(note.chars().count(), 1000, "{event}");
            assert!(note.chars().all(|c| c == 'm'), "{event}");
        })
        .await;
    }
}
