//! The workers wired to the shared watches: the controllers (peering, offloading, quick
//! offloading, placement), reflection (twins, namespace objects, events) and the virtual
//! nodes' kubelet API.
//!
//! Every controller reads the shared watches of `plumbing::watches` and is triggered by its
//! own subscriptions to them. The controllers run on every replica from the start, but each
//! reconciles only once this replica leads and the watches it reads have listed: then it
//! reconciles everything once, and from there on what changes.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{
    Client, ResourceExt,
    runtime::{
        Controller,
        controller::Config,
        reflector::{ObjectRef, Store},
    },
};
use tokio::sync::watch;

use super::gate::{activation, gate, when_active};
use crate::{
    context::{Replica, Shared, Stores},
    controllers::{enabled_label, offloading, peering, placement},
    model::api::{
        NamespaceOffloading, OFFLOADING_NAME, RemoteCluster, is_virtual_node,
        remote_cluster::virtual_node_name,
    },
    plumbing::{
        metrics,
        scoped::Namespaces,
        watches::{Listed, LocalWatches, scope_of},
    },
};

/// The NamespaceOffloading that governs a namespace.
fn offloading_in(namespace: &str) -> ObjectRef<NamespaceOffloading> {
    ObjectRef::new(OFFLOADING_NAME).within(namespace)
}

fn namespace_of(nso: &NamespaceOffloading) -> Option<ObjectRef<Namespace>> {
    nso.namespace().map(|ns| ObjectRef::new(&ns))
}

/// How often twins left without their local pod are looked for.
const TWIN_SWEEP: Duration = Duration::from_secs(30);

/// Reconciles each controller runs at once. kube's client speaks HTTP/1.1, so every
/// request in flight is a connection of its own, kept in the pool for 90 s after: without
/// a bound, a thousand namespaces labelled at once opened over a thousand connections
/// (about 40 MiB), and the API server, flooded, timed our own webhook's calls out.
pub const CONCURRENCY: u16 = 16;

/// The controllers' common configuration.
fn config() -> Config {
    Config::default().concurrency(CONCURRENCY)
}

/// What the manager's flags give the workers beyond the watches.
pub(crate) struct Options {
    /// The virtual nodes' kubelet API, when served.
    pub(crate) kubelet: Option<crate::kubelet::Serving>,
    /// Local storage class to remote one, for offloaded pods' claims.
    pub(crate) storage_classes: crate::model::forge::claims::ClassMapping,
    /// What crosses into the remote namespaces (`run`'s reflection flags).
    pub(crate) reflection: crate::model::reflection_policy::ReflectionPolicy,
}

