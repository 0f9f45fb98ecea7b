//! `kubectl logs`, `logs -f`, `exec` and `port-forward` through a test-bed cluster's real
//! kube-apiserver, for a pod on a kwok node. The API server calls the node's kubelet API
//! (kwok, over HTTPS, presenting its kubelet client certificate) at the InternalIP and port
//! the node advertises: the same path the pods of a virtual kubelet take.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{Api, Client, api::PostParams};
use serde_json::json;
use testbed::{
    Cluster, KWOK_ANNOTATION, KWOK_CONTAINER_LOG, Testbed, TestbedConfig,
    kubectl::{Streaming, port_forward, run},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::{Instant, sleep, timeout},
};

/// How long one wait for the cluster may take.
const WAIT: Duration = Duration::from_secs(60);

/// Polls `check` every 200 ms until it returns `Some`, or panics after [`WAIT`].
async fn eventually<T, Fut>(what: &str, mut check: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn kubectl_logs_exec_and_port_forward_reach_kwok_pods() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info,kube=warn")
        .try_init();
    let binaries = testbed::control_plane_binaries().unwrap();
    assert!(
        binaries.join("kwok").is_file(),
        "no kwok in {}: run scripts/build-control-plane",
        binaries.display()
    );
    let root = testbed::run_dir(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("testbed"),
        "kubelet-api",
    );
    // One cluster; pods name their node, so no scheduler. Dropping `tb` stops every
    // component, at the end or while a failing assertion unwinds.
    let tb = Testbed::start(TestbedConfig::new(root, binaries, 1, 0))
        .await
        .unwrap();
    tb.report_failure(check_kubelet_api(&tb)).await;
}

async fn check_kubelet_api(tb: &Testbed) {
    let cluster = tb.cluster(1);
    let kubeconfig = cluster.kubeconfig();
    let client = cluster.client().await.unwrap();
    let ns = "kubelet-api";
    let pod = "kwok-pod";
    create_kwok_pod(cluster, &client, ns, "kwok-node", pod).await;

    // Logs: the whole file, its tail, then following it.
    let logs = run(kubeconfig, &["logs", "-n", ns, pod], None).await;
    assert_eq!(logs, KWOK_CONTAINER_LOG);
    let last = KWOK_CONTAINER_LOG.lines().last().unwrap();
    let tail = run(kubeconfig, &["logs", "-n", ns, pod, "--tail=1"], None).await;
    assert_eq!(tail.trim_end(), last);
    let mut follow = Streaming::spawn(kubeconfig, &["logs", "-f", "--tail=1", "-n", ns, pod]);
    follow.line(|l| l == last).await;
    sleep(Duration::from_secs(1)).await;
    assert!(
        follow.still_running(),
        "kubectl logs -f ended instead of following: {}",
        follow.stderr().await
    );
    follow.stop().await;

    // Exec: runs on the host (kwok has no containers), standard input included.
    let hi = run(
        kubeconfig,
        &["exec", "-n", ns, pod, "--", "echo", "hi"],
        None,
    )
    .await;
    assert_eq!(hi, "hi\n");
    let echoed = run(
        kubeconfig,
        &["exec", "-i", "-n", ns, pod, "--", "head", "-n", "1"],
        Some("through the kubelet API\n"),
    )
    .await;
    assert_eq!(echoed, "through the kubelet API\n");

    // Port-forward: kwok answers every port with an echo; one connection end to end.
    let (mut forward, port) = port_forward(kubeconfig, ns, pod, 8080).await;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let message = b"hello through port-forward\n";
    conn.write_all(message).await.unwrap();
    let mut back = vec![0; message.len()];
    timeout(WAIT, conn.read_exact(&mut back))
        .await
        .expect("the echo answered")
        .unwrap();
    assert_eq!(back, message);
    drop(conn);
    assert!(
        forward.still_running(),
        "kubectl port-forward ended: {}",
        forward.stderr().await
    );
    forward.stop().await;

    check_kubelet_client_certificate(tb, cluster).await;
}

