//! Serves a virtual node's `/metrics/resource` and `/stats/summary`: our twins on its
//! cluster (the local pods bound to the node, each with its twin in the peer's pod store),
//! their usage from that cluster's metrics API (`metrics.k8s.io/v1beta1` PodMetrics, one
//! list per remote namespace per scrape, as the peering's account), reported under the
//! local pods' names (`usage`).
//!
//! Why the metrics API and not the remote kubelets' own `/metrics/resource` (through the
//! remote API server's node proxy): that needs `nodes/proxy` in the remote cluster, a
//! right over every pod of every node there, and returns every tenant's pods; the
//! metrics API needs only `list pods.metrics.k8s.io` in our own remote namespaces.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
};

use axum::body::Body;
use futures::future::join_all;
use http::{Response, StatusCode, header};
use k8s_openapi::api::core::v1::Pod;
use kube::{ResourceExt, runtime::reflector::ObjectRef};

use super::{
    route::{Report, ReportCall},
    usage::{NodeCounters, PodMetrics, PodMetricsList, TwinUsage},
};
use crate::{
    context::{
        Shared,
        peers::{Peer, cluster_of},
    },
    model::{
        api::OFFLOADING_NAME,
        forge::twin::{TwinOwner, owner},
        virtual_node::resource_metrics_path,
    },
    plumbing::client::REMOTE_TIMEOUT,
};

/// The CPU counters of each virtual node (see `usage`): all the state kept between
/// scrapes.
#[derive(Default)]
pub(crate) struct Reports {
    counters: Mutex<HashMap<String, NodeCounters>>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    #[error(
        "this kubelet API serves {0} virtual nodes and the path does not say which: ask {1} (metrics-server 0.7+ takes it from the node's annotation metrics.k8s.io/resource-metrics-path)"
    )]
    WhichNode(usize, String),
    #[error("there is no virtual node (yet): no cluster is peered")]
    NoNode,
    #[error("node {0} is not a virtual node of this manager")]
    NotVirtual(String),
    #[error("only GET is served on {0}")]
    Method(String),
    #[error("cannot report the usage of node {node}: {}", .errors.join("; "))]
    Unreadable { node: String, errors: Vec<String> },
}

