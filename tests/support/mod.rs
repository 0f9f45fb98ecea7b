//! Shared set-up for the integration tests: one test bed per test binary, started on first
//! use and stopped when the binary exits (the processes die with it; see testbed::process).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{future::Future, path::Path, time::Duration};

use namespace_offloading::testbed::{self, Testbed, TestbedConfig};
use tokio::sync::OnceCell;

/// Starts (once) `clusters` clusters, the first `schedulers` of them with a scheduler, and
/// runs `body` against them; on failure the components' log tails are printed.
pub async fn with_testbed<F, Fut>(tag: &str, clusters: usize, schedulers: usize, body: F)
where
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
            let config = TestbedConfig::new(root, binaries, clusters, schedulers);
            let tb = Testbed::start(config).await.map_err(|e| e.to_string())?;
            eprintln!(
                "test bed '{tag}': {clusters} clusters ready in {:.1} s under {}",
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