/// A kwok node (no status: kwok's stage makes it Ready with its kubelet endpoint) and a pod
/// bound to it; returns once the node advertises kwok's port and the pod runs.
async fn create_kwok_pod(cluster: &Cluster, client: &Client, ns: &str, node: &str, pod: &str) {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let nodes = Api::<Node>::all(client.clone());
    let object: Node = serde_json::from_value(json!({
        "metadata": {"name": node, "annotations": {KWOK_ANNOTATION: "fake"}},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                   "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &object).await.unwrap();
    let kwok_port = i32::from(cluster.kwok_port().expect("kwok runs"));
    eventually(
        "the kwok node to advertise its kubelet endpoint",
        || async {
            let status = nodes.get(node).await.ok()?.status?;
            let port = status.daemon_endpoints?.kubelet_endpoint?.port;
            let internal_ip = status
                .addresses?
                .into_iter()
                .find(|a| a.type_ == "InternalIP")?;
            assert_eq!(port, kwok_port, "the node's kubelet port");
            assert_eq!(internal_ip.address, "127.0.0.1");
            Some(())
        },
    )
    .await;

    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let object: Pod = serde_json::from_value(json!({
        "metadata": {"name": pod},
        "spec": {"nodeName": node,
                 "containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &object).await.unwrap();
    eventually("the kwok pod to run", || async {
        let phase = pods.get(pod).await.ok()?.status?.phase?;
        (phase == "Running").then_some(())
    })
    .await;
}

/// The two ends of the API server's link to kubelets, checked with the cluster CA
/// ([`Cluster::kubelet_client_ca`]) as the only trust root:
/// - the client certificate kube-apiserver presents to kubelets verifies against it and
///   names `kube-apiserver-kubelet-client` in `system:masters`. kwok does not check client
///   certificates, so the API server itself (whose --client-ca-file is that CA) checks it:
///   it authenticates a kubectl that uses the certificate;
/// - kwok's kubelet API serves HTTPS with a certificate for 127.0.0.1 from that CA.
async fn check_kubelet_client_certificate(tb: &Testbed, cluster: &Cluster) {
    let apiserver = kubelet_client_kubeconfig(tb, cluster, &cluster.server(), "apiserver");
    let review = run(&apiserver, &["auth", "whoami", "-o", "json"], None).await;
    let review: serde_json::Value = serde_json::from_str(&review).unwrap();
    let user = &review["status"]["userInfo"];
    assert_eq!(
        user["username"], "kube-apiserver-kubelet-client",
        "{review}"
    );
    assert!(
        user["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == "system:masters")),
        "{review}"
    );

    let kwok = format!("https://127.0.0.1:{}", cluster.kwok_port().unwrap());
    let kwok = kubelet_client_kubeconfig(tb, cluster, &kwok, "kwok");
    let health = run(&kwok, &["get", "--raw", "/healthz"], None).await;
    assert_eq!(health.trim(), "ok");
}

/// A kubeconfig for `server` that trusts only the kubelet client CA and presents the API
/// server's kubelet client certificate.
fn kubelet_client_kubeconfig(tb: &Testbed, cluster: &Cluster, server: &str, tag: &str) -> PathBuf {
    let (cert, key) = cluster.kubelet_client_cert();
    let path = |p: &Path| p.display().to_string();
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": tag, "cluster": {
            "server": server,
            "certificate-authority": path(&cluster.kubelet_client_ca()),
        }}],
        "users": [{"name": "kubelet-client", "user": {
            "client-certificate": path(&cert),
            "client-key": path(&key),
        }}],
        "contexts": [{"name": tag, "context": {"cluster": tag, "user": "kubelet-client"}}],
        "current-context": tag,
    });
    let file = tb.root().join(format!("kubelet-client-{tag}.kubeconfig"));
    std::fs::write(&file, config.to_string()).unwrap();
    file
}
