//! Commands the soak runs as a user would: kubectl, and the product's own command line
//! (`crd`, `peer`). Each is bounded in time and dies with the soak.

use std::{path::Path, process::Stdio, time::Duration};

use tokio::{io::AsyncWriteExt, process::Command};

use super::SoakError;

/// How long one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `kubectl --kubeconfig=<kubeconfig> args` (fed `stdin`); its stdout.
pub async fn kubectl(
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, SoakError> {
    let mut cmd = crate::kubectl::kubectl(kubeconfig, args);
    run(&mut cmd, &format!("kubectl {}", args.join(" ")), stdin).await
}

/// Runs the product binary with `args`; its stdout.
pub async fn product(binary: &Path, args: &[String]) -> Result<String, SoakError> {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--"])
        .arg(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let what = format!("{} {}", binary.display(), args.join(" "));
    run(&mut cmd, &what, None).await
}

async fn run(cmd: &mut Command, what: &str, stdin: Option<&str>) -> Result<String, SoakError> {
    let failed = |stderr: String| SoakError::Kubectl {
        args: what.trim_start_matches("kubectl ").to_owned(),
        stderr,
    };
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| failed(format!("no end within {COMMAND_TIMEOUT:?}")))?
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

/// Retries `attempt` every second until it succeeds or `within` has passed (a webhook
/// whose manager is restarting refuses for a few seconds, failing closed).
pub async fn retry<T, F, Fut>(within: Duration, mut attempt: F) -> Result<T, SoakError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SoakError>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}
