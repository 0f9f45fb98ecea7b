//! Retries after errors. Each object's delay doubles with its consecutive failures, from
//! [`BASE`] up to [`CAP`], and is drawn at random in its upper half: an error that persists
//! costs few requests, and many objects failing at once (a peer that went away) do not all
//! retry in step. A success starts the object over.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// The delay after a first failure (before jitter).
pub(crate) const BASE: Duration = Duration::from_secs(1);
/// The longest delay between two tries of one object.
pub(crate) const CAP: Duration = Duration::from_secs(300);
/// Failures remembered at most; beyond, those not seen for two caps are forgotten (objects
/// deleted while failing).
const REMEMBERED: usize = 4096;

/// How long to wait after the `failures`-th consecutive failure (1 for the first), with
/// `jitter` in [0, 1): between half and all of `BASE · 2^(failures-1)`, capped at [`CAP`].
pub(crate) fn delay(failures: u32, jitter: f64) -> Duration {
    let doubled = BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let full = doubled.min(CAP);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The consecutive failures of each object of the workers (keyed by worker and object).
#[derive(Default)]
pub(crate) struct Backoff {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Backoff {
    /// One more failure of `key`: how long to wait before trying it again.
    pub(crate) fn failed(&self, key: &str) -> Duration {
        self.failed_at(key, Instant::now(), fastrand::f64())
    }

    fn failed_at(&self, key: &str, now: Instant, jitter: f64) -> Duration {
        let Ok(mut failures) = self.failures.lock() else {
            return CAP;
        };
        if failures.len() >= REMEMBERED {
            failures.retain(|_, (_, last)| now.duration_since(*last) < CAP * 2);
        }
        let entry = failures.entry(key.to_owned()).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        delay(entry.0, jitter)
    }

    /// `key` succeeded: its next failure waits [`BASE`] again.
    pub(crate) fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock()
            && !failures.is_empty()
        {
            failures.remove(key);
        }
    }

    /// How many failures in a row `key` has had.
    #[cfg(test)]
    pub(crate) fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .ok()
            .and_then(|f| f.get(key).map(|(n, _)| *n))
            .unwrap_or(0)
    }
}

/// How a watch that fails waits before it tries again: as [`delay`], but never longer than
/// `cap`, and starting over at the first event it gets (kube-runtime's stream backoff resets
/// it). A peer's watches use a short cap: a cluster back after an outage is listed again
/// within seconds, not the half minute of kube-runtime's default.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WatchBackoff {
    failures: u32,
    cap: Duration,
}

impl WatchBackoff {
    pub(crate) fn capped(cap: Duration) -> Self {
        Self { failures: 0, cap }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        Some(delay(self.failures, fastrand::f64()).min(self.cap))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The key of an object of a worker.
pub(crate) fn key(worker: &str, object: &impl kube::ResourceExt) -> String {
    match object.namespace() {
        Some(namespace) => format!("{worker}/{namespace}/{}", object.name_any()),
        None => format!("{worker}/{}", object.name_any()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_base_up_to_the_cap() {
        let full: Vec<Duration> = (1..=12).map(|n| delay(n, 1.0)).collect();
        assert_eq!(full[0], BASE);
        for pair in full.windows(2) {
            assert!(pair[1] == (pair[0] * 2).min(CAP), "{pair:?}");
        }
        assert_eq!(full[11], CAP);
        // Far past the cap, and at u32::MAX failures, no overflow.
        assert_eq!(delay(u32::MAX, 1.0), CAP);
        assert_eq!(delay(0, 1.0), BASE);
    }

    #[test]
    fn jitter_draws_in_the_upper_half() {
        assert_eq!(delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(
            delay(3, 0.999_999),
            Duration::from_secs(4).mul_f64(0.999_999_5)
        );
        // Out-of-range jitter is clamped, never a longer or negative delay.
        assert_eq!(delay(3, 7.0), Duration::from_secs(4));
        assert_eq!(delay(3, -1.0), Duration::from_secs(2));
        let backoff = Backoff::default();
        for n in 1..=10 {
            let d = backoff.failed("pods/shop/web");
            let full = delay(n, 1.0);
            assert!(
                d >= full / 2 && d <= full,
                "failure {n}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
    }

    #[test]
    fn a_success_starts_over_and_objects_count_apart() {
        let backoff = Backoff::default();
        for _ in 0..5 {
            backoff.failed("objects/shop/offloading");
        }
        backoff.failed("pods/shop/web");
        assert_eq!(backoff.failures("objects/shop/offloading"), 5);
        assert_eq!(backoff.failures("pods/shop/web"), 1);
        backoff.succeeded("objects/shop/offloading");
        assert_eq!(backoff.failures("objects/shop/offloading"), 0);
        assert!(backoff.failed("objects/shop/offloading") <= BASE);
        assert_eq!(backoff.failures("pods/shop/web"), 1);
    }

    #[test]
    fn a_watch_backoff_is_capped_and_starts_over() {
        use kube::runtime::utils::Backoff as _;
        let mut b = WatchBackoff::capped(Duration::from_secs(5));
        let delays: Vec<Duration> = (0..10).map(|_| b.next().unwrap()).collect();
        assert!(delays[0] <= BASE, "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(5)),
            "{delays:?}"
        );
        assert!(
            delays[9] >= Duration::from_secs(5).min(CAP / 2),
            "{delays:?}"
        );
        b.reset();
        assert!(b.next().unwrap() <= BASE);
    }

    #[test]
    fn the_memory_of_failures_is_bounded() {
        let backoff = Backoff::default();
        let start = Instant::now();
        for n in 0..REMEMBERED {
            backoff.failed_at(&format!("pods/shop/web-{n}"), start, 0.5);
        }
        // While all are recent, all are kept (a failing object never starts over).
        backoff.failed_at("pods/shop/late", start + CAP, 0.5);
        assert_eq!(backoff.failures.lock().unwrap().len(), REMEMBERED + 1);
        // Those not seen for two caps (deleted while failing) are forgotten.
        backoff.failed_at("pods/shop/later", start + CAP * 2, 0.5);
        assert_eq!(backoff.failures.lock().unwrap().len(), 2);
        assert_eq!(backoff.failures("pods/shop/late"), 1);
    }
}
