//! Benchmark 4: offloaded pods at scale, and how long a change takes to cross clusters.
//!
//! Three real clusters with schedulers; kwok plays the kubelet of one worker in each remote
//! cluster. Deployments in offloaded namespaces of cluster 1 (`Remote`) run on the virtual
//! nodes through their twins, against the same Deployments created directly in the remote
//! clusters in the same run: first to one cluster, then spread over two. Beside the load and
//! at rest, probes time each reflection path from a change to its effect, as watches in
//! both clusters see them.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
    runtime::{WatchStreamExt, watcher},
};
use namespace_offloading::{
    model::markers::ORIGIN_NAMESPACE_LABEL,
    plumbing::client::{LOCAL_USER_AGENT, remote_user_agent},
};
use serde_json::json;
use testbed::KWOK_ANNOTATION;

use crate::{
    proc,
    report::{Line, Section},
    scale::{client, delete_namespace, for_all, peered},
    setup,
};

/// How many pods, and how many probes of each path.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub namespaces: usize,
    pub pods_per_namespace: usize,
    /// Probes of each path at rest (under load: as many as fit in the load, up to this).
    pub samples: usize,
}

impl Size {
    pub fn full() -> Self {
        Self {
            namespaces: 100,
            pods_per_namespace: 100,
            samples: 40,
        }
    }

    pub fn quick() -> Self {
        Self {
            namespaces: 2,
            pods_per_namespace: 25,
            samples: 5,
        }
    }

    fn pods(&self) -> usize {
        self.namespaces * self.pods_per_namespace
    }
}

const WAIT: Duration = Duration::from_secs(1800);
const PROBE_WAIT: Duration = Duration::from_secs(120);
const SET_LABEL: &str = "bench.offloading.liqo.io/pods";
const PROBE_LABEL: &str = "bench.offloading.liqo.io/probe";
/// The probes' namespace in cluster 1, offloaded to cluster 2 only.
const PROBES: &str = "latency";
/// Namespaces and Deployments created at once (as `kubectl apply` of many files would).
const USER_CONCURRENCY: usize = 32;

/// When a watch first saw each pod, saw it Running, and saw it go.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    created: Option<Instant>,
    /// Its `nodeName` set: the scheduler's part is done.
    bound: Option<Instant>,
    running: Option<Instant>,
    gone: Option<Instant>,
}

/// One cluster's pods (those labelled `selector`), as a watch sees them, by namespace/name.
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<HashMap<String, Seen>>>);

