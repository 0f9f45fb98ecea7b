//! Brings the test bed's clusters up for a person: `scripts/dev-cluster up|down|env`.
//!
//! `up` starts the clusters detached (they outlive this command), records their pids in
//! `target/dev-cluster/state.json` and prints how to reach each with kubectl; `down` stops
//! every process it recorded and removes the directory; `env` prints the lines again.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use testbed::{
    self, Lifetime, Testbed, TestbedConfig,
    process::{alive, kill_group},
};

#[derive(Parser)]
#[command(about = "Local Kubernetes clusters on loopback for trying things by hand")]
struct Cli {
    /// Where the clusters keep their data, certificates, kubeconfigs and logs.
    #[arg(long, global = true, default_value_os_t = default_dir())]
    dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the clusters (or show the running ones).
    Up {
        /// How many clusters.
        #[arg(long, default_value_t = 3)]
        clusters: usize,
        /// How many of them, from the first, run a kube-scheduler.
        #[arg(long, default_value_t = 3)]
        schedulers: usize,
    },
    /// Stop every process `up` started and remove its directory.
    Down,
    /// Print the kubectl set-up of the running clusters.
    Env,
}

#[derive(Serialize, Deserialize)]
struct State {
    pids: Vec<u32>,
    clusters: Vec<ClusterState>,
    merged_kubeconfig: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct ClusterState {
    name: String,
    server: String,
    kubeconfig: PathBuf,
}

fn default_dir() -> PathBuf {
    testbed::repository().join("target/dev-cluster")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("info,kube=warn,kube_client=off")
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Up {
            clusters,
            schedulers,
        } => up(&cli.dir, clusters, schedulers).await,
        Cmd::Down => down(&cli.dir),
        Cmd::Env => read_state(&cli.dir).map(|s| print_env(&s)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dev-cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn up(dir: &Path, clusters: usize, schedulers: usize) -> Result<(), String> {
    if let Ok(state) = read_state(dir) {
        if state.pids.iter().all(|&p| alive(p)) {
            eprintln!("dev-cluster: already running");
            print_env(&state);
            return Ok(());
        }
        eprintln!("dev-cluster: a previous run is partly gone; stopping what is left");
        down(dir)?;
    }
    let binaries = testbed::control_plane_binaries().map_err(|e| e.to_string())?;
    let mut config = TestbedConfig::new(dir.to_owned(), binaries, clusters, schedulers);
    config.lifetime = Lifetime::Detached;
    eprintln!("dev-cluster: starting {clusters} clusters...");
    // Ctrl-C while starting drops the half-started test bed, which stops its processes
    // (they are detached only once everything is up).
    let testbed = tokio::select! {
        started = Testbed::start(config) => started.map_err(|e| e.to_string())?,
        _ = tokio::signal::ctrl_c() => return Err("interrupted; stopped what was started".into()),
    };
    eprintln!(
        "dev-cluster: ready in {:.1} s",
        testbed.started_in().as_secs_f32()
    );
    let merged_kubeconfig = dir.join("kubeconfig");
    write_merged_kubeconfig(&testbed, &merged_kubeconfig)?;
    let clusters = testbed
        .clusters()
        .iter()
        .map(|c| ClusterState {
            name: c.name().to_owned(),
            server: c.server(),
            kubeconfig: c.kubeconfig().to_owned(),
        })
        .collect();
    let state = State {
        pids: testbed.detach(),
        clusters,
        merged_kubeconfig,
    };
    let path = dir.join("state.json");
    let text = serde_json::to_string_pretty(&state).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    print_env(&state);
    Ok(())
}

fn down(dir: &Path) -> Result<(), String> {
    match read_state(dir) {
        Ok(state) => {
            for &pid in &state.pids {
                if alive(pid) {
                    kill_group(pid, Duration::from_secs(10));
                }
            }
            eprintln!("dev-cluster: stopped {} processes", state.pids.len());
        }
        Err(e) => eprintln!("dev-cluster: nothing to stop ({e})"),
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn read_state(dir: &Path) -> Result<State, String> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "no clusters are up ({}: {e}); run: scripts/dev-cluster up",
            path.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn print_env(state: &State) {
    for c in &state.clusters {
        println!("# {} ({})", c.name, c.server);
        println!("export KUBECONFIG={}", c.kubeconfig.display());
    }
    println!("# all of them, one context each (kubectl --context cluster-2 get ns):");
    println!("export KUBECONFIG={}", state.merged_kubeconfig.display());
}

/// One kubeconfig with a context per cluster, named after it.
fn write_merged_kubeconfig(testbed: &Testbed, path: &Path) -> Result<(), String> {
    let mut merged = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [], "users": [], "contexts": [],
        "current-context": "cluster-1",
    });
    for c in testbed.clusters() {
        let text = std::fs::read_to_string(c.kubeconfig()).map_err(|e| e.to_string())?;
        let one: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        for key in ["clusters", "users", "contexts"] {
            if let (Some(all), Some(items)) = (merged[key].as_array_mut(), one[key].as_array()) {
                all.extend(items.iter().cloned());
            }
        }
    }
    let text = serde_json::to_string_pretty(&merged).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