/// Starts the controllers on the local watches. NamespaceOffloadings and Nodes are watched
/// from now on (the webhooks need them on every replica); the other kinds once `leading`
/// turns true. Runs until `shutdown` resolves.
pub(crate) async fn run(
    client: Client,
    me: Replica,
    metrics: Arc<metrics::ControllerMetrics>,
    mut watches: LocalWatches,
    mut leading: watch::Receiver<bool>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let Options {
        kubelet,
        storage_classes,
        reflection,
    } = options;
    let (shared, remote_changes) = Shared::new(client.clone(), me, metrics, &watches, reflection);

    let Stores {
        offloadings,
        nodes,
        namespaces,
        pods,
        remote_clusters,
        ..
    } = shared.stores.clone();
    // Subscriptions first: a shared watch feeds only those who subscribed before it started.
    let virtual_nodes_changed =
        futures::stream::select(watches.nodes.subscribe(), watches.nodes.deletions())
            .filter_map(|n| futures::future::ready(is_virtual_node(n.labels()).then_some(())));
    let virtual_nodes_deleted = {
        let remote_clusters = remote_clusters.clone();
        watches.nodes.deletions().filter_map(move |node| {
            let name = node.name_any();
            let peering = remote_clusters
                .state()
                .iter()
                .find(|rc| {
                    rc.cluster_id()
                        .is_some_and(|id| virtual_node_name(id) == name)
                })
                .map(|rc| ObjectRef::from(&**rc));
            futures::future::ready(peering)
        })
    };
    // What changes the scope of the scoped watches (plumbing::watches::scope_of).
    let scope_changes = futures::stream::select_all([
        watches.offloadings.subscribe().map(|_| ()).boxed(),
        watches.offloadings.deletions().map(|_| ()).boxed(),
        watches.remote_clusters.subscribe().map(|_| ()).boxed(),
        watches.remote_clusters.deletions().map(|_| ()).boxed(),
        // The last pod on a virtual node of a namespace no longer offloaded, gone.
        watches.pods.deletions().map(|_| ()).boxed(),
    ]);
    let scope_known = (
        watches.offloadings.listed(),
        watches.remote_clusters.listed(),
    );
    let pods_deleted = watches.pods.deletions();
    let pods_releasing = watches.pods.deletions();
    let claims_gone = watches.claims.deletions();
    let pods_gone = watches.pods.deletions();
    let offloadings_deleted = watches.offloadings.deletions();
    // Each controller acts once this replica leads and the watches it reads have listed.
    let offloadings_listed = ("namespaceoffloadings", watches.offloadings.listed());
    let nodes_listed = ("nodes", watches.nodes.listed());
    let namespaces_listed = ("namespaces", watches.namespaces.listed());
    let pods_listed = ("pods", watches.pods.listed());
    let remote_clusters_listed = ("remoteclusters", watches.remote_clusters.listed());
    let secrets_listed = ("secrets", watches.secrets.listed());
    let configmaps_listed = ("configmaps", watches.configmaps.listed());
    let service_accounts_listed = ("serviceaccounts", watches.service_accounts.listed());
    let services_listed = ("services", watches.services.listed());
    let endpoint_slices_listed = ("endpointslices", watches.endpoint_slices.listed());
    let ingresses_listed = ("ingresses", watches.ingresses.listed());
    let network_policies_listed = ("networkpolicies", watches.network_policies.listed());
    let claims_listed = ("persistentvolumeclaims", watches.claims.listed());
    let gate = |controller: &'static str, needs: Vec<(&'static str, Listed)>| {
        gate(controller, leading.clone(), needs, shutdown.clone())
    };
    let peering_active = gate(
        "peering",
        vec![
            remote_clusters_listed.clone(),
            secrets_listed.clone(),
            nodes_listed.clone(),
        ],
    );
    let placement_active = gate(
        "placement",
        vec![
            offloadings_listed.clone(),
            pods_listed.clone(),
            nodes_listed.clone(),
        ],
    );
    // Its termination enforces placement too, so it reads pods.
    let offloading_active = gate(
        "offloading",
        vec![
            offloadings_listed.clone(),
            nodes_listed.clone(),
            namespaces_listed.clone(),
            remote_clusters_listed.clone(),
            pods_listed.clone(),
        ],
    );
    let objects_active = gate(
        "namespace-objects",
        vec![
            offloadings_listed.clone(),
            configmaps_listed,
            secrets_listed,
            service_accounts_listed,
            services_listed,
            endpoint_slices_listed,
            ingresses_listed,
            network_policies_listed,
            remote_clusters_listed.clone(),
        ],
    );
    let claims_active = gate(
        "claims",
        vec![
            claims_listed,
            pods_listed.clone(),
            nodes_listed.clone(),
            offloadings_listed.clone(),
        ],
    );
    // Remote clusters too: a pod on a virtual node that is gone goes back only when its
    // peering is gone.
    let pods_active = gate(
        "pods",
        vec![
            pods_listed,
            remote_clusters_listed.clone(),
            nodes_listed.clone(),
            offloadings_listed.clone(),
            namespaces_listed.clone(),
        ],
    );
    let enabled_label_active = gate(
        "quick-offloading",
        vec![namespaces_listed, offloadings_listed],
    );

    let peering =
        Controller::for_shared_stream(watches.remote_clusters.subscribe(), remote_clusters.clone())
            .watches_shared_stream(watches.secrets.subscribe(), {
                let remote_clusters = remote_clusters.clone();
                move |secret| peering::using_secret(&remote_clusters, &secret)
            })
            .reconcile_on(remote_changes.peerings)
            // A virtual node deleted by hand (or by an autoscaler) is put back at once.
            .reconcile_on(virtual_nodes_deleted)
            .reconcile_all_on(activation(peering_active.clone()))
            .with_config(config())
            .graceful_shutdown_on(shutdown.clone())
            .run(
                when_active(
                    peering_active,
                    (peering::WORKER, shared.backoff.clone()),
                    peering::reconcile,
                ),
                peering::error_policy,
                Arc::new(peering::Context {
                    shared: shared.clone(),
                    kubelet: kubelet.as_ref().map(|k| k.endpoint.clone()),
                }),
            )
            .for_each(|_| async {});

    let placement_context = Arc::new(placement::Context::new(shared.clone()));
    let placement =
        Controller::for_shared_stream(watches.offloadings.subscribe(), offloadings.clone())
            .watches_shared_stream(watches.pods.subscribe(), |pod| {
                placement::offloading_of(&pod)
            })
            .reconcile_on(
                pods_deleted
                    .filter_map(|pod| futures::future::ready(placement::offloading_of(&pod))),
            )
            // A namespace just offloaded, once its pods are listed.
            .reconcile_on(
                shared
                    .stores
                    .covered
                    .pods
                    .entered()
                    .map(|ns| offloading_in(&ns)),
            )
            .reconcile_all_on(activation(placement_active.clone()))
            // A Deployment's pods arrive as a burst: one look at the namespace per burst.
            .with_config(config().debounce(Duration::from_millis(500)))
            .graceful_shutdown_on(shutdown.clone())
            .run(
                when_active(
                    placement_active,
                    (placement::WORKER, shared.backoff.clone()),
                    placement::reconcile,
                ),
                placement::error_policy,
                placement_context.clone(),
            )
            .for_each(|_| async {});

    // Offloaded pods wait for their remote namespace to be ours and Ready: what changes
    // either (the offloading's status here, our namespace there) wakes them.
    let (namespace_changed, namespace_changes) = futures::channel::mpsc::unbounded();
    let remote_offloadings = {
        let tell = namespace_changed.clone();
        remote_changes.offloadings.inspect(move |nso| {
            let _ = tell.unbounded_send(nso.namespace.clone());
        })
    };
    let offloadings_changed = watches.offloadings.subscribe().map(|nso| nso.namespace());
    let offloaded_pods_woken = {
        let (pods, nodes) = (pods.clone(), nodes.clone());
        futures::stream::select(offloadings_changed, namespace_changes).flat_map(move |ns| {
            let woken: Vec<ObjectRef<k8s_openapi::api::core::v1::Pod>> = ns
                .map(|ns| {
                    pods.state()
                        .iter()
                        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
                        .filter(|p| crate::reflection::pods::on_virtual_node(&nodes, p))
                        .map(|p| ObjectRef::from(&**p))
                        .collect()
                })
                .unwrap_or_default();
            futures::stream::iter(woken)
        })
    };
    let offloading =
        Controller::for_shared_stream(watches.offloadings.subscribe(), offloadings.clone())
            .watches_shared_stream(watches.namespaces.subscribe(), |ns| {
                Some(ObjectRef::<NamespaceOffloading>::new(OFFLOADING_NAME).within(&ns.name_any()))
            })
            // Clusters come and go, and change labels, with their virtual nodes.
            .reconcile_all_on(virtual_nodes_changed)
            .reconcile_on(remote_offloadings)
            .reconcile_all_on(activation(offloading_active.clone()))
            .with_config(config())
            .graceful_shutdown_on(shutdown.clone())
            .run(
                when_active(
                    offloading_active,
                    (offloading::WORKER, shared.backoff.clone()),
                    offloading::reconcile,
                ),
                offloading::error_policy,
                Arc::new(offloading::Context {
                    shared: shared.clone(),
                    failures: std::sync::Mutex::new(HashMap::new()),
                    cleaned: std::sync::Mutex::default(),
                    written: std::sync::Mutex::default(),
                    placement: placement_context,
                }),
            )
            .for_each(|_| async {});

    let enabled_label =
        Controller::for_shared_stream(watches.namespaces.subscribe(), namespaces.clone())
            .watches_shared_stream(watches.offloadings.subscribe(), |nso| namespace_of(&nso))
            // A namespace left with the scheduling label and no NamespaceOffloading is cleared.
            .reconcile_on(
                offloadings_deleted.filter_map(|nso| futures::future::ready(namespace_of(&nso))),
            )
            .reconcile_all_on(activation(enabled_label_active.clone()))
            .with_config(config())
            .graceful_shutdown_on(shutdown.clone())
            .run(
                when_active(
                    enabled_label_active,
                    (enabled_label::WORKER, shared.backoff.clone()),
                    enabled_label::reconcile,
                ),
                enabled_label::error_policy,
                Arc::new(enabled_label::Context {
                    shared: shared.clone(),
                    unbacked_since: std::sync::Mutex::default(),
                    created: std::sync::Mutex::default(),
                }),
            )
            .for_each(|_| async {});

    // What offloaded pods need to start, copied into the remote namespaces.
    let configmaps_gone = watches.configmaps.deletions();
    let secrets_gone = watches.secrets.deletions();
    let service_accounts_gone = watches.service_accounts.deletions();
    let services_gone = watches.services.deletions();
    let endpoint_slices_gone = watches.endpoint_slices.deletions();
    let ingresses_gone = watches.ingresses.deletions();
    let network_policies_gone = watches.network_policies.deletions();
    // A namespace entering the scope is reflected once its objects are all listed.
    let covered = &shared.stores.covered;
    let entered = futures::stream::select_all([
        covered.configmaps.entered(),
        covered.secrets.entered(),
        covered.service_accounts.entered(),
        covered.services.entered(),
        covered.endpoint_slices.entered(),
        covered.ingresses.entered(),
        covered.network_policies.entered(),
    ])
    .map(|ns| offloading_in(&ns));
    let gone = futures::stream::select_all([
        configmaps_gone.map(|o| o.namespace()).boxed(),
        secrets_gone.map(|o| o.namespace()).boxed(),
        service_accounts_gone.map(|o| o.namespace()).boxed(),
        services_gone.map(|o| o.namespace()).boxed(),
        endpoint_slices_gone.map(|o| o.namespace()).boxed(),
        ingresses_gone.map(|o| o.namespace()).boxed(),
        network_policies_gone.map(|o| o.namespace()).boxed(),
    ])
    .filter_map(|ns| futures::future::ready(ns.map(|ns| offloading_in(&ns))));
    // A peering's address translation changed: every slice is written again.
    let translations_changed = {
        let seen = std::sync::Mutex::new(HashMap::new());
        watches.remote_clusters.subscribe().filter_map(move |rc| {
            let rules = rc.spec.address_translation.clone();
            let changed = seen
                .lock()
                .map(|mut seen| seen.insert(rc.name_any(), rules.clone()) != Some(rules))
                .unwrap_or(false);
            futures::future::ready(changed.then_some(()))
        })
    };
    let namespace_objects =
        Controller::for_shared_stream(watches.offloadings.subscribe(), offloadings.clone())
            .watches_shared_stream(watches.configmaps.subscribe(), |o| {
                o.namespace().map(|ns| offloading_in(&ns))
            })
            .watches_shared_stream(watches.secrets.subscribe(), |o| {
                o.namespace().map(|ns| offloading_in(&ns))
            })
            .watches_shared_stream(watches.service_accounts.subscribe(), |o| {
                o.namespace().map(|ns| offloading_in(&ns))
            })
            .watches_shared_stream(watches.services.subscribe(), |o| {
                o.namespace().map(|ns| offloading_in(&ns))
            })
            .watches_shared_stream(watches.endpoint_slices.subscribe(), |o| {
                o.namespace().map(|ns| offloading_in(&ns))
            })
            .watches_shared_stream(watches.ingresses.subscribe(), |o| {
                o.namespace().map(|ns| offloading_in(&ns))
            })
            .watches_shared_stream(watches.network_policies.subscribe(), |o| {
                o.namespace().map(|ns| offloading_in(&ns))
            })
            .reconcile_on(gone)
            .reconcile_on(entered)
            .reconcile_all_on(translations_changed)
            .reconcile_on(remote_changes.objects)
            .reconcile_all_on(activation(objects_active.clone()))
            .with_config(config().debounce(Duration::from_millis(300)))
            .graceful_shutdown_on(shutdown.clone())
            .run(
                when_active(
                    objects_active,
                    (
                        crate::reflection::namespace_objects::WORKER,
                        shared.backoff.clone(),
                    ),
                    crate::reflection::namespace_objects::reconcile,
                ),
                crate::reflection::namespace_objects::error_policy,
                Arc::new(shared.clone()),
            )
            .for_each(|_| async {});

    // Offloaded pods: twins in their clusters (crate::reflection::pods).
    let reflection_context = Arc::new(shared.clone());
    // A virtual node deleted (its cluster unpeered): the pods bound to it are looked at.
    let bound_to_gone_node = {
        let pods = pods.clone();
        watches.nodes.deletions().flat_map(move |node| {
            let name = node.name_any();
            let bound: Vec<ObjectRef<k8s_openapi::api::core::v1::Pod>> = pods
                .state()
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&name))
                .map(|p| ObjectRef::from(&**p))
                .collect();
            futures::stream::iter(bound)
        })
    };
    let on_virtual_nodes = {
        let nodes = nodes.clone();
        watches.pods.subscribe().filter(move |pod| {
            futures::future::ready(crate::reflection::pods::on_virtual_node(&nodes, pod))
        })
    };
    let pod_reflection = Controller::for_shared_stream(on_virtual_nodes, pods.clone())
        .reconcile_on(remote_changes.pods)
        .reconcile_on(bound_to_gone_node)
        .reconcile_on(offloaded_pods_woken)
        .reconcile_all_on(activation(pods_active.clone()))
        .with_config(config())
        .graceful_shutdown_on(shutdown.clone())
        .run(
            when_active(
                pods_active.clone(),
                (crate::reflection::pods::WORKER, shared.backoff.clone()),
                crate::reflection::pods::reconcile,
            ),
            crate::reflection::pods::error_policy,
            reflection_context.clone(),
        )
        .for_each(|_| async {});
    // Pods gone (even forced): their twins go; and now and then, twins left without a pod.
    let twin_cleanup = {
        let ctx = reflection_context;
        let mut active = pods_active.clone();
        let local_pods = pods.clone();
        async move {
            if active.wait_for(|a| *a).await.is_err() {
                return;
            }
            let mut gone = std::pin::pin!(pods_gone);
            let mut sweep = tokio::time::interval(TWIN_SWEEP);
            loop {
                tokio::select! {
                    pod = gone.next() => match pod {
                        Some(pod) => crate::reflection::pods::delete_twin_of(&ctx, &pod).await,
                        None => return,
                    },
                    _ = sweep.tick() => crate::reflection::pods::sweep(&ctx, &local_pods).await,
                }
            }
        }
    };
    let stop = shutdown.clone();
    let twin_cleanup = async move {
        tokio::select! {
            _ = twin_cleanup => {}
            _ = stop => {}
        }
    };

    // Offloaded pods' claims, provisioned in their clusters (crate::reflection::claims).
    let claims_context = Arc::new(crate::reflection::claims::Context {
        shared: shared.clone(),
        classes: storage_classes,
    });
    let claim_reflection =
        Controller::for_shared_stream(watches.claims.subscribe(), shared.stores.claims.clone())
            .reconcile_on(remote_changes.claims)
            // A pod gone may leave a terminating claim unused.
            .reconcile_on(
                pods_releasing.flat_map(|pod| {
                    futures::stream::iter(crate::reflection::claims::claims_of(&pod))
                }),
            )
            .reconcile_all_on(activation(claims_active.clone()))
            .with_config(config())
            .graceful_shutdown_on(shutdown.clone())
            .run(
                when_active(
                    claims_active.clone(),
                    (crate::reflection::claims::WORKER, shared.backoff.clone()),
                    crate::reflection::claims::reconcile,
                ),
                crate::reflection::claims::error_policy,
                claims_context.clone(),
            )
            .for_each(|_| async {});
    // Claims gone: their remote claims go; and now and then, remote claims left without one.
    {
        let mut active = claims_active.clone();
        let ctx = claims_context;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if active.wait_for(|a| *a).await.is_err() {
                return;
            }
            let mut gone = std::pin::pin!(claims_gone);
            let mut sweep = tokio::time::interval(TWIN_SWEEP);
            let mut stop = std::pin::pin!(stop);
            loop {
                tokio::select! {
                    claim = gone.next() => match claim {
                        Some(claim) => crate::reflection::claims::claim_gone(&ctx, &claim).await,
                        None => return,
                    },
                    _ = sweep.tick() => crate::reflection::claims::sweep(&ctx).await,
                    () = &mut stop => return,
                }
            }
        });
    }

    // Twins' events, recorded on their local pods.
    {
        let mut active = pods_active.clone();
        let (pods, recorder) = (pods.clone(), shared.recorder.clone());
        let events = remote_changes.events;
        tokio::spawn(async move {
            if active.wait_for(|a| *a).await.is_ok() {
                crate::reflection::events::run(events, pods, recorder).await;
            }
        });
    }

    // The virtual nodes' kubelet API (logs, exec, port-forward of offloaded pods).
    if let Some(kubelet) = kubelet {
        let relay = Arc::new(crate::kubelet::relay::Relay {
            shared: shared.clone(),
            authorizer: crate::kubelet::authz::Authorizer::new(client.clone()),
            reports: crate::kubelet::report::Reports::default(),
        });
        tokio::spawn(crate::kubelet::server::serve(
            kubelet.listener,
            kubelet.tls,
            relay,
            shutdown.clone(),
        ));
    }

    let LocalWatches {
        offloadings: offloadings_watch,
        nodes: nodes_watch,
        namespaces: namespaces_watch,
        pods: pods_watch,
        remote_clusters: remote_clusters_watch,
        secrets: secrets_watch,
        configmaps: configmaps_watch,
        service_accounts: service_accounts_watch,
        services: services_watch,
        endpoint_slices: endpoint_slices_watch,
        ingresses: ingresses_watch,
        network_policies: network_policies_watch,
        claims: claims_watch,
        scope,
        pods_scope,
    } = watches;
    tokio::spawn(offloadings_watch.run());
    tokio::spawn(nodes_watch.run());

    // The leader's own watches; the scoped ones once the scope is known, so that their
    // first list keeps every namespace in it (rather than one list per namespace after).
    let leader_watches = async move {
        if leading.wait_for(|l| *l).await.is_ok() {
            tokio::spawn(namespaces_watch.run());
            tokio::spawn(remote_clusters_watch.run());
            if !(scope_known.0.wait().await && scope_known.1.wait().await) {
                return;
            }
            let scopes = Scopes {
                scope,
                pods_scope,
                offloadings,
                remote_clusters,
                pods,
                nodes,
            };
            // Set before the scoped watches first list, so that their list keeps it.
            scopes.set();
            tokio::spawn(scopes.keep(scope_changes));
            tokio::spawn(pods_watch.run());
            tokio::spawn(secrets_watch.run());
            tokio::spawn(configmaps_watch.run());
            tokio::spawn(service_accounts_watch.run());
            tokio::spawn(services_watch.run());
            tokio::spawn(endpoint_slices_watch.run());
            tokio::spawn(ingresses_watch.run());
            tokio::spawn(network_policies_watch.run());
            tokio::spawn(claims_watch.run());
        }
    };

    tokio::spawn(count_cached(shared.clone()));

    futures::future::join(
        futures::future::join4(peering, offloading, enabled_label, placement),
        futures::future::join4(
            pod_reflection,
            twin_cleanup,
            namespace_objects,
            futures::future::join(leader_watches, claim_reflection),
        ),
    )
    .await;
}

