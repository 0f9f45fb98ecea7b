//! What the webhooks read: the shared watches' NamespaceOffloadings and Nodes (labels
//! decide whether a preset `spec.nodeName` is a virtual node). Admission answers come from
//! here, never from an API call.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::{
    model::{
        admission::{Lookup, NodeInfo},
        api::{NamespaceOffloading, OFFLOADING_NAME},
    },
    plumbing::watches::{Listed, SharedWatch},
};

#[derive(Clone)]
pub(crate) struct Caches {
    offloadings: Store<NamespaceOffloading>,
    nodes: Store<Node>,
    listed: [Listed; 2],
}

impl Caches {
    pub(crate) fn new(
        offloadings: &SharedWatch<NamespaceOffloading>,
        nodes: &SharedWatch<Node>,
    ) -> Self {
        Self {
            offloadings: offloadings.store(),
            nodes: nodes.store(),
            listed: [offloadings.listed(), nodes.listed()],
        }
    }

    /// Resolves once both stores hold a complete first listing.
    pub(crate) async fn wait_until_ready(&self) {
        for listed in &self.listed {
            listed.wait().await;
        }
    }
}

impl Lookup for Caches {
    fn offloading(&self, namespace: &str) -> Option<Arc<NamespaceOffloading>> {
        self.offloadings
            .get(&ObjectRef::new(OFFLOADING_NAME).within(namespace))
    }

    fn offloadings(&self) -> Vec<Arc<NamespaceOffloading>> {
        self.offloadings.state()
    }

    fn node(&self, name: &str) -> Option<NodeInfo> {
        self.nodes.get(&ObjectRef::new(name)).map(|n| NodeInfo {
            labels: n.metadata.labels.clone().unwrap_or_default(),
        })
    }
}
