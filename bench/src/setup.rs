//! Setting the scene: the test bed's clusters, our CRDs, certificates, and the manager
//! under test started as users start it (the release binary's `run`).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use testbed::{Lifetime, Process, Testbed, TestbedConfig};

/// Starts `clusters` clusters (without schedulers: nothing here runs pods) under `root`.
pub async fn testbed(root: &Path, clusters: usize) -> Result<Testbed, String> {
    testbed_with_schedulers(root, clusters, 0).await
}

/// Starts `clusters` clusters under `root`, the first `schedulers` with a scheduler (kwok
/// plays the kubelets of the nodes that ask for it).
pub async fn testbed_with_schedulers(
    root: &Path,
    clusters: usize,
    schedulers: usize,
) -> Result<Testbed, String> {
    let binaries = testbed::control_plane_binaries().map_err(|e| e.to_string())?;
    let config = TestbedConfig::new(root.to_owned(), binaries, clusters, schedulers);
    Testbed::start(config).await.map_err(|e| e.to_string())
}

/// Runs kubectl against `kubeconfig`; its stdout, or an error with its stderr.
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run kubectl: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| format!("cannot feed kubectl: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("kubectl failed: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Our CRDs, established.
pub fn install_crds(kubeconfig: &Path) -> Result<(), String> {
    let crds = testbed::repository().join("manifests/crd.yaml");
    kubectl(kubeconfig, &["apply", "-f", &crds.to_string_lossy()], None)?;
    kubectl(
        kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/namespaceoffloadings.offloading.liqo.io",
            "crd/remoteclusters.offloading.liqo.io",
        ],
        None,
    )
    .map(drop)
}

/// A CA and a serving certificate for 127.0.0.1, written by the manager's `certs`.
pub fn certificates(manager: &Path, dir: &Path) -> Result<(), String> {
    let out = Command::new(manager)
        .args(["certs", "--ip", "127.0.0.1", "--out"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", manager.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} certs failed: {}",
            manager.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub use testbed::manager::{Manager, start as start_manager};

/// Starts a process that dies with this one, its output in `log_dir/NAME.log`.
pub fn spawn(
    name: &str,
    program: &Path,
    args: &[String],
    log_dir: &Path,
) -> Result<Process, String> {
    Process::spawn(
        name,
        program,
        args,
        &log_dir.join(format!("{name}.log")),
        Lifetime::Attached,
    )
    .map_err(|e| e.to_string())
}

/// Polls `check` every 100 ms until it holds, or fails naming `what` after `timeout`.
pub async fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("timed out after {timeout:?} waiting for {what}"))
}

/// Where a benchmark keeps its clusters and logs (wiped first).
pub fn work_dir(base: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}
