//! The scene, as `tests/support/topology.rs` sets it: three clusters (schedulers on all,
//! ServiceAccount admission on the remotes), the CRDs and namespace `liqo` in each, the
//! managers, clusters 2 and 3 peered from cluster 1, a kwok node per cluster, then the app.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use kube::{Api, Client, api::PostParams};
use serde_json::json;

use super::{
    MANAGER_NAMESPACE, REMOTES, SoakError,
    app::{self, App},
    call, cmd,
    managers::Managers,
};
use crate::{Testbed, TestbedConfig};

/// How long a start-up step may take on a loaded machine.
const STEP: Duration = Duration::from_secs(120);

/// Everything running: the clusters, a client and the ID of each, and the managers.
pub struct Bed {
    pub tb: Testbed,
    /// Index 0 is cluster 1.
    pub clients: Vec<Client>,
    pub ids: Vec<String>,
    pub managers: Managers,
}

/// Starts the three clusters under `root`.
pub async fn testbed(root: PathBuf) -> Result<Testbed, SoakError> {
    let binaries = crate::control_plane_binaries()?;
    let config = TestbedConfig::new(root, binaries, 3, 3).with_service_accounts_on_peers();
    Ok(Testbed::start(config).await?)
}

/// What [`topology`] starts beside the clusters.
pub struct Parts {
    pub clients: Vec<Client>,
    pub ids: Vec<String>,
    pub managers: Managers,
}

/// CRDs, namespaces, managers, peering and kwok nodes on a started test bed.
pub async fn topology(tb: &Testbed, binary: &Path) -> Result<Parts, SoakError> {
    let crds = cmd::product(binary, &["crd".to_owned()]).await?;
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for cluster in tb.clusters() {
        let kc = cluster.kubeconfig();
        cmd::kubectl(kc, &["apply", "-f", "-"], Some(&crds)).await?;
        cmd::kubectl(
            kc,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/namespaceoffloadings.offloading.liqo.io",
                "crd/remoteclusters.offloading.liqo.io",
            ],
            None,
        )
        .await?;
        cmd::kubectl(kc, &["create", "namespace", MANAGER_NAMESPACE], None).await?;
        let client = cluster.client().await?;
        let ks = call(
            "reading kube-system",
            Api::<Namespace>::all(client.clone()).get("kube-system"),
        )
        .await?;
        ids.push(ks.metadata.uid.unwrap_or_default());
        kwok_node(&client, cluster.name()).await?;
        clients.push(client);
    }
    let managers = Managers::start(binary, tb).await?;
    for n in REMOTES {
        identity(&clients[n - 1], n).await?;
        peer(binary, tb, n).await?;
    }
    for n in REMOTES {
        virtual_node(&clients[0], &ids[n - 1]).await?;
    }
    Ok(Parts {
        clients,
        ids,
        managers,
    })
}

/// Waits for cluster `n`'s identity ConfigMap, which its manager publishes.
async fn identity(client: &Client, n: usize) -> Result<(), SoakError> {
    let cms = Api::<ConfigMap>::namespaced(client.clone(), MANAGER_NAMESPACE);
    cmd::retry(STEP, || async {
        call(
            "reading the identity ConfigMap",
            cms.get_opt("namespace-offloading-identity"),
        )
        .await?
        .map(drop)
        .ok_or_else(|| SoakError::Setup(format!("cluster-{n} has published no identity")))
    })
    .await
}

async fn peer(binary: &Path, tb: &Testbed, n: usize) -> Result<(), SoakError> {
    let args: Vec<String> = vec![
        "peer".into(),
        format!("cluster-{n}"),
        "--namespace".into(),
        MANAGER_NAMESPACE.into(),
        "--resources".into(),
        "cpu=8,memory=16Gi,pods=110".into(),
        "--kubeconfig".into(),
        tb.cluster(n).kubeconfig().display().to_string(),
        "--local-kubeconfig".into(),
        tb.cluster(1).kubeconfig().display().to_string(),
    ];
    cmd::product(binary, &args).await.map(drop)
}

/// Waits for the virtual node `liqo-<id>` to be Ready in cluster 1.
async fn virtual_node(client: &Client, id: &str) -> Result<(), SoakError> {
    let nodes = Api::<Node>::all(client.clone());
    let name = format!("liqo-{id}");
    cmd::retry(STEP, || async {
        let node = call(format!("reading node {name}"), nodes.get_opt(&name)).await?;
        let ready = node
            .and_then(|n| n.status?.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            Ok(())
        } else {
            Err(SoakError::Setup(format!(
                "virtual node {name} is not Ready"
            )))
        }
    })
    .await
}

/// A node kwok plays the kubelet of: the pods bound to it run.
async fn kwok_node(client: &Client, cluster: &str) -> Result<(), SoakError> {
    let name = format!("{cluster}-worker");
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {crate::KWOK_ANNOTATION: "fake"},
                     "labels": {"kubernetes.io/hostname": name, "type": "kwok"}},
        "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "500"},
                   "capacity": {"cpu": "32", "memory": "128Gi", "pods": "500"}},
    }))
    .map_err(|e| SoakError::Setup(e.to_string()))?;
    call(
        format!("creating node {name}"),
        Api::<Node>::all(client.clone()).create(&PostParams::default(), &node),
    )
    .await
    .map(drop)
}

/// Creates the app's first namespaces; returns how long they took to be created.
pub async fn app(bed: &Bed, app: &App) -> Result<Duration, SoakError> {
    let started = Instant::now();
    let local = bed.tb.cluster(1).kubeconfig();
    let creations = app
        .live
        .iter()
        .map(|(namespace, offload)| app::create(local, namespace, *offload));
    futures::future::try_join_all(creations).await?;
    Ok(started.elapsed())
}
