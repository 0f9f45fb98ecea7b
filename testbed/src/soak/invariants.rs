//! What must hold once the product has reconverged after a burst of faults. Each check
//! looks at one subject (a namespace, a remote cluster's twin namespace, a log) and says
//! what is wrong, in words a person can act on.

use std::{
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Pod},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};

use super::{
    REMOTES, SoakError,
    app::{App, DEPLOYMENT, Offload, Strategy},
    call,
    foreign::{self, Snapshot},
};

/// The annotation on a remote namespace naming the cluster that owns it.
pub const REMOTE_NAMESPACE_ANNOTATION: &str = "liqo.io/remote-namespace";
/// The label on every twin naming its origin cluster.
pub const ORIGIN_CLUSTER_LABEL: &str = "offloading.liqo.io/origin-cluster-id";
/// The annotation on every twin naming its local pod's uid.
pub const ORIGIN_POD_UID_ANNOTATION: &str = "offloading.liqo.io/origin-pod-uid";

/// One invariant on one subject, and what is broken if anything is.
#[derive(Clone, Debug)]
pub struct Check {
    pub invariant: &'static str,
    pub subject: String,
    pub broken: Option<String>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.broken {
            None => write!(f, "{} [{}]: holds", self.invariant, self.subject),
            Some(why) => write!(f, "{} [{}]: BROKEN: {why}", self.invariant, self.subject),
        }
    }
}

/// What the checks read: a client per cluster (index 0 is cluster 1), cluster IDs, the app
/// as the soak expects it, the foreign snapshot and the managers' logs.
pub struct World<'a> {
    pub clients: &'a [Client],
    pub ids: &'a [String],
    pub app: &'a App,
    pub snapshot: &'a Snapshot,
    pub logs: Vec<PathBuf>,
}

impl World<'_> {
    fn local(&self) -> &Client {
        &self.clients[0]
    }

    /// The name of cluster `n`'s virtual node in cluster 1.
    fn virtual_node(&self, n: usize) -> String {
        format!("liqo-{}", self.ids[n - 1])
    }

    /// The remote namespace of `namespace` (DefaultName: `<namespace>-<cluster 1's ID>`).
    fn remote_namespace(&self, namespace: &str) -> String {
        format!("{namespace}-{}", self.ids[0])
    }

    /// Which remote cluster a node stands for, if it is a virtual node.
    fn remote_of(&self, node: &str) -> Option<usize> {
        REMOTES.into_iter().find(|&n| self.virtual_node(n) == node)
    }
}

/// Every invariant on every subject.
pub async fn check_all(world: &World<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    for (namespace, offload) in &world.app.live {
        checks.push(deployment_available(world, namespace).await);
        checks.push(offloading_ready(world, namespace).await);
        checks.push(placement(world, namespace, *offload).await);
        for n in REMOTES {
            checks.push(remote_namespace(world, namespace, *offload, n).await);
            checks.push(twins_match(world, namespace, n).await);
        }
    }
    for namespace in &world.app.deleted {
        checks.push(deleted_gone(world, namespace).await);
    }
    for n in REMOTES {
        checks.push(foreign_untouched(world, n).await);
    }
    for log in &world.logs {
        checks.push(no_panic(log));
    }
    checks
}

fn verdict(invariant: &'static str, subject: String, result: Result<(), String>) -> Check {
    Check {
        invariant,
        subject,
        broken: result.err(),
    }
}

fn text(e: SoakError) -> String {
    e.to_string()
}

async fn deployment_available(world: &World<'_>, namespace: &str) -> Check {
    let result = async {
        let api = Api::<Deployment>::namespaced(world.local().clone(), namespace);
        let d = call(format!("reading {namespace}/{DEPLOYMENT}"), api.get_opt(DEPLOYMENT))
            .await
            .map_err(text)?
            .ok_or("the Deployment is missing")?;
        let wanted = d.spec.replicas.unwrap_or(1);
        let status = d.status.unwrap_or_default();
        let observed = status.observed_generation.unwrap_or(0);
        let generation = d.metadata.generation.unwrap_or(0);
        let (replicas, updated, available) = (
            status.replicas.unwrap_or(0),
            status.updated_replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
        );
        if observed >= generation && replicas == wanted && updated == wanted && available == wanted
        {
            Ok(())
        } else {
            Err(format!(
                "wanted {wanted} replicas: {replicas} exist, {updated} updated, {available} available (generation {generation}, observed {observed})"
            ))
        }
    }
    .await;
    verdict(
        "deployment-available",
        format!("{namespace}/{DEPLOYMENT}"),
        result,
    )
}