impl Timeline {
    /// Starts following `client`'s pods matching `selector`; stops with the returned task.
    fn follow(client: &Client, selector: &str) -> (Self, tokio::task::JoinHandle<()>) {
        let timeline = Self::default();
        let events = watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().labels(selector),
        );
        let seen = timeline.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let now = Instant::now();
                let Ok(event) = event else { continue };
                let Ok(mut map) = seen.0.lock() else { return };
                match event {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        let entry = map.entry(key(&p)).or_default();
                        entry.created.get_or_insert(now);
                        if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                            entry.bound.get_or_insert(now);
                        }
                        let running =
                            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                        if running {
                            entry.running.get_or_insert(now);
                        }
                    }
                    watcher::Event::Delete(p) => {
                        map.entry(key(&p)).or_default().gone.get_or_insert(now);
                    }
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
            }
        });
        (timeline, task)
    }

    fn get(&self, namespace: &str, name: &str) -> Seen {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(&format!("{namespace}/{name}")).copied())
            .unwrap_or_default()
    }

    /// Pods Running now (and not gone) in namespaces starting with `prefix`.
    fn running(&self, prefix: &str) -> usize {
        self.0.lock().map_or(0, |m| {
            m.iter()
                .filter(|(k, s)| k.starts_with(prefix) && s.running.is_some() && s.gone.is_none())
                .count()
        })
    }

    /// Waits until `check` holds for what was seen of namespace/name.
    async fn until(
        &self,
        namespace: &str,
        name: &str,
        check: impl Fn(&Seen) -> bool,
    ) -> Result<Seen, String> {
        let started = Instant::now();
        loop {
            let seen = self.get(namespace, name);
            if check(&seen) {
                return Ok(seen);
            }
            if started.elapsed() > PROBE_WAIT {
                return Err(format!(
                    "{namespace}/{name}: not seen as expected within {PROBE_WAIT:?} ({seen:?})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Every pod of namespaces starting with `prefix`, by its home namespace and name. A twin's
/// namespace (`<namespace>-<cluster ID>`) is read as its home one: the load's Deployments
/// are alike, so their pods differ only by a 5-letter suffix, and over 10,000 pods a few
/// names recur in other namespaces (matched by name alone, such a pod was timed against
/// another's twin, minutes apart).
fn by_pod(timeline: &Timeline, prefix: &str) -> HashMap<(String, String), Seen> {
    timeline.0.lock().map_or_else(
        |_| HashMap::new(),
        |m| {
            m.iter()
                .filter_map(|(k, s)| {
                    let (namespace, name) = k.split_once('/')?;
                    let index = namespace.strip_prefix(prefix)?.split('-').next()?;
                    Some(((format!("{prefix}{index}"), name.to_owned()), *s))
                })
                .collect()
        },
    )
}

/// For every offloaded pod of the load: from bound here to its twin created there, and from
/// its twin Running there to Running here.
fn load_paths(
    local: &Timeline,
    remotes: &[&Timeline],
    prefix: &str,
) -> (Vec<Duration>, Vec<Duration>) {
    let locals = by_pod(local, prefix);
    let mut twins = HashMap::new();
    for remote in remotes {
        twins.extend(by_pod(remote, prefix));
    }
    let (mut created, mut running) = (Vec::new(), Vec::new());
    for (pod, here) in &locals {
        let Some(there) = twins.get(pod) else {
            continue;
        };
        if let (Some(b), Some(t)) = (here.bound, there.created) {
            created.push(t.saturating_duration_since(b));
        }
        if let (Some(t), Some(r)) = (there.running, here.running) {
            running.push(r.saturating_duration_since(t));
        }
    }
    (created, running)
}

fn key(p: &Pod) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

/// When a watch first saw each value of a key: ConfigMap data `v`, or an EndpointSlice's
/// first address.
#[derive(Clone, Default)]
struct Values(Arc<Mutex<HashMap<String, Instant>>>);

impl Values {
    fn record(&self, value: String) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(value).or_insert_with(Instant::now);
        }
    }

    async fn until(&self, value: &str) -> Result<Instant, String> {
        let started = Instant::now();
        loop {
            if let Some(at) = self.0.lock().ok().and_then(|m| m.get(value).copied()) {
                return Ok(at);
            }
            if started.elapsed() > PROBE_WAIT {
                return Err(format!(
                    "{value:?} not seen in the remote cluster within {PROBE_WAIT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Follows the remote copies of the probe ConfigMap and EndpointSlice in `namespace`.
fn follow_copies(
    remote: &Client,
    namespace: &str,
) -> (Values, Values, Vec<tokio::task::JoinHandle<()>>) {
    let (configs, slices) = (Values::default(), Values::default());
    let cm_events = watcher(
        Api::<ConfigMap>::namespaced(remote.clone(), namespace),
        watcher::Config::default().fields("metadata.name=probe"),
    )
    .applied_objects();
    let seen = configs.clone();
    let a = tokio::spawn(async move {
        let mut events = std::pin::pin!(cm_events);
        while let Some(event) = events.next().await {
            if let Ok(cm) = event
                && let Some(v) = cm.data.as_ref().and_then(|d| d.get("v"))
            {
                seen.record(v.clone());
            }
        }
    });
    let slice_events = watcher(
        Api::<EndpointSlice>::namespaced(remote.clone(), namespace),
        watcher::Config::default().labels("kubernetes.io/service-name=probe"),
    )
    .applied_objects();
    let seen = slices.clone();
    let b = tokio::spawn(async move {
        let mut events = std::pin::pin!(slice_events);
        while let Some(event) = events.next().await {
            if let Ok(slice) = event {
                for e in slice.endpoints.iter().flatten() {
                    for a in &e.addresses {
                        seen.record(a.clone());
                    }
                }
            }
        }
    });
    (configs, slices, vec![a, b])
}

/// Each path's samples.
#[derive(Default)]
struct Latencies {
    twin_created: Vec<Duration>,
    local_running: Vec<Duration>,
    config_changed: Vec<Duration>,
    slice_changed: Vec<Duration>,
    twin_gone: Vec<Duration>,
}

impl Latencies {
    fn paths(&self) -> [(&'static str, &'static str, &Vec<Duration>); 5] {
        [
            (
                "pod_created_to_twin_created",
                "pod created → twin created",
                &self.twin_created,
            ),
            (
                "twin_running_to_local_running",
                "twin Running → local pod Running",
                &self.local_running,
            ),
            (
                "configmap_changed_to_copy_changed",
                "local ConfigMap changed → remote copy changed",
                &self.config_changed,
            ),
            (
                "endpoints_changed_to_slice_changed",
                "Service endpoints changed → remote slice changed",
                &self.slice_changed,
            ),
            (
                "pod_deleted_to_twin_gone",
                "local pod deleted → twin gone",
                &self.twin_gone,
            ),
        ]
    }
}

/// p50, p99 and max.
fn percentiles(samples: &[Duration]) -> Option<(Duration, Duration, Duration)> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    (!sorted.is_empty()).then(|| (at(0.5), at(0.99), at(1.0)))
}

/// Everything the probes need.
struct Probes {
    local: Client,
    remote_namespace: String,
    local_pods: Timeline,
    remote_pods: Timeline,
    configs: Values,
    slices: Values,
}

impl Probes {
    /// One probe of every path; `round` keeps names and values apart.
    async fn once(&self, round: &str, into: &mut Latencies) -> Result<(), String> {
        let name = format!("probe-{round}");
        let pods = Api::<Pod>::namespaced(self.local.clone(), PROBES);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {PROBE_LABEL: "true"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        }))
        .map_err(|e| e.to_string())?;
        pods.create(&PostParams::default(), &pod)
            .await
            .map_err(|e| format!("cannot create pod {name}: {e}"))?;
        let twin = self
            .remote_pods
            .until(&self.remote_namespace, &name, |s| s.created.is_some())
            .await?;
        let local = self
            .local_pods
            .until(PROBES, &name, |s| s.created.is_some())
            .await?;
        if let (Some(t), Some(l)) = (twin.created, local.created) {
            into.twin_created.push(t.saturating_duration_since(l));
        }
        let local = self
            .local_pods
            .until(PROBES, &name, |s| s.running.is_some())
            .await?;
        let twin = self.remote_pods.get(&self.remote_namespace, &name);
        if let (Some(l), Some(t)) = (local.running, twin.running) {
            into.local_running.push(l.saturating_duration_since(t));
        }

        let value = round.to_owned();
        let sent = Instant::now();
        Api::<ConfigMap>::namespaced(self.local.clone(), PROBES)
            .patch(
                "probe",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"v": value}})),
            )
            .await
            .map_err(|e| format!("cannot change the probe ConfigMap: {e}"))?;
        into.config_changed.push(
            self.configs
                .until(&value)
                .await?
                .saturating_duration_since(sent),
        );

        let address = probe_address(round);
        let sent = Instant::now();
        Api::<EndpointSlice>::namespaced(self.local.clone(), PROBES)
            .patch(
                "probe-manual",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"endpoints": [{"addresses": [address], "conditions": {"ready": true}}]}),
                ),
            )
            .await
            .map_err(|e| format!("cannot change the probe EndpointSlice: {e}"))?;
        into.slice_changed.push(
            self.slices
                .until(&address)
                .await?
                .saturating_duration_since(sent),
        );

        let sent = Instant::now();
        pods.delete(&name, &DeleteParams::default())
            .await
            .map_err(|e| format!("cannot delete pod {name}: {e}"))?;
        let twin = self
            .remote_pods
            .until(&self.remote_namespace, &name, |s| s.gone.is_some())
            .await?;
        if let Some(g) = twin.gone {
            into.twin_gone.push(g.saturating_duration_since(sent));
        }
        Ok(())
    }
}

