//! The chaos soak: `scripts/soak [--minutes N] [--seed S]` (see testbed/src/soak/ and
//! docs/reliability.md). Exits non-zero when an invariant breaks; every process it starts
//! stops with it, on success, failure or Ctrl-C.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use testbed::soak::{
    report::Tally,
    run::{self, Options, Outcome},
};

#[derive(Parser)]
#[command(about = "Faults at random on three peered clusters, and the invariants that must hold")]
struct Cli {
    /// Minutes of faults (set-up and the last convergence come on top).
    #[arg(long, default_value_t = 3.0)]
    minutes: f64,
    /// The RNG seed; a run prints its own, to replay it.
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds the invariants may take to hold again after a burst of faults.
    #[arg(long, default_value_t = testbed::soak::CONVERGE_CAP.as_secs())]
    converge_cap: u64,
    /// The product binary.
    #[arg(long)]
    manager: PathBuf,
    /// Where the clusters keep their data and logs (wiped first).
    #[arg(long, default_value_os_t = testbed::repository().join("target/soak"))]
    dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("warn,kube=off,kube_client=off")
        .init();
    let cli = Cli::parse();
    let seed = cli.seed.unwrap_or_else(rand::random);
    println!(
        "soak: seed {seed} (replay with: scripts/soak --minutes {} --seed {seed})",
        cli.minutes
    );
    let options = Options {
        fault_phase: Duration::from_secs_f64(cli.minutes.max(0.0) * 60.0),
        seed,
        cap: Duration::from_secs(cli.converge_cap),
        manager: cli.manager,
        root: testbed::run_dir(
            cli.dir.parent().unwrap_or(&cli.dir),
            &cli.dir
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
    };
    let mut tally = Tally::default();
    // Ctrl-C drops the run, and with it every process it started (the rest die with this
    // process through their death signal).
    let outcome = tokio::select! {
        outcome = run::run(&options, &mut tally) => outcome,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("soak: interrupted; stopping every process it started");
            tally.print(seed, cli.minutes, "INTERRUPTED");
            return ExitCode::from(130);
        }
    };
    let passed = matches!(outcome, Ok(Outcome::Passed));
    tally.print(seed, cli.minutes, if passed { "PASSED" } else { "FAILED" });
    if passed {
        ExitCode::SUCCESS
    } else {
        println!(
            "soak: replay with: scripts/soak --minutes {} --seed {seed}",
            cli.minutes
        );
        ExitCode::FAILURE
    }
}
