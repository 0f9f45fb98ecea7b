//! Benchmark 2: time per review of the pure admission path (decode the AdmissionReview,
//! decide, encode the answer), for each strategy, with and without the pod's own affinity,
//! the worst case the term cap allows, and the NamespaceOffloading webhooks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{hint::black_box, sync::Arc};

use bench::fixtures;
use criterion::{Criterion, criterion_group, criterion_main};
use namespace_offloading::model::{
    admission::{self, Lookup, NodeInfo, Outcome, Webhook},
    api::{NamespaceOffloading, NamespaceOffloadingSpec},
};

struct One(Arc<NamespaceOffloading>);

impl Lookup for One {
    fn offloading(&self, _: &str) -> Option<Arc<NamespaceOffloading>> {
        Some(self.0.clone())
    }
    fn node(&self, _: &str) -> Option<NodeInfo> {
        None
    }
    fn offloadings(&self) -> Vec<Arc<NamespaceOffloading>> {
        vec![self.0.clone()]
    }
}

fn lookup(strategy: &str) -> One {
    let spec: NamespaceOffloadingSpec =
        serde_json::from_value(fixtures::offloading_spec(strategy)).unwrap();
    let mut nso = NamespaceOffloading::new("offloading", spec);
    nso.metadata.namespace = Some("shop".into());
    One(Arc::new(nso))
}

/// One review as the server handles it: decided and its answer encoded.
fn review(webhook: Webhook, body: &[u8], lookup: &One) -> usize {
    let site = admission::Site {
        local_cluster_id: "cluster-1-id",
        own_namespace: "liqo",
        runtime_class: "liqo",
    };
    match admission::review(webhook, body, lookup, site) {
        Ok(Outcome::Answered((answer, _))) => serde_json::to_vec(&answer).unwrap().len(),
        _ => panic!("the review must be answered from the lookup"),
    }
}

fn pods(c: &mut Criterion) {
    let mut group = c.benchmark_group("pod");
    for (own, suffix) in [(0, ""), (1, "+own")] {
        for strategy in ["Local", "LocalAndRemote", "Remote"] {
            let lookup = lookup(strategy);
            let body = serde_json::to_vec(&fixtures::pod_review("u", &fixtures::pod("shop", own)))
                .unwrap();
            group.bench_function(format!("{strategy}{suffix}"), |b| {
                b.iter(|| review(Webhook::Pod, black_box(&body), &lookup))
            });
        }
    }
    // 128 own terms, none implying an imposed one, crossed with LocalAndRemote's two.
    let lookup = lookup("LocalAndRemote");
    let body = serde_json::to_vec(&fixtures::pod_review("u", &fixtures::pod("shop", 128))).unwrap();
    group.bench_function("worst-case", |b| {
        b.iter(|| review(Webhook::Pod, black_box(&body), &lookup))
    });
    group.finish();
}

fn offloadings(c: &mut Criterion) {
    let mut group = c.benchmark_group("offloading");
    let lookup = lookup("Remote");
    let body = serde_json::to_vec(&fixtures::offloading_review(
        "u",
        "shop",
        &fixtures::offloading_spec("Remote"),
    ))
    .unwrap();
    group.bench_function("validation", |b| {
        b.iter(|| review(Webhook::OffloadingValidation, black_box(&body), &lookup))
    });
    group.bench_function("defaults", |b| {
        b.iter(|| review(Webhook::OffloadingDefaults, black_box(&body), &lookup))
    });
    group.finish();
}

/// The same review through the webhook server's service (path, body, metrics, encoding),
/// as the server runs it minus TLS and HTTP parsing: what serving adds to `pod/Remote+own`.
fn server(c: &mut Criterion) {
    use namespace_offloading::{
        plumbing::metrics::Metrics,
        webhooks::server::{AppState, WebhookService},
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let state = Arc::new(AppState {
        lookup: Arc::new(lookup("Remote")),
        local_cluster_id: "cluster-1-id".into(),
        own_namespace: "liqo".into(),
        runtime_class: "liqo".into(),
        metrics: Arc::new(Metrics::new()),
        client: None,
    });
    let service = WebhookService::new(state);
    let body = bytes::Bytes::from(
        serde_json::to_vec(&fixtures::pod_review("u", &fixtures::pod("shop", 1))).unwrap(),
    );
    let mut group = c.benchmark_group("server");
    group.bench_function("service-Remote+own", |b| {
        b.iter(|| {
            let request = http::Request::post("/mutate/pod")
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(body.clone()))
                .unwrap();
            runtime.block_on(async {
                let response = service.answer(request).await;
                axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap()
                    .len()
            })
        })
    });
    group.finish();
}

/// The floor: what the admission baseline server does per review (parse, allow).
fn floor(c: &mut Criterion) {
    let body = serde_json::to_vec(&fixtures::pod_review("u", &fixtures::pod("shop", 1))).unwrap();
    let mut group = c.benchmark_group("baseline");
    group.bench_function("parse-and-allow", |b| {
        b.iter(|| bench::baseline::answer(black_box(&body)).unwrap().len())
    });
    group.finish();
}

criterion_group!(benches, pods, offloadings, server, floor);
criterion_main!(benches);