/// A distinct address per round.
fn probe_address(round: &str) -> String {
    let n = round
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!(
        "10.{}.{}.{}",
        64 + (n >> 16) % 64,
        (n >> 8) % 256,
        1 + n % 250
    )
}

pub async fn run(manager: &Path, work: &Path, size: Size) -> Result<Section, String> {
    eprintln!(
        "pods: starting three clusters with schedulers, a kwok worker in clusters 2 and 3, a manager in each"
    );
    let tb = setup::testbed_with_schedulers(&work.join("testbed"), 3, 3).await?;
    let clients = [
        client(&tb, 1).await?,
        client(&tb, 2).await?,
        client(&tb, 3).await?,
    ];
    let capacity = 4 * size.pods() + 1_000;
    for (n, c) in clients.iter().enumerate().skip(1) {
        worker(c, &format!("cluster-{}-worker", n + 1), capacity).await?;
    }
    let resources = format!("--resources=cpu=100000,memory=100Ti,pods={capacity}");
    let (managers, local_id) = peered(manager, &tb, &[&resources]).await?;
    let pid = managers[0].process.pid();
    let (local_pods, local_task) = Timeline::follow(&clients[0], SET_LABEL);
    let (remote_pods, remote_task) = Timeline::follow(&clients[1], SET_LABEL);
    let (local_probes, probe_task_1) = Timeline::follow(&clients[0], PROBE_LABEL);
    let (remote_probes, probe_task_2) = Timeline::follow(&clients[1], PROBE_LABEL);
    let mut tasks = vec![local_task, probe_task_1, probe_task_2];
    let remote_3 = Timeline::follow(&clients[2], SET_LABEL);
    tasks.push(remote_3.1);

    // The probes' namespace, its ConfigMap, Service and hand-made EndpointSlice.
    offloaded_namespace(&clients[0], PROBES, &["eu"]).await?;
    nsos_ready(&clients[0], &[PROBES.to_owned()]).await?;
    let remote_namespace = remote_namespace_of(&clients[1], PROBES).await?;
    probe_objects(&clients[0]).await?;
    let (configs, slices, copy_tasks) = follow_copies(&clients[1], &remote_namespace);
    tasks.extend(copy_tasks);
    let probes = Probes {
        local: clients[0].clone(),
        remote_namespace,
        local_pods: local_probes,
        remote_pods: remote_probes,
        configs,
        slices,
    };
    probes.configs.until("0").await?;
    probes.slices.until(&probe_address("0")).await?;

    eprintln!(
        "pods: {} probes of each reflection path at rest",
        size.samples
    );
    let mut at_rest = Latencies::default();
    for i in 0..size.samples {
        probes.once(&format!("rest-{i}"), &mut at_rest).await?;
    }

    let logs = [
        tb.cluster(1).audit_log(),
        tb.cluster(2).audit_log(),
        tb.cluster(3).audit_log(),
    ];
    let peer_ua = remote_user_agent(&local_id);
    let n = size.pods();
    let mut lines = Vec::new();
    let mut figures = serde_json::Map::new();
    let mut under_load = Latencies::default();
    for (scenario, regions) in [("one", &["eu"][..]), ("two", &["eu", "us"][..])] {
        let spread = regions.len();
        eprintln!(
            "pods: baseline, {n} pods created directly ({} Deployments) in {spread} remote cluster(s)",
            size.namespaces
        );
        let direct: Vec<(usize, String)> = (0..size.namespaces)
            .map(|i| (1 + i % spread, format!("direct-{scenario}-{i:03}")))
            .collect();
        for_all(&direct, USER_CONCURRENCY, |(c, ns)| {
            create_namespace(clients[*c].clone(), ns.clone())
        })
        .await?;
        let began = Instant::now();
        for_all(&direct, USER_CONCURRENCY, |(c, ns)| {
            create_deployment(clients[*c].clone(), ns.clone(), size.pods_per_namespace)
        })
        .await?;
        let timelines = [&remote_pods, &remote_3.0];
        wait_running(&timelines[..spread], &format!("direct-{scenario}-"), n).await?;
        let baseline = began.elapsed();
        for_all(&direct, USER_CONCURRENCY, |(c, ns)| {
            delete_namespace(clients[*c].clone(), ns.clone())
        })
        .await?;
        for (c, _) in direct.iter().take(spread) {
            gone(&clients[*c], &format!("direct-{scenario}-")).await?;
        }

        eprintln!(
            "pods: ours, {n} pods of {} Deployments offloaded to {spread} cluster(s)",
            size.namespaces
        );
        let offloaded: Vec<String> = (0..size.namespaces)
            .map(|i| format!("off-{scenario}-{i:03}"))
            .collect();
        for_all(&offloaded, USER_CONCURRENCY, |ns| {
            let (client, ns) = (clients[0].clone(), ns.clone());
            async move { offloaded_namespace(&client, &ns, regions).await }
        })
        .await?;
        nsos_ready(&clients[0], &offloaded).await?;
        proc::reset_peak(pid)?;
        let cpu = proc::cpu_seconds(pid);
        let marks = [logs[0].mark(), logs[1].mark(), logs[2].mark()];
        let began = Instant::now();
        let load = async {
            for_all(&offloaded, USER_CONCURRENCY, |ns| {
                create_deployment(clients[0].clone(), ns.clone(), size.pods_per_namespace)
            })
            .await?;
            wait_running(&[&local_pods], &format!("off-{scenario}-"), n).await?;
            Ok::<Duration, String>(began.elapsed())
        };
        let finished = std::sync::atomic::AtomicBool::new(false);
        let probing = async {
            let mut i = 0;
            while i < size.samples && !finished.load(std::sync::atomic::Ordering::Relaxed) {
                probes
                    .once(&format!("load-{scenario}-{i}"), &mut under_load)
                    .await?;
                i += 1;
            }
            Ok::<(), String>(())
        };
        let load = async {
            let r = load.await;
            finished.store(true, std::sync::atomic::Ordering::Relaxed);
            r
        };
        let (ours, probed) = tokio::join!(load, probing);
        let ours = ours?;
        probed?;
        let cpu_seconds = proc::cpu_seconds(pid) - cpu;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss = proc::rss_mib(pid);
        let peak = proc::peak_rss_mib(pid);
        // Per pod, by verb and resource, heartbeats apart (they go on whatever happens).
        let per_pod = |requests: std::collections::BTreeMap<String, usize>, pods: f64| {
            requests
                .into_iter()
                .filter(|(k, _)| {
                    !["leases", "nodes", "nodes/status", "/version"]
                        .iter()
                        .any(|h| k.ends_with(&format!(" {h}")))
                })
                .map(|(k, v)| (k, v as f64 / pods))
                .collect::<std::collections::BTreeMap<String, f64>>()
        };
        let total = |m: &std::collections::BTreeMap<String, f64>| m.values().sum::<f64>();
        let detail = |m: &std::collections::BTreeMap<String, f64>| {
            let mut items: Vec<(&String, &f64)> = m.iter().filter(|(_, v)| **v >= 0.05).collect();
            items.sort_by(|a, b| b.1.total_cmp(a.1));
            items
                .iter()
                .take(5)
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let local_by = per_pod(
            logs[0].activity(LOCAL_USER_AGENT, marks[0]).requests,
            n as f64,
        );
        let remote_by: Vec<std::collections::BTreeMap<String, f64>> = (1..=spread)
            .map(|c| {
                per_pod(
                    logs[c].activity(&peer_ua, marks[c]).requests,
                    (n / spread) as f64,
                )
            })
            .collect();
        let local_requests = total(&local_by);
        let remote_requests: Vec<f64> = remote_by.iter().map(total).collect();
        let (bound_to_twin, twin_to_local) = load_paths(
            &local_pods,
            &[&remote_pods, &remote_3.0][..spread],
            &format!("off-{scenario}-"),
        );
        let ratio = ours.as_secs_f64() / baseline.as_secs_f64().max(1e-3);
        let clusters = if spread == 1 {
            "one virtual node".to_owned()
        } else {
            format!("{spread} virtual nodes")
        };
        lines.push(
            Line::new(
                &format!(
                    "{n} pods ({} Deployments) offloaded to {clusters}, until all Running",
                    size.namespaces
                ),
                format!("{:.1} s", ours.as_secs_f64()),
                format!(
                    "{:.1} s (the same pods created directly)",
                    baseline.as_secs_f64()
                ),
            )
            .against(ratio, "time", false, 1.2),
        );
        lines.push(Line::new(
            &format!("{n} offloaded pods on {clusters}: API requests per pod"),
            format!(
                "cluster 1: {local_requests:.2} ({}); each remote cluster: {} ({})",
                detail(&local_by),
                remote_requests
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                detail(&remote_by[0])
            ),
            String::new(),
        ));
        let mut paths = serde_json::Map::new();
        for (key, path, values) in [
            (
                "pod_bound_to_twin_created",
                "local pod bound → twin created",
                &bound_to_twin,
            ),
            (
                "twin_running_to_local_running",
                "twin Running → local pod Running",
                &twin_to_local,
            ),
        ] {
            if let Some((p50, p99, max)) = percentiles(values) {
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                lines.push(
                    Line::new(
                        &format!("latency under load, every pod of the {n} on {clusters}: {path}"),
                        format!(
                            "p50 {:.0} / p99 {:.0} / max {:.0} ms ({} pods)",
                            ms(p50),
                            ms(p99),
                            ms(max),
                            values.len()
                        ),
                        String::new(),
                    )
                    .target("p99 <= 5 s", p99.as_secs_f64() <= 5.0),
                );
                paths.insert(key.into(), json!({"p50_ms": ms(p50), "p99_ms": ms(p99), "max_ms": ms(max), "samples": values.len()}));
            }
        }
        figures.insert(
            scenario.to_owned(),
            json!({
                "pods": n, "namespaces": size.namespaces, "remote_clusters": spread,
                "baseline_s": baseline.as_secs_f64(), "ours_s": ours.as_secs_f64(), "ratio": ratio,
                "manager_peak_rss_mib": peak, "manager_rss_after_mib": rss, "manager_cpu_s": cpu_seconds,
                "requests_per_pod": {"cluster_1": local_requests, "each_remote": remote_requests,
                    "cluster_1_by_request": local_by, "remote_by_request": remote_by},
                "latency_every_pod": paths,
            }),
        );
        eprintln!("pods: deleting the offloaded namespaces");
        for_all(&offloaded, USER_CONCURRENCY, |ns| {
            delete_namespace(clients[0].clone(), ns.clone())
        })
        .await?;
        for remote in clients.iter().skip(1).take(spread) {
            gone_by_label(remote, ORIGIN_NAMESPACE_LABEL, "off-").await?;
        }
        // The deletion of all those pods at once is part of their life: its peak counts.
        let peak_deleting = proc::peak_rss_mib(pid);
        let worst = peak.max(peak_deleting);
        lines.push(
            Line::new(
                &format!("{n} offloaded pods on {clusters}: manager peak RSS and CPU"),
                format!(
                    "{peak:.1} MiB peak ({rss:.1} after), {peak_deleting:.1} MiB with their deletion; {cpu_seconds:.1} CPU s"
                ),
                String::new(),
            )
            .target("<= 256 MiB", worst <= 256.0),
        );
        if let Some(f) = figures.get_mut(scenario).and_then(|f| f.as_object_mut()) {
            f.insert(
                "manager_peak_rss_with_deletion_mib".into(),
                json!(peak_deleting),
            );
        }
    }

    let mut latency = serde_json::Map::new();
    for (label, samples, target) in [("at rest", &at_rest, 1.0), ("under load", &under_load, 5.0)] {
        for (key, path, values) in samples.paths() {
            let Some((p50, p99, max)) = percentiles(values) else {
                continue;
            };
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            lines.push(
                Line::new(
                    &format!("latency {label}: {path}"),
                    format!(
                        "p50 {:.0} / p99 {:.0} / max {:.0} ms ({} samples)",
                        ms(p50),
                        ms(p99),
                        ms(max),
                        values.len()
                    ),
                    String::new(),
                )
                .target(&format!("p99 <= {target} s"), p99.as_secs_f64() <= target),
            );
            latency
                .entry(label.replace(' ', "_"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(|o| o.insert(key.to_owned(), json!({"p50_ms": ms(p50), "p99_ms": ms(p99), "max_ms": ms(max), "samples": values.len()})));
        }
    }
    figures.insert("latency".into(), serde_json::Value::Object(latency));
    for task in tasks {
        task.abort();
    }
    remote_task.abort();
    drop(managers);
    Ok(Section {
        name: "pods".into(),
        lines,
        figures: serde_json::Value::Object(figures),
    })
}

async fn worker(client: &Client, name: &str, pods: usize) -> Result<(), String> {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {KWOK_ANNOTATION: "fake"},
                     "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "100000", "memory": "100Ti", "pods": pods.to_string()},
                   "capacity": {"cpu": "100000", "memory": "100Ti", "pods": pods.to_string()}},
    }))
    .map_err(|e| e.to_string())?;
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .map(drop)
        .map_err(|e| format!("cannot create node {name}: {e}"))
}