fn offloading_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("offloading.liqo.io", "v1alpha1", "NamespaceOffloading");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "namespaceoffloadings");
    Api::namespaced_with(client.clone(), namespace, &resource)
}

async fn offloading_ready(world: &World<'_>, namespace: &str) -> Check {
    let result = async {
        let api = offloading_api(world.local(), namespace);
        let nso = call(
            format!("reading {namespace}/offloading"),
            api.get_opt("offloading"),
        )
        .await
        .map_err(text)?
        .ok_or("the NamespaceOffloading is missing")?;
        let status = &nso.data["status"];
        if status["offloadingPhase"] == "Ready" {
            Ok(())
        } else {
            Err(format!(
                "offloadingPhase {}; status: {status}",
                status["offloadingPhase"]
            ))
        }
    }
    .await;
    verdict(
        "offloading-ready",
        format!("{namespace}/offloading"),
        result,
    )
}

async fn local_pods(world: &World<'_>, namespace: &str) -> Result<Vec<Pod>, String> {
    let api = Api::<Pod>::namespaced(world.local().clone(), namespace);
    call(
        format!("listing pods in {namespace}"),
        api.list(&ListParams::default()),
    )
    .await
    .map(|l| l.items)
    .map_err(text)
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

async fn placement(world: &World<'_>, namespace: &str, offload: Offload) -> Check {
    let result = async {
        let pods = local_pods(world, namespace).await?;
        let selected = offload.selected();
        let mut wrong = Vec::new();
        for pod in pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let name = pod.name_any();
            let Some(node) = node_of(pod) else {
                wrong.push(format!("{name} is not scheduled"));
                continue;
            };
            let remote = world.remote_of(node);
            let fine = match (offload.strategy, remote) {
                (Strategy::Local, remote) => remote.is_none(),
                (Strategy::Remote, Some(n)) | (Strategy::LocalAndRemote, Some(n)) => {
                    selected.contains(&n)
                }
                (Strategy::Remote, None) => false,
                (Strategy::LocalAndRemote, None) => true,
            };
            if !fine {
                wrong.push(format!("{name} on {node}"));
            }
        }
        let stuck: Vec<String> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .map(|p| format!("{} (on {:?})", p.name_any(), node_of(p)))
            .collect();
        if !stuck.is_empty() {
            wrong.push(format!("still being deleted: {}", stuck.join(", ")));
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{offload} (selects clusters {selected:?}): {}",
                wrong.join("; ")
            ))
        }
    }
    .await;
    verdict("placement", namespace.to_owned(), result)
}

async fn remote_namespace(world: &World<'_>, namespace: &str, offload: Offload, n: usize) -> Check {
    let remote = world.remote_namespace(namespace);
    let result = async {
        let api = Api::<Namespace>::all(world.clients[n - 1].clone());
        let found = call(format!("reading namespace {remote}"), api.get_opt(&remote))
            .await
            .map_err(text)?;
        let selected = offload.selected().contains(&n);
        match (selected, found) {
            (true, None) => Err("missing, though the cluster is selected".to_owned()),
            (true, Some(ns)) => {
                let owner = ns.annotations().get(REMOTE_NAMESPACE_ANNOTATION);
                if owner != Some(&world.ids[0]) {
                    Err(format!("not ours: {REMOTE_NAMESPACE_ANNOTATION}={owner:?}"))
                } else if ns.metadata.deletion_timestamp.is_some() {
                    Err("being deleted, though the cluster is selected".to_owned())
                } else {
                    Ok(())
                }
            }
            (false, None) => Ok(()),
            (false, Some(_)) => Err("exists, though the cluster is not selected".to_owned()),
        }
    }
    .await;
    verdict("remote-namespace", format!("cluster-{n}/{remote}"), result)
}

