//! Shared set-up for the integration tests: one test bed per test binary, started on first
//! use and stopped when the binary exits (the processes die with it; see testbed::process).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod topology;

use std::{future::Future, path::Path, time::Duration};

use testbed::{self, Testbed, TestbedConfig};

use tokio::sync::OnceCell;

/// Starts (once) `clusters` clusters, the first `schedulers` of them with a scheduler, and
/// runs `body` against them; on failure the components' log tails are printed.
pub async fn with_testbed<F, Fut>(tag: &str, clusters: usize, schedulers: usize, body: F)
where
    F: FnOnce(&'static Testbed) -> Fut,
    Fut: Future<Output = ()>,
{
    with_testbed_of(tag, clusters, schedulers, false, body).await;
}

/// [`with_testbed`], clusters 2.. running ServiceAccount admission when
/// `service_accounts_on_peers` (`TestbedConfig::with_service_accounts_on_peers`).
pub async fn with_testbed_of<F, Fut>(
    tag: &str,
    clusters: usize,
    schedulers: usize,
    service_accounts_on_peers: bool,
    body: F,
) where
    F: FnOnce(&'static Testbed) -> Fut,
    Fut: Future<Output = ()>,
{
    static TESTBED: OnceCell<Result<Testbed, String>> = OnceCell::const_new();
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn,kube_client=off,hyper=warn".into()),
        )
        .try_init();
    let testbed = TESTBED
        .get_or_init(|| async {
            let binaries = testbed::control_plane_binaries().map_err(|e| e.to_string())?;
            let root =
                testbed::run_dir(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("testbed"), tag);
            let mut config = TestbedConfig::new(root, binaries, clusters, schedulers);
            if service_accounts_on_peers {
                config = config.with_service_accounts_on_peers();
            }
            if let Some(peers) = testbed::peer_control_plane_binaries() {
                config = config.with_peer_binaries(peers);
            }
            let tb = Testbed::start(config).await.map_err(|e| e.to_string())?;
            let mut versions = Vec::new();
            for cluster in tb.clusters() {
                let version = match cluster.client().await {
                    Ok(c) => c
                        .apiserver_version()
                        .await
                        .map(|v| v.git_version)
                        .unwrap_or_else(|e| e.to_string()),
                    Err(e) => e.to_string(),
                };
                versions.push(format!("{} {version}", cluster.name()));
            }
            eprintln!(
                "test bed '{tag}': {clusters} clusters ({}) ready in {:.1} s under {}",
                versions.join(", "),
                tb.started_in().as_secs_f32(),
                tb.root().display()
            );
            Ok(tb)
        })
        .await;
    match testbed {
        Ok(tb) => tb.report_failure(body(tb)).await,
        Err(e) => panic!("cannot start the test bed: {e}"),
    }
}

/// A name unique within this test run, for namespaces and other objects.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kubectl` against a cluster, with optional standard input; returns (success, stdout, stderr).
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::{
        io::Write,
        process::{Command, Stdio},
    };
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is installed");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A plain HTTP/1.0 GET on 127.0.0.1; returns (status code, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Applies `manifests/crd.yaml` to a cluster and waits until the CRDs are established.
pub fn install_crds(kubeconfig: &Path) -> Result<(), String> {
    let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/crd.yaml");
    let (ok, _, err) = kubectl(
        kubeconfig,
        &["apply", "-f", &crd.display().to_string()],
        None,
    );
    if !ok {
        return Err(format!("kubectl apply of manifests/crd.yaml failed: {err}"));
    }
    let (ok, _, err) = kubectl(
        kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/namespaceoffloadings.offloading.liqo.io",
            "crd/remoteclusters.offloading.liqo.io",
        ],
        None,
    );
    if ok {
        Ok(())
    } else {
        Err(format!("CRDs not established: {err}"))
    }
}

pub use testbed::manager::Manager;

/// Starts this build's manager (or `$NSO_MANAGER_BIN`, another build to compare) against
/// `kubeconfig`, with `extra` flags, and waits until it is ready (`testbed::manager`).
/// Its log goes to the test bed's log directory as `<name>.log`.
pub async fn start_manager(
    tb: &Testbed,
    name: &str,
    kubeconfig: &Path,
    register: bool,
    extra: &[String],
) -> Result<Manager, String> {
    let binary = std::env::var_os("NSO_MANAGER_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_namespace-offloading").into());
    testbed::manager::start(&binary, &tb.log_dir(), name, kubeconfig, register, extra).await
}

/// Creates a Ready Node (no kubelet behind it); a virtual one carries `liqo.io/type` and the
/// taint that keeps ordinary pods off.
pub async fn create_node(
    client: &kube::Client,
    name: &str,
    labels: serde_json::Value,
    is_virtual: bool,
) {
    use k8s_openapi::api::core::v1::Node;
    use kube::{Api, api::PostParams};
    use serde_json::json;
    let mut labels = labels;
    let mut taints = json!([]);
    if is_virtual {
        labels["liqo.io/type"] = "virtual-node".into();
        taints = json!([{"key": "virtual-node.liqo.io/not-allowed", "value": "true", "effect": "NoExecute"}]);
    }
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "Test"}],
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
        },
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();
}

/// A kubeconfig for ServiceAccount `namespace/account` of the cluster behind `admin`: the
/// admin kubeconfig with a one-hour token of the account instead of the admin certificate,
/// written to `path` (beside the cluster's own, where the manager finds the webhook client
/// CA), and checked with `kubectl auth whoami`.
pub fn service_account_kubeconfig(
    admin: &Path,
    namespace: &str,
    account: &str,
    path: &Path,
) -> std::path::PathBuf {
    let (ok, token, err) = kubectl(
        admin,
        &["create", "token", account, "-n", namespace, "--duration=1h"],
        None,
    );
    assert!(ok, "{err}");
    let mut kubeconfig: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    kubeconfig["users"][0]["user"] = serde_json::json!({"token": token.trim()});
    std::fs::write(path, kubeconfig.to_string()).unwrap();
    let (_, whoami, _) = kubectl(
        path,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    );
    assert_eq!(
        whoami,
        format!("system:serviceaccount:{namespace}:{account}")
    );
    path.to_owned()
}