async fn create_namespace(client: Client, name: String) -> Result<(), String> {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).map_err(|e| e.to_string())?;
    Api::<Namespace>::all(client)
        .create(&PostParams::default(), &ns)
        .await
        .map(drop)
        .map_err(|e| format!("cannot create namespace {name}: {e}"))
}

/// A namespace with a NamespaceOffloading (`Remote`) selecting the clusters of `regions`.
async fn offloaded_namespace(client: &Client, name: &str, regions: &[&str]) -> Result<(), String> {
    create_namespace(client.clone(), name.to_owned()).await?;
    let nso: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "offloading.liqo.io/v1alpha1", "kind": "NamespaceOffloading",
        "metadata": {"name": "offloading", "namespace": name},
        "spec": {"podOffloadingStrategy": "Remote", "clusterSelector": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "region", "operator": "In", "values": regions}]}]}},
    }))
    .map_err(|e| e.to_string())?;
    Api::<DynamicObject>::namespaced_with(client.clone(), name, &nso_resource())
        .create(&PostParams::default(), &nso)
        .await
        .map(drop)
        .map_err(|e| format!("cannot offload namespace {name}: {e}"))
}

fn nso_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "offloading.liqo.io",
        "v1alpha1",
        "NamespaceOffloading",
    ))
}

