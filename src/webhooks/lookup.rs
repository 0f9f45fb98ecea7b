//! What the webhooks read: the shared watches' NamespaceOffloadings and Nodes (labels
//! decide whether a preset `spec.nodeName` is a virtual node). Admission answers come from
//! here, never from an API call.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use k8s_openapi::api::core::v1::{Node, NodeSelectorTerm};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::{
    model::{
        admission::{Lookup, NodeInfo, pod},
        api::{NamespaceOffloading, OFFLOADING_NAME},
    },
    plumbing::watches::{Listed, SharedWatch},
};

#[derive(Clone)]
pub(crate) struct Caches {
    offloadings: Store<NamespaceOffloading>,
    nodes: Store<Node>,
    listed: [Listed; 2],
    imposed: Arc<RwLock<Imposed>>,
}

/// Each NamespaceOffloading's imposed terms, by UID, with the generation they were computed
/// for: computed at its first pod, then read by every other (the spec is immutable; the
/// generation guards against a CRD installed without the rule).
type Imposed = HashMap<String, (i64, Arc<[NodeSelectorTerm]>)>;

/// Entries beyond the store's objects (deleted NamespaceOffloadings) tolerated before the
/// memo is pruned to what the store holds.
const IMPOSED_SLACK: usize = 64;

impl Caches {
    pub(crate) fn new(
        offloadings: &SharedWatch<NamespaceOffloading>,
        nodes: &SharedWatch<Node>,
    ) -> Self {
        Self {
            offloadings: offloadings.store(),
            nodes: nodes.store(),
            listed: [offloadings.listed(), nodes.listed()],
            imposed: Arc::default(),
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

    fn imposed_terms(&self, nso: &NamespaceOffloading) -> Arc<[NodeSelectorTerm]> {
        let (Some(uid), generation) = (
            nso.metadata.uid.as_deref(),
            nso.metadata.generation.unwrap_or_default(),
        ) else {
            return pod::imposed_terms(&nso.spec).into();
        };
        let cached = self
            .imposed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uid)
            .filter(|(at, _)| *at == generation)
            .map(|(_, terms)| terms.clone());
        if let Some(terms) = cached {
            return terms;
        }
        let terms: Arc<[NodeSelectorTerm]> = pod::imposed_terms(&nso.spec).into();
        let mut memo = self.imposed.write().unwrap_or_else(PoisonError::into_inner);
        memo.insert(uid.to_owned(), (generation, terms.clone()));
        if memo.len() > self.offloadings.len() + IMPOSED_SLACK {
            let live: std::collections::HashSet<String> = self
                .offloadings
                .state()
                .iter()
                .filter_map(|n| n.metadata.uid.clone())
                .collect();
            memo.retain(|uid, _| live.contains(uid));
        }
        terms
    }

    fn node(&self, name: &str) -> Option<NodeInfo> {
        self.nodes.get(&ObjectRef::new(name)).map(|n| NodeInfo {
            labels: n.metadata.labels.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector, watcher::Event};

    use super::*;
    use crate::model::api::NamespaceOffloadingSpec;

    fn offloading(namespace: &str, strategy: &str) -> NamespaceOffloading {
        let spec: NamespaceOffloadingSpec =
            serde_json::from_value(serde_json::json!({"podOffloadingStrategy": strategy})).unwrap();
        let mut nso = NamespaceOffloading::new(OFFLOADING_NAME, spec);
        nso.metadata.namespace = Some(namespace.into());
        nso.metadata.uid = Some(format!("uid-{namespace}"));
        nso.metadata.generation = Some(1);
        nso
    }

    /// Caches over a store holding `stored`.
    fn caches(stored: &NamespaceOffloading) -> Caches {
        let (offloadings, mut writer) = reflector::store::<NamespaceOffloading>();
        writer.apply_watcher_event(&Event::Apply(stored.clone()));
        let (nodes, _) = reflector::store::<Node>();
        Caches {
            offloadings,
            nodes,
            listed: [Listed::new().1, Listed::new().1],
            imposed: Arc::default(),
        }
    }

    #[test]
    fn imposed_terms_are_computed_once_per_offloading_and_generation() {
        let remote = offloading("shop", "Remote");
        let caches = caches(&remote);
        let first = caches.imposed_terms(&remote);
        assert_eq!(&*first, &pod::imposed_terms(&remote.spec)[..]);
        // The same allocation: served from the memo, not computed again.
        assert!(Arc::ptr_eq(&first, &caches.imposed_terms(&remote)));

        // Another generation (a CRD without the immutability rule) is computed afresh.
        let mut changed = offloading("shop", "Local");
        changed.metadata.generation = Some(2);
        let second = caches.imposed_terms(&changed);
        assert_eq!(&*second, &pod::imposed_terms(&changed.spec)[..]);
        assert_ne!(&*first, &*second);

        // Without a UID (not from the API server) nothing is remembered.
        let mut unstored = offloading("other", "Remote");
        unstored.metadata.uid = None;
        let once = caches.imposed_terms(&unstored);
        assert!(!Arc::ptr_eq(&once, &caches.imposed_terms(&unstored)));
    }

    #[test]
    fn the_memo_forgets_offloadings_gone_from_the_store() {
        let kept = offloading("kept", "Remote");
        let caches = caches(&kept);
        caches.imposed_terms(&kept);
        // Offloadings created and deleted again: their entries go once past the slack.
        for i in 0..=IMPOSED_SLACK + 1 {
            caches.imposed_terms(&offloading(&format!("gone-{i}"), "LocalAndRemote"));
        }
        let memo = caches.imposed.read().unwrap();
        assert!(memo.len() <= 1 + IMPOSED_SLACK, "{}", memo.len());
        assert!(memo.contains_key("uid-kept"));
    }
}
