//! A virtual node's resource usage as a kubelet reports it: `/metrics/resource`
//! (Prometheus text, what metrics-server parses) and `/stats/summary` (the Summary API),
//! made from the remote metrics API's PodMetrics of our twins, under the local pods'
//! names. Pure: the remote calls are in `report`.
//!
//! The metrics API gives each container's CPU as a rate (cores, averaged over the remote
//! metrics-server's window) and a kubelet gives a cumulative counter, from which
//! metrics-server takes the rate between two scrapes. So each container's counter is kept
//! here and advanced by `rate × time since the previous sample` whenever the remote's
//! sample is newer: the rate metrics-server then computes is the remote's.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::quantity;

/// `metrics.k8s.io/v1beta1` PodMetricsList, as much as is read.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct PodMetricsList {
    #[serde(default)]
    pub(crate) items: Vec<PodMetrics>,
}

/// One pod's usage as the remote metrics API reports it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct PodMetrics {
    pub(crate) metadata: kube::api::ObjectMeta,
    /// When the remote sampled it (the end of its window).
    pub(crate) timestamp: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    #[serde(default)]
    pub(crate) containers: Vec<ContainerMetrics>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ContainerMetrics {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) usage: BTreeMap<String, Quantity>,
}

/// One of our twins on the node, with its remote usage: reported as the local pod.
#[derive(Clone, Debug)]
pub(crate) struct TwinUsage {
    /// The local pod's namespace, name and uid.
    pub(crate) namespace: String,
    pub(crate) pod: String,
    pub(crate) uid: String,
    /// Each container's start (Unix seconds), from the twin's status.
    pub(crate) starts: BTreeMap<String, f64>,
    pub(crate) metrics: PodMetrics,
}

/// One container's figures at one sample.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ContainerSample {
    pub(crate) name: String,
    /// Cumulative core-seconds (our counter).
    pub(crate) cpu_seconds: f64,
    /// The remote's rate, cores.
    pub(crate) cpu_cores: f64,
    pub(crate) memory_bytes: u64,
    pub(crate) start: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PodSample {
    pub(crate) namespace: String,
    pub(crate) pod: String,
    pub(crate) uid: String,
    /// Milliseconds since the epoch: when the remote sampled it.
    pub(crate) timestamp_ms: i64,
    pub(crate) containers: Vec<ContainerSample>,
}

/// What a virtual node reports: our twins on its cluster, and their sums as the node's
/// figures (the node stands for our share of that cluster, not the whole of it).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NodeSample {
    pub(crate) node: String,
    pub(crate) timestamp_ms: i64,
    pub(crate) cpu_seconds: f64,
    pub(crate) cpu_cores: f64,
    pub(crate) memory_bytes: u64,
    pub(crate) pods: Vec<PodSample>,
    /// Why some usage is missing (a namespace whose metrics could not be read).
    pub(crate) errors: Vec<String>,
}

/// metrics-server drops a container whose counter is 0 (not started yet, to it): the
/// smallest counter it can read, for a container first seen idle.
const FIRST_CPU_SECONDS: f64 = 1e-9;

#[derive(Clone, Debug, Default)]
struct Counter {
    at_ms: i64,
    seconds: f64,
}

/// The CPU counters of one virtual node: per local container, and the node's own.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeCounters {
    containers: HashMap<(String, String, String), Counter>,
    node: Option<Counter>,
}