/// Waits until the offloadings of these namespaces are all Ready.
async fn nsos_ready(client: &Client, namespaces: &[String]) -> Result<(), String> {
    let api = Api::<DynamicObject>::all_with(client.clone(), &nso_resource());
    let wanted: std::collections::HashSet<&str> = namespaces.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut ready = 0;
    while started.elapsed() < WAIT {
        if let Ok(list) = api.list(&ListParams::default()).await {
            ready = list
                .items
                .iter()
                .filter(|o| wanted.contains(o.metadata.namespace.as_deref().unwrap_or_default()))
                .filter(|o| o.data["status"]["offloadingPhase"] == "Ready")
                .count();
            if ready >= wanted.len() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "{ready} of {} NamespaceOffloadings Ready after {WAIT:?}",
        wanted.len()
    ))
}

/// The remote namespace of a local one, by its origin label.
async fn remote_namespace_of(remote: &Client, local: &str) -> Result<String, String> {
    let list = Api::<Namespace>::all(remote.clone())
        .list_metadata(&ListParams::default().labels(&format!("{ORIGIN_NAMESPACE_LABEL}={local}")))
        .await
        .map_err(|e| e.to_string())?;
    list.items
        .first()
        .map(|n| n.name_any())
        .ok_or_else(|| format!("no remote namespace for {local}"))
}

