//! The faults: what each does, and how a burst of them is drawn from the seeded RNG. A
//! burst's faults run at once (they overlap, as real ones do); the draw keeps them apart
//! where two would make each other meaningless (one fault per API server, one per
//! namespace, one manager kill).

use std::{collections::BTreeSet, fmt, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams},
};
use rand::{Rng, RngExt, seq::IndexedRandom};

use super::{
    LABELS, MANAGER_NAMESPACE, REMOTES, SoakError,
    app::{self, App, Offload, Strategy},
    call,
    invariants::ORIGIN_CLUSTER_LABEL,
    setup::Bed,
};

/// The quick-offloading label (the product's `liqo.io/enabled`).
const ENABLED_LABEL: &str = "liqo.io/enabled";
/// The ConfigMap where a cluster's manager publishes its identity and labels.
const IDENTITY_CONFIGMAP: &str = "namespace-offloading-identity";

/// At most this many namespaces at once.
const MAX_LIVE: usize = 7;

#[derive(Clone, Debug)]
pub enum Fault {
    /// SIGKILL cluster 1's leading replica (or the follower), start it again after a delay.
    KillManager {
        leader: bool,
        back_after: Duration,
    },
    /// SIGSTOP a remote API server, SIGCONT it after a while.
    FreezeApiserver {
        cluster: usize,
        for_: Duration,
    },
    /// Stop a remote API server and start it again.
    RestartApiserver {
        cluster: usize,
    },
    /// Delete twins in a remote cluster (all of them, or one).
    DeleteTwins {
        cluster: usize,
        namespace: String,
        all: bool,
    },
    Scale {
        namespace: String,
        replicas: u32,
    },
    RolloutRestart {
        namespace: String,
    },
    CreateNamespace {
        namespace: String,
        offload: Offload,
    },
    /// A new NamespaceOffloading (strategy or selector changed).
    Reselect {
        namespace: String,
        offload: Offload,
    },
    DeleteNamespace {
        namespace: String,
    },
    /// The quick-offloading label put on a namespace that has its own NamespaceOffloading,
    /// taken off again after a while: the user's configuration must stay as it is.
    RelabelNamespace {
        namespace: String,
        for_: Duration,
    },
    /// A remote cluster's labels changed (its region moved elsewhere) and put back after a
    /// while: the namespaces selecting it by region deselect it, then select it again.
    RelabelCluster {
        cluster: usize,
        for_: Duration,
    },
}

impl Fault {
    /// The kind, as the summary counts them.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::KillManager { leader: true, .. } => "manager-kill-leader",
            Self::KillManager { leader: false, .. } => "manager-kill-follower",
            Self::FreezeApiserver { .. } => "apiserver-freeze",
            Self::RestartApiserver { .. } => "apiserver-restart",
            Self::DeleteTwins { .. } => "twins-deleted",
            Self::Scale { .. } => "deployment-scaled",
            Self::RolloutRestart { .. } => "rollout-restart",
            Self::CreateNamespace { .. } => "namespace-created",
            Self::Reselect { .. } => "offloading-reselected",
            Self::DeleteNamespace { .. } => "namespace-deleted",
            Self::RelabelNamespace { .. } => "namespace-relabelled",
            Self::RelabelCluster { .. } => "cluster-relabelled",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KillManager { leader, back_after } => write!(
                f,
                "SIGKILL cluster 1's {} manager, restarted after {:.1} s",
                if *leader { "leading" } else { "following" },
                back_after.as_secs_f32()
            ),
            Self::FreezeApiserver { cluster, for_ } => write!(
                f,
                "freeze cluster-{cluster}'s API server for {:.1} s",
                for_.as_secs_f32()
            ),
            Self::RestartApiserver { cluster } => {
                write!(f, "restart cluster-{cluster}'s API server")
            }
            Self::DeleteTwins {
                cluster,
                namespace,
                all,
            } => write!(
                f,
                "delete {} of {namespace} in cluster-{cluster}",
                if *all { "every twin" } else { "one twin" }
            ),
            Self::Scale {
                namespace,
                replicas,
            } => {
                write!(f, "scale {namespace}/web to {replicas}")
            }
            Self::RolloutRestart { namespace } => write!(f, "rollout restart {namespace}/web"),
            Self::CreateNamespace { namespace, offload } => {
                write!(f, "create namespace {namespace} ({offload})")
            }
            Self::Reselect { namespace, offload } => {
                write!(f, "replace {namespace}'s NamespaceOffloading ({offload})")
            }
            Self::DeleteNamespace { namespace } => write!(f, "delete namespace {namespace}"),
            Self::RelabelNamespace { namespace, for_ } => write!(
                f,
                "label namespace {namespace} {ENABLED_LABEL}=true for {:.1} s",
                for_.as_secs_f32()
            ),
            Self::RelabelCluster { cluster, for_ } => write!(
                f,
                "move cluster-{cluster} to region=elsewhere for {:.1} s",
                for_.as_secs_f32()
            ),
        }
    }
}

