//! Floor 3: what the workers share beyond the plumbing: the peered clusters, each with a
//! client and its watches (`peers`), calls to them within a deadline (`remote_call`), the
//! writes every worker makes the same way (`writes`), and [`Shared`], the one context the
//! manager builds for all of them.

pub(crate) mod peers;
pub(crate) mod remote_call;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod writes;

use std::sync::Arc;

use k8s_openapi::api::{
    core::v1::{
        ConfigMap, Namespace, Node, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
    },
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, NetworkPolicy},
};
use kube::{
    Client,
    runtime::{
        events::{Recorder, Reporter},
        reflector::Store,
    },
};

use crate::{
    model::{
        api::{NamespaceOffloading, RemoteCluster},
        markers::EVENT_REPORTER,
        reflection_policy::ReflectionPolicy,
    },
    plumbing::{
        backoff::Backoff, metrics::ControllerMetrics, scoped::Coverage, watches::LocalWatches,
    },
};

/// Who this manager is.
#[derive(Clone, Debug)]
pub(crate) struct Replica {
    /// This cluster's ID (DefaultName suffix, ownership of remote namespaces and twins).
    pub(crate) local_cluster_id: String,
    /// This replica's name (events, leases).
    pub(crate) holder: String,
    /// The namespace the manager runs in (never offloaded).
    pub(crate) own_namespace: String,
    /// Where twins reach this cluster's API server (`run --home-api-access=token`); `None`:
    /// twins get no credential of this cluster.
    pub(crate) home_api: Option<Arc<crate::model::forge::home_api::HomeApi>>,
}

/// What every worker reads and writes through, built once by the manager. A worker with
/// state of its own keeps it in its own context next to this one, which that context
/// dereferences to (so `ctx.client`, `ctx.peers` read the same everywhere).
#[derive(Clone)]
pub(crate) struct Shared {
    /// The local cluster.
    pub(crate) client: Client,
    pub(crate) replica: Replica,
    /// Events about local objects, as this replica.
    pub(crate) recorder: Recorder,
    /// The connected remote clusters.
    pub(crate) peers: peers::Peers,
    pub(crate) metrics: Arc<ControllerMetrics>,
    /// The local shared watches' stores: read these, never GET what they hold.
    pub(crate) stores: Stores,
    /// Each worker's objects' consecutive failures: how long before the next try.
    pub(crate) backoff: Arc<Backoff>,
    /// What crosses into the remote namespaces (`run`'s reflection flags).
    pub(crate) reflection: Arc<ReflectionPolicy>,
}

impl Shared {
    /// The context every worker shares, over the local `watches` (subscriptions and
    /// stores alike are taken before the watches run), and the streams of what changes in
    /// the peered clusters.
    pub(crate) fn new(
        client: Client,
        replica: Replica,
        metrics: Arc<ControllerMetrics>,
        watches: &LocalWatches,
        reflection: ReflectionPolicy,
    ) -> (Self, peers::RemoteChanges) {
        let reporter = Reporter {
            controller: EVENT_REPORTER.into(),
            instance: Some(replica.holder.clone()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let (peers, changes) = peers::Peers::new(&replica.local_cluster_id);
        let shared = Self {
            client,
            replica,
            recorder,
            peers,
            metrics,
            stores: Stores::of(watches),
            backoff: Arc::default(),
            reflection: Arc::new(reflection),
        };
        (shared, changes)
    }
}

/// The stores of the local shared watches (`plumbing::watches::LocalWatches`).
#[derive(Clone)]
pub(crate) struct Stores {
    /// NamespaceOffloadings named `offloading` (where each namespace's pods go).
    pub(crate) offloadings: Store<NamespaceOffloading>,
    /// Every Node (the virtual nodes are the clusters).
    pub(crate) nodes: Store<Node>,
    /// Every Namespace (the scheduling label).
    pub(crate) namespaces: Store<Namespace>,
    /// The pods of offloaded namespaces (and of those with pods still on a virtual node).
    pub(crate) pods: Store<Pod>,
    /// Every RemoteCluster: which clusters are peered even before they connect.
    pub(crate) remote_clusters: Store<RemoteCluster>,
    /// Peering credentials, and the Secrets of offloaded namespaces.
    pub(crate) secrets: Store<Secret>,
    pub(crate) configmaps: Store<ConfigMap>,
    pub(crate) service_accounts: Store<ServiceAccount>,
    pub(crate) services: Store<Service>,
    pub(crate) endpoint_slices: Store<EndpointSlice>,
    pub(crate) ingresses: Store<Ingress>,
    pub(crate) network_policies: Store<NetworkPolicy>,
    /// The claims of offloaded namespaces (those of offloaded pods are provisioned remotely).
    pub(crate) claims: Store<PersistentVolumeClaim>,
    /// Which namespaces the pods store and the five above hold completely (only those
    /// in scope).
    pub(crate) covered: Covered,
}

/// The coverage of each scoped store (`plumbing::scoped`).
#[derive(Clone)]
pub(crate) struct Covered {
    pub(crate) pods: Coverage,
    pub(crate) secrets: Coverage,
    pub(crate) configmaps: Coverage,
    pub(crate) service_accounts: Coverage,
    pub(crate) services: Coverage,
    pub(crate) endpoint_slices: Coverage,
    pub(crate) ingresses: Coverage,
    pub(crate) network_policies: Coverage,
    pub(crate) claims: Coverage,
}

impl Stores {
    /// The stores of `watches` (filled once the watches run).
    pub(crate) fn of(watches: &LocalWatches) -> Self {
        Self {
            offloadings: watches.offloadings.store(),
            nodes: watches.nodes.store(),
            namespaces: watches.namespaces.store(),
            pods: watches.pods.store(),
            remote_clusters: watches.remote_clusters.store(),
            secrets: watches.secrets.store(),
            configmaps: watches.configmaps.store(),
            service_accounts: watches.service_accounts.store(),
            services: watches.services.store(),
            endpoint_slices: watches.endpoint_slices.store(),
            ingresses: watches.ingresses.store(),
            network_policies: watches.network_policies.store(),
            claims: watches.claims.store(),
            covered: Covered {
                pods: watches.pods.coverage(),
                secrets: watches.secrets.coverage(),
                configmaps: watches.configmaps.coverage(),
                service_accounts: watches.service_accounts.coverage(),
                services: watches.services.coverage(),
                endpoint_slices: watches.endpoint_slices.coverage(),
                ingresses: watches.ingresses.coverage(),
                network_policies: watches.network_policies.coverage(),
                claims: watches.claims.coverage(),
            },
        }
    }
}
