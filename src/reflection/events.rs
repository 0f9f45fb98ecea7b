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

    use kube::runtime::reflector;
    use serde_json::json;

    use super::*;

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
}
