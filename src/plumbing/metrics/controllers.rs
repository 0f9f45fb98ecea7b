//! Controller metrics: reconciles, errors by reason, reconcile duration, remote namespaces
//! by cluster and state, and which peerings are connected.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Instant,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::model::status::ClusterState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemoteNamespaceLabels {
    cluster_id: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConflictLabels {
    kind: &'static str,
    cluster_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KubeletCallLabels {
    call: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeeringLabels {
    remote_cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerWatchLabels {
    remote_cluster: String,
    kind: &'static str,
}

fn duration_histogram() -> Histogram {
    // 1 ms to about 33 s: a reconcile may wait on remote API servers (5 s timeout each).
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub(crate) struct ControllerMetrics {
    reconciles: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    remote_namespaces: Family<RemoteNamespaceLabels, Gauge>,
    peerings: Family<PeeringLabels, Gauge>,
    pods_breaking: Family<NamespaceLabels, Gauge>,
    pods_evicted: Counter,
    reflection_conflicts: Family<ConflictLabels, Counter>,
    kubelet_calls: Family<KubeletCallLabels, Counter>,
    leader: Gauge,
    peer_watches: Family<PeerWatchLabels, Gauge>,
    cached: Family<KindLabels, Gauge>,
    /// Per local namespace, the state of each cluster: the gauge is their count.
    states: Mutex<HashMap<String, BTreeMap<String, &'static str>>>,
}

/// Records one reconcile's duration when dropped.
pub(crate) struct Timer<'a> {
    metrics: &'a ControllerMetrics,
    controller: &'static str,
    started: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&ControllerLabels {
                controller: self.controller.into(),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl ControllerMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            remote_namespaces: Family::default(),
            peerings: Family::default(),
            pods_breaking: Family::default(),
            pods_evicted: Counter::default(),
            reflection_conflicts: Family::default(),
            kubelet_calls: Family::default(),
            leader: Gauge::default(),
            peer_watches: Family::default(),
            cached: Family::default(),
            states: Mutex::default(),
        };
        registry.register(
            "peer_watch_listed",
            "1 while a peer's watch has listed (since its last error), 0 while it fails or lists, by RemoteCluster and kind",
            m.peer_watches.clone(),
        );
        registry.register(
            "cached_objects",
            "Objects held by the local cluster's watches, by kind (what is reflected is kept only for offloaded namespaces)",
            m.cached.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and runs the controllers, else 0",
            m.leader.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles started, by controller",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by controller and reason",
            m.errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile took, by controller",
            m.duration.clone(),
        );
        registry.register(
            "remote_namespaces",
            "Remote namespaces by remote cluster and state (ready, pending, failed, not_selected)",
            m.remote_namespaces.clone(),
        );
        registry.register(
            "peering_connected",
            "1 while the RemoteCluster's API server answers, else 0",
            m.peerings.clone(),
        );
        registry.register(
            "pods_breaking_strategy",
            "Pods of an offloaded namespace that break its podOffloadingStrategy or clusterSelector and could not be recreated, by namespace",
            m.pods_breaking.clone(),
        );
        registry.register(
            "pods_evicted",
            "Pods evicted because they were created without their namespace's placement, so that their owner recreates them",
            m.pods_evicted.clone(),
        );
        registry.register(
            "reflection_conflicts",
            "Objects not reflected because a remote object of that name was not made by us, by kind and remote cluster",
            m.reflection_conflicts.clone(),
        );
        registry.register(
            "kubelet_calls",
            "Calls to the virtual nodes' kubelet API (logs, exec, attach, portforward, resource_metrics, stats_summary), by call and the HTTP status answered (101: a stream joined)",
            m.kubelet_calls.clone(),
        );
        Arc::new(m)
    }

    /// Counts one kubelet API call and its answer.
    pub(crate) fn kubelet_call(&self, call: &'static str, code: u16) {
        self.kubelet_calls
            .get_or_create(&KubeletCallLabels { call, code })
            .inc();
    }

    /// Counts an object left unreflected because its name is taken remotely.
    pub(crate) fn reflection_conflict(&self, kind: &'static str, cluster_id: &str) {
        self.reflection_conflicts
            .get_or_create(&ConflictLabels {
                kind,
                cluster_id: cluster_id.into(),
            })
            .inc();
    }

    /// Counts a reconcile and times it until the returned guard drops.
    pub(crate) fn reconcile(&self, controller: &'static str) -> Timer<'_> {
        self.reconciles
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .inc();
        Timer {
            metrics: self,
            controller,
            started: Instant::now(),
        }
    }

    pub(crate) fn error(&self, controller: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Records where each cluster stands for one namespace (empty: forget it).
    pub(crate) fn remote_namespaces(
        &self,
        namespace: &str,
        states: &BTreeMap<String, ClusterState>,
    ) {
        let Ok(mut all) = self.states.lock() else {
            return;
        };
        if states.is_empty() {
            all.remove(namespace);
        } else {
            let named = states
                .iter()
                .map(|(id, s)| {
                    let state = match s {
                        ClusterState::NotSelected => "not_selected",
                        ClusterState::Pending => "pending",
                        ClusterState::Ready => "ready",
                        ClusterState::Failed(_) => "failed",
                    };
                    (id.clone(), state)
                })
                .collect();
            all.insert(namespace.to_owned(), named);
        }
        let mut counts: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
        for per_cluster in all.values() {
            for (id, state) in per_cluster {
                *counts.entry((id.clone(), state)).or_default() += 1;
            }
        }
        self.remote_namespaces.clear();
        for ((cluster_id, state), n) in counts {
            self.remote_namespaces
                .get_or_create(&RemoteNamespaceLabels {
                    cluster_id,
                    state: state.into(),
                })
                .set(n);
        }
    }

    /// How many pods of `namespace` break its placement (`None`: the offloading is gone).
    pub(crate) fn pods_breaking(&self, namespace: &str, count: Option<usize>) {
        let labels = NamespaceLabels {
            namespace: namespace.into(),
        };
        match count {
            Some(n) => {
                self.pods_breaking
                    .get_or_create(&labels)
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            None => {
                self.pods_breaking.remove(&labels);
            }
        }
    }

    /// Whether a peer's watch of `kind` has listed.
    pub(crate) fn peer_watch(&self, remote_cluster: &str, kind: &'static str, listed: bool) {
        self.peer_watches
            .get_or_create(&PeerWatchLabels {
                remote_cluster: remote_cluster.into(),
                kind,
            })
            .set(i64::from(listed));
    }

    /// A peering gone: its watches' gauges go too.
    pub(crate) fn forget_peer_watches(&self, remote_cluster: &str, kinds: &[&'static str]) {
        for kind in kinds {
            self.peer_watches.remove(&PeerWatchLabels {
                remote_cluster: remote_cluster.into(),
                kind,
            });
        }
    }

    /// Whether this replica leads now.
    pub(crate) fn cached(&self, kind: &'static str, objects: usize) {
        self.cached
            .get_or_create(&KindLabels { kind })
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }

    pub(crate) fn leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub(crate) fn pod_evicted(&self) {
        self.pods_evicted.inc();
    }

    pub(crate) fn peering(&self, remote_cluster: &str, connected: Option<bool>) {
        let labels = PeeringLabels {
            remote_cluster: remote_cluster.into(),
        };
        match connected {
            Some(c) => {
                self.peerings.get_or_create(&labels).set(i64::from(c));
            }
            None => {
                self.peerings.remove(&labels);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_namespaces_are_counted_by_cluster_and_state() {
        let mut registry = Registry::with_prefix("namespace_offloading");
        let m = ControllerMetrics::register(&mut registry);
        let states = |pairs: &[(&str, ClusterState)]| -> BTreeMap<String, ClusterState> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), v.clone()))
                .collect()
        };
        m.remote_namespaces(
            "a",
            &states(&[("c2", ClusterState::Ready), ("c3", ClusterState::Ready)]),
        );
        m.remote_namespaces(
            "b",
            &states(&[
                ("c2", ClusterState::Ready),
                (
                    "c3",
                    ClusterState::failed(crate::model::reason::Reason::Unreachable, "y"),
                ),
            ]),
        );
        drop(m.reconcile("offloading"));
        m.peering("cluster-2", Some(true));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "namespace_offloading_remote_namespaces{cluster_id=\"c2\",state=\"ready\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "namespace_offloading_remote_namespaces{cluster_id=\"c3\",state=\"failed\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("namespace_offloading_reconciles_total{controller=\"offloading\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("namespace_offloading_peering_connected{remote_cluster=\"cluster-2\"} 1"),
            "{text}"
        );

        m.remote_namespaces("b", &BTreeMap::new());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("{cluster_id=\"c2\",state=\"ready\"} 1"),
            "{text}"
        );
        assert!(!text.contains("state=\"failed\""), "{text}");
    }
}
