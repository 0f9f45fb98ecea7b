//! The connected remote clusters, by cluster ID: a client for each and two watches through
//! it. The remote namespaces we created there wake the NamespaceOffloading they belong to
//! (a remote namespace deleted by someone else is recreated within seconds); the remote's
//! identity ConfigMap wakes its RemoteCluster (new cluster labels reach the virtual node
//! within seconds, not at the next heartbeat).

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use futures::{StreamExt, channel::mpsc};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, reflector::ObjectRef, watcher},
};
use tokio::task::JoinHandle;

use super::remote_namespace::{ORIGIN_CLUSTER_LABEL, ORIGIN_NAMESPACE_LABEL};
use crate::{
    api::{NamespaceOffloading, OFFLOADING_NAME, RemoteCluster},
    identity,
};

/// A connected remote cluster.
#[derive(Clone)]
pub struct Peer {
    /// The RemoteCluster object it comes from.
    pub remote_cluster: String,
    /// Which Secret version the client was built from (rebuilt when it changes).
    pub credentials_version: String,
    pub client: Client,
    /// Why the peering's last heartbeat failed (reason, message), while it fails. Such a
    /// cluster is not contacted until it answers again, so it never holds up the others.
    pub unreachable: Option<(String, String)>,
    _watches: Arc<AbortOnDrop>,
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

/// What the remote clusters' watches ask to reconcile.
pub struct Woken {
    pub offloadings: mpsc::UnboundedReceiver<ObjectRef<NamespaceOffloading>>,
    pub remote_clusters: mpsc::UnboundedReceiver<ObjectRef<RemoteCluster>>,
}

#[derive(Clone)]
pub struct Peers {
    peers: Arc<RwLock<BTreeMap<String, Peer>>>,
    local_cluster_id: String,
    wake: mpsc::UnboundedSender<ObjectRef<NamespaceOffloading>>,
    wake_peering: mpsc::UnboundedSender<ObjectRef<RemoteCluster>>,
}

impl Peers {
    /// The registry, and the streams of objects to reconcile because something changed in
    /// a remote cluster.
    pub fn new(local_cluster_id: &str) -> (Self, Woken) {
        let (wake, offloadings) = mpsc::unbounded();
        let (wake_peering, remote_clusters) = mpsc::unbounded();
        let peers = Self {
            peers: Arc::default(),
            local_cluster_id: local_cluster_id.to_owned(),
            wake,
            wake_peering,
        };
        let woken = Woken {
            offloadings,
            remote_clusters,
        };
        (peers, woken)
    }

    pub fn get(&self, cluster_id: &str) -> Option<Peer> {
        self.peers.read().ok()?.get(cluster_id).cloned()
    }

    pub fn cluster_ids(&self) -> Vec<String> {
        self.peers
            .read()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Registers (or replaces) a peer and starts watching its remote namespaces and its
    /// identity ConfigMap (in `identity_namespace`). A RemoteCluster stands for one cluster:
    /// an entry it left under another cluster ID (the remote was reinstalled, or its
    /// `spec.clusterID` fixed) is dropped.
    pub fn insert(
        &self,
        cluster_id: &str,
        remote_cluster: &str,
        identity_namespace: &str,
        version: &str,
        client: Client,
    ) {
        let namespaces = self.watch_remote_namespaces(cluster_id, client.clone());
        let identity = self.watch_identity(cluster_id, remote_cluster, identity_namespace, &client);
        let peer = Peer {
            remote_cluster: remote_cluster.to_owned(),
            credentials_version: version.to_owned(),
            client,
            unreachable: None,
            _watches: Arc::new(AbortOnDrop(vec![namespaces, identity])),
        };
        if let Ok(mut peers) = self.peers.write() {
            peers.retain(|id, p| id == cluster_id || p.remote_cluster != remote_cluster);
            peers.insert(cluster_id.to_owned(), peer);
        }
    }

    fn watch_remote_namespaces(&self, cluster_id: &str, client: Client) -> JoinHandle<()> {
        let api = Api::<Namespace>::all(client);
        let config = watcher::Config::default()
            .labels(&format!("{ORIGIN_CLUSTER_LABEL}={}", self.local_cluster_id));
        let wake = self.wake.clone();
        let id = cluster_id.to_owned();
        tokio::spawn(async move {
            let mut events =
                std::pin::pin!(watcher(api, config).default_backoff().touched_objects());
            while let Some(event) = events.next().await {
                match event {
                    Ok(ns) => {
                        let origin = ns
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(ORIGIN_NAMESPACE_LABEL));
                        if let Some(origin) = origin {
                            let _ =
                                wake.unbounded_send(ObjectRef::new(OFFLOADING_NAME).within(origin));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(cluster_id = %id, error = %e, "remote namespace watch error")
                    }
                }
            }
        })
    }

    fn watch_identity(
        &self,
        cluster_id: &str,
        remote_cluster: &str,
        namespace: &str,
        client: &Client,
    ) -> JoinHandle<()> {
        let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
        let config =
            watcher::Config::default().fields(&format!("metadata.name={}", identity::CONFIGMAP));
        let wake = self.wake_peering.clone();
        let target = ObjectRef::<RemoteCluster>::new(remote_cluster);
        let id = cluster_id.to_owned();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(api, config).default_backoff());
            while let Some(event) = events.next().await {
                match event {
                    // The initial listing is what the reconcile that registered us just read;
                    // wake only for what happens after it (and after a re-list).
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Ok(_) => {
                        let _ = wake.unbounded_send(target.clone());
                    }
                    Err(e) => {
                        tracing::debug!(cluster_id = %id, error = %e, "remote identity watch error")
                    }
                }
            }
        })
    }

    /// Records whether the peering's heartbeat reached the cluster (`None`) or why not.
    pub fn set_unreachable(
        &self,
        cluster_id: &str,
        remote_cluster: &str,
        why: Option<(String, String)>,
    ) {
        if let Ok(mut peers) = self.peers.write()
            && let Some(peer) = peers.get_mut(cluster_id)
            && peer.remote_cluster == remote_cluster
        {
            peer.unreachable = why;
        }
    }

    /// Forgets every peer that came from this RemoteCluster; returns their cluster IDs.
    pub fn remove_remote_cluster(&self, remote_cluster: &str) -> Vec<String> {
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
    pub fn by_remote_cluster(&self, remote_cluster: &str) -> Option<(String, Peer)> {
        self.peers
            .read()
            .ok()?
            .iter()
            .find(|(_, p)| p.remote_cluster == remote_cluster)
            .map(|(id, p)| (id.clone(), p.clone()))
    }
}
