//! What the soak prints: each fault and poll as it happens, and the summary at the end.

use std::{collections::BTreeMap, time::Duration};

use super::invariants::Check;

/// The run's figures.
#[derive(Default)]
pub struct Tally {
    pub injected: BTreeMap<&'static str, usize>,
    /// Faults whose burst the product reconverged from.
    pub survived: usize,
    pub checked: usize,
    pub held: usize,
    pub converged_in: Vec<Duration>,
    pub rounds: usize,
}

impl Tally {
    pub fn count(&mut self, checks: &[Check]) {
        self.checked += checks.len();
        self.held += checks.iter().filter(|c| c.broken.is_none()).count();
    }

    /// The median and the longest time to converge.
    pub fn p50_max(&self) -> (Duration, Duration) {
        let mut sorted = self.converged_in.clone();
        sorted.sort();
        let p50 = sorted
            .get(sorted.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or_default();
        let max = sorted.last().copied().unwrap_or_default();
        (p50, max)
    }

    pub fn print(&self, seed: u64, minutes: f64, result: &str) {
        let total: usize = self.injected.values().sum();
        let (p50, max) = self.p50_max();
        println!("== soak summary (seed {seed}, {minutes} min of faults)");
        println!("   result: {result}");
        println!("   rounds: {}", self.rounds);
        println!("   faults injected: {total}");
        for (kind, n) in &self.injected {
            println!("     {kind:<24}{n}");
        }
        println!("   faults survived: {}/{total}", self.survived);
        println!(
            "   invariants checked: {}, held: {}",
            self.checked, self.held
        );
        println!(
            "   time to converge: p50 {:.1} s, max {:.1} s (over {} bursts)",
            p50.as_secs_f32(),
            max.as_secs_f32(),
            self.converged_in.len()
        );
    }
}

/// One line per invariant: how many subjects it was checked on and how many held.
pub fn by_invariant(checks: &[Check]) -> Vec<String> {
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for c in checks {
        let entry = counts.entry(c.invariant).or_default();
        entry.0 += 1;
        if c.broken.is_none() {
            entry.1 += 1;
        }
    }
    counts
        .iter()
        .map(|(name, (all, held))| format!("{name} {held}/{all}"))
        .collect()
}

/// The broken checks' subjects, for a poll's one-line progress.
pub fn broken_subjects(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c.broken.is_some())
        .map(|c| format!("{} [{}]", c.invariant, c.subject))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p50_and_max_of_the_convergence_times() {
        let mut tally = Tally::default();
        assert_eq!(tally.p50_max(), (Duration::ZERO, Duration::ZERO));
        tally.converged_in = [5, 1, 3, 9].map(Duration::from_secs).to_vec();
        assert_eq!(
            tally.p50_max(),
            (Duration::from_secs(3), Duration::from_secs(9))
        );
    }
}