/// The probe ConfigMap (`v: "0"`), the Service `probe` and its hand-made EndpointSlice.
async fn probe_objects(local: &Client) -> Result<(), String> {
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "probe"}, "data": {"v": "0"}}))
            .map_err(|e| e.to_string())?;
    Api::<ConfigMap>::namespaced(local.clone(), PROBES)
        .create(&PostParams::default(), &cm)
        .await
        .map_err(|e| format!("cannot create the probe ConfigMap: {e}"))?;
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "probe"},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}}))
    .map_err(|e| e.to_string())?;
    Api::<Service>::namespaced(local.clone(), PROBES)
        .create(&PostParams::default(), &svc)
        .await
        .map_err(|e| format!("cannot create the probe Service: {e}"))?;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "probe-manual", "labels": {
            "kubernetes.io/service-name": "probe",
            "endpointslice.kubernetes.io/managed-by": "bench.offloading.liqo.io"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [probe_address("0")], "conditions": {"ready": true}}],
        "ports": [{"port": 80, "protocol": "TCP", "name": ""}],
    }))
    .map_err(|e| e.to_string())?;
    Api::<EndpointSlice>::namespaced(local.clone(), PROBES)
        .create(&PostParams::default(), &slice)
        .await
        .map(drop)
        .map_err(|e| format!("cannot create the probe EndpointSlice: {e}"))
}

