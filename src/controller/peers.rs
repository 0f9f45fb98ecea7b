//! The connected remote clusters, by cluster ID: a client for each, and a watch on the
//! remote namespaces we created there, whose events wake the NamespaceOffloading they
//! belong to (a remote namespace deleted by someone else is recreated within seconds).

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use futures::{StreamExt, channel::mpsc};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, reflector::ObjectRef, watcher},
};
use tokio::task::JoinHandle;

use super::remote_namespace::{ORIGIN_CLUSTER_LABEL, ORIGIN_NAMESPACE_LABEL};
use crate::api::{NamespaceOffloading, OFFLOADING_NAME};

/// A connected remote cluster.
#[derive(Clone)]
pub struct Peer {
    /// The RemoteCluster object it comes from.
    pub remote_cluster: String,
    /// Which Secret version the client was built from (rebuilt when it changes).
    pub credentials_version: String,
    pub client: Client,
    _watch: Arc<AbortOnDrop>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Clone)]
pub struct Peers {
    peers: Arc<RwLock<BTreeMap<String, Peer>>>,
    local_cluster_id: String,
    wake: mpsc::UnboundedSender<ObjectRef<NamespaceOffloading>>,
}

impl Peers {
    /// The registry, and the stream of NamespaceOffloadings to reconcile because something
    /// changed in a remote cluster.
    pub fn new(
        local_cluster_id: &str,
    ) -> (
        Self,
        mpsc::UnboundedReceiver<ObjectRef<NamespaceOffloading>>,
    ) {
        let (wake, woken) = mpsc::unbounded();
        let peers = Self {
            peers: Arc::default(),
            local_cluster_id: local_cluster_id.to_owned(),
            wake,
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

    /// Registers (or replaces) a peer and starts watching its remote namespaces.
    pub fn insert(&self, cluster_id: &str, remote_cluster: &str, version: &str, client: Client) {
        let api = Api::<Namespace>::all(client.clone());
        let config = watcher::Config::default()
            .labels(&format!("{ORIGIN_CLUSTER_LABEL}={}", self.local_cluster_id));
        let wake = self.wake.clone();
        let id = cluster_id.to_owned();
        let task = tokio::spawn(async move {
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
        });
        let peer = Peer {
            remote_cluster: remote_cluster.to_owned(),
            credentials_version: version.to_owned(),
            client,
            _watch: Arc::new(AbortOnDrop(task)),
        };
        if let Ok(mut peers) = self.peers.write() {
            peers.insert(cluster_id.to_owned(), peer);
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
