//! One watch per kind on the local cluster, shared by every reader (kube-runtime's
//! reflectors): the webhook caches and the controllers read the same stores, and each
//! controller is triggered by its own subscription to the same watch.
//!
//! Subscriptions are ours, not kube's shared-reflector dispatcher: each subscriber gets the
//! object itself on its own channel, once the store holds it. kube's hands out references
//! that the subscriber looks up in the store, and answers "pending" without a wake-up when
//! the object is already gone: under a mass deletion (thousands of pods of namespaces
//! leaving) a subscriber then took one object per wake-up, fell behind by the dispatcher's
//! whole buffer, and its back-pressure stalled the watch itself for minutes (found by
//! `scripts/bench`'s pods benchmark at 2,000 pods; docs/benchmarks.md).
//!
//! The webhooks need NamespaceOffloadings and Nodes on every replica, so those two watches
//! start with the process. The others (Namespaces, Pods, RemoteClusters, Secrets,
//! ConfigMaps, ServiceAccounts) serve only the controllers and start when this replica
//! leads.
//!
//! Pods and what is reflected into remote namespaces (Secrets, ConfigMaps, ServiceAccounts,
//! Services, EndpointSlices) are kept only for the namespaces in scope (`plumbing::scoped`):
//! the offloaded ones and those of peering credentials. A cluster's other namespaces may
//! hold any number of pods and big objects; the manager's memory does not grow with them.

use std::{collections::BTreeSet, fmt::Debug, future::Future, hash::Hash, sync::Arc};

use futures::{Stream, StreamExt, channel::mpsc, stream::BoxStream};
use k8s_openapi::api::{
    core::v1::{
        ConfigMap, Namespace, Node, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
    },
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, NetworkPolicy},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, Lookup, ObjectRef, Store, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::scoped::{self, Coverage, Namespaces};
use crate::model::{
    api::{NamespaceOffloading, OFFLOADING_NAME, RemoteCluster},
    forge::{
        objects::{DEFAULT_SERVICE_ACCOUNT, ROOT_CA_CONFIGMAP, TOKEN_SECRET_TYPE},
        services::SERVICE_NAME_LABEL,
    },
    markers::{MANAGED_BY_LABEL, SLICE_MANAGER},
};

/// Whether a watch has listed once (its store is complete). Any number of tasks may wait
/// on it at once, which kube's `Store::wait_until_ready` does not allow: it wakes only the
/// last of concurrent waiters.
#[derive(Clone)]
pub(crate) struct Listed(watch::Receiver<bool>);

impl Listed {
    pub(crate) fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    pub(crate) fn now(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once listed; `false` if the watch is gone before.
    pub(crate) async fn wait(&self) -> bool {
        self.0.clone().wait_for(|l| *l).await.is_ok()
    }
}

/// A kind's watch and the store it fills, with subscriptions handed out before it starts.
pub(crate) struct SharedWatch<K: Lookup + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    what: &'static str,
    store: Store<K>,
    writer: Writer<K>,
    events: BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>,
    deletions: Vec<mpsc::UnboundedSender<Arc<K>>>,
    /// Told of every object as it is created or changes (see the module's documentation).
    subscribers: std::sync::Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>,
    listed_tx: watch::Sender<bool>,
    listed: Listed,
    coverage: Coverage,
}

