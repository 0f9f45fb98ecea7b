//! The connected remote clusters, by cluster ID: a client for each and one watch per kind
//! through it, each filling a store the controllers read instead of calling the remote:
//! - the namespaces we created there (also: one deleted by someone else wakes the
//!   NamespaceOffloading it belongs to, and is recreated within seconds);
//! - the remote's identity ConfigMap (also: new cluster labels wake its RemoteCluster, so
//!   they reach the virtual node within seconds, not at the next heartbeat);
//! - its nodes (the virtual node's allocatable);
//! - our twins of local pods (each change wakes the local pod it stands for);
//! - its PriorityClasses and RuntimeClasses (what a twin may name there);
//! - our claims there (each change wakes the local claim it stands for).

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use futures::{Stream, StreamExt, channel::mpsc};
use k8s_openapi::api::{
    core::v1::{
        ConfigMap, Container, Event as CoreEvent, Namespace, Node, PersistentVolumeClaim, Pod,
        PodSpec, PodStatus, ResourceRequirements, Secret, Service, ServiceAccount,
    },
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, NetworkPolicy},
    node::v1::RuntimeClass,
    scheduling::v1::PriorityClass,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use crate::model::markers::{ORIGIN_CLUSTER_LABEL, ORIGIN_NAMESPACE_LABEL};
use crate::model::{api::is_virtual_node, markers::REMOTE_CLUSTER_ID_LABEL};
use crate::{
    model::{
        api::{NamespaceOffloading, OFFLOADING_NAME, RemoteCluster},
        forge::twin::{RemoteClasses, trim_twin, twin_selector},
        markers::{MANAGED_BY_LABEL, ORIGIN_NAMESPACE_ANNOTATION, SLICE_MANAGER},
        reason::Problem,
        remote_namespace::origin_of,
    },
    plumbing::watches::Listed,
};

/// A connected remote cluster.
#[derive(Clone)]
pub(crate) struct Peer {
    /// The RemoteCluster object it comes from.
    pub(crate) remote_cluster: String,
    /// Which Secret version the client was built from (rebuilt when it changes).
    pub(crate) credentials_version: String,
    /// Where its identity ConfigMap is watched (watched anew when the RemoteCluster's
    /// `identityNamespace` changes).
    pub(crate) identity_namespace: String,
    pub(crate) client: Client,
    /// Why the peering's last heartbeat failed, while it fails. Such a cluster is not
    /// contacted until it answers again, so it never holds up the others.
    pub(crate) unreachable: Option<Problem>,
    /// The namespaces we created there.
    pub(crate) namespaces: Watched<Namespace>,
    /// Its published identity.
    pub(crate) identity: Watched<ConfigMap>,
    /// Its nodes.
    pub(crate) nodes: Watched<Node>,
    /// Its pods: our twins of local pods in full, the others reduced to their requests.
    pub(crate) pods: Watched<Pod>,
    /// Our copies of offloaded namespaces' objects.
    pub(crate) configmaps: Watched<ConfigMap>,
    pub(crate) secrets: Watched<Secret>,
    pub(crate) service_accounts: Watched<ServiceAccount>,
    pub(crate) services: Watched<Service>,
    /// Only the slices we wrote: a remote endpoint controller copies our Service's labels
    /// onto its own slices.
    pub(crate) endpoint_slices: Watched<EndpointSlice>,
    pub(crate) ingresses: Watched<Ingress>,
    pub(crate) network_policies: Watched<NetworkPolicy>,
    /// The classes a twin may name there (a twin naming one it lacks is refused).
    pub(crate) priority_classes: Watched<PriorityClass>,
    pub(crate) runtime_classes: Watched<RuntimeClass>,
    /// Our claims (those of offloaded pods, provisioned there).
    pub(crate) claims: Watched<PersistentVolumeClaim>,
    _watches: Arc<AbortOnDrop>,
}