/// Changes already waiting that one look at the scopes takes in at once.
const SCOPE_BURST: usize = 4096;

/// What the scoped watches keep, and what it is computed from.
struct Scopes {
    scope: watch::Sender<Namespaces>,
    pods_scope: watch::Sender<Namespaces>,
    offloadings: Store<NamespaceOffloading>,
    remote_clusters: Store<RemoteCluster>,
    pods: Store<Pod>,
    nodes: Store<Node>,
}

impl Scopes {
    fn set(&self) {
        let wanted = scope_of(&self.offloadings.state(), &self.remote_clusters.state());
        let mut pods_wanted = wanted.clone();
        for pod in self.pods.state() {
            if let Some(namespace) = &pod.metadata.namespace
                && !pods_wanted.contains(namespace)
                && crate::reflection::pods::on_virtual_node(&self.nodes, &pod)
            {
                pods_wanted.insert(namespace.clone());
            }
        }
        for (sender, wanted) in [(&self.scope, wanted), (&self.pods_scope, pods_wanted)] {
            sender.send_if_modified(|now| {
                let changed = now.as_ref() != &wanted;
                if changed {
                    *now = Arc::new(wanted);
                }
                changed
            });
        }
    }

    /// Keeps the scopes to what the stores say, as they change.
    ///
    /// A burst of changes (a namespace's thousands of pods deleted at once) is one look,
    /// not one per change: each look reads every pod, and while changes wait their turn
    /// they hold the deleted pods.
    async fn keep(self, changes: impl futures::Stream<Item = ()> + Send) {
        per_burst(changes, || self.set()).await;
    }
}

