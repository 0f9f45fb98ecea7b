//! Prometheus metrics, served on the admin port at `/metrics`: the webhooks' here, the
//! workers' in `controllers`.

pub(crate) mod controllers;

pub(crate) use controllers::ControllerMetrics;

use std::sync::Mutex;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

// Static label values: recording a review allocates nothing (it is on the hot path).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    webhook: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiCallLabels {
    call: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s: answers come from memory, so the interesting range is low.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

pub struct Metrics {
    registry: Mutex<Registry>,
    reviews: Family<ReviewLabels, Counter>,
    latency: Family<WebhookLabels, Histogram, fn() -> Histogram>,
    api_calls: Family<ApiCallLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("namespace_offloading");
        let reviews = Family::<ReviewLabels, Counter>::default();
        let latency = Family::<WebhookLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "admission_requests",
            "Admission reviews answered, by webhook and result (allowed, patched, denied, invalid)",
            reviews.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission review, by webhook",
            latency.clone(),
        );
        let api_calls = Family::<ApiCallLabels, Counter>::default();
        registry.register(
            "admission_api_calls",
            "API calls made while a review waited: read-offloading (cache miss in a marked namespace) and mark-namespace (a NamespaceOffloading being created), by result",
            api_calls.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            reviews,
            latency,
            api_calls,
        }
    }

    /// Records one answered review.
    pub(crate) fn review(&self, webhook: &'static str, result: &'static str, seconds: f64) {
        self.reviews
            .get_or_create(&ReviewLabels { webhook, result })
            .inc();
        self.latency
            .get_or_create(&WebhookLabels { webhook })
            .observe(seconds);
    }

    /// Records one API call made during a review.
    pub(crate) fn api_call(&self, call: &'static str, result: &'static str) {
        self.api_calls
            .get_or_create(&ApiCallLabels { call, result })
            .inc();
    }

    /// Lets other parts (the controller) register their own metrics.
    pub(crate) fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> Option<T> {
        self.registry.lock().ok().map(|mut r| f(&mut r))
    }

    /// The OpenMetrics text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = encode(&mut out, &registry);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reviews_are_counted_by_webhook_and_result() {
        let m = Metrics::new();
        m.review("pod", "patched", 0.001);
        m.review("pod", "patched", 0.002);
        m.review("pod", "denied", 0.001);
        let text = m.encode();
        assert!(text.contains(
            "namespace_offloading_admission_requests_total{webhook=\"pod\",result=\"patched\"} 2"
        ), "{text}");
        assert!(
            text.contains(
                "namespace_offloading_admission_duration_seconds_count{webhook=\"pod\"} 3"
            ),
            "{text}"
        );
    }
}