impl Peer {
    /// Where each of its watches stands (events have no store, and are left out), in the
    /// order of [`WATCH_KINDS`].
    pub(crate) fn watch_states(&self) -> Vec<WatchState> {
        let [
            ns,
            identity,
            nodes,
            pods,
            cms,
            secrets,
            accounts,
            services,
            slices,
            ingresses,
            policies,
            pcs,
            rcs,
            claims,
        ] = WATCH_KINDS;
        vec![
            self.namespaces.state(ns),
            self.identity.state(identity),
            self.nodes.state(nodes),
            self.pods.state(pods),
            self.configmaps.state(cms),
            self.secrets.state(secrets),
            self.service_accounts.state(accounts),
            self.services.state(services),
            self.endpoint_slices.state(slices),
            self.ingresses.state(ingresses),
            self.network_policies.state(policies),
            self.priority_classes.state(pcs),
            self.runtime_classes.state(rcs),
            self.claims.state(claims),
        ]
    }

    /// The PriorityClasses and RuntimeClasses there, as far as their watches have listed.
    pub(crate) fn classes(&self) -> RemoteClasses {
        fn names<K>(watched: &Watched<K>) -> Option<std::collections::BTreeSet<String>>
        where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            watched
                .listed
                .now()
                .then(|| watched.store.state().iter().map(|c| c.name_any()).collect())
        }
        RemoteClasses {
            priority: names(&self.priority_classes),
            runtime: names(&self.runtime_classes),
        }
    }
}

/// A remote watch's store, whether it has listed (since its last error), and why it last
/// failed while it has not listed again.
#[derive(Clone)]
pub(crate) struct Watched<K: kube::runtime::reflector::Lookup + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub(crate) store: Store<K>,
    pub(crate) listed: Listed,
    pub(crate) failure: Failure,
}

/// The longest a failed watch of a peer waits before it tries again.
const WATCH_RETRY_CAP: std::time::Duration = std::time::Duration::from_secs(5);

/// The kinds a peer watches, as metrics and conditions name them.
pub(crate) const WATCH_KINDS: [&str; 14] = [
    "namespaces",
    "identity",
    "nodes",
    "pods",
    "configmaps",
    "secrets",
    "serviceaccounts",
    "services",
    "endpointslices",
    "ingresses",
    "networkpolicies",
    "priorityclasses",
    "runtimeclasses",
    "persistentvolumeclaims",
];

/// Why a watch last failed, until it lists again (it retries on its own, with backoff).
pub(crate) type Failure = Arc<std::sync::Mutex<Option<String>>>;

/// Where one of a peer's watches stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WatchState {
    pub(crate) kind: &'static str,
    pub(crate) listed: bool,
    pub(crate) failure: Option<String>,
}

impl<K> Watched<K>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn state(&self, kind: &'static str) -> WatchState {
        WatchState {
            kind,
            listed: self.listed.now(),
            failure: self.failure.lock().ok().and_then(|f| f.clone()),
        }
    }
}

/// The peer's watch tasks, stopped when the last copy of the peer goes.
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What changed in remote clusters and asks for a reconcile here.
pub(crate) struct RemoteChanges {
    pub(crate) offloadings: mpsc::UnboundedReceiver<ObjectRef<NamespaceOffloading>>,
    pub(crate) peerings: mpsc::UnboundedReceiver<ObjectRef<RemoteCluster>>,
    /// Local pods whose twin changed.
    pub(crate) pods: mpsc::UnboundedReceiver<ObjectRef<Pod>>,
    /// Offloadings one of whose copied objects changed.
    pub(crate) objects: mpsc::UnboundedReceiver<ObjectRef<NamespaceOffloading>>,
    /// Events about pods in our remote namespaces (crate::reflection::events).
    pub(crate) events: mpsc::UnboundedReceiver<RemoteEvent>,
    /// Local claims whose remote claim changed (crate::reflection::claims).
    pub(crate) claims: mpsc::UnboundedReceiver<ObjectRef<PersistentVolumeClaim>>,
}

#[derive(Clone)]
pub(crate) struct Peers {
    peers: Arc<RwLock<BTreeMap<String, Peer>>>,
    local_cluster_id: String,
    offloading_changed: mpsc::UnboundedSender<ObjectRef<NamespaceOffloading>>,
    peering_changed: mpsc::UnboundedSender<ObjectRef<RemoteCluster>>,
    pod_changed: mpsc::UnboundedSender<ObjectRef<Pod>>,
    objects_changed: mpsc::UnboundedSender<ObjectRef<NamespaceOffloading>>,
    events: mpsc::UnboundedSender<RemoteEvent>,
    claim_changed: mpsc::UnboundedSender<ObjectRef<PersistentVolumeClaim>>,
}