/// Calls `look` once for each burst of `changes`: all those already waiting, up to
/// [`SCOPE_BURST`].
async fn per_burst(changes: impl futures::Stream<Item = ()>, mut look: impl FnMut()) {
    let mut changes = std::pin::pin!(changes.ready_chunks(SCOPE_BURST));
    while changes.next().await.is_some() {
        look();
    }
}

/// How often the stores' sizes are published.
const COUNT_CACHED: Duration = Duration::from_secs(5);

/// Publishes how many objects each local store holds (`namespace_offloading_cached_objects`).
async fn count_cached(shared: Shared) {
    let mut tick = tokio::time::interval(COUNT_CACHED);
    loop {
        tick.tick().await;
        let s = &shared.stores;
        let m = &shared.metrics;
        m.cached("namespaceoffloadings", s.offloadings.len());
        m.cached("nodes", s.nodes.len());
        m.cached("namespaces", s.namespaces.len());
        m.cached("pods", s.pods.len());
        m.cached("remoteclusters", s.remote_clusters.len());
        m.cached("secrets", s.secrets.len());
        m.cached("configmaps", s.configmaps.len());
        m.cached("serviceaccounts", s.service_accounts.len());
        m.cached("services", s.services.len());
        m.cached("endpointslices", s.endpoint_slices.len());
        m.cached("ingresses", s.ingresses.len());
        m.cached("networkpolicies", s.network_policies.len());
        m.cached("persistentvolumeclaims", s.claims.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_changes_is_one_look() {
        let mut looks = 0;
        per_burst(futures::stream::iter(vec![(); 10_000]), || looks += 1).await;
        assert_eq!(looks, 10_000usize.div_ceil(SCOPE_BURST));

        // Changes that come one at a time are each looked at.
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut looks = 0;
        let feeding = async move {
            for _ in 0..3 {
                tx.unbounded_send(()).ok();
                tokio::task::yield_now().await;
            }
        };
        futures::join!(feeding, per_burst(rx, || looks += 1));
        assert_eq!(looks, 3);
    }
}
