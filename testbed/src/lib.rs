//! A test bed of real Kubernetes clusters on loopback.
//!
//! One etcd per release serves every cluster, each under its own `--etcd-prefix`; each cluster has its
//! own CA, kube-apiserver (RBAC, admission webhooks on), kube-controller-manager (namespace
//! and garbage-collector controllers, so deleted namespaces really go away) and, where
//! asked, a kube-scheduler. The binaries come from `scripts/build-control-plane`.
//! Integration tests start one test bed per test binary; `scripts/dev-cluster` starts the
//! same clusters for a person.

pub mod audit;
mod cluster;
pub mod kubectl;
pub mod manager;
mod pki;
pub mod process;
pub mod proxy;
pub mod soak;

use std::{
    future::Future,
    io::{Read, Write},
    net::TcpStream,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use futures::FutureExt;

pub use self::{
    audit::AuditLog,
    cluster::{Cluster, KWOK_ANNOTATION, KWOK_CONTAINER_LOG},
    process::{Lifetime, Process},
};

/// Components that do not become ready within this long fail the start-up. Generous: three
/// API servers starting at once on two loaded cores take tens of seconds.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate test certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("the test bed's spawner thread is gone")]
    Spawner,
    #[error(
        "control-plane binaries are missing: {0}\n  run scripts/build-control-plane (needs Go), or set NSO_CONTROL_PLANE_DIR to a directory holding etcd, kube-apiserver, kube-controller-manager and kube-scheduler"
    )]
    Binaries(String),
    #[error(
        "{component} did not become ready within {timeout:?}: {last_error}\n--- last lines of {log}:\n{tail}"
    )]
    NotReady {
        component: String,
        timeout: Duration,
        last_error: String,
        log: String,
        tail: String,
    },
    #[error("cannot build a client for {cluster}: {message}")]
    Client { cluster: String, message: String },
}

impl TestbedError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            context: path.display().to_string(),
            source,
        }
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct TestbedConfig {
    /// Where data, certificates, kubeconfigs and logs go (wiped first).
    pub root: PathBuf,
    /// Directory holding the four control-plane binaries.
    pub binaries: PathBuf,
    pub clusters: Vec<ClusterConfig>,
    pub lifetime: Lifetime,
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub name: String,
    /// Run a kube-scheduler (only tests of real scheduling need one).
    pub scheduler: bool,
    /// This cluster's binaries, when not [`TestbedConfig::binaries`] (clusters of another
    /// release beside the first; they get an etcd of their own release).
    pub binaries: Option<PathBuf>,
    /// Run ServiceAccount admission and the controllers it relies on (`serviceaccount`,
    /// `root-ca-cert-publisher`): pods get their account's token volume injected, as in
    /// any real cluster. Off by default: a pod created a moment after its namespace would
    /// be refused until the namespace's `default` account exists.
    pub service_accounts: bool,
}

impl ClusterConfig {
    pub fn binaries<'a>(&'a self, config: &'a TestbedConfig) -> &'a Path {
        self.binaries.as_deref().unwrap_or(&config.binaries)
    }
}

impl TestbedConfig {
    /// `n` clusters named `cluster-1` .. `cluster-n`; the first `schedulers` get a scheduler.
    pub fn new(root: PathBuf, binaries: PathBuf, n: usize, schedulers: usize) -> Self {
        Self {
            root,
            binaries,
            clusters: (1..=n)
                .map(|i| ClusterConfig {
                    name: format!("cluster-{i}"),
                    scheduler: i <= schedulers,
                    binaries: None,
                    service_accounts: false,
                })
                .collect(),
            lifetime: Lifetime::Attached,
        }
    }

    /// Clusters 2..n run ServiceAccount admission ([`ClusterConfig::service_accounts`]):
    /// peers that inject tokens into the pods created there, twins among them.
    pub fn with_service_accounts_on_peers(mut self) -> Self {
        for c in self.clusters.iter_mut().skip(1) {
            c.service_accounts = true;
        }
        self
    }

    /// Clusters 2..n run the Kubernetes binaries in `dir` (a mixed-version test bed:
    /// cluster 1 peered with clusters of another release).
    pub fn with_peer_binaries(mut self, dir: PathBuf) -> Self {
        for c in self.clusters.iter_mut().skip(1) {
            c.binaries = Some(dir.clone());
        }
        self
    }
}

