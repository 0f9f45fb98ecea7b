//! The soak from start to end: the scene, then rounds of a burst of faults and polls until
//! every invariant holds past a quiet period, until the fault phase's time is up.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use rand::{SeedableRng, rngs::StdRng};

use super::{
    POLL, QUIET, SoakError,
    app::App,
    faults::{self, Fault},
    foreign::{self, Snapshot},
    invariants::{self, Check, World},
    report::{self, Tally},
    setup::{self, Bed},
};

/// What to run.
pub struct Options {
    /// How long faults are injected (set-up and the last convergence come on top).
    pub fault_phase: Duration,
    pub seed: u64,
    /// The product binary (`namespace-offloading`).
    pub manager: PathBuf,
    /// Where the clusters keep their data and logs.
    pub root: PathBuf,
    /// How long the invariants may take to hold again after a burst.
    pub cap: Duration,
}

/// How a run ended.
pub enum Outcome {
    Passed,
    /// An invariant did not hold within the cap: which, with the details.
    Failed(String),
}

/// Runs the soak, printing as it goes; a failure prints the broken invariants and the
/// components' log tails.
pub async fn run(options: &Options, tally: &mut Tally) -> Result<Outcome, SoakError> {
    let began = Instant::now();
    let stamp = move || format!("[{:>6.1} s]", began.elapsed().as_secs_f32());
    println!(
        "{} starting three clusters under {}",
        stamp(),
        options.root.display()
    );
    let tb = setup::testbed(options.root.clone()).await?;
    println!(
        "{} clusters ready in {:.1} s",
        stamp(),
        tb.started_in().as_secs_f32()
    );
    let parts = match setup::topology(&tb, &options.manager).await {
        Ok(parts) => parts,
        Err(e) => {
            eprintln!("soak: set-up failed: {e}\n{}", tb.log_tails(20));
            return Err(e);
        }
    };
    let bed = Bed {
        tb,
        clients: parts.clients,
        ids: parts.ids,
        managers: parts.managers,
    };
    println!(
        "{} managers running (two on cluster 1), clusters 2 and 3 peered",
        stamp()
    );
    let result = soak(&bed, options, tally, &stamp).await;
    // The logs' tails first, then what broke, so that it ends the output.
    let broken = match &result {
        Ok(Outcome::Passed) => return result,
        Ok(Outcome::Failed(report)) => report.clone(),
        Err(e) => format!("soak: {e}"),
    };
    eprintln!(
        "soak: logs under {}\n{}",
        bed.tb.log_dir().display(),
        bed.tb.log_tails(25)
    );
    eprintln!("{broken}");
    result
}

async fn soak(
    bed: &Bed,
    options: &Options,
    tally: &mut Tally,
    stamp: &impl Fn() -> String,
) -> Result<Outcome, SoakError> {
    let snapshot = foreign::create(&bed.tb, &bed.clients).await?;
    println!("{} foreign namespace recorded in clusters 2 and 3", stamp());
    let scene = Scene {
        bed,
        options,
        snapshot: &snapshot,
    };
    let mut app = App::initial();
    let took = setup::app(bed, &app).await?;
    println!(
        "{} app created in {:.1} s: {}",
        stamp(),
        took.as_secs_f32(),
        app.live
            .iter()
            .map(|(ns, o)| format!("{ns} ({o})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let settled = Instant::now();
    if let Some(report) =
        converged(&scene, &app, tally, stamp, settled, Duration::ZERO, false).await?
    {
        return Ok(Outcome::Failed(report));
    }
    let mut rng = StdRng::seed_from_u64(options.seed);
    let end = Instant::now() + options.fault_phase;
    while Instant::now() < end {
        tally.rounds += 1;
        let burst = faults::draw(&mut rng, &mut app);
        println!(
            "{} round {}: {} fault(s)",
            stamp(),
            tally.rounds,
            burst.len()
        );
        for fault in &burst {
            println!("{}   fault: {fault}", stamp());
            *tally.injected.entry(fault.kind()).or_default() += 1;
        }
        inject(bed, &burst).await?;
        let burst_end = Instant::now();
        println!(
            "{}   burst over; no verdict for {} s (quiet period)",
            stamp(),
            QUIET.as_secs()
        );
        if let Some(report) = converged(&scene, &app, tally, stamp, burst_end, QUIET, true).await? {
            return Ok(Outcome::Failed(report));
        }
        tally.survived += burst.len();
    }
    Ok(Outcome::Passed)
}

async fn inject(bed: &Bed, burst: &[Fault]) -> Result<(), SoakError> {
    let results = futures::future::join_all(burst.iter().map(|f| faults::inject(bed, f))).await;
    results.into_iter().collect()
}

/// What every poll needs besides the app.
struct Scene<'a> {
    bed: &'a Bed,
    options: &'a Options,
    snapshot: &'a Snapshot,
}

/// Polls the invariants from `since` until they hold on two polls in a row, the last of
/// them after the `quiet` period (no verdict before it), or until the cap passes. The time
/// to converge is from `since` to the end of the first poll of that streak (kept in the
/// tally when `record`). Prints each poll that finds something broken; returns the broken
/// checks, with their details, when the cap passes.
async fn converged(
    scene: &Scene<'_>,
    app: &App,
    tally: &mut Tally,
    stamp: &impl Fn() -> String,
    since: Instant,
    quiet: Duration,
    record: bool,
) -> Result<Option<String>, SoakError> {
    let bed = scene.bed;
    let world = World {
        clients: &bed.clients,
        ids: &bed.ids,
        app,
        snapshot: scene.snapshot,
        logs: bed.managers.logs(),
    };
    // The polls in a row that found every invariant holding, and when the first of them
    // began: the time to converge.
    let mut in_a_row = 0;
    let mut first_hold = Duration::ZERO;
    loop {
        let checks = invariants::check_all(&world).await;
        // When the poll's verdict was known (a poll reads some 50 objects).
        let polled_at = since.elapsed();
        let broken = report::broken_subjects(&checks);
        if broken.is_empty() {
            if in_a_row == 0 {
                first_hold = polled_at;
            }
            in_a_row += 1;
            if in_a_row >= 2 && since.elapsed() >= quiet {
                println!(
                    "{}   converged in {:.1} s; {} checks hold: {}",
                    stamp(),
                    first_hold.as_secs_f32(),
                    checks.len(),
                    report::by_invariant(&checks).join(", ")
                );
                if record {
                    tally.converged_in.push(first_hold);
                }
                tally.count(&checks);
                return Ok(None);
            }
        } else {
            in_a_row = 0;
            println!(
                "{}   poll: {}/{} hold; waiting for {}",
                stamp(),
                checks.len() - broken.len(),
                checks.len(),
                broken.join(", ")
            );
        }
        // A panic is final: no waiting makes it go away.
        let panicked = checks
            .iter()
            .any(|c| c.invariant == "no-panic" && c.broken.is_some());
        if since.elapsed() >= scene.options.cap || panicked {
            tally.count(&checks);
            return Ok(Some(failure(&checks, since.elapsed(), scene.options.cap)));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The broken checks with their details, for the end of a failed run's output.
fn failure(checks: &[Check], after: Duration, cap: Duration) -> String {
    let mut report = format!(
        "soak: INVARIANT BROKEN: not converged {:.1} s after the burst (cap {} s):",
        after.as_secs_f32(),
        cap.as_secs()
    );
    for check in checks.iter().filter(|c| c.broken.is_some()) {
        report.push_str(&format!("\n  {check}"));
    }
    report
}