impl Peers {
    /// The registry, and the streams of objects to reconcile because something changed in
    /// a remote cluster.
    pub(crate) fn new(local_cluster_id: &str) -> (Self, RemoteChanges) {
        let (offloading_changed, offloadings) = mpsc::unbounded();
        let (peering_changed, peerings) = mpsc::unbounded();
        let (pod_changed, pods) = mpsc::unbounded();
        let (objects_changed, objects) = mpsc::unbounded();
        let (events_tx, events) = mpsc::unbounded();
        let (claim_changed, claims) = mpsc::unbounded();
        let peers = Self {
            peers: Arc::default(),
            local_cluster_id: local_cluster_id.to_owned(),
            offloading_changed,
            peering_changed,
            pod_changed,
            objects_changed,
            events: events_tx,
            claim_changed,
        };
        let changes = RemoteChanges {
            offloadings,
            peerings,
            pods,
            objects,
            events,
            claims,
        };
        (peers, changes)
    }

    pub(crate) fn get(&self, cluster_id: &str) -> Option<Peer> {
        self.peers.read().ok()?.get(cluster_id).cloned()
    }

    pub(crate) fn cluster_ids(&self) -> Vec<String> {
        self.peers
            .read()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Registers (or replaces) a peer and starts its watches (the identity ConfigMap in
    /// `identity_namespace`). A RemoteCluster stands for one cluster: an entry it left
    /// under another cluster ID (the remote was reinstalled, or its `spec.clusterID`
    /// fixed) is dropped.
    pub(crate) fn insert(
        &self,
        cluster_id: &str,
        remote_cluster: &str,
        identity_namespace: &str,
        version: &str,
        client: Client,
    ) {
        let ours = watcher::Config::default()
            .labels(&format!("{ORIGIN_CLUSTER_LABEL}={}", self.local_cluster_id));
        let changed = self.offloading_changed.clone();
        let (namespaces, namespaces_task) = watch(
            cluster_id,
            Api::<Namespace>::all(client.clone()),
            ours,
            Wake::Always,
            |_| {},
            move |ns: &Namespace| {
                let origin = ns.metadata.labels.as_ref()?.get(ORIGIN_NAMESPACE_LABEL)?;
                let _ = changed.unbounded_send(ObjectRef::new(OFFLOADING_NAME).within(origin));
                Some(())
            },
        );
        let by_name = watcher::Config::default().fields(&format!(
            "metadata.name={}",
            crate::model::markers::IDENTITY_CONFIGMAP
        ));
        let changed = self.peering_changed.clone();
        let target = ObjectRef::<RemoteCluster>::new(remote_cluster);
        let (identity, identity_task) = watch(
            cluster_id,
            Api::<ConfigMap>::namespaced(client.clone(), identity_namespace),
            by_name,
            Wake::AfterFirstListing,
            |_| {},
            move |_: &ConfigMap| changed.unbounded_send(target.clone()).ok(),
        );
        // Its nodes change all the time (kubelet status): read at each heartbeat, and once
        // they are first listed (a new virtual node's allocatable).
        let changed = self.peering_changed.clone();
        let target = ObjectRef::<RemoteCluster>::new(remote_cluster);
        let (nodes, nodes_task) = watch(
            cluster_id,
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            Wake::FirstListing,
            crate::plumbing::watches::trim_node,
            move |_: &Node| changed.unbounded_send(target.clone()).ok(),
        );
        let changed = self.pod_changed.clone();
        // Every pod there: our twins as reflection reads them (`trim_twin`), the others
        // reduced to what they ask of their node (the virtual node offers what is left).
        let local_cluster_id = self.local_cluster_id.clone();
        let (pods, pods_task) = watch(
            cluster_id,
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            Wake::Always,
            move |pod: &mut Pod| {
                if is_twin_of(pod, &local_cluster_id) {
                    trim_twin(pod);
                } else {
                    reduce_to_requests(pod);
                }
            },
            move |twin: &Pod| {
                let origin = twin
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(ORIGIN_NAMESPACE_ANNOTATION)?;
                let name = twin.metadata.name.as_deref()?;
                changed
                    .unbounded_send(ObjectRef::new(name).within(origin))
                    .ok()
            },
        );
        let ours = twin_selector(&self.local_cluster_id);
        let (configmaps, configmaps_task) = self.watch_copies(cluster_id, &client, &ours);
        let (secrets, secrets_task) = self.watch_copies(cluster_id, &client, &ours);
        let (service_accounts, service_accounts_task) =
            self.watch_copies(cluster_id, &client, &ours);
        let (services, services_task) = self.watch_copies(cluster_id, &client, &ours);
        let events_task = self.watch_events(cluster_id, &client, namespaces.store.clone());
        let our_slices = format!("{ours},{MANAGED_BY_LABEL}={SLICE_MANAGER}");
        let (endpoint_slices, endpoint_slices_task) =
            self.watch_copies(cluster_id, &client, &our_slices);
        let (ingresses, ingresses_task) = self.watch_copies(cluster_id, &client, &ours);
        let (network_policies, network_policies_task) =
            self.watch_copies(cluster_id, &client, &ours);
        // Read when a twin is made; a pod waiting for a class looks again by itself.
        let (priority_classes, priority_classes_task) = watch(
            cluster_id,
            Api::<PriorityClass>::all(client.clone()),
            watcher::Config::default(),
            Wake::FirstListing,
            |_| {},
            |_: &PriorityClass| None,
        );
        let (runtime_classes, runtime_classes_task) = watch(
            cluster_id,
            Api::<RuntimeClass>::all(client.clone()),
            watcher::Config::default(),
            Wake::FirstListing,
            |_| {},
            |_: &RuntimeClass| None,
        );
        // Our claims there: each change wakes the local claim it stands for.
        let changed = self.claim_changed.clone();
        let (claims, claims_task) = watch(
            cluster_id,
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default().labels(&ours),
            Wake::Always,
            |_| {},
            move |claim: &PersistentVolumeClaim| {
                let origin = claim
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(ORIGIN_NAMESPACE_ANNOTATION)?;
                let name = claim.metadata.name.as_deref()?;
                changed
                    .unbounded_send(ObjectRef::new(name).within(origin))
                    .ok()
            },
        );
        let peer = Peer {
            remote_cluster: remote_cluster.to_owned(),
            credentials_version: version.to_owned(),
            identity_namespace: identity_namespace.to_owned(),
            client,
            unreachable: None,
            namespaces,
            identity,
            nodes,
            pods,
            configmaps,
            secrets,
            service_accounts,
            services,
            endpoint_slices,
            ingresses,
            network_policies,
            priority_classes,
            runtime_classes,
            claims,
            _watches: Arc::new(AbortOnDrop(vec![
                namespaces_task,
                identity_task,
                nodes_task,
                pods_task,
                configmaps_task,
                secrets_task,
                service_accounts_task,
                services_task,
                endpoint_slices_task,
                ingresses_task,
                network_policies_task,
                priority_classes_task,
                runtime_classes_task,
                events_task,
                claims_task,
            ])),
        };
        if let Ok(mut peers) = self.peers.write() {
            peers.retain(|id, p| id == cluster_id || p.remote_cluster != remote_cluster);
            peers.insert(cluster_id.to_owned(), peer);
        }
    }

    /// A watch of our copies of one kind there: a change wakes the offloading of the
    /// namespace the copy comes from.
    fn watch_copies<K>(
        &self,
        cluster_id: &str,
        client: &Client,
        ours: &str,
    ) -> (Watched<K>, JoinHandle<()>)
    where
        K: Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let changed = self.objects_changed.clone();
        watch(
            cluster_id,
            Api::<K>::all(client.clone()),
            watcher::Config::default().labels(ours),
            Wake::AfterFirstListing,
            |_| {},
            move |copy: &K| {
                let origin = copy
                    .meta()
                    .annotations
                    .as_ref()?
                    .get(ORIGIN_NAMESPACE_ANNOTATION)?;
                changed
                    .unbounded_send(ObjectRef::new(OFFLOADING_NAME).within(origin))
                    .ok()
            },
        )
    }

    /// Passes on each pod event in our namespaces there that happens after the first
    /// listing (no store: events are many and read once).
    fn watch_events(
        &self,
        cluster_id: &str,
        client: &Client,
        namespaces: Store<Namespace>,
    ) -> JoinHandle<()> {
        let sender = self.events.clone();
        let cluster_id = cluster_id.to_owned();
        let config = watcher::Config::default().fields("involvedObject.kind=Pod");
        let events = watcher(Api::<CoreEvent>::all(client.clone()), config).backoff(
            crate::plumbing::backoff::WatchBackoff::capped(WATCH_RETRY_CAP),
        );
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            let mut listed = false;
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => listed = true,
                    Ok(watcher::Event::Apply(event)) if listed => {
                        let origin = event
                            .metadata
                            .namespace
                            .as_deref()
                            .and_then(|ns| namespaces.get(&ObjectRef::new(ns)))
                            .and_then(|ns| origin_of(&ns));
                        if let Some(origin_namespace) = origin {
                            let _ = sender.unbounded_send(RemoteEvent {
                                cluster_id: cluster_id.clone(),
                                origin_namespace,
                                event,
                            });
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(%cluster_id, error = %e, "remote event watch error"),
                }
            }
        })
    }

    /// Records whether the peering's heartbeat reached the cluster (`None`) or why not.
    pub(crate) fn set_unreachable(
        &self,
        cluster_id: &str,
        remote_cluster: &str,
        why: Option<Problem>,
    ) {
        if let Ok(mut peers) = self.peers.write()
            && let Some(peer) = peers.get_mut(cluster_id)
            && peer.remote_cluster == remote_cluster
        {
            peer.unreachable = why;
        }
    }

    /// Forgets every peer that came from this RemoteCluster; returns their cluster IDs.
    pub(crate) fn remove_remote_cluster(&self, remote_cluster: &str) -> Vec<String> {
        let Ok(mut peers) = self.peers.write() else {
            return Vec::new();
        };
        let gone: Vec<String> = peers
            .iter()
            .filter(|(_, p)| p.remote_cluster == remote_cluster)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            peers.remove(id);
        }
        gone
    }

    /// The peer registered for a RemoteCluster, with its cluster ID.
    pub(crate) fn by_remote_cluster(&self, remote_cluster: &str) -> Option<(String, Peer)> {
        self.peers
            .read()
            .ok()?
            .iter()
            .find(|(_, p)| p.remote_cluster == remote_cluster)
            .map(|(id, p)| (id.clone(), p.clone()))
    }
}