/// Running clusters. Dropping it stops every process (attached or not).
pub struct Testbed {
    root: PathBuf,
    etcds: Vec<Mutex<Process>>,
    clusters: Vec<Cluster>,
    started_in: Duration,
}

impl Testbed {
    pub async fn start(config: TestbedConfig) -> Result<Self, TestbedError> {
        let began = Instant::now();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bin = |name: &str| config.binaries.join(name);
        let mut needed = vec![bin("etcd")];
        for c in &config.clusters {
            for name in [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            ] {
                needed.push(c.binaries(&config).join(name));
            }
        }
        let missing: Vec<String> = needed
            .iter()
            .filter(|b| !b.is_file())
            .map(|b| b.display().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(TestbedError::Binaries(format!(
                "missing: {}",
                missing.join(", ")
            )));
        }
        if config.root.exists() {
            std::fs::remove_dir_all(&config.root).map_err(|e| TestbedError::io(&config.root, e))?;
        }
        std::fs::create_dir_all(config.root.join("logs"))
            .map_err(|e| TestbedError::io(&config.root, e))?;
        let owner = config.root.join("owner.pid");
        std::fs::write(&owner, std::process::id().to_string())
            .map_err(|e| TestbedError::io(&owner, e))?;

        // One etcd per release in the test bed (each Kubernetes release with the etcd it
        // pairs with), serving every cluster of that release under its own prefix.
        let mut etcds: Vec<(PathBuf, String, Process)> = Vec::new();
        let mut clusters = Vec::new();
        for c in &config.clusters {
            let dir = c.binaries(&config).to_path_buf();
            let url = match etcds.iter().find(|(d, _, _)| *d == dir) {
                Some((_, url, _)) => url.clone(),
                None => {
                    let name = if etcds.is_empty() {
                        "etcd".to_owned()
                    } else {
                        format!("etcd-{}", etcds.len() + 1)
                    };
                    let (url, process) = start_etcd(&config, &dir, &name).await?;
                    etcds.push((dir, url.clone(), process));
                    url
                }
            };
            clusters.push(Cluster::start(&config, c, &url)?);
        }
        let ready = futures::future::join_all(clusters.iter().map(Cluster::wait_ready)).await;
        ready.into_iter().collect::<Result<Vec<_>, _>>()?;
        for (cluster, c) in clusters.iter().zip(&config.clusters) {
            cluster.start_controllers(&config, c)?;
        }
        let testbed = Self {
            root: config.root.clone(),
            etcds: etcds.into_iter().map(|(_, _, p)| Mutex::new(p)).collect(),
            clusters,
            started_in: began.elapsed(),
        };
        tracing::info!(
            clusters = testbed.clusters.len(),
            seconds = testbed.started_in.as_secs_f32(),
            "test bed ready"
        );
        Ok(testbed)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How long [`Testbed::start`] took, etcd to the last API server ready.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// Cluster `n`, counting from 1 as the names do.
    ///
    /// # Panics
    /// When there is no such cluster: a mistake in the test itself.
    pub fn cluster(&self, n: usize) -> &Cluster {
        match n.checked_sub(1).and_then(|i| self.clusters.get(i)) {
            Some(c) => c,
            None => panic!("no cluster-{n}: the test bed has {}", self.clusters.len()),
        }
    }

    /// Every process's pid, for stopping a detached test bed later.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.clusters.iter().flat_map(Cluster::pids).collect();
        for etcd in &self.etcds {
            if let Ok(etcd) = etcd.lock() {
                pids.push(etcd.pid());
            }
        }
        pids
    }

    /// Where component logs go; tests may add their own processes' logs here.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The last lines of every log in [`Testbed::log_dir`], for a failing test's report.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.log_dir())
            .map(|dir| dir.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.sort();
        let mut out = String::new();
        for log in logs {
            out.push_str(&format!(
                "--- last {lines} lines of {}:\n{}\n",
                log.display(),
                process::tail(&log, lines)
            ));
        }
        out
    }

