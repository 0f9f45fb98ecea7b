#![allow(clippy::unwrap_used, clippy::float_cmp)]

use std::collections::HashMap;

use serde_json::json;

use super::*;

/// The remote's PodMetrics of twin `pod`, sampled at `at` (RFC 3339).
fn metrics(pod: &str, at: &str, containers: &[(&str, &str, &str)]) -> PodMetrics {
    serde_json::from_value(json!({
        "metadata": {"name": pod, "namespace": "shop-c1"},
        "timestamp": at,
        "window": "15.004s",
        "containers": containers.iter().map(|(name, cpu, memory)| {
            json!({"name": name, "usage": {"cpu": cpu, "memory": memory}})
        }).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn twin(pod: &str, metrics: PodMetrics) -> TwinUsage {
    TwinUsage {
        namespace: "shop".into(),
        pod: pod.into(),
        uid: format!("uid-{pod}"),
        // 2026-01-01T00:00:00Z
        starts: BTreeMap::from([("app".into(), 1_767_225_600.0)]),
        metrics,
    }
}

/// What metrics-server keeps of one scrape (pkg/scraper/client/resource/decode.go): the
/// node's point and each pod's containers, by label; a container (and so its pod) with a
/// zero counter or zero memory is dropped, and so is such a node.
#[derive(Debug, Default)]
struct Decoded {
    node: Option<(u64, u64, i64)>,
    pods: HashMap<(String, String), Containers>,
}

fn decode(text: &str) -> Decoded {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |v: &prometheus_parse::Value| match v {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("not a plain sample: {other:?}"),
    };
    let (mut node_cpu, mut node_mem, mut node_ts) = (0u64, 0u64, 0i64);
    let mut pods: HashMap<(String, String), Containers> = HashMap::new();
    for s in &scrape.samples {
        let ts = s.timestamp.timestamp_millis();
        let v = value(&s.value);
        match s.metric.as_str() {
            "node_cpu_usage_seconds_total" => (node_cpu, node_ts) = ((v * 1e9) as u64, ts),
            "node_memory_working_set_bytes" => (node_mem, node_ts) = (v as u64, ts),
            "container_cpu_usage_seconds_total" => {
                let c = container(&mut pods, &s.labels);
                (c.0, c.2) = ((v * 1e9) as u64, ts);
            }
            "container_memory_working_set_bytes" => {
                let c = container(&mut pods, &s.labels);
                (c.1, c.2) = (v as u64, ts);
            }
            "container_start_time_seconds" => container(&mut pods, &s.labels).3 = v,
            _ => {}
        }
    }
    pods.retain(|_, containers| containers.values().all(|c| c.0 != 0 && c.1 != 0));
    Decoded {
        node: (node_ts != 0 && node_cpu != 0 && node_mem != 0)
            .then_some((node_cpu, node_mem, node_ts)),
        pods,
    }
}

type Containers = HashMap<String, (u64, u64, i64, f64)>;

/// The container a sample is about, by its labels (as metrics-server finds them).
fn container<'a>(
    pods: &'a mut HashMap<(String, String), Containers>,
    labels: &prometheus_parse::Labels,
) -> &'a mut (u64, u64, i64, f64) {
    let key = (
        labels.get("namespace").unwrap().to_owned(),
        labels.get("pod").unwrap().to_owned(),
    );
    pods.entry(key)
        .or_default()
        .entry(labels.get("container").unwrap().to_owned())
        .or_default()
}

/// metrics-server's rate between two points: cores.
fn rate(prev: (u64, i64), last: (u64, i64)) -> f64 {
    assert!(
        last.0 >= prev.0,
        "a counter went down: {prev:?} -> {last:?}"
    );
    (last.0 - prev.0) as f64 / 1e9 / ((last.1 - prev.1) as f64 / 1e3)
}

#[test]
fn metrics_server_reads_the_remote_usage_under_the_local_names() {
    let mut counters = NodeCounters::default();
    let first = counters.sample(
        "liqo-c2",
        &[
            twin(
                "web",
                metrics(
                    "web",
                    "2026-01-01T00:01:00Z",
                    &[("app", "250m", "64Mi"), ("sidecar", "1000000n", "1Mi")],
                ),
            ),
            twin(
                "idle",
                metrics("idle", "2026-01-01T00:01:00Z", &[("app", "0", "2Mi")]),
            ),
        ],
        None,
        vec![],
        0,
    );
    let text = resource_metrics(&first);
    // Every family a kubelet serves, typed as it types them.
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    for (name, _, help) in FAMILIES {
        assert!(scrape.docs[name].contains(help), "{name}");
    }
    let one = decode(&text);
    let (cpu, memory, at) = one.node.unwrap();
    assert_eq!(memory, 67 * 1024 * 1024);
    assert_eq!(at, 1_767_225_660_000);
    // 60 s since the start at 0.25 cores; the least for the sidecar (its start is not
    // known) and for the idle container.
    assert!(cpu.abs_diff(15_000_000_000 + 1 + 1) <= 1, "{cpu}");
    let web = &one.pods[&("shop".to_owned(), "web".to_owned())];
    assert_eq!(
        web["app"],
        (15_000_000_000, 64 * 1024 * 1024, at, 1_767_225_600.0)
    );
    assert_eq!(web["sidecar"].1, 1024 * 1024);
    // An idle container still counts (its counter is never 0).
    assert_eq!(
        one.pods[&("shop".to_owned(), "idle".to_owned())]["app"].0,
        1
    );
    assert!(
        text.contains("pod_cpu_usage_seconds_total{namespace=\"shop\",pod=\"web\"} 15.0"),
        "{text}"
    );
    assert!(text.contains("\nscrape_error 0\n"), "{text}");

    // The remote has not sampled again: same points, so no rate yet and none made up.
    let again = counters.sample(
        "liqo-c2",
        &[twin(
            "web",
            metrics(
                "web",
                "2026-01-01T00:01:00Z",
                &[("app", "250m", "64Mi"), ("sidecar", "1000000n", "1Mi")],
            ),
        )],
        None,
        vec![],
        0,
    );
    let same = decode(&resource_metrics(&again));
    assert_eq!(
        same.pods[&("shop".to_owned(), "web".to_owned())]["app"],
        web["app"]
    );
    // 15 s later, at half a core: that is the rate metrics-server computes.
    let later = counters.sample(
        "liqo-c2",
        &[twin(
            "web",
            metrics(
                "web",
                "2026-01-01T00:01:15Z",
                &[("app", "500m", "80Mi"), ("sidecar", "2m", "1Mi")],
            ),
        )],
        None,
        vec![],
        0,
    );
    let two = decode(&resource_metrics(&later));
    let web2 = &two.pods[&("shop".to_owned(), "web".to_owned())];
    assert!((rate((web["app"].0, at), (web2["app"].0, web2["app"].2)) - 0.5).abs() < 1e-9);
    assert!(
        (rate(
            (web["sidecar"].0, at),
            (web2["sidecar"].0, web2["sidecar"].2)
        ) - 0.002)
            .abs()
            < 1e-9
    );
    let (cpu2, memory2, at2) = two.node.unwrap();
    assert!((rate((cpu, at), (cpu2, at2)) - 0.502).abs() < 1e-9);
    assert_eq!(memory2, 81 * 1024 * 1024);
    // The idle pod is gone, and so are its series.
    assert!(
        !two.pods
            .contains_key(&("shop".to_owned(), "idle".to_owned()))
    );
}

#[test]
fn a_pod_whose_usage_is_missing_a_while_keeps_its_counter() {
    let mut counters = NodeCounters::default();
    let web = |at: &str, cpu: &str| twin("web", metrics("web", at, &[("app", cpu, "1Mi")]));
    let running = HashSet::from([("shop".to_owned(), "web".to_owned())]);
    let first = counters.sample(
        "n",
        &[web("2026-01-01T00:01:00Z", "1")],
        Some(&running),
        vec![],
        0,
    );
    // Not sampled by the remote this time, but still running: its counter stays.
    counters.sample("n", &[], Some(&running), vec![], 0);
    let back = counters.sample(
        "n",
        &[web("2026-01-01T00:01:10Z", "1")],
        Some(&running),
        vec![],
        0,
    );
    let seconds = |s: &NodeSample| s.pods[0].containers[0].cpu_seconds;
    assert!((seconds(&back) - seconds(&first) - 10.0).abs() < 1e-9);
    // Gone from the node: forgotten, so a pod of the same name starts afresh.
    counters.sample("n", &[], Some(&HashSet::new()), vec![], 0);
    let again = counters.sample(
        "n",
        &[web("2026-01-01T00:01:20Z", "1")],
        Some(&running),
        vec![],
        0,
    );
    assert!((seconds(&again) - 80.0).abs() < 1e-9, "{again:?}");
}

#[test]
fn an_unreadable_cluster_is_a_scrape_error_never_a_guess() {
    let mut counters = NodeCounters::default();
    let sample = counters.sample(
        "liqo-c2",
        &[],
        None,
        vec!["cluster c2: no answer within 10s".into()],
        1_767_225_600_000,
    );
    let text = resource_metrics(&sample);
    assert!(text.contains("\nscrape_error 1\n"), "{text}");
    assert!(text.contains("\nresource_scrape_error 1\n"), "{text}");
    assert!(text.starts_with("# error: cluster c2: no answer"), "{text}");
    // Nothing to report: metrics-server keeps no point for the node (it shows unknown).
    let decoded = decode(&text);
    assert!(decoded.node.is_none() && decoded.pods.is_empty());
}

#[test]
fn the_summary_has_the_node_and_each_pod_under_its_local_name() {
    let mut counters = NodeCounters::default();
    let sample = counters.sample(
        "liqo-c2",
        &[twin(
            "web",
            metrics("web", "2026-01-01T00:01:00Z", &[("app", "250m", "64Mi")]),
        )],
        None,
        vec![],
        0,
    );
    let summary = summary(&sample);
    assert_eq!(summary["node"]["nodeName"], "liqo-c2");
    assert_eq!(summary["node"]["cpu"]["usageNanoCores"], 250_000_000);
    assert_eq!(
        summary["node"]["memory"]["workingSetBytes"],
        64 * 1024 * 1024
    );
    let pod = &summary["pods"][0];
    assert_eq!(
        pod["podRef"],
        json!({"name": "web", "namespace": "shop", "uid": "uid-web"})
    );
    assert_eq!(pod["containers"][0]["name"], "app");
    assert_eq!(pod["containers"][0]["startTime"], "2026-01-01T00:00:00Z");
    assert_eq!(pod["cpu"]["usageCoreNanoSeconds"], 15_000_000_000u64);
    assert_eq!(pod["memory"]["time"], "2026-01-01T00:01:00Z");
}
