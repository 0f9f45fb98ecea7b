//! What the offloading controller reads: the shared context, the placement controller's
//! (its termination enforces placement), and each cluster's recent failures.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use crate::{
    context::Shared,
    model::api::{NamespaceOffloadingStatus, RemoteCluster},
};

pub(crate) struct Context {
    pub(crate) shared: Shared,
    /// Enforces placement; at termination, pods still waiting with remote constraints are
    /// sent back before the offloading is gone.
    pub(crate) placement: Arc<crate::controllers::placement::Context>,
    /// Consecutive failures per (namespace, cluster), for per-cluster backoff.
    pub(crate) failures: Mutex<HashMap<(String, String), u32>>,
    /// Clusters where a termination found nothing of ours left, by (offloading uid,
    /// cluster ID): nothing there is looked up again before the termination ends (the
    /// look asks the API server each time, and nothing is created there meanwhile).
    pub(crate) cleaned: Mutex<HashSet<(String, String)>>,
    /// The last status written per offloading (uid), with the resourceVersion the object
    /// had when it was written: a reconcile that runs before the store shows that write
    /// (the same object, same version) does not write the same status again.
    pub(crate) written: Mutex<HashMap<String, (String, NamespaceOffloadingStatus)>>,
}

impl std::ops::Deref for Context {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Context {
    /// The live (not being deleted) RemoteCluster for a cluster ID.
    pub(super) fn remote_cluster_of(&self, cluster_id: &str) -> Option<Arc<RemoteCluster>> {
        self.stores.remote_clusters.state().into_iter().find(|rc| {
            rc.metadata.deletion_timestamp.is_none() && rc.cluster_id() == Some(cluster_id)
        })
    }

    /// Cluster IDs of every live RemoteCluster that knows its cluster ID.
    pub(super) fn peered_cluster_ids(&self) -> Vec<String> {
        self.stores
            .remote_clusters
            .state()
            .iter()
            .filter(|rc| rc.metadata.deletion_timestamp.is_none())
            .filter_map(|rc| rc.cluster_id().map(str::to_owned))
            .collect()
    }
}

#[cfg(test)]
impl Context {
    /// A context on `shared`, with nothing remembered yet (as the manager builds it).
    pub(super) fn for_tests(shared: Shared) -> Self {
        Self {
            placement: Arc::new(crate::controllers::placement::Context::new(shared.clone())),
            shared,
            failures: Mutex::default(),
            cleaned: Mutex::default(),
            written: Mutex::default(),
        }
    }
}