fn deployment(replicas: usize) -> Result<Deployment, String> {
    serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web", SET_LABEL: "true"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
    }))
    .map_err(|e| e.to_string())
}

async fn create_deployment(
    client: Client,
    namespace: String,
    replicas: usize,
) -> Result<(), String> {
    Api::<Deployment>::namespaced(client, &namespace)
        .create(&PostParams::default(), &deployment(replicas)?)
        .await
        .map(drop)
        .map_err(|e| format!("cannot create the Deployment in {namespace}: {e}"))
}

/// Waits until `n` pods of namespaces starting with `prefix` are Running in the timelines.
async fn wait_running(timelines: &[&Timeline], prefix: &str, n: usize) -> Result<(), String> {
    let started = Instant::now();
    let mut running = 0;
    while started.elapsed() < WAIT {
        running = timelines.iter().map(|t| t.running(prefix)).sum();
        if running >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "{running} of {n} pods of {prefix}* Running after {WAIT:?}"
    ))
}

/// Waits until no namespace starts with `prefix`.
async fn gone(client: &Client, prefix: &str) -> Result<(), String> {
    let api = Api::<Namespace>::all(client.clone());
    let started = Instant::now();
    while started.elapsed() < WAIT {
        if let Ok(list) = api.list_metadata(&ListParams::default()).await
            && !list.items.iter().any(|n| n.name_any().starts_with(prefix))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("namespaces {prefix}* still there after {WAIT:?}"))
}