/// The kinds a fault is drawn from, each with its weight: the faults of the platform
/// (managers, API servers, twins) come up more often than the users' changes.
#[derive(Clone, Copy)]
enum Kind {
    KillManager,
    Freeze,
    Restart,
    DeleteTwins,
    Scale,
    RolloutRestart,
    Create,
    Reselect,
    Delete,
    RelabelNamespace,
    RelabelCluster,
}

const WEIGHTS: [(Kind, u32); 11] = [
    (Kind::KillManager, 4),
    (Kind::Freeze, 3),
    (Kind::Restart, 3),
    (Kind::DeleteTwins, 3),
    (Kind::Scale, 2),
    (Kind::RolloutRestart, 2),
    (Kind::Create, 2),
    (Kind::Reselect, 2),
    (Kind::Delete, 2),
    (Kind::RelabelNamespace, 1),
    (Kind::RelabelCluster, 2),
];

fn kind(rng: &mut impl Rng) -> Kind {
    let total: u32 = WEIGHTS.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total);
    for (kind, weight) in WEIGHTS {
        if pick < weight {
            return kind;
        }
        pick -= weight;
    }
    Kind::Scale
}

/// What one burst may still touch: at most one manager kill, one fault per API server,
/// one per namespace.
#[derive(Default)]
struct Busy {
    manager: bool,
    clusters: BTreeSet<usize>,
    namespaces: BTreeSet<String>,
}

/// Draws a burst of 1 to 3 faults and updates `app` to what they will leave.
pub fn draw(rng: &mut impl Rng, app: &mut App) -> Vec<Fault> {
    let count = rng.random_range(1..=3);
    let mut burst = Vec::new();
    let mut busy = Busy::default();
    for _ in 0..20 {
        if burst.len() == count {
            break;
        }
        burst.extend(one(rng, app, &mut busy));
    }
    burst
}