impl ReportError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::WhichNode(..) => StatusCode::BAD_REQUEST,
            Self::NoNode | Self::NotVirtual(_) => StatusCode::NOT_FOUND,
            Self::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unreadable { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// One twin found on the node: the local pod, its twin, and the remote namespace.
struct Found {
    local: Arc<Pod>,
    twin: Arc<Pod>,
    remote_namespace: String,
}

impl Reports {
    /// Answers one report call (already authorized).
    pub(crate) async fn serve(
        &self,
        shared: &Shared,
        call: &ReportCall,
        method: &http::Method,
        path: &str,
    ) -> Result<Response<Body>, ReportError> {
        if method != http::Method::GET {
            return Err(ReportError::Method(path.to_owned()));
        }
        let (node, cluster_id) = which_node(shared, call.node.as_deref())?;
        let (twins, running, errors) = match shared.peers.get(&cluster_id) {
            // Not contacted until its heartbeat answers again, as everywhere else; its
            // pods' counters are kept meanwhile.
            Some(Peer {
                unreachable: Some(problem),
                ..
            }) => (
                Vec::new(),
                None,
                vec![format!(
                    "cluster {cluster_id} does not answer: {}",
                    problem.message
                )],
            ),
            Some(peer) => {
                let found = twins_on(shared, &node, &peer);
                let running = found
                    .iter()
                    .map(|f| (f.local.namespace().unwrap_or_default(), f.local.name_any()))
                    .collect::<HashSet<_>>();
                let (twins, errors) = usage_of(&peer, &cluster_id, found).await;
                (twins, Some(running), errors)
            }
            None => (
                Vec::new(),
                None,
                vec![format!(
                    "cluster {cluster_id} is not connected (see `kubectl get remoteclusters`)"
                )],
            ),
        };
        for e in &errors {
            tracing::warn!(%node, error = %e, "virtual node usage incomplete");
        }
        let now_ms = k8s_openapi::jiff::Timestamp::now().as_millisecond();
        let sample = {
            let mut counters = self
                .counters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Nodes gone (unpeered) take their counters with them.
            counters.retain(|name, _| cluster_of(&shared.stores.nodes, name).is_some());
            counters.entry(node.clone()).or_default().sample(
                &node,
                &twins,
                running.as_ref(),
                errors,
                now_ms,
            )
        };
        let (content_type, body) = match call.report {
            Report::ResourceMetrics => (
                "text/plain; version=0.0.4; charset=utf-8",
                super::usage::resource_metrics(&sample),
            ),
            Report::Summary => {
                if !sample.errors.is_empty() {
                    return Err(ReportError::Unreadable {
                        node,
                        errors: sample.errors,
                    });
                }
                (
                    "application/json",
                    super::usage::summary(&sample).to_string(),
                )
            }
        };
        let mut response = Response::new(Body::from(body));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        Ok(response)
    }
}

/// The virtual node meant: the one the path names, else the only one there is.
fn which_node(shared: &Shared, named: Option<&str>) -> Result<(String, String), ReportError> {
    let nodes = &shared.stores.nodes;
    if let Some(name) = named {
        let cluster_id =
            cluster_of(nodes, name).ok_or_else(|| ReportError::NotVirtual(name.to_owned()))?;
        return Ok((name.to_owned(), cluster_id));
    }
    let mut virtual_nodes: Vec<(String, String)> = nodes
        .state()
        .iter()
        .filter_map(|n| {
            let name = n.name_any();
            cluster_of(nodes, &name).map(|id| (name, id))
        })
        .collect();
    virtual_nodes.sort();
    match virtual_nodes.len() {
        0 => Err(ReportError::NoNode),
        1 => Ok(virtual_nodes.remove(0)),
        n => Err(ReportError::WhichNode(n, resource_metrics_path("<node>"))),
    }
}

/// Our twins on `node`'s cluster: each local pod bound to the node whose twin there is
/// ours (its uid), sorted by namespace and name.
fn twins_on(shared: &Shared, node: &str, peer: &Peer) -> Vec<Found> {
    let local_cluster_id = &shared.replica.local_cluster_id;
    let mut found: Vec<Found> = shared
        .stores
        .pods
        .state()
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter_map(|local| {
            let namespace = local.namespace()?;
            let offloading = shared
                .stores
                .offloadings
                .get(&ObjectRef::new(OFFLOADING_NAME).within(&namespace))?;
            let remote_namespace = offloading.spec.remote_name(&namespace, local_cluster_id);
            let twin = peer
                .pods
                .store
                .get(&ObjectRef::new(&local.name_any()).within(&remote_namespace))
                .filter(|twin| owner(twin, &local, local_cluster_id) == TwinOwner::This)?;
            Some(Found {
                local,
                twin,
                remote_namespace,
            })
        })
        .collect();
    found.sort_by_key(|f| (f.local.namespace(), f.local.name_any()));
    found
}

/// The twins' usage, one metrics list per remote namespace (concurrently); what could not
/// be read is said in the errors.
async fn usage_of(
    peer: &Peer,
    cluster_id: &str,
    found: Vec<Found>,
) -> (Vec<TwinUsage>, Vec<String>) {
    let namespaces: Vec<String> = found
        .iter()
        .map(|f| f.remote_namespace.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let lists = join_all(
        namespaces
            .iter()
            .map(|ns| pod_metrics(&peer.client, cluster_id, ns)),
    )
    .await;
    let mut by_pod: HashMap<(String, String), PodMetrics> = HashMap::new();
    let mut errors = Vec::new();
    for (ns, list) in namespaces.iter().zip(lists) {
        match list {
            Ok(list) => by_pod.extend(
                list.items
                    .into_iter()
                    .filter_map(|m| Some(((ns.clone(), m.metadata.name.clone()?), m))),
            ),
            Err(e) => errors.push(e),
        }
    }
    let twins = found
        .into_iter()
        .filter_map(|f| {
            // A pod the remote metrics-server has not sampled yet has no usage: left out,
            // as a kubelet leaves out a container it has no stats for.
            let metrics = by_pod.remove(&(f.remote_namespace.clone(), f.twin.name_any()))?;
            Some(TwinUsage {
                namespace: f.local.namespace().unwrap_or_default(),
                pod: f.local.name_any(),
                uid: f.local.uid().unwrap_or_default(),
                starts: starts(&f.twin),
                metrics,
            })
        })
        .collect();
    (twins, errors)
}

/// Each running container's start (Unix seconds), from the twin's status.
fn starts(twin: &Pod) -> BTreeMap<String, f64> {
    twin.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| {
            let started = c.state.as_ref()?.running.as_ref()?.started_at.as_ref()?;
            Some((c.name.clone(), started.0.as_millisecond() as f64 / 1e3))
        })
        .collect()
}

/// The PodMetrics of one remote namespace, or why not, in words an operator can act on.
async fn pod_metrics(
    client: &kube::Client,
    cluster_id: &str,
    namespace: &str,
) -> Result<PodMetricsList, String> {
    let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods");
    let request = http::Request::get(&path)
        .body(Vec::new())
        .map_err(|e| format!("cluster {cluster_id}: {e}"))?;
    match tokio::time::timeout(REMOTE_TIMEOUT, client.request::<PodMetricsList>(request)).await {
        Err(_) => Err(format!(
            "cluster {cluster_id}: no answer within {REMOTE_TIMEOUT:?}"
        )),
        Ok(Ok(list)) => Ok(list),
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => Err(format!(
            "cluster {cluster_id} serves no metrics API (metrics.k8s.io/v1beta1): is metrics-server running there?"
        )),
        Ok(Err(kube::Error::Api(status))) if status.code == 403 => Err(format!(
            "cluster {cluster_id}: the peering's account may not list pods.metrics.k8s.io in namespace {namespace}"
        )),
        Ok(Err(e)) => Err(format!("cluster {cluster_id}: {e}")),
    }
}
