//! `nso-bench`: the benchmarks `scripts/bench` runs, one subcommand each, every one adding
//! its section to the report (see docs/benchmarks.md).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use bench::{admission, baseline, report, scale};
use clap::{Parser, Subcommand};

// The same allocator as the manager's, so that the baseline server differs from ours only
// in what it does per review.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    about = "namespace-offloading's benchmarks, each beside a baseline measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// The manager binary under test (a release build).
    #[arg(long)]
    manager: PathBuf,
    /// Where clusters, certificates and logs go.
    #[arg(long, default_value = "target/bench/work")]
    work: PathBuf,
    /// The report to add this benchmark's section to.
    #[arg(long, default_value = "target/bench/report.json")]
    report: PathBuf,
    /// Small and short: checks that the benchmark works, its figures are rough.
    #[arg(long)]
    quick: bool,
    /// scale: namespaces offloaded (and deleted) against the baseline (default 200, quick 20).
    #[arg(long)]
    namespaces: Option<usize>,
    /// scale: offloaded namespaces at rest (default 1000, quick 50).
    #[arg(long)]
    at_rest: Option<usize>,
    /// scale: seconds at rest while requests are counted (default 60, quick 10).
    #[arg(long)]
    window: Option<u64>,
    /// scale: Secrets and ConfigMaps of 10 KiB created in namespaces not offloaded (default
    /// 10000, quick 2000).
    #[arg(long)]
    not_offloaded: Option<usize>,
    /// pods: offloaded namespaces, one Deployment each (default 100, quick 2).
    #[arg(long)]
    pod_namespaces: Option<usize>,
    /// pods: replicas of each Deployment (default 100, quick 25).
    #[arg(long)]
    pods_per_namespace: Option<usize>,
    /// pods: probes of each reflection path (default 40, quick 5).
    #[arg(long)]
    samples: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Pod admission over TLS: our webhook server against the baseline server.
    Admission(Common),
    /// Offloading at scale on three clusters: against direct API writes; then at rest.
    Scale(Common),
    /// Offloaded pods at scale on kwok (one virtual node, then two) against the same pods
    /// created directly, and each reflection path's latency at rest and under that load.
    Pods(Common),
    /// Adds criterion's mutation and validation timings to the report.
    Criterion {
        #[arg(long, default_value = "target/criterion")]
        criterion: PathBuf,
        #[arg(long, default_value = "target/bench/report.json")]
        report: PathBuf,
        #[arg(long)]
        quick: bool,
    },
    /// Prints the report's table.
    Table {
        #[arg(long, default_value = "target/bench/report.json")]
        report: PathBuf,
    },
    /// The admission baseline server (started by `admission`).
    BaselineServer {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// Answer as a kube-rs webhook usually does (kube's AdmissionReview types, the pod
        /// placed, json_patch::diff): the second reference.
        #[arg(long)]
        kube: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Admission(c) => {
                let size = if c.quick {
                    admission::Size::quick()
                } else {
                    admission::Size::full()
                };
                let work = bench::setup::work_dir(&c.work, "admission")?;
                let section = admission::run(&c.manager, &work, size).await?;
                finish(&c.report, section, c.quick)
            }
            Command::Scale(c) => {
                let mut size = if c.quick {
                    scale::Size::quick()
                } else {
                    scale::Size::full()
                };
                size.namespaces = c.namespaces.unwrap_or(size.namespaces);
                size.at_rest = c.at_rest.unwrap_or(size.at_rest);
                size.not_offloaded = c.not_offloaded.unwrap_or(size.not_offloaded);
                size.window = c
                    .window
                    .map(std::time::Duration::from_secs)
                    .unwrap_or(size.window);
                let work = bench::setup::work_dir(&c.work, "scale")?;
                let section = scale::run(&c.manager, &work, size).await?;
                finish(&c.report, section, c.quick)
            }
            Command::Pods(c) => {
                let mut size = if c.quick {
                    bench::pods::Size::quick()
                } else {
                    bench::pods::Size::full()
                };
                size.namespaces = c.pod_namespaces.unwrap_or(size.namespaces);
                size.pods_per_namespace = c.pods_per_namespace.unwrap_or(size.pods_per_namespace);
                size.samples = c.samples.unwrap_or(size.samples);
                let work = bench::setup::work_dir(&c.work, "pods")?;
                let section = bench::pods::run(&c.manager, &work, size).await?;
                finish(&c.report, section, c.quick)
            }
            Command::Criterion {
                criterion,
                report,
                quick,
            } => finish(&report, bench::criterion::section(&criterion)?, quick),
            Command::Table { report } => {
                let text = std::fs::read(&report)
                    .map_err(|e| format!("cannot read {}: {e}", report.display()))?;
                let value: serde_json::Value =
                    serde_json::from_slice(&text).map_err(|e| e.to_string())?;
                let sections: Vec<report::Section> =
                    serde_json::from_value(value["sections"].clone()).map_err(|e| e.to_string())?;
                println!("machine: {}", value["machine"]);
                print!("{}", report::table(&sections));
                Ok(())
            }
            Command::BaselineServer {
                listen,
                cert,
                key,
                kube,
            } => {
                let answer: baseline::Answer = if kube {
                    bench::kube_reference::answer
                } else {
                    baseline::answer
                };
                baseline::serve(listen, &cert, &key, answer).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn finish(path: &std::path::Path, section: report::Section, quick: bool) -> Result<(), String> {
    let lines = report::table(std::slice::from_ref(&section));
    report::write(path, section, quick)?;
    print!("{lines}");
    Ok(())
}
