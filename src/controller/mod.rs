//! The controllers embedded in the manager: peering (RemoteCluster → virtual node and a
//! connected client), offloading (NamespaceOffloading → remote namespaces and status), and
//! quick offloading (the `liqo.io/enabled` label). Pure building blocks live in their own
//! modules: `remote_namespace`, `virtual_node`, `quantity`, and `crate::status`.

pub mod metrics;
pub mod offloading;
pub mod peering;
pub mod peers;
pub mod placement;
pub mod quantity;
pub mod quick;
pub mod remote_namespace;
pub mod virtual_node;

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, reflector},
        watcher,
    },
};

use crate::api::{NamespaceOffloading, OFFLOADING_NAME, RemoteCluster, TYPE_LABEL, VIRTUAL_NODE};

/// Publishes an event about `object`. Events are for people: a failure is logged, never fatal.
pub async fn publish<K: kube::Resource<DynamicType = ()>>(
    recorder: &Recorder,
    object: &K,
    type_: kube::runtime::events::EventType,
    reason: &str,
    note: &str,
    action: &str,
) {
    let event = kube::runtime::events::Event {
        type_,
        // The API's limits: 128 characters for the reason, 1 kB for the note.
        reason: reason.chars().take(128).collect(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::debug!(error = %e, "cannot publish event");
    }
}

/// A delete precondition on the uid of the object just looked at: if it was deleted and
/// recreated by someone else in between, the API server refuses (409) instead.
pub fn only_this(meta: &kube::api::ObjectMeta) -> Option<kube::api::Preconditions> {
    meta.uid.clone().map(|uid| kube::api::Preconditions {
        uid: Some(uid),
        resource_version: None,
    })
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Runs the three controllers until `shutdown` resolves.
pub async fn run(
    client: Client,
    local_cluster_id: String,
    holder: String,
    metrics: Arc<metrics::ControllerMetrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let reporter = Reporter {
        controller: "namespace-offloading".into(),
        instance: Some(holder.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let (peers, woken) = peers::Peers::new(&local_cluster_id);

    // RemoteClusters, one watch for two readers: the peering controller (duplicate cluster
    // IDs) and the offloading controller (clusters peered even before, or while not,
    // connected, so termination right after a restart waits for them).
    let (remote_clusters, writer) = reflector::store();
    let remote_cluster_cache = reflector(
        writer,
        watcher(
            Api::<RemoteCluster>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .for_each(|_| async {});

    let peering = Controller::new(
        Api::<RemoteCluster>::all(client.clone()),
        watcher::Config::default(),
    )
    .reconcile_on(woken.remote_clusters)
    .graceful_shutdown_on(shutdown.clone())
    .run(
        peering::reconcile,
        peering::error_policy,
        Arc::new(peering::Context {
            client: client.clone(),
            peers: peers.clone(),
            remote_clusters: remote_clusters.clone(),
            recorder: recorder.clone(),
            holder,
            metrics: metrics.clone(),
        }),
    )
    .for_each(|_| async {});

    // Virtual nodes: read by the reconciler, and any change wakes every NamespaceOffloading.
    let virtual_nodes = watcher::Config::default().labels(&format!("{TYPE_LABEL}={VIRTUAL_NODE}"));
    let (nodes, writer) = reflector::store();
    let node_cache = reflector(
        writer,
        watcher(Api::<Node>::all(client.clone()), virtual_nodes.clone()).default_backoff(),
    )
    .for_each(|_| async {});

    // Every pod, one watch (without managed fields, which only cost memory here): the
    // placement controller reads it to find pods that break their namespace's strategy.
    // Every pod of a large cluster is the biggest list we make: where the API server can
    // stream it (1.34 and later), it comes object by object instead of as one response.
    let pod_watch = if crate::preflight::cluster_streams_initial_lists(&client).await {
        tracing::info!("pods are listed by streaming (WatchList)");
        watcher::Config::default().streaming_lists()
    } else {
        watcher::Config::default()
    };
    let (pods, writer) = reflector::store();
    let pod_events = reflector(
        writer,
        watcher(Api::<Pod>::all(client.clone()), pod_watch)
            .default_backoff()
            .inspect_err(|e| tracing::warn!(watch = "pods", error = %e, "watch error"))
            .modify(|pod| {
                pod.managed_fields_mut().clear();
                pod.annotations_mut()
                    .remove("kubectl.kubernetes.io/last-applied-configuration");
            }),
    )
    .touched_objects();
    let placement_context = Arc::new(placement::Context::new(
        client.clone(),
        recorder.clone(),
        pods.clone(),
        nodes.clone(),
        metrics.clone(),
    ));
    let placement = Controller::new(
        Api::<NamespaceOffloading>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={OFFLOADING_NAME}")),
    )
    .watches_stream(pod_events, |pod| placement::offloading_of(&pod))
    // A Deployment's pods arrive as a burst: one look at the namespace per burst.
    .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_millis(500)))
    .graceful_shutdown_on(shutdown.clone())
    .run(
        placement::reconcile,
        placement::error_policy,
        placement_context.clone(),
    )
    .for_each(|_| async {});

    let controller = Controller::new(
        Api::<NamespaceOffloading>::all(client.clone()),
        watcher::Config::default(),
    );
    let all = controller.store();
    let ready = (nodes.clone(), remote_clusters.clone());
    let offloading = controller
        .watches(Api::<Node>::all(client.clone()), virtual_nodes, move |_| {
            all.state()
                .iter()
                .map(|o| ObjectRef::from(&**o))
                .collect::<Vec<_>>()
        })
        .watches(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            |ns| Some(ObjectRef::new(OFFLOADING_NAME).within(&ns.name_any())),
        )
        .reconcile_on(woken.offloadings)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            offloading::reconcile,
            offloading::error_policy,
            Arc::new(offloading::Context {
                client: client.clone(),
                peers,
                recorder: recorder.clone(),
                local_cluster_id,
                nodes,
                remote_clusters,
                failures: std::sync::Mutex::new(HashMap::new()),
                metrics: metrics.clone(),
                placement: placement_context,
            }),
        )
        .for_each(|_| async {});
    // Decide nothing (least of all that a cluster is gone) before both caches are filled.
    let stop = shutdown.clone();
    let offloading = async move {
        let (nodes, remote_clusters) = ready;
        let filled = async {
            nodes.wait_until_ready().await.is_ok()
                && remote_clusters.wait_until_ready().await.is_ok()
        };
        tokio::select! {
            true = filled => offloading.await,
            _ = stop => {}
        }
    };

    let quick = Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<NamespaceOffloading>::all(client.clone()),
        watcher::Config::default(),
        |nso| nso.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
    )
    .graceful_shutdown_on(shutdown)
    .run(
        quick::reconcile,
        quick::error_policy,
        Arc::new(quick::Context {
            client,
            recorder,
            metrics,
            unbacked_since: std::sync::Mutex::default(),
        }),
    )
    .for_each(|_| async {});

    tokio::select! {
        _ = futures::future::join4(peering, offloading, quick, placement) => {}
        _ = node_cache => {}
        _ = remote_cluster_cache => {}
    }
}