#[cfg(test)]
impl Peer {
    /// A peer whose watches never run, all empty and not listed: a test fills the ones it
    /// needs (`context::testing`).
    pub(crate) fn unwatched(remote_cluster: &str, client: Client) -> Self {
        fn empty<K>() -> Watched<K>
        where
            K: kube::runtime::reflector::Lookup + Clone + 'static,
            K::DynamicType: Eq + std::hash::Hash + Clone + Default,
        {
            let (store, _writer) = reflector::store();
            let (_listed_tx, listed) = Listed::new();
            Watched {
                store,
                listed,
                failure: Failure::default(),
            }
        }
        Self {
            remote_cluster: remote_cluster.to_owned(),
            credentials_version: "1".into(),
            identity_namespace: "namespace-offloading".into(),
            client,
            unreachable: None,
            namespaces: empty(),
            identity: empty(),
            nodes: empty(),
            pods: empty(),
            configmaps: empty(),
            secrets: empty(),
            service_accounts: empty(),
            services: empty(),
            endpoint_slices: empty(),
            ingresses: empty(),
            network_policies: empty(),
            priority_classes: empty(),
            runtime_classes: empty(),
            claims: empty(),
            _watches: Arc::new(AbortOnDrop(Vec::new())),
        }
    }
}

#[cfg(test)]
impl Peers {
    /// Registers a ready-made peer as it is, without starting any watch.
    pub(crate) fn insert_unwatched(&self, cluster_id: &str, peer: Peer) {
        if let Ok(mut peers) = self.peers.write() {
            peers.insert(cluster_id.to_owned(), peer);
        }
    }
}

