//! Benchmark 3: offloading at scale on three real clusters. Namespaces labelled
//! `liqo.io/enabled=true` in cluster 1, offloaded by the release binary to clusters 2 and
//! 3, against the same remote namespaces created (and deleted) directly in the same run
//! with the same client settings; then many offloaded namespaces at rest: the manager's
//! memory and its API requests, read from the API servers' audit logs.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, ListParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use namespace_offloading::{
    model::markers::{ENABLED_LABEL, IDENTITY_CONFIGMAP, ORIGIN_NAMESPACE_LABEL},
    plumbing::client::{LOCAL_USER_AGENT, remote_user_agent},
};
use serde_json::json;
use testbed::Testbed;

use crate::{
    proc,
    report::{Line, Section},
    setup::{self, Manager},
};

/// How many namespaces, and how long at rest.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub namespaces: usize,
    pub at_rest: usize,
    pub window: Duration,
    /// Secrets and ConfigMaps created in namespaces that are not offloaded.
    pub not_offloaded: usize,
}

impl Size {
    pub fn full() -> Self {
        Self {
            namespaces: 200,
            at_rest: 1_000,
            window: Duration::from_secs(60),
            not_offloaded: 10_000,
        }
    }

    pub fn quick() -> Self {
        Self {
            namespaces: 20,
            at_rest: 50,
            window: Duration::from_secs(10),
            not_offloaded: 2_000,
        }
    }
}

const WAIT: Duration = Duration::from_secs(600);
/// Namespaces the user creates at once (the "labelled at once" of both scenarios).
const USER_CONCURRENCY: usize = 64;
/// The baseline's requests in flight: what the manager's controllers allow (each of its
/// concurrent reconciles writes to both remote clusters), so both sides use the same
/// client settings.
const BASELINE_CONCURRENCY: usize = 2 * namespace_offloading::manager::CONCURRENCY as usize;
const BENCH_LABEL: &str = "bench.offloading.liqo.io/set";

