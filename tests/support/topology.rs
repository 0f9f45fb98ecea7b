//! The seed's reference topology, shared by the suites that need it: three real clusters,
//! each running the manager with its own cluster labels; cluster 1 peered with clusters 2
//! and 3 through `namespace-offloading peer`. Clusters 2 and 3 run ServiceAccount
//! admission, as real clusters do: twins get the remote's own token injected there. Tests change shared peering state, so they
//! take turns (`SERIAL`).

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use namespace_offloading::model::api::NamespaceOffloading;
use serde_json::{Value, json};
use testbed::{Process, Testbed};
use tokio::sync::OnceCell;

use super::{eventually, kubectl};

/// Cluster labels chosen at installation, as in the seed's reference topology.
pub const LABELS: [&str; 3] = ["", "region=eu,provider=azure", "region=us,provider=aws"];
pub const WAIT: Duration = Duration::from_secs(60);
/// How soon a watched change must arrive: under half the 10 s peering heartbeat.
pub const EVENT: Duration = Duration::from_secs(4);

pub struct Topology {
    /// Cluster IDs (kube-system UIDs) of clusters 1, 2, 3.
    pub ids: Vec<String>,
    /// Admin (metrics) ports of the managers of clusters 1, 2, 3.
    pub admin_ports: Mutex<Vec<u16>>,
    /// Webhook ports of the managers of clusters 1, 2, 3.
    pub webhook_ports: Mutex<Vec<u16>>,
    pub managers: Mutex<Vec<Process>>,
}

pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn with_topology<F, Fut>(body: F)
where
    F: FnOnce(&'static Testbed, &'static Topology) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    static TOPOLOGY: OnceCell<Result<Topology, String>> = OnceCell::const_new();
    super::with_testbed_of(env!("CARGO_CRATE_NAME"), 3, 3, true, |tb| async move {
        let topology = TOPOLOGY.get_or_init(|| set_up(tb)).await;
        let _turn = SERIAL.lock().await;
        match topology {
            Ok(t) => body(tb, t).await,
            Err(e) => panic!("cannot set up the topology: {e}"),
        }
    })
    .await;
}

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_namespace-offloading"))
}

pub fn peer(tb: &Testbed, n: usize) -> Result<(), String> {
    let out = std::process::Command::new(bin())
        .args([
            "peer",
            &format!("cluster-{n}"),
            "--namespace",
            "liqo",
            "--resources",
            "cpu=8,memory=16Gi,pods=110",
        ])
        .arg("--kubeconfig")
        .arg(tb.cluster(n).kubeconfig())
        .arg("--local-kubeconfig")
        .arg(tb.cluster(1).kubeconfig())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "peer cluster-{n}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub fn unpeer(tb: &Testbed, n: usize) {
    let out = std::process::Command::new(bin())
        .args([
            "unpeer",
            &format!("cluster-{n}"),
            "--namespace",
            "liqo",
            "--local-kubeconfig",
        ])
        .arg(tb.cluster(1).kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub async fn set_up(tb: &'static Testbed) -> Result<Topology, String> {
    let started = Instant::now();
    let mut managers = Vec::new();
    let mut ids = Vec::new();
    let mut admin_ports = Vec::new();
    let mut webhook_ports = Vec::new();
    for (i, cluster) in tb.clusters().iter().enumerate() {
        let kc = cluster.kubeconfig();
        super::install_crds(kc)?;
        kubectl(kc, &["create", "namespace", "liqo"], None);
        // What an install creates besides: the per-pod opt-in's RuntimeClass.
        kubectl(
            kc,
            &[
                "apply",
                "-f",
                concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/runtimeclass.yaml"),
            ],
            None,
        );
        kubectl(
            kc,
            &[
                "apply",
                "-f",
                concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/storageclass.yaml"),
            ],
            None,
        );
        let client = cluster.client().await.map_err(|e| e.to_string())?;
        let ks = Api::<Namespace>::all(client)
            .get("kube-system")
            .await
            .map_err(|e| e.to_string())?;
        ids.push(ks.metadata.uid.unwrap());
        let manager = start_manager(tb, i + 1).await?;
        admin_ports.push(manager.admin_port);
        webhook_ports.push(manager.webhook_port);
        managers.push(manager.process);
    }
    // Each remote publishes its identity; then cluster 1 peers with both.
    for n in [2, 3] {
        let client = tb.cluster(n).client().await.map_err(|e| e.to_string())?;
        let cms = Api::<ConfigMap>::namespaced(client, "liqo");
        eventually("the identity ConfigMap", WAIT, || async {
            cms.get_opt("namespace-offloading-identity")
                .await
                .ok()
                .flatten()
                .map(|_| ())
        })
        .await;
        peer(tb, n)?;
    }
    let one = tb.cluster(1).client().await.map_err(|e| e.to_string())?;
    for n in [2, 3] {
        virtual_node(&one, &ids[n - 1]).await;
    }
    eprintln!("topology ready in {:.1} s", started.elapsed().as_secs_f32());
    Ok(Topology {
        ids,
        admin_ports: Mutex::new(admin_ports),
        webhook_ports: Mutex::new(webhook_ports),
        managers: Mutex::new(managers),
    })
}

/// Waits for an event with `reason` about the object named `regarding`, stored in
/// `namespace` (events about cluster-scoped objects go to `default`).
pub async fn event(
    client: &Client,
    namespace: &str,
    reason: &str,
    regarding: &str,
) -> k8s_openapi::api::events::v1::Event {
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), namespace);
    eventually(
        &format!("a {reason} event about {regarding}"),
        WAIT,
        || async {
            let list = events.list(&Default::default()).await.unwrap();
            list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
            })
        },
    )
    .await
}

