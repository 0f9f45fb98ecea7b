//! Watch caches the webhooks read: every NamespaceOffloading, and every Node's metadata
//! (labels decide whether a preset `spec.nodeName` is a virtual node). Admission answers
//! come from here, never from an API call.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, reflector},
        watcher,
    },
};

use crate::{
    admission::{Lookup, NodeInfo},
    api::{NamespaceOffloading, OFFLOADING_NAME},
};

#[derive(Clone)]
pub struct Caches {
    offloadings: Store<NamespaceOffloading>,
    nodes: Store<PartialObjectMeta<Node>>,
}

impl Caches {
    /// Starts both watches on the current runtime.
    pub fn start(client: &Client) -> Self {
        let (offloadings, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(
                Api::<NamespaceOffloading>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        );
        tokio::spawn(drive("namespaceoffloadings", stream));

        let (nodes, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(
                Api::<PartialObjectMeta<Node>>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
        );
        tokio::spawn(drive("nodes", stream));
        Self { offloadings, nodes }
    }

    /// Resolves once both caches hold a complete first listing.
    pub async fn wait_until_ready(&self) {
        let _ = self.offloadings.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
    }
}

async fn drive<S, K>(what: &'static str, stream: S)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            // The backoff retries; a failing watch leaves the last good cache in place.
            tracing::warn!(watch = what, error = %e, "watch error");
        }
    }
}

impl Lookup for Caches {
    fn offloading(&self, namespace: &str) -> Option<Arc<NamespaceOffloading>> {
        self.offloadings
            .get(&ObjectRef::new(OFFLOADING_NAME).within(namespace))
    }

    fn node(&self, name: &str) -> Option<NodeInfo> {
        self.nodes.get(&ObjectRef::new(name)).map(|n| NodeInfo {
            labels: n.metadata.labels.clone().unwrap_or_default(),
        })
    }
}