/// One fault of a random kind, if one of that kind fits what the burst has left free.
fn one(rng: &mut impl Rng, app: &mut App, busy: &mut Busy) -> Option<Fault> {
    match kind(rng) {
        Kind::KillManager if !busy.manager => {
            busy.manager = true;
            Some(Fault::KillManager {
                leader: rng.random_bool(0.6),
                back_after: Duration::from_millis(rng.random_range(500..5000)),
            })
        }
        Kind::KillManager => None,
        Kind::Freeze => free_cluster(rng, &busy.clusters).map(|cluster| {
            busy.clusters.insert(cluster);
            Fault::FreezeApiserver {
                cluster,
                for_: Duration::from_millis(rng.random_range(2000..8000)),
            }
        }),
        Kind::Restart => free_cluster(rng, &busy.clusters).map(|cluster| {
            busy.clusters.insert(cluster);
            Fault::RestartApiserver { cluster }
        }),
        Kind::DeleteTwins => {
            let namespace = app_namespace(rng, app, &busy.namespaces, |o| {
                o.strategy != Strategy::Local
            })?;
            let offload = app.live.get(&namespace).copied()?;
            let cluster = *offload.selected().choose(rng)?;
            // Not beside a fault of that cluster's API server: the deletion would fail.
            if !busy.clusters.insert(cluster) {
                return None;
            }
            busy.namespaces.insert(namespace.clone());
            Some(Fault::DeleteTwins {
                cluster,
                namespace,
                all: rng.random_bool(0.5),
            })
        }
        Kind::Scale => {
            let namespace = app_namespace(rng, app, &busy.namespaces, |_| true)?;
            busy.namespaces.insert(namespace.clone());
            Some(Fault::Scale {
                namespace,
                replicas: rng.random_range(1..=4),
            })
        }
        Kind::RolloutRestart => {
            let namespace = app_namespace(rng, app, &busy.namespaces, |_| true)?;
            busy.namespaces.insert(namespace.clone());
            Some(Fault::RolloutRestart { namespace })
        }
        Kind::Create if app.live.len() < MAX_LIVE => {
            let namespace = app.new_name();
            let offload = random_offload(rng);
            app.live.insert(namespace.clone(), offload);
            busy.namespaces.insert(namespace.clone());
            Some(Fault::CreateNamespace { namespace, offload })
        }
        Kind::Create => None,
        Kind::Reselect => {
            let namespace = app_namespace(rng, app, &busy.namespaces, |_| true)?;
            let old = app.live.get(&namespace).copied()?;
            let offload = (0..10).map(|_| random_offload(rng)).find(|o| *o != old)?;
            app.live.insert(namespace.clone(), offload);
            busy.namespaces.insert(namespace.clone());
            Some(Fault::Reselect { namespace, offload })
        }
        Kind::RelabelNamespace => {
            let namespace = app_namespace(rng, app, &busy.namespaces, |_| true)?;
            busy.namespaces.insert(namespace.clone());
            Some(Fault::RelabelNamespace {
                namespace,
                for_: Duration::from_millis(rng.random_range(1000..5000)),
            })
        }
        Kind::RelabelCluster => free_cluster(rng, &busy.clusters).map(|cluster| {
            busy.clusters.insert(cluster);
            Fault::RelabelCluster {
                cluster,
                for_: Duration::from_millis(rng.random_range(2000..10000)),
            }
        }),
        // Only namespaces the soak created: the first ones keep every strategy present.
        Kind::Delete => {
            let namespace = app_namespace(rng, app, &busy.namespaces, |_| true)
                .filter(|n| App::created_here(n))?;
            app.live.remove(&namespace);
            app.deleted.push(namespace.clone());
            busy.namespaces.insert(namespace.clone());
            Some(Fault::DeleteNamespace { namespace })
        }
    }
}

fn free_cluster(rng: &mut impl Rng, busy: &BTreeSet<usize>) -> Option<usize> {
    let free: Vec<usize> = REMOTES.into_iter().filter(|c| !busy.contains(c)).collect();
    free.choose(rng).copied()
}

/// A live namespace the burst has not touched yet, whose offloading `fits`.
fn app_namespace(
    rng: &mut impl Rng,
    app: &App,
    busy: &BTreeSet<String>,
    fits: impl Fn(&Offload) -> bool,
) -> Option<String> {
    let free: Vec<&String> = app
        .live
        .iter()
        .filter(|(n, o)| !busy.contains(*n) && fits(o))
        .map(|(n, _)| n)
        .collect();
    free.choose(rng).map(|n| (*n).clone())
}

fn random_offload(rng: &mut impl Rng) -> Offload {
    Offload {
        strategy: Strategy::ALL
            .choose(rng)
            .copied()
            .unwrap_or(Strategy::LocalAndRemote),
        region: Offload::REGIONS.choose(rng).copied().flatten(),
    }
}