impl<K> SharedWatch<K>
where
    K: Resource<DynamicType = ()>
        + Lookup<DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// A watch of `api` with `config`; `trim` drops what no reader needs, to save memory.
    pub(crate) fn new(
        what: &'static str,
        api: Api<K>,
        config: watcher::Config,
        trim: fn(&mut K),
    ) -> Self {
        let (store, writer) = reflector::store();
        let events = watcher(api, config).default_backoff().boxed();
        Self::of(what, store, writer, events, trim, Coverage::everything())
    }

    fn of(
        what: &'static str,
        store: Store<K>,
        writer: Writer<K>,
        events: BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>,
        trim: fn(&mut K),
        coverage: Coverage,
    ) -> Self {
        let events = events
            .modify(move |o| {
                o.managed_fields_mut().clear();
                trim(o);
            })
            .boxed();
        let (listed_tx, listed) = Listed::new();
        Self {
            what,
            store,
            writer,
            events,
            deletions: Vec::new(),
            subscribers: std::sync::Mutex::default(),
            listed_tx,
            listed,
            coverage,
        }
    }

    /// Which namespaces the store holds completely (every one, for a watch not scoped).
    pub(crate) fn coverage(&self) -> Coverage {
        self.coverage.clone()
    }

    pub(crate) fn store(&self) -> Store<K> {
        self.store.clone()
    }

    pub(crate) fn listed(&self) -> Listed {
        self.listed.clone()
    }

    /// Every object as it is created or changes (and all of them after each listing), once
    /// the store holds it. The channel is unbounded: a slow subscriber never holds the
    /// watch back, and what it lags by is references to objects the store holds anyway.
    pub(crate) fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(tx);
        rx
    }

    /// Every object as it is deleted (subscriptions do not carry deletions).
    pub(crate) fn deletions(&mut self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded();
        self.deletions.push(tx);
        rx
    }

    /// Keeps the store filled and the subscribers fed, until the process ends.
    pub(crate) fn run(self) -> impl Future<Output = ()> + Send + 'static {
        let Self {
            what,
            store,
            writer,
            events,
            deletions,
            subscribers,
            listed_tx,
            coverage,
            ..
        } = self;
        let subscribers = subscribers
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tell = move |object: Arc<K>| {
            for tx in &subscribers {
                let _ = tx.unbounded_send(object.clone());
            }
        };
        async move {
            let mut events = std::pin::pin!(reflector::reflector(writer, events));
            while let Some(event) = events.next().await {
                match event {
                    // The store's own copy: applied before the event comes out.
                    Ok(watcher::Event::Apply(o)) => {
                        tell(
                            store
                                .get(&ObjectRef::from_obj(&o))
                                .unwrap_or_else(|| Arc::new(o)),
                        );
                    }
                    // A namespace purged as it left the scope: nothing was deleted.
                    Ok(watcher::Event::Delete(gone))
                        if gone
                            .meta()
                            .namespace
                            .as_deref()
                            .is_some_and(|n| !coverage.covers(n)) => {}
                    Ok(watcher::Event::Delete(gone)) => {
                        let gone = Arc::new(gone);
                        for tx in &deletions {
                            let _ = tx.unbounded_send(gone.clone());
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        let _ = listed_tx.send(true);
                        for object in store.state() {
                            tell(object);
                        }
                    }
                    Ok(_) => {}
                    // The backoff retries; a failing watch leaves the last good store.
                    Err(e) => tracing::warn!(watch = what, error = %e, "watch error"),
                }
            }
        }
    }
}

impl<K> SharedWatch<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Lookup<DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// A cluster-wide watch of `K` with `config` that keeps the namespaces in `scope` only.
    pub(crate) fn scoped(
        what: &'static str,
        client: &Client,
        config: watcher::Config,
        trim: fn(&mut K),
        scope: &watch::Sender<Namespaces>,
    ) -> Self {
        let (store, writer) = reflector::store();
        let covered = Coverage::scoped();
        let events = scoped::events(
            client.clone(),
            config,
            scope.subscribe(),
            store.clone(),
            covered.clone(),
        )
        .boxed();
        Self::of(what, store, writer, events, trim, covered)
    }
}

fn keep_all<K>(_: &mut K) {}