/// (name, uid) of every local pod bound to cluster `n`'s virtual node.
async fn bound_to(
    world: &World<'_>,
    namespace: &str,
    n: usize,
) -> Result<BTreeSet<(String, String)>, String> {
    let node = world.virtual_node(n);
    Ok(local_pods(world, namespace)
        .await?
        .iter()
        .filter(|p| node_of(p) == Some(node.as_str()))
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect())
}

/// (name, origin pod uid) of every twin in cluster `n`'s remote namespace.
async fn twins(
    world: &World<'_>,
    namespace: &str,
    n: usize,
) -> Result<BTreeSet<(String, String)>, String> {
    let remote = world.remote_namespace(namespace);
    let api = Api::<Pod>::namespaced(world.clients[n - 1].clone(), &remote);
    let ours = ListParams::default().labels(&format!("{ORIGIN_CLUSTER_LABEL}={}", world.ids[0]));
    let list = call(
        format!("listing twins in cluster-{n}/{remote}"),
        api.list(&ours),
    )
    .await
    .map_err(text)?;
    Ok(list
        .items
        .iter()
        .map(|p| {
            let uid = p.annotations().get(ORIGIN_POD_UID_ANNOTATION).cloned();
            (p.name_any(), uid.unwrap_or_default())
        })
        .collect())
}

async fn twins_match(world: &World<'_>, namespace: &str, n: usize) -> Check {
    let result = async {
        let local = bound_to(world, namespace, n).await?;
        let remote = twins(world, namespace, n).await?;
        if local == remote {
            return Ok(());
        }
        let names = |s: BTreeSet<&(String, String)>| -> Vec<String> {
            s.iter()
                .map(|(name, uid)| format!("{name} (uid {uid})"))
                .collect()
        };
        Err(format!(
            "local pods on {} without a twin: {:?}; twins without such a local pod: {:?}",
            world.virtual_node(n),
            names(local.difference(&remote).collect()),
            names(remote.difference(&local).collect()),
        ))
    }
    .await;
    verdict("twins-match", format!("{namespace} -> cluster-{n}"), result)
}

async fn deleted_gone(world: &World<'_>, namespace: &str) -> Check {
    let result = async {
        let mut left = Vec::new();
        let local = Api::<Namespace>::all(world.local().clone());
        if call(
            format!("reading namespace {namespace}"),
            local.get_opt(namespace),
        )
        .await
        .map_err(text)?
        .is_some()
        {
            left.push(format!("cluster-1/{namespace}"));
        }
        let remote = world.remote_namespace(namespace);
        for n in REMOTES {
            let api = Api::<Namespace>::all(world.clients[n - 1].clone());
            if call(format!("reading namespace {remote}"), api.get_opt(&remote))
                .await
                .map_err(text)?
                .is_some()
            {
                left.push(format!("cluster-{n}/{remote}"));
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still there: {}", left.join(", ")))
        }
    }
    .await;
    verdict("deleted-gone", namespace.to_owned(), result)
}

async fn foreign_untouched(world: &World<'_>, n: usize) -> Check {
    let result = async {
        let client = &world.clients[n - 1];
        let mut wrong = match world.snapshot.objects.get(&n) {
            Some(before) => {
                foreign::differences(before, &foreign::list(client).await.map_err(text)?)
            }
            None => vec!["no snapshot".to_owned()],
        };
        let before = world
            .snapshot
            .namespaces
            .get(&n)
            .cloned()
            .unwrap_or_default();
        let ours: BTreeSet<String> = world
            .app
            .live
            .keys()
            .chain(&world.app.deleted)
            .map(|ns| world.remote_namespace(ns))
            .collect();
        for ns in foreign::namespaces(client).await.map_err(text)? {
            if !before.contains(&ns) && !ours.contains(&ns) {
                wrong.push(format!("namespace {ns} appeared, not one of ours"));
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    }
    .await;
    verdict("foreign-untouched", format!("cluster-{n}"), result)
}

/// The log's lines that report a panic.
pub fn panics(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("panicked at"))
        .map(str::to_owned)
        .collect()
}

fn no_panic(log: &Path) -> Check {
    let found = panics(log);
    let result = if found.is_empty() {
        Ok(())
    } else {
        Err(found.join("\n"))
    };
    let subject = log
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    verdict("no-panic", subject, result)
}