impl NodeCounters {
    /// Turns the twins' usage into the node's sample, advancing the counters. Counters of
    /// pods that are not in `running` (local namespace and name; `None`: unknown, as
    /// when the cluster does not answer) are dropped: a pod whose usage is missing for a
    /// while keeps its counter, so it does not start again from its estimate.
    pub(crate) fn sample(
        &mut self,
        node: &str,
        twins: &[TwinUsage],
        running: Option<&HashSet<(String, String)>>,
        errors: Vec<String>,
        now_ms: i64,
    ) -> NodeSample {
        let mut seen = HashMap::new();
        let mut pods = Vec::new();
        for twin in twins {
            let at_ms = twin.metrics.timestamp.0.as_millisecond();
            let mut containers = Vec::new();
            for c in &twin.metrics.containers {
                let cpu_cores = usage(c, "cpu").max(0.0);
                let memory_bytes = usage(c, "memory").max(0.0) as u64;
                let start = twin.starts.get(&c.name).copied();
                let key = (twin.namespace.clone(), twin.pod.clone(), c.name.clone());
                let counter = match self.containers.remove(&key) {
                    Some(mut counter) => {
                        if at_ms > counter.at_ms {
                            counter.seconds += cpu_cores * (at_ms - counter.at_ms) as f64 / 1e3;
                            counter.at_ms = at_ms;
                        }
                        counter
                    }
                    // First seen: what it would have used at this rate since it started
                    // (only differences count to metrics-server; this keeps the counter
                    // plausible to anyone reading it directly).
                    None => {
                        let since = start.map_or(0.0, |s| (at_ms as f64 / 1e3 - s).max(0.0));
                        Counter {
                            at_ms,
                            seconds: (cpu_cores * since).max(FIRST_CPU_SECONDS),
                        }
                    }
                };
                containers.push(ContainerSample {
                    name: c.name.clone(),
                    cpu_seconds: counter.seconds,
                    cpu_cores,
                    memory_bytes,
                    start,
                });
                seen.insert(key, counter);
            }
            pods.push(PodSample {
                namespace: twin.namespace.clone(),
                pod: twin.pod.clone(),
                uid: twin.uid.clone(),
                timestamp_ms: at_ms,
                containers,
            });
        }
        let mut kept = std::mem::take(&mut self.containers);
        kept.retain(|(namespace, pod, _), _| {
            running.is_none_or(|r| r.contains(&(namespace.clone(), pod.clone())))
        });
        kept.extend(seen);
        self.containers = kept;
        let cpu_cores: f64 = pods
            .iter()
            .flat_map(|p| &p.containers)
            .map(|c| c.cpu_cores)
            .sum();
        // Saturating: the figures come from another cluster, and a sum must not overflow.
        let memory_bytes = pods
            .iter()
            .flat_map(|p| &p.containers)
            .fold(0u64, |sum, c| sum.saturating_add(c.memory_bytes));
        // The node's time is its newest sample's; without twins, now.
        let at_ms = pods.iter().map(|p| p.timestamp_ms).max().unwrap_or(now_ms);
        let node_counter = match self.node.take() {
            Some(mut counter) => {
                if at_ms > counter.at_ms {
                    counter.seconds += cpu_cores * (at_ms - counter.at_ms) as f64 / 1e3;
                    counter.at_ms = at_ms;
                }
                counter
            }
            None => Counter {
                at_ms,
                seconds: pods
                    .iter()
                    .flat_map(|p| &p.containers)
                    .map(|c| c.cpu_seconds)
                    .sum::<f64>()
                    .max(FIRST_CPU_SECONDS),
            },
        };
        let sample = NodeSample {
            node: node.to_owned(),
            timestamp_ms: node_counter.at_ms,
            cpu_seconds: node_counter.seconds,
            cpu_cores,
            memory_bytes,
            pods,
            errors,
        };
        self.node = Some(node_counter);
        sample
    }
}

/// A container's usage of `resource` in base units (cores, bytes); 0 when absent.
fn usage(c: &ContainerMetrics, resource: &str) -> f64 {
    c.usage
        .get(resource)
        .and_then(|q| quantity::parse(&q.0))
        .unwrap_or_default()
}

