//! kubectl for tests, as users run it: to its end (`run`), or kept running and read line
//! by line (`Streaming`: `logs -f`, `port-forward`). Every kubectl dies with the test:
//! killed when its handle drops (a failing assertion unwinds through every handle), and
//! by the kernel (`setpriv --pdeathsig`) if the test process dies any other way.

// A test helper: a kubectl that cannot start or hangs is the test's failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
    time::{Instant, timeout},
};

/// How long one kubectl command, or one wait for its output, may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// `kubectl --kubeconfig=<kubeconfig> args`, ready to spawn. Its process dies with the test:
/// killed when its handle is dropped (a failing assertion unwinds through every handle),
/// and by the kernel (`setpriv --pdeathsig`) if the test thread dies any other way.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--", "kubectl"])
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs kubectl to its end (at most [`WAIT`]), feeding it `stdin`: whether it succeeded,
/// its stdout and its stderr.
pub async fn output(
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    let mut cmd = kubectl(kubeconfig, args);
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("kubectl is installed (and setpriv)");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await.unwrap();
        // Dropping the pipe closes kubectl's standard input.
    }
    let out = timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} did not end within {WAIT:?}"))
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs kubectl to its end (at most [`WAIT`]), feeding it `stdin`; returns its stdout, or
/// panics with its stderr when it fails.
pub async fn run(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, stdout, stderr) = output(kubeconfig, args, stdin).await;
    assert!(ok, "kubectl {args:?} failed: {stderr}");
    stdout
}

/// A kubectl that keeps running (`logs -f`, `port-forward`), read line by line.
pub struct Streaming {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    what: String,
}

impl Streaming {
    pub fn spawn(kubeconfig: &Path, args: &[&str]) -> Self {
        let mut child = kubectl(kubeconfig, args)
            .spawn()
            .expect("kubectl is installed (and setpriv)");
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdout,
            what: format!("kubectl {args:?}"),
        }
    }

    /// Reads stdout until a line satisfies `wanted` (within [`WAIT`]); returns that line.
    pub async fn line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let line = match tokio::time::timeout_at(deadline, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(end) => {
                    let stderr = self.stderr().await;
                    panic!(
                        "{} ended ({end:?}) after printing {seen:?}; stderr: {stderr}",
                        self.what
                    )
                }
                Err(_) => panic!("{} printed only {seen:?} in {WAIT:?}", self.what),
            };
            if wanted(&line) {
                return line;
            }
            seen.push(line);
        }
    }

    pub fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub async fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = timeout(Duration::from_secs(2), err.read_to_string(&mut text)).await;
        }
        text
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `kubectl port-forward pod/<pod> :<port>` on 127.0.0.1: the running kubectl, and the
/// local port it chose (read from its "Forwarding from" line).
pub async fn port_forward(
    kubeconfig: &Path,
    namespace: &str,
    pod: &str,
    port: u16,
) -> (Streaming, u16) {
    const FORWARDING: &str = "Forwarding from 127.0.0.1:";
    let target = format!("pod/{pod}");
    let remote = format!(":{port}");
    let mut forward = Streaming::spawn(
        kubeconfig,
        &[
            "port-forward",
            "-n",
            namespace,
            &target,
            "--address=127.0.0.1",
            &remote,
        ],
    );
    let line = forward.line(|l| l.starts_with(FORWARDING)).await;
    let local = line
        .trim_start_matches(FORWARDING)
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no local port in {line:?}"));
    (forward, local)
}