/// Injects one fault; returns once it is over (a frozen server thawed, a killed manager
/// running again).
pub async fn inject(bed: &Bed, fault: &Fault) -> Result<(), SoakError> {
    let failed = |e: SoakError| SoakError::Fault {
        fault: fault.to_string(),
        reason: e.to_string(),
    };
    let local = bed.tb.cluster(1).kubeconfig();
    match fault {
        Fault::KillManager { leader, back_after } => kill_manager(bed, *leader, *back_after)
            .await
            .map_err(failed),
        Fault::FreezeApiserver { cluster, for_ } => {
            bed.tb.cluster(*cluster).freeze_apiserver();
            tokio::time::sleep(*for_).await;
            bed.tb.cluster(*cluster).thaw_apiserver();
            Ok(())
        }
        Fault::RestartApiserver { cluster } => {
            let c = bed.tb.cluster(*cluster);
            c.stop_apiserver();
            c.restart_apiserver()
                .await
                .map_err(|e| failed(SoakError::Testbed(e)))
        }
        Fault::DeleteTwins {
            cluster,
            namespace,
            all,
        } => {
            // A connection the last API server restart left broken fails once: try again.
            super::cmd::retry(Duration::from_secs(15), || {
                delete_twins(bed, *cluster, namespace, *all)
            })
            .await
            .map_err(failed)
        }
        Fault::Scale {
            namespace,
            replicas,
        } => app::scale(local, namespace, *replicas)
            .await
            .map_err(failed),
        Fault::RolloutRestart { namespace } => {
            app::rollout_restart(local, namespace).await.map_err(failed)
        }
        Fault::CreateNamespace { namespace, offload } => app::create(local, namespace, *offload)
            .await
            .map_err(failed),
        Fault::Reselect { namespace, offload } => app::reselect(local, namespace, *offload)
            .await
            .map_err(failed),
        Fault::DeleteNamespace { namespace } => app::delete(local, namespace).await.map_err(failed),
        Fault::RelabelNamespace { namespace, for_ } => {
            let label = format!("{ENABLED_LABEL}=true");
            let unlabel = format!("{ENABLED_LABEL}-");
            let relabel = |change: &str| {
                let args = ["label", "namespace", namespace, change, "--overwrite"];
                let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
                async move {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    super::cmd::kubectl(local, &args, None).await.map(drop)
                }
            };
            relabel(&label).await.map_err(failed)?;
            tokio::time::sleep(*for_).await;
            relabel(&unlabel).await.map_err(failed)
        }
        Fault::RelabelCluster { cluster, for_ } => {
            let remote = bed.tb.cluster(*cluster).kubeconfig();
            let original = LABELS[*cluster - 1];
            let moved = original
                .split(',')
                .map(|kv| {
                    if kv.starts_with("region=") {
                        "region=elsewhere"
                    } else {
                        kv
                    }
                })
                .collect::<Vec<_>>()
                .join(",");
            cluster_labels(remote, &moved).await.map_err(failed)?;
            tokio::time::sleep(*for_).await;
            // Put back whatever happens meanwhile: the rest of the run expects the labels.
            super::cmd::retry(Duration::from_secs(60), || cluster_labels(remote, original))
                .await
                .map_err(failed)
        }
    }
}