pub async fn run(manager: &Path, work: &Path, size: Size) -> Result<Section, String> {
    eprintln!("scale: starting three clusters and a manager in each");
    let tb = setup::testbed(&work.join("testbed"), 3).await?;
    let (managers, local_id) = peered(manager, &tb, &[]).await?;
    let ours = &managers[0];
    let pid = ours.process.pid();
    let clients = [
        client(&tb, 1).await?,
        client(&tb, 2).await?,
        client(&tb, 3).await?,
    ];
    let remotes = [clients[1].clone(), clients[2].clone()];

    // Baseline: the same remote namespaces, created and deleted directly.
    eprintln!(
        "scale: baseline, {} namespaces created and deleted directly in clusters 2 and 3",
        2 * size.namespaces
    );
    let names: Vec<(usize, String)> = (0..size.namespaces)
        .flat_map(|i| {
            [
                (0, format!("baseline-{i:04}")),
                (1, format!("baseline-{i:04}")),
            ]
        })
        .collect();
    let began = Instant::now();
    for_all(&names, BASELINE_CONCURRENCY, |(c, name)| {
        create_namespace(remotes[*c].clone(), name.clone(), "baseline", false)
    })
    .await?;
    let base_create = began.elapsed();
    let began = Instant::now();
    for_all(&names, BASELINE_CONCURRENCY, |(c, name)| {
        delete_namespace(remotes[*c].clone(), name.clone())
    })
    .await?;
    for remote in &remotes {
        gone(remote, &format!("{BENCH_LABEL}=baseline")).await?;
    }
    let base_delete = began.elapsed();

    // Ours: the namespaces labelled at once, until every NamespaceOffloading is Ready.
    eprintln!(
        "scale: {} namespaces labelled liqo.io/enabled=true in cluster 1, then deleted",
        size.namespaces
    );
    let cpu = proc::cpu_seconds(pid);
    let logs = [
        tb.cluster(1).audit_log(),
        tb.cluster(2).audit_log(),
        tb.cluster(3).audit_log(),
    ];
    let marks = [logs[0].mark(), logs[1].mark(), logs[2].mark()];
    let local: Vec<String> = (0..size.namespaces)
        .map(|i| format!("offloaded-{i:04}"))
        .collect();
    let began = Instant::now();
    for_all(&local, USER_CONCURRENCY, |name| {
        create_namespace(clients[0].clone(), name.clone(), "offloaded", true)
    })
    .await?;
    all_ready(&clients[0], size.namespaces).await?;
    let ours_create = began.elapsed();
    let created_marks = [logs[0].mark(), logs[1].mark(), logs[2].mark()];
    let began = Instant::now();
    for_all(&local, USER_CONCURRENCY, |name| {
        delete_namespace(clients[0].clone(), name.clone())
    })
    .await?;
    for remote in &remotes {
        gone(remote, ORIGIN_NAMESPACE_LABEL).await?;
    }
    let ours_delete = began.elapsed();
    let cpu_seconds = proc::cpu_seconds(pid) - cpu;
    let peak = proc::peak_rss_mib(pid);
    gone(&clients[0], &format!("{BENCH_LABEL}=offloaded")).await?;
    let peer_ua = remote_user_agent(&local_id);
    let writes = PerNamespace::count(&logs, marks, created_marks, &peer_ua, size.namespaces);

    // At rest: many offloaded namespaces, nothing changing.
    eprintln!(
        "scale: {} offloaded namespaces, then {:?} at rest",
        size.at_rest, size.window
    );
    let rest: Vec<String> = (0..size.at_rest)
        .map(|i| format!("at-rest-{i:04}"))
        .collect();
    let began = Instant::now();
    for_all(&rest, USER_CONCURRENCY, |name| {
        create_namespace(clients[0].clone(), name.clone(), "at-rest", true)
    })
    .await?;
    all_ready(&clients[0], size.at_rest).await?;
    let rest_ready = began.elapsed();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let marks = [logs[0].mark(), logs[1].mark(), logs[2].mark()];
    tokio::time::sleep(size.window).await;
    let rss = proc::rss_mib(pid);
    let per_minute = 60.0 / size.window.as_secs_f64();
    let local_activity = logs[0].activity(LOCAL_USER_AGENT, marks[0]);
    let peer_activity = [
        logs[1].activity(&peer_ua, marks[1]),
        logs[2].activity(&peer_ua, marks[2]),
    ];
    let watches =
        |a: &testbed::audit::Activity| a.open_watches.values().map(Vec::len).sum::<usize>();
    let local_rpm = local_activity.request_count() as f64 * per_minute;
    let peer_rpm: Vec<f64> = peer_activity
        .iter()
        .map(|a| a.request_count() as f64 * per_minute)
        .collect();

    // Caches that fit: big objects in namespaces that are not offloaded cost nothing.
    eprintln!(
        "scale: {} Secrets and ConfigMaps of 10 KiB in namespaces that are not offloaded",
        size.not_offloaded
    );
    let (rss_before, rss_after) = not_offloaded(&clients[0], pid, size.not_offloaded).await?;
    let growth = rss_after - rss_before;
    drop(managers);

    let n = size.namespaces;
    let lines = vec![
        Line::new(
            &format!("{n} namespaces offloaded to 2 clusters, until all Ready"),
            secs(ours_create),
            format!(
                "{} (the {} remote namespaces created directly)",
                secs(base_create),
                2 * n
            ),
        )
        .against(ratio(ours_create, base_create), "time", false, 2.0),
        Line::new(
            &format!("{n} offloaded namespaces deleted, until gone remotely"),
            secs(ours_delete),
            format!("{} (the {} deleted directly)", secs(base_delete), 2 * n),
        ),
        Line::new(
            "API requests per offloaded namespace, created until Ready",
            writes.created.summary(),
            "2 (one namespace created in each remote cluster)".into(),
        ),
        Line::new(
            "API requests per offloaded namespace, deleted until gone",
            writes.deleted.summary(),
            "2 (one namespace deleted in each remote cluster)".into(),
        ),
        Line::new(
            &format!("manager CPU and peak RSS over both ({n} namespaces)"),
            format!("{cpu_seconds:.1} CPU s, {peak:.1} MiB"),
            String::new(),
        ),
        Line::new(
            &format!("{} offloaded namespaces at rest: manager RSS", size.at_rest),
            format!("{rss:.1} MiB"),
            String::new(),
        )
        .target("<= 64 MiB", rss <= 64.0),
        Line::new(
            &format!(
                "{} Secrets and ConfigMaps of 10 KiB in namespaces not offloaded: manager RSS growth",
                size.not_offloaded
            ),
            format!("{growth:+.1} MiB ({rss_before:.1} to {rss_after:.1})"),
            format!(
                "{:.0} MiB of data in them",
                (size.not_offloaded * OBJECT_BYTES) as f64 / (1024.0 * 1024.0)
            ),
        )
        .target("< 10 MiB", growth < 10.0),
        Line::new(
            &format!(
                "{} offloaded namespaces at rest: API requests/min",
                size.at_rest
            ),
            format!(
                "cluster 1: {local_rpm:.0} ({} watches); each peer: {} ({} watches)",
                watches(&local_activity),
                peer_rpm
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                watches(&peer_activity[0]),
            ),
            String::new(),
        ),
    ];
    let figures = json!({
        "namespaces": n,
        "remote_clusters": 2,
        "baseline_create_s": base_create.as_secs_f64(),
        "ours_create_s": ours_create.as_secs_f64(),
        "create_ratio": ratio(ours_create, base_create),
        "baseline_delete_s": base_delete.as_secs_f64(),
        "ours_delete_s": ours_delete.as_secs_f64(),
        "delete_ratio": ratio(ours_delete, base_delete),
        "requests_per_namespace": {
            "created": writes.created.figures(),
            "deleted": writes.deleted.figures(),
        },
        "manager_cpu_s": cpu_seconds,
        "manager_peak_rss_mib": peak,
        "at_rest": {
            "namespaces": size.at_rest,
            "ready_s": rest_ready.as_secs_f64(),
            "window_s": size.window.as_secs_f64(),
            "manager_rss_mib": rss,
            "not_offloaded": {
                "objects": size.not_offloaded,
                "object_bytes": OBJECT_BYTES,
                "manager_rss_before_mib": rss_before,
                "manager_rss_after_mib": rss_after,
                "manager_rss_growth_mib": growth,
            },
            "cluster_1": {"requests_per_minute": local_rpm, "requests": local_activity.requests, "open_watches": local_activity.open_watches.keys().collect::<Vec<_>>()},
            "peers": peer_activity.iter().zip(&peer_rpm).map(|(a, rpm)| json!({
                "requests_per_minute": rpm, "requests": a.requests,
                "open_watches": a.open_watches.keys().collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        },
    });
    Ok(Section {
        name: "offloading-scale".into(),
        lines,
        figures,
    })
}

/// The manager's API requests per offloaded namespace, from the audit logs: in cluster 1
/// (its own user agent) and in the remote clusters (its peer agent), by verb and resource.
struct PerNamespace {
    created: Requests,
    deleted: Requests,
}

/// One phase's requests, already divided by the namespaces.
struct Requests {
    local: BTreeMap<String, f64>,
    remote: BTreeMap<String, f64>,
}

impl PerNamespace {
    fn count(
        logs: &[testbed::audit::AuditLog; 3],
        start: [testbed::audit::Mark; 3],
        created: [testbed::audit::Mark; 3],
        peer_ua: &str,
        n: usize,
    ) -> Self {
        let phase = |from: [testbed::audit::Mark; 3], to: Option<[testbed::audit::Mark; 3]>| {
            let per = |requests: BTreeMap<String, usize>, into: &mut BTreeMap<String, f64>| {
                // The heartbeats (virtual nodes, leases, the peers' version) go on whatever
                // happens: they are counted at rest, not per namespace.
                let heartbeat = |k: &str| {
                    ["leases", "nodes", "nodes/status", "/version"]
                        .iter()
                        .any(|h| k.split_once(' ').is_some_and(|(_, r)| r == *h))
                };
                for (k, v) in requests.into_iter().filter(|(k, _)| !heartbeat(k)) {
                    *into.entry(k).or_default() += v as f64 / n.max(1) as f64;
                }
            };
            let mut out = Requests {
                local: BTreeMap::new(),
                remote: BTreeMap::new(),
            };
            let window = |i: usize, ua: &str| match to {
                Some(to) => logs[i].requests_between(ua, from[i], to[i]),
                None => logs[i].activity(ua, from[i]).requests,
            };
            per(window(0, LOCAL_USER_AGENT), &mut out.local);
            for i in [1, 2] {
                per(window(i, peer_ua), &mut out.remote);
            }
            // Two remote clusters: per cluster.
            for v in out.remote.values_mut() {
                *v /= 2.0;
            }
            out
        };
        Self {
            created: phase(start, Some(created)),
            deleted: phase(created, None),
        }
    }
}

impl Requests {
    fn total(map: &BTreeMap<String, f64>) -> f64 {
        map.values().sum()
    }

    /// "cluster 1: 6.0 (create namespaceoffloadings 1.0, ...); each peer: 1.0 (...)".
    fn summary(&self) -> String {
        let detail = |map: &BTreeMap<String, f64>| {
            let mut items: Vec<(&String, &f64)> = map.iter().filter(|(_, v)| **v >= 0.05).collect();
            items.sort_by(|a, b| b.1.total_cmp(a.1));
            items
                .iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "cluster 1: {:.1} ({}); each peer: {:.1} ({})",
            Self::total(&self.local),
            detail(&self.local),
            Self::total(&self.remote),
            detail(&self.remote)
        )
    }

    fn figures(&self) -> serde_json::Value {
        json!({
            "cluster_1": Self::total(&self.local),
            "each_peer": Self::total(&self.remote),
            "cluster_1_by_request": self.local,
            "each_peer_by_request": self.remote,
        })
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ratio(ours: Duration, base: Duration) -> f64 {
    ours.as_secs_f64() / base.as_secs_f64().max(1e-3)
}

pub(crate) async fn client(tb: &Testbed, n: usize) -> Result<Client, String> {
    tb.cluster(n).client().await.map_err(|e| e.to_string())
}

/// A manager in each cluster (clusters 2 and 3 labelled region=eu and region=us), cluster
/// 1 peered with both (`peer_args` added to each `peer`); the managers, and cluster 1's ID.
pub(crate) async fn peered(
    manager: &Path,
    tb: &Testbed,
    peer_args: &[&str],
) -> Result<(Vec<Manager>, String), String> {
    let mut managers = Vec::new();
    for (n, labels) in [(1, "region=local"), (2, "region=eu"), (3, "region=us")] {
        let kubeconfig = tb.cluster(n).kubeconfig();
        setup::install_crds(kubeconfig)?;
        setup::kubectl(kubeconfig, &["create", "namespace", "liqo"], None)?;
        managers.push(
            setup::start_manager(
                manager,
                &tb.log_dir(),
                &format!("cluster-{n}-manager"),
                kubeconfig,
                n == 1,
                &[
                    "--namespace=liqo".into(),
                    format!("--cluster-labels={labels}"),
                ],
            )
            .await?,
        );
    }
    for n in [2, 3] {
        let kubeconfig = tb.cluster(n).kubeconfig();
        setup::wait_for(
            &format!("cluster {n}'s identity"),
            Duration::from_secs(60),
            || {
                setup::kubectl(
                    kubeconfig,
                    &["get", "configmap", "-n", "liqo", IDENTITY_CONFIGMAP],
                    None,
                )
                .is_ok()
            },
        )
        .await?;
        let out = std::process::Command::new(manager)
            .args(["peer", &format!("cluster-{n}"), "--namespace", "liqo"])
            .args(peer_args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--local-kubeconfig")
            .arg(tb.cluster(1).kubeconfig())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "peering with cluster {n} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let local = tb.cluster(1).kubeconfig();
    setup::wait_for("both virtual nodes", Duration::from_secs(120), || {
        setup::kubectl(
            local,
            &[
                "get",
                "nodes",
                "-l",
                "liqo.io/type=virtual-node",
                "-o",
                "name",
            ],
            None,
        )
        .is_ok_and(|out| out.lines().count() == 2)
    })
    .await?;
    let id = setup::kubectl(
        local,
        &[
            "get",
            "namespace",
            "kube-system",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    )?;
    Ok((managers, id.trim().to_owned()))
}

/// The data in each object of the not-offloaded scenario.
const OBJECT_BYTES: usize = 10 * 1024;
/// Namespaces they are spread over.
const NOT_OFFLOADED_NAMESPACES: usize = 20;

/// Creates `n` Secrets and ConfigMaps (half each) of [`OBJECT_BYTES`] in namespaces that
/// are not offloaded; the manager's RSS before, and once its watches had time to see them.
async fn not_offloaded(client: &Client, pid: u32, n: usize) -> Result<(f64, f64), String> {
    let namespaces: Vec<String> = (0..NOT_OFFLOADED_NAMESPACES)
        .map(|i| format!("not-offloaded-{i:02}"))
        .collect();
    for_all(&namespaces, USER_CONCURRENCY, |name| {
        create_namespace(client.clone(), name.clone(), "not-offloaded", false)
    })
    .await?;
    let before = proc::rss_mib(pid);
    let payload = "x".repeat(OBJECT_BYTES);
    let objects: Vec<usize> = (0..n).collect();
    for_all(&objects, USER_CONCURRENCY, |&i| {
        let namespace = namespaces[i % namespaces.len()].clone();
        let (client, payload) = (client.clone(), payload.clone());
        async move {
            let name = format!("blob-{i:05}");
            let body = json!({"metadata": {"name": name}, "data": {"blob": payload}});
            let created = if i % 2 == 0 {
                let cm: ConfigMap = serde_json::from_value(body).map_err(|e| e.to_string())?;
                Api::<ConfigMap>::namespaced(client, &namespace)
                    .create(&PostParams::default(), &cm)
                    .await
                    .map(drop)
            } else {
                let mut body = body;
                body["stringData"] = body["data"].take();
                let secret: Secret = serde_json::from_value(body).map_err(|e| e.to_string())?;
                Api::<Secret>::namespaced(client, &namespace)
                    .create(&PostParams::default(), &secret)
                    .await
                    .map(drop)
            };
            created.map_err(|e| format!("cannot create {namespace}/{name}: {e}"))
        }
    })
    .await?;
    // Time for every event to reach the manager (and be dropped there).
    tokio::time::sleep(Duration::from_secs(15)).await;
    Ok((before, proc::rss_mib(pid)))
}

/// Runs `f` for every item, `limit` at a time; the first error, if any.
pub(crate) async fn for_all<T, F, Fut>(items: &[T], limit: usize, f: F) -> Result<(), String>
where
    F: Fn(&T) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let results: Vec<Result<(), String>> = stream::iter(items.iter().map(f))
        .buffer_unordered(limit)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn create_namespace(
    client: Client,
    name: String,
    set: &str,
    offload: bool,
) -> Result<(), String> {
    let mut labels = json!({BENCH_LABEL: set});
    if offload {
        labels[ENABLED_LABEL] = "true".into();
    }
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
            .map_err(|e| e.to_string())?;
    Api::<Namespace>::all(client)
        .create(&PostParams::default(), &ns)
        .await
        .map(drop)
        .map_err(|e| format!("cannot create namespace {name}: {e}"))
}

pub(crate) async fn delete_namespace(client: Client, name: String) -> Result<(), String> {
    Api::<Namespace>::all(client)
        .delete(&name, &DeleteParams::default())
        .await
        .map(drop)
        .map_err(|e| format!("cannot delete namespace {name}: {e}"))
}

/// Polls until no namespace matches `selector`.
async fn gone(client: &Client, selector: &str) -> Result<(), String> {
    let api = Api::<Namespace>::all(client.clone());
    let started = Instant::now();
    while started.elapsed() < WAIT {
        match api
            .list_metadata(&ListParams::default().labels(selector))
            .await
        {
            Ok(list) if list.items.is_empty() => return Ok(()),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    Err(format!("namespaces {selector} still there after {WAIT:?}"))
}

/// Watches until `n` NamespaceOffloadings report Ready (a watch, not a poll, so the time
/// measured is when the last one became Ready, not the next look after it).
async fn all_ready(client: &Client, n: usize) -> Result<(), String> {
    use kube::runtime::{WatchStreamExt, watcher};
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "offloading.liqo.io",
        "v1alpha1",
        "NamespaceOffloading",
    ));
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let mut ready = std::collections::HashSet::new();
    let events = watcher(api, watcher::Config::default()).applied_objects();
    let counted = async {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let Ok(o) = event else { continue };
            let key = o.metadata.namespace.clone().unwrap_or_default();
            if o.data["status"]["offloadingPhase"] == "Ready" {
                ready.insert(key);
            } else {
                ready.remove(&key);
            }
            if ready.len() >= n {
                return true;
            }
        }
        false
    };
    match tokio::time::timeout(WAIT, counted).await {
        Ok(true) => Ok(()),
        _ => Err(format!(
            "{} of {n} NamespaceOffloadings Ready after {WAIT:?}",
            ready.len()
        )),
    }
}