/// Pods and Nodes carry what no reader here needs: drop it (memory scales with them).
fn trim_pod(pod: &mut Pod) {
    pod.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

pub(crate) fn trim_node(node: &mut Node) {
    if let Some(status) = node.status.as_mut() {
        status.images = None;
    }
}

/// The local cluster's watches, one per kind.
pub(crate) struct LocalWatches {
    /// NamespaceOffloadings named `offloading` (others have no effect; the server filters).
    pub(crate) offloadings: SharedWatch<NamespaceOffloading>,
    pub(crate) nodes: SharedWatch<Node>,
    pub(crate) namespaces: SharedWatch<Namespace>,
    /// Pods of the namespaces in `pods_scope`.
    pub(crate) pods: SharedWatch<Pod>,
    pub(crate) remote_clusters: SharedWatch<RemoteCluster>,
    /// Secrets: peering credentials, and those of offloaded namespaces (reflected).
    pub(crate) secrets: SharedWatch<Secret>,
    /// Reflected into the remote namespaces with Secrets.
    pub(crate) configmaps: SharedWatch<ConfigMap>,
    pub(crate) service_accounts: SharedWatch<ServiceAccount>,
    /// Reflected into every remote namespace, with their endpoints.
    pub(crate) services: SharedWatch<Service>,
    /// Services' slices only, and not those we wrote.
    pub(crate) endpoint_slices: SharedWatch<EndpointSlice>,
    /// Reflected into every remote namespace (Ingresses' status comes back).
    pub(crate) ingresses: SharedWatch<Ingress>,
    pub(crate) network_policies: SharedWatch<NetworkPolicy>,
    /// Claims of offloaded namespaces: those of offloaded pods are provisioned remotely.
    pub(crate) claims: SharedWatch<PersistentVolumeClaim>,
    /// The namespaces whose Secrets, ConfigMaps, ServiceAccounts, Services and
    /// EndpointSlices are kept (see [`scope_of`]).
    pub(crate) scope: watch::Sender<Namespaces>,
    /// The namespaces whose Pods are kept: the same, and those where pods are still bound
    /// to a virtual node (an offloading that ended without sending them back: they go back
    /// before the namespace leaves).
    pub(crate) pods_scope: watch::Sender<Namespaces>,
}

/// The namespaces whose objects the scoped watches keep: those with a NamespaceOffloading
/// (terminating ones too: their copies are still being removed), and those holding a
/// peering's credentials.
pub(crate) fn scope_of(
    offloadings: &[Arc<NamespaceOffloading>],
    remote_clusters: &[Arc<RemoteCluster>],
) -> BTreeSet<String> {
    offloadings
        .iter()
        .filter_map(|nso| ResourceExt::namespace(&**nso))
        .chain(
            remote_clusters
                .iter()
                .map(|rc| rc.spec.kubeconfig_secret.namespace.clone()),
        )
        .collect()
}

impl LocalWatches {
    /// `streaming_lists`: list pods by streaming (the biggest list we make), where the API
    /// server supports it.
    pub(crate) fn new(client: &Client, streaming_lists: bool) -> Self {
        let by_name =
            watcher::Config::default().fields(&format!("metadata.name={OFFLOADING_NAME}"));
        let (scope, _) = watch::channel(Namespaces::default());
        let (pods_scope, _) = watch::channel(Namespaces::default());
        let pods = if streaming_lists {
            watcher::Config::default().streaming_lists()
        } else {
            watcher::Config::default()
        };
        Self {
            offloadings: SharedWatch::new(
                "namespaceoffloadings",
                Api::all(client.clone()),
                by_name,
                keep_all,
            ),
            nodes: SharedWatch::new(
                "nodes",
                Api::all(client.clone()),
                Default::default(),
                trim_node,
            ),
            namespaces: SharedWatch::new(
                "namespaces",
                Api::all(client.clone()),
                Default::default(),
                keep_all,
            ),
            pods: SharedWatch::scoped("pods", client, pods, trim_pod, &pods_scope),
            remote_clusters: SharedWatch::new(
                "remoteclusters",
                Api::all(client.clone()),
                Default::default(),
                keep_all,
            ),
            // What is never reflected is left out by the server: every namespace has a
            // kube-root-ca.crt and a default account, a thousand namespaces a thousand each.
            secrets: SharedWatch::scoped(
                "secrets",
                client,
                watcher::Config::default().fields(&format!("type!={TOKEN_SECRET_TYPE}")),
                keep_all,
                &scope,
            ),
            configmaps: SharedWatch::scoped(
                "configmaps",
                client,
                watcher::Config::default().fields(&format!("metadata.name!={ROOT_CA_CONFIGMAP}")),
                keep_all,
                &scope,
            ),
            service_accounts: SharedWatch::scoped(
                "serviceaccounts",
                client,
                watcher::Config::default()
                    .fields(&format!("metadata.name!={DEFAULT_SERVICE_ACCOUNT}")),
                keep_all,
                &scope,
            ),
            services: SharedWatch::scoped("services", client, Default::default(), keep_all, &scope),
            endpoint_slices: SharedWatch::scoped(
                "endpointslices",
                client,
                watcher::Config::default().labels(&format!(
                    "{SERVICE_NAME_LABEL},{MANAGED_BY_LABEL}!={SLICE_MANAGER}"
                )),
                keep_all,
                &scope,
            ),
            ingresses: SharedWatch::scoped(
                "ingresses",
                client,
                Default::default(),
                keep_all,
                &scope,
            ),
            network_policies: SharedWatch::scoped(
                "networkpolicies",
                client,
                Default::default(),
                keep_all,
                &scope,
            ),
            claims: SharedWatch::scoped(
                "persistentvolumeclaims",
                client,
                Default::default(),
                keep_all,
                &scope,
            ),
            scope,
            pods_scope,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn cm(name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("shop".into());
        cm
    }

    /// A subscriber that lags is still told of every object, even of those deleted before
    /// it looked (kube's shared subscription stalled on those), and never holds the watch
    /// back: the store is complete while it has read nothing.
    #[tokio::test]
    async fn a_lagging_subscriber_gets_every_object_and_holds_nothing_back() {
        let mut events = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(cm("listed"))),
            Ok(watcher::Event::InitDone),
        ];
        for i in 0..5_000 {
            events.push(Ok(watcher::Event::Apply(cm(&format!("pod-{i}")))));
            events.push(Ok(watcher::Event::Delete(cm(&format!("pod-{i}")))));
        }
        events.push(Ok(watcher::Event::Apply(cm("last"))));
        let (store, writer) = reflector::store();
        let mut watch = SharedWatch::of(
            "configmaps",
            store.clone(),
            writer,
            futures::stream::iter(events).boxed(),
            keep_all,
            Coverage::everything(),
        );
        let subscriber = watch.subscribe();
        let deleted = watch.deletions();
        // The whole watch is applied before the subscriber reads anything.
        watch.run().await;
        assert_eq!(store.state().len(), 2);
        let seen: Vec<String> = subscriber.map(|o| o.name_any()).collect().await;
        assert_eq!(
            seen.len(),
            5_002,
            "listed, 5,000 created then deleted, last"
        );
        assert_eq!(seen.first().map(String::as_str), Some("listed"));
        assert_eq!(seen.last().map(String::as_str), Some("last"));
        assert_eq!(deleted.count().await, 5_000);
    }
}