/// Sets a remote cluster's labels (`k=v,...`) in the identity ConfigMap its manager
/// publishes, as an administrator relabelling the cluster would.
async fn cluster_labels(kubeconfig: &std::path::Path, labels: &str) -> Result<(), SoakError> {
    let map: serde_json::Map<String, serde_json::Value> = labels
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    let patch =
        serde_json::json!({"data": {"clusterLabels": serde_json::Value::Object(map).to_string()}});
    super::cmd::kubectl(
        kubeconfig,
        &[
            "-n",
            MANAGER_NAMESPACE,
            "patch",
            "configmap",
            IDENTITY_CONFIGMAP,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    )
    .await
    .map(drop)
}

async fn kill_manager(bed: &Bed, leader: bool, back_after: Duration) -> Result<(), SoakError> {
    let leading = bed.managers.leader(&bed.clients[0]).await?;
    // With no leader at the moment (a failover under way), replica a stands in for either.
    let index = match (leading, leader) {
        (Some(l), true) => l,
        (Some(l), false) => 1 - l,
        (None, _) => 0,
    };
    let name = bed.managers.kill(index).await?;
    println!("    killed {name}");
    tokio::time::sleep(back_after).await;
    bed.managers.restart(index).await?;
    println!("    {name} running again");
    Ok(())
}

async fn delete_twins(
    bed: &Bed,
    cluster: usize,
    namespace: &str,
    all: bool,
) -> Result<(), SoakError> {
    let remote = format!("{namespace}-{}", bed.ids[0]);
    let api = Api::<Pod>::namespaced(bed.clients[cluster - 1].clone(), &remote);
    let ours = ListParams::default().labels(&format!("{ORIGIN_CLUSTER_LABEL}={}", bed.ids[0]));
    let twins = call(format!("listing twins in {remote}"), api.list(&ours)).await?;
    let names: Vec<String> = twins.items.iter().map(ResourceExt::name_any).collect();
    let chosen: Vec<&String> = if all {
        names.iter().collect()
    } else {
        names.iter().take(1).collect()
    };
    for name in &chosen {
        call(
            format!("deleting twin {remote}/{name}"),
            api.delete(name, &DeleteParams::default()),
        )
        .await?;
    }
    println!(
        "    deleted {} twin(s) in cluster-{cluster}/{remote}: {chosen:?}",
        chosen.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    /// Every burst of a run drawn from `seed`, as printed.
    fn run(seed: u64, bursts: usize) -> Vec<Vec<String>> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut app = App::initial();
        (0..bursts)
            .map(|_| {
                draw(&mut rng, &mut app)
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_seed_replays_the_same_faults() {
        assert_eq!(run(7, 50), run(7, 50));
        assert_ne!(run(7, 50), run(8, 50));
    }

    #[test]
    fn a_burst_touches_each_api_server_namespace_and_manager_once() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut app = App::initial();
        for _ in 0..500 {
            let burst = draw(&mut rng, &mut app);
            assert!((1..=3).contains(&burst.len()), "{burst:?}");
            let mut clusters = BTreeSet::new();
            let mut namespaces = BTreeSet::new();
            let mut managers = 0;
            for fault in &burst {
                match fault {
                    Fault::KillManager { .. } => managers += 1,
                    Fault::FreezeApiserver { cluster, .. }
                    | Fault::RestartApiserver { cluster }
                    | Fault::RelabelCluster { cluster, .. } => {
                        assert!(clusters.insert(*cluster), "{burst:?}");
                    }
                    Fault::DeleteTwins {
                        cluster, namespace, ..
                    } => {
                        assert!(clusters.insert(*cluster), "{burst:?}");
                        assert!(namespaces.insert(namespace.clone()), "{burst:?}");
                    }
                    Fault::Scale { namespace, .. }
                    | Fault::RolloutRestart { namespace }
                    | Fault::CreateNamespace { namespace, .. }
                    | Fault::Reselect { namespace, .. }
                    | Fault::DeleteNamespace { namespace }
                    | Fault::RelabelNamespace { namespace, .. } => {
                        assert!(namespaces.insert(namespace.clone()), "{burst:?}");
                    }
                }
            }
            assert!(managers <= 1, "{burst:?}");
            assert!(app.live.len() <= MAX_LIVE);
        }
    }

    #[test]
    fn only_namespaces_the_soak_created_are_deleted() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut app = App::initial();
        for _ in 0..500 {
            draw(&mut rng, &mut app);
        }
        assert!(!app.deleted.is_empty());
        assert!(app.deleted.iter().all(|n| App::created_here(n)));
        for first in App::initial().live.keys() {
            assert!(app.live.contains_key(first), "{first} was deleted");
        }
    }
}