/// Lets a frozen cluster answer again however the test ends, for the tests after it.
pub struct Thaw(pub &'static Testbed, pub usize);

impl Drop for Thaw {
    fn drop(&mut self) {
        self.0.cluster(self.1).thaw_apiserver();
    }
}

/// Starts cluster `n`'s manager with its labels; only cluster 1 (which offloads here)
/// registers its webhooks.
pub async fn start_manager(tb: &Testbed, n: usize) -> Result<super::Manager, String> {
    start_manager_with(tb, n, &[]).await
}

/// [`start_manager`] with more flags.
pub async fn start_manager_with(
    tb: &Testbed,
    n: usize,
    more: &[&str],
) -> Result<super::Manager, String> {
    let cluster = tb.cluster(n);
    let mut args = vec![
        "--namespace=liqo".to_owned(),
        format!("--cluster-labels={}", LABELS[n - 1]),
    ];
    args.extend(more.iter().map(|a| (*a).to_owned()));
    super::start_manager(
        tb,
        &format!("{}-manager", cluster.name()),
        cluster.kubeconfig(),
        n == 1,
        &args,
    )
    .await
}

/// Replaces cluster `n`'s manager by one started with `more` flags (none: the default).
pub async fn restart_manager(tb: &Testbed, t: &Topology, n: usize, more: &[&str]) {
    t.managers.lock().unwrap()[n - 1].stop();
    let manager = start_manager_with(tb, n, more).await.unwrap();
    t.admin_ports.lock().unwrap()[n - 1] = manager.admin_port;
    t.webhook_ports.lock().unwrap()[n - 1] = manager.webhook_port;
    t.managers.lock().unwrap()[n - 1] = manager.process;
}

/// Waits for the virtual node of a cluster to be Ready; returns its labels.
pub async fn virtual_node(client: &Client, id: &str) -> BTreeMap<String, String> {
    let nodes = Api::<Node>::all(client.clone());
    let name = format!("liqo-{id}");
    eventually(
        &format!("virtual node {name} to be Ready"),
        WAIT,
        || async {
            let node = nodes.get_opt(&name).await.ok().flatten()?;
            let ready = node
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then(|| node.metadata.labels.unwrap_or_default())
        },
    )
    .await
}

pub async fn create_namespace(client: &Client, name: &str, labels: Value) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

pub fn apply_offloading(tb: &Testbed, namespace: &str, spec: &str) {
    let manifest = format!(
        "apiVersion: offloading.liqo.io/v1alpha1\nkind: NamespaceOffloading\nmetadata:\n  name: offloading\n  namespace: {namespace}\nspec:\n{spec}"
    );
    let (ok, _, err) = kubectl(
        tb.cluster(1).kubeconfig(),
        &["apply", "-f", "-"],
        Some(&manifest),
    );
    assert!(ok, "{err}");
}

/// Waits for the phase and returns the status.
pub async fn phase(client: &Client, namespace: &str, wanted: &str) -> Value {
    let api = Api::<NamespaceOffloading>::namespaced(client.clone(), namespace);
    eventually(&format!("phase {wanted} in {namespace}"), WAIT, || async {
        let nso = api.get_opt("offloading").await.ok().flatten()?;
        let status = serde_json::to_value(nso.status?).ok()?;
        (status["offloadingPhase"] == wanted).then_some(status)
    })
    .await
}

pub fn condition<'a>(status: &'a Value, id: &str, type_: &str) -> Option<&'a Value> {
    status["remoteNamespacesConditions"][id]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

pub async fn remote_namespace(tb: &Testbed, n: usize, name: &str) -> Option<Namespace> {
    let client = tb.cluster(n).client().await.unwrap();
    Api::<Namespace>::all(client).get_opt(name).await.unwrap()
}

/// Ends a test's offloading the third way (deleting the local namespace), which also cleans up.
pub async fn delete_namespace(client: &Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

pub async fn gone(tb: &Testbed, n: usize, name: &str) {
    let client = tb.cluster(n).client().await.unwrap();
    let api = Api::<Namespace>::all(client);
    eventually(
        &format!("namespace {name} to be gone from cluster-{n}"),
        WAIT,
        || async { api.get_opt(name).await.unwrap().is_none().then_some(()) },
    )
    .await;
}

/// Creates namespace `ns` offloaded with `podOffloadingStrategy: Remote` to cluster 2
/// only (region=eu), and waits until it is Ready.
pub async fn offload_remotely_to_eu(tb: &Testbed, client: &Client, ns: &str) {
    create_namespace(client, ns, json!({})).await;
    apply_offloading(
        tb,
        ns,
        "  podOffloadingStrategy: Remote\n  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - {key: region, operator: In, values: [eu]}\n",
    );
    phase(client, ns, "Ready").await;
}

/// A kwok-managed node in cluster `n`: kwok plays its kubelet, so pods bound to it run.
pub async fn kwok_node(tb: &Testbed, n: usize) -> String {
    let client = tb.cluster(n).client().await.unwrap();
    let name = format!("cluster-{n}-worker");
    let nodes = Api::<Node>::all(client);
    if nodes.get_opt(&name).await.unwrap().is_none() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"kubernetes.io/hostname": name, "type": "kwok"}},
            "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "500"},
                       "capacity": {"cpu": "32", "memory": "128Gi", "pods": "500"}},
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    name
}

pub fn bare_pod(name: &str, extra: Value) -> k8s_openapi::api::core::v1::Pod {
    let mut pod = json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}],
                 "terminationGracePeriodSeconds": 5},
    });
    if let (Some(spec), Some(extra)) = (pod["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(pod).unwrap()
}