    /// Runs a test body; if it panics, prints the components' log tails before passing
    /// the panic on, so a failure in CI shows what the servers said.
    pub async fn report_failure<F: Future>(&self, body: F) -> F::Output {
        match AssertUnwindSafe(body).catch_unwind().await {
            Ok(out) => out,
            Err(panic) => {
                eprintln!(
                    "test failed; control-plane logs under {}\n{}",
                    self.root.display(),
                    self.log_tails(15)
                );
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Leaves every process running after this value is dropped; returns their pids.
    pub fn detach(self) -> Vec<u32> {
        let pids = self.pids();
        let Self {
            etcds, clusters, ..
        } = self;
        for etcd in etcds {
            if let Ok(etcd) = etcd.into_inner() {
                etcd.release();
            }
        }
        clusters.into_iter().for_each(Cluster::release);
        pids
    }
}

/// A run directory `base/tag` for a test bed, wiped on start so that the logs of the
/// latest run stay for inspection without piling up. If another live process owns that
/// directory (two runs of the same tests at once), `base/tag-<pid>` is used instead.
pub fn run_dir(base: &Path, tag: &str) -> PathBuf {
    let dir = base.join(tag);
    let owner = std::fs::read_to_string(dir.join("owner.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    match owner {
        Some(pid) if pid != std::process::id() && process::alive(pid) => {
            base.join(format!("{tag}-{}", std::process::id()))
        }
        _ => dir,
    }
}

/// `NSO_PEER_CONTROL_PLANE_DIR`, when set: the binaries of clusters 2..n, for tests of a
/// cluster peered with clusters of another Kubernetes release.
pub fn peer_control_plane_binaries() -> Option<PathBuf> {
    std::env::var_os("NSO_PEER_CONTROL_PLANE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// The directory holding the control-plane binaries: `NSO_CONTROL_PLANE_DIR` when set,
/// otherwise whatever `scripts/build-control-plane` builds (it prints its progress).
pub fn control_plane_binaries() -> Result<PathBuf, TestbedError> {
    if let Some(dir) = std::env::var_os("NSO_CONTROL_PLANE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let script = repository().join("scripts/build-control-plane");
    let out = Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| TestbedError::Io {
            context: format!("cannot run {}", script.display()),
            source: e,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), stdout.lines().last()) {
        (true, Some(dir)) => Ok(PathBuf::from(dir.trim())),
        _ => Err(TestbedError::Binaries(format!(
            "{} failed ({})",
            script.display(),
            out.status
        ))),
    }
}

/// Starts an etcd from `binaries` on free loopback ports; returns its client URL.
async fn start_etcd(
    config: &TestbedConfig,
    binaries: &Path,
    name: &str,
) -> Result<(String, Process), TestbedError> {
    let etcd_port = process::free_port()?;
    let peer_port = process::free_port()?;
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let mut etcd = Process::spawn(
        name,
        &binaries.join("etcd"),
        &[
            "--name=testbed".into(),
            format!("--data-dir={}", config.root.join(name).display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=testbed=http://127.0.0.1:{peer_port}"),
            // Test data is disposable: skip fsync, the main cost of etcd on a slow disk.
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ],
        &config.root.join(format!("logs/{name}.log")),
        config.lifetime,
    )?;
    wait_for_etcd(etcd_port, &mut etcd).await?;
    Ok((etcd_url, etcd))
}

/// Polls etcd's `/health` with a bare HTTP/1.0 request (no client library needed).
async fn wait_for_etcd(port: u16, etcd: &mut Process) -> Result<(), TestbedError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last_error = String::from("not polled yet");
    while Instant::now() < deadline {
        if let Some(status) = etcd.exited() {
            last_error = format!("etcd exited ({status})");
            break;
        }
        match etcd_health(port) {
            Ok(body) if body.contains("\"health\":\"true\"") => return Ok(()),
            Ok(body) => last_error = format!("unhealthy: {body}"),
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(TestbedError::NotReady {
        component: "etcd".into(),
        timeout: READY_TIMEOUT,
        last_error,
        log: etcd.log().display().to_string(),
        tail: process::tail(etcd.log(), 20),
    })
}

fn etcd_health(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// The repository this crate lives in (the workspace root, where `scripts/` and `target/`
/// are).
pub fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
