//! Smoke tests of the test bed: the clusters are real Kubernetes (the release built by
//! scripts/build-control-plane), isolated from each
//! other, finish namespace deletion, schedule pods, and answer kubectl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{collections::BTreeMap, process::Command, time::Duration};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace, Node, Pod},
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use support::{eventually, unique};
use testbed::{self, Testbed};

async fn with_clusters<F, Fut>(body: F)
where
    F: FnOnce(&'static Testbed) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Three clusters as in the seed's reference topology; cluster 1 schedules pods.
    support::with_testbed("cluster-smoke", 3, 1, body).await;
}

async fn create_namespace(client: &Client, name: &str) -> Namespace {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap()
}

/// The release cluster `index` (0-based) must run ("v1.37.2"): the one scripts/test asked
/// for (`NSO_EXPECT_RELEASE`, `NSO_EXPECT_PEER_RELEASE` for clusters 2..n in a mixed run),
/// else the one its API server binary was built as.
fn built_release(index: usize) -> String {
    let asked = if index > 0 && testbed::peer_control_plane_binaries().is_some() {
        std::env::var("NSO_EXPECT_PEER_RELEASE")
    } else {
        std::env::var("NSO_EXPECT_RELEASE")
    };
    if let Ok(release) = asked.map(|r| r.trim().to_owned())
        && !release.is_empty()
    {
        return release;
    }
    let main = testbed::control_plane_binaries().unwrap();
    let dir = match testbed::peer_control_plane_binaries() {
        Some(peers) if index > 0 => peers,
        _ => main,
    };
    let out = Command::new(dir.join("kube-apiserver"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().trim_start_matches("Kubernetes ").to_owned()
}

#[tokio::test]
async fn every_cluster_runs_the_supported_release_asked_for() {
    with_clusters(|tb| async move {
        for (i, cluster) in tb.clusters().iter().enumerate() {
            let version = cluster
                .client()
                .await
                .unwrap()
                .apiserver_version()
                .await
                .unwrap();
            let built = built_release(i);
            assert_eq!(version.git_version, built, "{}", cluster.name());
            let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap();
            assert_eq!(version.major, "1");
            assert!(
                namespace_offloading::plumbing::preflight::SUPPORTED_MINORS.contains(&minor),
                "{} runs {}, outside the supported range",
                cluster.name(),
                version.git_version
            );
        }
    })
    .await;
}

#[tokio::test]
async fn clusters_are_isolated() {
    with_clusters(|tb| async move {
        let name = unique("isolated");
        let two = tb.cluster(2).client().await.unwrap();
        create_namespace(&two, &name).await;
        assert!(
            Api::<Namespace>::all(two)
                .get_opt(&name)
                .await
                .unwrap()
                .is_some(),
            "cluster-2 sees its own namespace"
        );
        for n in [1, 3] {
            let other = tb.cluster(n).client().await.unwrap();
            assert!(
                Api::<Namespace>::all(other)
                    .get_opt(&name)
                    .await
                    .unwrap()
                    .is_none(),
                "cluster-{n} must not see cluster-2's namespace {name}"
            );
        }
        // Distinct CAs: cluster-3's credentials are refused by cluster-2's API server.
        let mut crossed = kube::Config::new(tb.cluster(2).server().parse().unwrap());
        let three = kube::config::Kubeconfig::read_from(tb.cluster(3).kubeconfig()).unwrap();
        let three = kube::Config::from_custom_kubeconfig(three, &Default::default())
            .await
            .unwrap();
        crossed.root_cert = three.root_cert;
        crossed.auth_info = three.auth_info;
        let crossed = Client::try_from(crossed).unwrap();
        assert!(
            Api::<Namespace>::all(crossed)
                .list(&Default::default())
                .await
                .is_err(),
            "cluster-2 must not accept cluster-3's certificates"
        );
    })
    .await;
}

#[tokio::test]
async fn namespace_deletion_completes() {
    with_clusters(|tb| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let name = unique("doomed");
        create_namespace(&client, &name).await;
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "payload"},
            "data": {"key": "value"},
        }))
        .unwrap();
        Api::<ConfigMap>::namespaced(client.clone(), &name)
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
        let namespaces = Api::<Namespace>::all(client.clone());
        namespaces
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
        // Without the controller manager's namespace controller the namespace would stay
        // Terminating forever, held by its "kubernetes" finalizer.
        eventually(
            "the namespace and its ConfigMap to be gone",
            Duration::from_secs(60),
            || async {
                namespaces
                    .get_opt(&name)
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            },
        )
        .await;
        assert!(
            Api::<ConfigMap>::namespaced(client, &name)
                .get_opt("payload")
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn scheduler_binds_a_pod_to_a_ready_node() {
    with_clusters(|tb| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let node_name = unique("node");
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": node_name, "labels": {"testbed.smoke/node": node_name}},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "TestbedNode"}],
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            },
        }))
        .unwrap();
        let nodes = Api::<Node>::all(client.clone());
        let created = nodes.create(&PostParams::default(), &node).await.unwrap();
        let allocatable: BTreeMap<String, Quantity> = created.status.unwrap().allocatable.unwrap();
        assert_eq!(
            allocatable["pods"].0, "110",
            "Node status is stored on create"
        );

        let ns = unique("scheduling");
        create_namespace(&client, &ns).await;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "pinned"},
            "spec": {
                "nodeSelector": {"testbed.smoke/node": node_name},
                "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
            },
        }))
        .unwrap();
        let pods = Api::<Pod>::namespaced(client.clone(), &ns);
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let bound = eventually(
            "the scheduler to bind the pod",
            Duration::from_secs(60),
            || async {
                pods.get("pinned")
                    .await
                    .unwrap()
                    .spec
                    .and_then(|s| s.node_name)
            },
        )
        .await;
        assert_eq!(bound, node_name);

        Api::<Namespace>::all(client)
            .delete(&ns, &DeleteParams::default())
            .await
            .unwrap();
        nodes
            .delete(&node_name, &DeleteParams::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn kubectl_works_against_each_cluster() {
    with_clusters(|tb| async move {
        for (i, cluster) in tb.clusters().iter().enumerate() {
            let out = Command::new("kubectl")
                .args(["get", "namespaces", "-o", "name"])
                .env("KUBECONFIG", cluster.kubeconfig())
                .output()
                .expect("kubectl is installed");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "kubectl against {} failed: {}",
                cluster.name(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.lines().any(|l| l == "namespace/kube-system"),
                "{stdout}"
            );

            let out = Command::new("kubectl")
                .args(["version", "-o", "json"])
                .env("KUBECONFIG", cluster.kubeconfig())
                .output()
                .unwrap();
            let version: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let server = version["serverVersion"]["gitVersion"]
                .as_str()
                .unwrap_or("");
            assert_eq!(server, built_release(i), "kubectl sees server {server}");
        }
    })
    .await;
}