/// A remote event about a pod, with the cluster it happened in.
#[derive(Clone, Debug)]
pub(crate) struct RemoteEvent {
    pub(crate) cluster_id: String,
    /// The local namespace the remote one stands for.
    pub(crate) origin_namespace: String,
    pub(crate) event: CoreEvent,
}

/// The cluster a node stands for, if it is a virtual node.
pub(crate) fn cluster_of(nodes: &Store<Node>, node_name: &str) -> Option<String> {
    let node = nodes.get(&ObjectRef::new(node_name))?;
    let labels = node.labels();
    if !is_virtual_node(labels) {
        return None;
    }
    labels.get(REMOTE_CLUSTER_ID_LABEL).cloned()
}

/// Whether a remote pod carries our marker.
pub(crate) fn is_twin_of(pod: &Pod, local_cluster_id: &str) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ORIGIN_CLUSTER_LABEL))
        .is_some_and(|id| id == local_cluster_id)
}

/// A remote pod that is not ours, reduced to its node, phase and requests.
fn reduce_to_requests(pod: &mut Pod) {
    let keep_requests = |c: &Container| Container {
        name: c.name.clone(),
        resources: c.resources.as_ref().map(|r| ResourceRequirements {
            requests: r.requests.clone(),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };
    pod.metadata.annotations = None;
    pod.metadata.labels = None;
    pod.metadata.owner_references = None;
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        node_name: spec.node_name,
        containers: spec.containers.iter().map(keep_requests).collect(),
        init_containers: spec
            .init_containers
            .map(|cs| cs.iter().map(keep_requests).collect()),
        overhead: spec.overhead,
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        ..PodStatus::default()
    });
}

