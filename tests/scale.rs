//! Issue 9's scale figures, on two real clusters (kwok plays the kubelets): how long a
//! 100-replica Deployment on cluster 2's virtual node takes until every local pod is
//! Running, beside the same 100 pods created directly in cluster 2 in the same run; then the
//! manager's memory with 1,000 reflected pods. A measurement, not a timed test: ignored by
//! default, run by
//!   cargo test --test scale -- --ignored --nocapture
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Namespace, Node, Pod},
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{eventually, kubectl};

const WAIT: Duration = Duration::from_secs(600);

async fn worker(client: &Client, name: &str) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                     "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "5000"},
                   "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "5000"}},
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

async fn running(client: &Client, namespace: &str, wanted: usize) -> Option<()> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .ok()?
        .items;
    let n = pods
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count();
    (n >= wanted).then_some(())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_default()
}

fn deployment(namespace: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
    }))
    .unwrap()
}

#[tokio::test]
#[ignore = "a measurement: cargo test --test scale -- --ignored --nocapture"]
async fn offloaded_pods_at_scale() {
    support::with_testbed("scale", 2, 2, |tb| async move {
        let mut managers = Vec::new();
        for n in [1, 2] {
            let kc = tb.cluster(n).kubeconfig();
            support::install_crds(kc).unwrap();
            kubectl(kc, &["create", "namespace", "liqo"], None);
            managers.push(
                support::start_manager(
                    tb,
                    &format!("cluster-{n}-manager"),
                    kc,
                    n == 1,
                    &["--namespace=liqo".into(), "--cluster-labels=region=eu".into()],
                )
                .await
                .unwrap(),
            );
        }
        let local = tb.cluster(1).client().await.unwrap();
        let remote = tb.cluster(2).client().await.unwrap();
        worker(&remote, "cluster-2-worker").await;
        let identity = Api::<ConfigMap>::namespaced(remote.clone(), "liqo");
        eventually("cluster 2's identity", Duration::from_secs(60), || async {
            identity.get_opt("namespace-offloading-identity").await.ok()?
        })
        .await;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_namespace-offloading"))
            .args(["peer", "cluster-2", "--namespace", "liqo", "--resources", "cpu=1000,memory=4Ti,pods=5000"])
            .arg("--kubeconfig")
            .arg(tb.cluster(2).kubeconfig())
            .arg("--local-kubeconfig")
            .arg(tb.cluster(1).kubeconfig())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

        // Baseline: the same 100 pods created directly in cluster 2, with the same client.
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "baseline"}})).unwrap();
        Api::<Namespace>::all(remote.clone()).create(&PostParams::default(), &ns).await.unwrap();
        let began = Instant::now();
        Api::<Deployment>::namespaced(remote.clone(), "baseline")
            .create(&PostParams::default(), &deployment("baseline", 100))
            .await
            .unwrap();
        eventually("100 pods Running in cluster 2", WAIT, || running(&remote, "baseline", 100)).await;
        let baseline = began.elapsed();

        // Ours: a Deployment in an offloaded namespace (Remote), all 100 pods on the
        // virtual node, Running once their twins run.
        let manifest = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: offloaded\n---\napiVersion: offloading.liqo.io/v1alpha1\nkind: NamespaceOffloading\nmetadata:\n  name: offloading\n  namespace: offloaded\nspec:\n  podOffloadingStrategy: Remote\n";
        let (ok, _, err) = kubectl(tb.cluster(1).kubeconfig(), &["apply", "-f", "-"], Some(manifest));
        assert!(ok, "{err}");
        let nsos = Api::<k8s_openapi::api::core::v1::Namespace>::all(remote.clone());
        eventually("the remote namespace", Duration::from_secs(60), || async {
            let all = nsos.list(&ListParams::default().labels("offloading.liqo.io/origin-namespace=offloaded")).await.ok()?;
            (!all.items.is_empty()).then_some(())
        })
        .await;
        let began = Instant::now();
        let deployments = Api::<Deployment>::namespaced(local.clone(), "offloaded");
        deployments
            .create(&PostParams::default(), &deployment("offloaded", 100))
            .await
            .unwrap();
        eventually("100 local pods Running", WAIT, || running(&local, "offloaded", 100)).await;
        let ours = began.elapsed();
        let ratio = ours.as_secs_f64() / baseline.as_secs_f64();

        // Memory with 1,000 reflected pods.
        let pid = managers[0].process.pid();
        let rss_before = rss_kib(pid);
        deployments
            .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1000}})))
            .await
            .unwrap();
        let began = Instant::now();
        eventually("1,000 local pods Running", WAIT, || running(&local, "offloaded", 1000)).await;
        let thousand = began.elapsed();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss_after = rss_kib(pid);

        eprintln!("--- offloaded pods at scale (2 clusters, kwok kubelets, debug build of the manager)");
        eprintln!("100 pods created directly in cluster 2, all Running:  {:>7.2} s", baseline.as_secs_f64());
        eprintln!("100 offloaded pods (Deployment in cluster 1) Running: {:>7.2} s  ({ratio:.2}x the baseline; target <= 1.5x)", ours.as_secs_f64());
        eprintln!("scaled to 1,000 offloaded pods, all Running:          {:>7.2} s", thousand.as_secs_f64());
        eprintln!("manager RSS with 100 reflected pods:  {:>7.1} MiB", rss_before as f64 / 1024.0);
        eprintln!("manager RSS with 1,000 reflected pods: {:>7.1} MiB", rss_after as f64 / 1024.0);
    })
    .await;
}