/// The families a kubelet's `/metrics/resource` has, with its help texts (stability
/// tags included, as it writes them).
const FAMILIES: [(&str, &str, &str); 9] = [
    (
        "container_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    ),
    (
        "container_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the container in bytes",
    ),
    (
        "container_start_time_seconds",
        "gauge",
        "[STABLE] Start time of the container since unix epoch in seconds",
    ),
    (
        "node_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    ),
    (
        "node_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the node in bytes",
    ),
    (
        "pod_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    ),
    (
        "pod_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the pod in bytes",
    ),
    (
        "resource_scrape_error",
        "gauge",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    ),
    (
        "scrape_error",
        "gauge",
        "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
    ),
];

/// The node's `/metrics/resource`, in the Prometheus text format (0.0.4) a kubelet
/// serves: families sorted by name, samples with millisecond timestamps. An error is
/// `scrape_error 1` (and `resource_scrape_error 1`, its newer name), its message in a
/// comment line (parsers skip comments).
pub(crate) fn resource_metrics(sample: &NodeSample) -> String {
    let mut out = String::new();
    for e in &sample.errors {
        let _ = writeln!(out, "# error: {}", e.replace('\n', " "));
    }
    for (name, kind, help) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        match name {
            "container_cpu_usage_seconds_total"
            | "container_memory_working_set_bytes"
            | "container_start_time_seconds" => {
                for p in &sample.pods {
                    for c in &p.containers {
                        let value = match name {
                            "container_cpu_usage_seconds_total" => c.cpu_seconds,
                            "container_memory_working_set_bytes" => c.memory_bytes as f64,
                            _ => match c.start {
                                Some(start) => start,
                                None => continue,
                            },
                        };
                        let _ = writeln!(
                            out,
                            "{name}{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                            escape(&c.name),
                            escape(&p.namespace),
                            escape(&p.pod),
                            number(value),
                            p.timestamp_ms
                        );
                    }
                }
            }
            "pod_cpu_usage_seconds_total" | "pod_memory_working_set_bytes" => {
                for p in &sample.pods {
                    let value: f64 = p
                        .containers
                        .iter()
                        .map(|c| {
                            if name == "pod_cpu_usage_seconds_total" {
                                c.cpu_seconds
                            } else {
                                c.memory_bytes as f64
                            }
                        })
                        .sum();
                    let _ = writeln!(
                        out,
                        "{name}{{namespace=\"{}\",pod=\"{}\"}} {} {}",
                        escape(&p.namespace),
                        escape(&p.pod),
                        number(value),
                        p.timestamp_ms
                    );
                }
            }
            "node_cpu_usage_seconds_total" => {
                let _ = writeln!(
                    out,
                    "{name} {} {}",
                    number(sample.cpu_seconds),
                    sample.timestamp_ms
                );
            }
            "node_memory_working_set_bytes" => {
                let _ = writeln!(
                    out,
                    "{name} {} {}",
                    sample.memory_bytes, sample.timestamp_ms
                );
            }
            _ => {
                let _ = writeln!(out, "{name} {}", u8::from(!sample.errors.is_empty()));
            }
        }
    }
    out
}

/// A sample value as Prometheus text writes it (Rust's shortest round-trip form).
fn number(v: f64) -> String {
    format!("{v}")
}

/// Label values escaped as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The node's `/stats/summary` (the kubelet's Summary API, `stats/v1alpha1`): the node and
/// each pod with CPU (`usageNanoCores`, `usageCoreNanoSeconds`) and memory
/// (`workingSetBytes`); what the metrics API does not give (file systems, network) is
/// left out.
pub(crate) fn summary(sample: &NodeSample) -> Value {
    let time = |ms: i64| {
        k8s_openapi::jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    let cpu = |ms: i64, cores: f64, seconds: f64| {
        json!({"time": time(ms), "usageNanoCores": (cores * 1e9) as u64,
               "usageCoreNanoSeconds": (seconds * 1e9) as u64})
    };
    let memory = |ms: i64, bytes: u64| json!({"time": time(ms), "workingSetBytes": bytes});
    let start = |s: Option<f64>| s.map(|s| time((s * 1e3) as i64));
    let pods: Vec<Value> = sample
        .pods
        .iter()
        .map(|p| {
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|c| {
                    json!({"name": c.name, "startTime": start(c.start),
                           "cpu": cpu(p.timestamp_ms, c.cpu_cores, c.cpu_seconds),
                           "memory": memory(p.timestamp_ms, c.memory_bytes)})
                })
                .collect();
            let cores = p.containers.iter().map(|c| c.cpu_cores).sum();
            let seconds = p.containers.iter().map(|c| c.cpu_seconds).sum();
            let bytes = p
                .containers
                .iter()
                .fold(0u64, |sum, c| sum.saturating_add(c.memory_bytes));
            let started = p.containers.iter().filter_map(|c| c.start).reduce(f64::min);
            json!({
                "podRef": {"name": p.pod, "namespace": p.namespace, "uid": p.uid},
                "startTime": start(started),
                "containers": containers,
                "cpu": cpu(p.timestamp_ms, cores, seconds),
                "memory": memory(p.timestamp_ms, bytes),
            })
        })
        .collect();
    json!({
        "node": {
            "nodeName": sample.node,
            "cpu": cpu(sample.timestamp_ms, sample.cpu_cores, sample.cpu_seconds),
            "memory": memory(sample.timestamp_ms, sample.memory_bytes),
        },
        "pods": pods,
    })
}

#[cfg(test)]
mod tests;