/// Waits until no namespace has `label` with a value starting with `prefix`.
async fn gone_by_label(client: &Client, label: &str, prefix: &str) -> Result<(), String> {
    let api = Api::<Namespace>::all(client.clone());
    let started = Instant::now();
    while started.elapsed() < WAIT {
        if let Ok(list) = api
            .list_metadata(&ListParams::default().labels(label))
            .await
            && !list
                .items
                .iter()
                .any(|n| n.labels().get(label).is_some_and(|v| v.starts_with(prefix)))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "remote namespaces of {prefix}* still there after {WAIT:?}"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn percentiles_of_samples() {
        let ms = Duration::from_millis;
        let samples: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentiles(&samples), Some((ms(51), ms(99), ms(100))));
        assert_eq!(percentiles(&[ms(7)]), Some((ms(7), ms(7), ms(7))));
        assert_eq!(percentiles(&[]), None);
    }

    #[test]
    fn pods_of_the_same_name_in_other_namespaces_are_matched_to_their_own_twins() {
        let at = Instant::now();
        let ms = Duration::from_millis;
        let seen = |bound: Option<u64>, created: u64| Seen {
            created: Some(at + ms(created)),
            bound: bound.map(|b| at + ms(b)),
            ..Seen::default()
        };
        let (local, remote) = (Timeline::default(), Timeline::default());
        {
            let mut l = local.0.lock().unwrap();
            l.insert("off-one-001/app-x".into(), seen(Some(0), 0));
            l.insert("off-one-010/app-x".into(), seen(Some(600_000), 600_000));
            l.insert("other/app-x".into(), seen(Some(0), 0));
            let mut r = remote.0.lock().unwrap();
            r.insert("off-one-001-2f0f64e5-3781/app-x".into(), seen(None, 10));
            r.insert(
                "off-one-010-2f0f64e5-3781/app-x".into(),
                seen(None, 600_020),
            );
        }
        let (mut created, _) = load_paths(&local, &[&remote], "off-one-");
        created.sort();
        assert_eq!(created, vec![ms(10), ms(20)]);
    }

    #[test]
    fn probe_addresses_differ_by_round() {
        let a: std::collections::HashSet<String> = (0..200)
            .map(|i| probe_address(&format!("load-one-{i}")))
            .collect();
        assert_eq!(a.len(), 200);
        assert!(a.iter().all(|x| x.starts_with("10.")));
    }
}