/// Which changes of a remote watch call for a reconcile here.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Everything, the first listing included.
    Always,
    /// What changes after the first listing (which the registering reconcile just read).
    AfterFirstListing,
    /// The first listing only (later changes are read at the next heartbeat).
    FirstListing,
}

/// One watch in a remote cluster: its store, and a task keeping it filled that calls
/// `changed` as `wake` says. `trim` drops what no reader needs.
fn watch<K, F, T>(
    cluster_id: &str,
    api: Api<K>,
    config: watcher::Config,
    wake: Wake,
    trim: T,
    changed: F,
) -> (Watched<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
    F: Fn(&K) -> Option<()> + Send + 'static,
    T: Fn(&mut K) + Send + 'static,
{
    let (store, writer) = reflector::store();
    let (listed_tx, listed) = Listed::new();
    let events = reflector::reflector(
        writer,
        watcher(api, config)
            .backoff(crate::plumbing::backoff::WatchBackoff::capped(
                WATCH_RETRY_CAP,
            ))
            .modify(move |o| {
                o.meta_mut().managed_fields = None;
                trim(o);
            }),
    );
    let id = cluster_id.to_owned();
    let failure = Failure::default();
    let task = tokio::spawn(drive(
        id,
        events,
        (listed_tx, failure.clone()),
        wake,
        changed,
    ));
    (
        Watched {
            store,
            listed,
            failure,
        },
        task,
    )
}

async fn drive<K, F>(
    cluster_id: String,
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    (listed_tx, failure): (tokio::sync::watch::Sender<bool>, Failure),
    wake: Wake,
    changed: F,
) where
    F: Fn(&K) -> Option<()>,
{
    let mut events = std::pin::pin!(events);
    let mut first = true;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitApply(o)) if first => {
                if wake != Wake::AfterFirstListing {
                    changed(&o);
                }
            }
            Ok(watcher::Event::InitDone) => {
                first = false;
                if let Ok(mut f) = failure.lock() {
                    *f = None;
                }
                let _ = listed_tx.send(true);
            }
            Ok(
                watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o),
            ) => {
                if wake != Wake::FirstListing {
                    changed(&o);
                }
            }
            Ok(watcher::Event::Init) => {}
            Err(e) => {
                // Until it lists again, readers ask the API server (and so see why it fails:
                // unreachable, or no longer allowed).
                let _ = listed_tx.send(false);
                if let Ok(mut f) = failure.lock() {
                    *f = Some(e.to_string());
                }
                tracing::debug!(%cluster_id, error = %e, "remote watch error");
            }
        }
    }
}
