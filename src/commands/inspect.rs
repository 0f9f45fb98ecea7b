//! `info` (this cluster's identity, its peers and their virtual nodes) and `list` (every
//! offloaded namespace with its phase, strategies and per-cluster state: what Liqo users ask
//! for in Liqo issue #2572). The tables are computed by pure functions below.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde::Serialize;

use super::cli::{CliError, KubeArgs, Output};
use crate::model::{
    api::{NamespaceOffloading, RemoteCluster},
    markers::{REMOTE_CLUSTER_ID_LABEL, TYPE_LABEL, VIRTUAL_NODE},
    status::{OFFLOADING_REQUIRED, READY},
};
use crate::plumbing::identity;

#[derive(Debug, clap::Args)]
pub(crate) struct InfoArgs {
    /// The namespace the manager runs in (where it publishes this cluster's identity).
    #[arg(long, default_value = "liqo")]
    pub(crate) namespace: String,
    #[arg(short = 'o', long = "output", value_enum)]
    pub(crate) output: Option<Output>,
    #[command(flatten)]
    pub(crate) kube: KubeArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[arg(short = 'o', long = "output", value_enum)]
    pub(crate) output: Option<Output>,
    #[command(flatten)]
    pub(crate) kube: KubeArgs,
}

/// One remote cluster's state for one offloaded namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ClusterLine {
    /// The RemoteCluster's name when known, else the cluster ID.
    pub(crate) cluster: String,
    /// `Ready`, `NotSelected`, `Creating`, or the failure's reason.
    pub(crate) state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
}

/// Each cluster's line from the offloading's `remoteNamespacesConditions`.
pub(crate) fn cluster_states(
    nso: &NamespaceOffloading,
    peers: &[RemoteCluster],
) -> Vec<ClusterLine> {
    let name_of = |id: &str| {
        peers
            .iter()
            .find(|rc| rc.cluster_id() == Some(id))
            .map_or_else(|| id.to_owned(), ResourceExt::name_any)
    };
    let Some(status) = &nso.status else {
        return Vec::new();
    };
    let mut lines: Vec<ClusterLine> = status
        .remote_namespaces_conditions
        .iter()
        .map(|(id, conditions)| {
            let ready = conditions.iter().find(|c| c.type_ == READY);
            let required = conditions.iter().find(|c| c.type_ == OFFLOADING_REQUIRED);
            let (state, message) = match (ready, required) {
                (Some(r), _) if r.status == "True" => ("Ready".to_owned(), None),
                (Some(r), _) => (
                    r.reason.clone().unwrap_or_else(|| "NotReady".into()),
                    r.message.clone(),
                ),
                (None, Some(o)) if o.status == "True" => ("Creating".to_owned(), None),
                (None, _) => ("NotSelected".to_owned(), None),
            };
            ClusterLine {
                cluster: name_of(id),
                state,
                message,
            }
        })
        .collect();
    lines.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    lines
}

/// One row of `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OffloadedNamespace {
    pub(crate) namespace: String,
    pub(crate) phase: String,
    pub(crate) pod_offloading_strategy: String,
    pub(crate) namespace_mapping_strategy: String,
    pub(crate) remote_namespace: String,
    pub(crate) clusters: Vec<ClusterLine>,
}

pub(crate) fn rows(
    offloadings: &[NamespaceOffloading],
    peers: &[RemoteCluster],
) -> Vec<OffloadedNamespace> {
    let mut rows: Vec<OffloadedNamespace> = offloadings
        .iter()
        .filter(|n| n.name_any() == crate::model::api::OFFLOADING_NAME)
        .map(|n| {
            let status = n.status.as_ref();
            OffloadedNamespace {
                namespace: n.namespace().unwrap_or_default(),
                phase: status
                    .and_then(|s| s.offloading_phase)
                    .map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}")),
                pod_offloading_strategy: format!("{:?}", n.spec.pod_offloading_strategy),
                namespace_mapping_strategy: format!("{:?}", n.spec.namespace_mapping_strategy),
                remote_namespace: status
                    .and_then(|s| s.remote_namespace_name.clone())
                    .unwrap_or_default(),
                clusters: cluster_states(n, peers),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    rows
}

/// Columns padded to their widest cell, as kubectl prints.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub(crate) fn list_table(rows: &[OffloadedNamespace]) -> String {
    if rows.is_empty() {
        return "no namespace is offloaded\n".into();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.namespace.clone(),
                r.phase.clone(),
                r.pod_offloading_strategy.clone(),
                r.namespace_mapping_strategy.clone(),
                r.remote_namespace.clone(),
                r.clusters
                    .iter()
                    .map(|c| format!("{}={}", c.cluster, c.state))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    table(
        &[
            "NAMESPACE",
            "PHASE",
            "PODS",
            "MAPPING",
            "REMOTE NAMESPACE",
            "CLUSTERS",
        ],
        &cells,
    )
}

pub(crate) async fn remote_clusters(client: Client) -> Result<Vec<RemoteCluster>, CliError> {
    Ok(Api::<RemoteCluster>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(|e| CliError::api("list the RemoteClusters", e))?
        .items)
}

pub(crate) async fn list(args: ListArgs) -> Result<(), CliError> {
    let client = args.kube.client().await?;
    let offloadings = Api::<NamespaceOffloading>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| CliError::api("list the NamespaceOffloadings", e))?
        .items;
    // Names for the clusters when this user may read the peerings; IDs otherwise.
    let peers = remote_clusters(client.clone()).await.unwrap_or_default();
    let rows = rows(&offloadings, &peers);
    match args.output {
        Some(output) => print!("{}", output.render(&rows)?),
        None => print!("{}", list_table(&rows)),
    }
    Ok(())
}

/// What `info` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Info {
    #[serde(rename = "clusterID")]
    pub(crate) cluster_id: Option<String>,
    /// Why the cluster ID is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cluster_id_unknown: Option<String>,
    pub(crate) cluster_labels: BTreeMap<String, String>,
    pub(crate) peers: Vec<Peer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Peer {
    pub(crate) name: String,
    #[serde(rename = "clusterID")]
    pub(crate) cluster_id: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    /// `Connected`'s status, reason and message: whether its API server answers.
    pub(crate) connected: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) connected_message: Option<String>,
    pub(crate) virtual_node: Option<String>,
    /// The virtual node's `Ready` condition.
    pub(crate) virtual_node_ready: String,
}

pub(crate) fn peers(remote_clusters: &[RemoteCluster], nodes: &[Node]) -> Vec<Peer> {
    let mut out: Vec<Peer> = remote_clusters
        .iter()
        .map(|rc| {
            let status = rc.status.as_ref();
            let connected =
                status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Connected"));
            let node = nodes.iter().find(|n| {
                let labels = n.labels();
                labels.get(TYPE_LABEL).map(String::as_str) == Some(VIRTUAL_NODE)
                    && rc.cluster_id().is_some()
                    && labels.get(REMOTE_CLUSTER_ID_LABEL).map(String::as_str) == rc.cluster_id()
            });
            let node_ready = node
                .and_then(|n| n.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .map_or_else(|| "Unknown".to_owned(), |c| c.status.clone());
            Peer {
                name: rc.name_any(),
                cluster_id: rc.cluster_id().map(str::to_owned),
                labels: status.map(|s| s.cluster_labels.clone()).unwrap_or_default(),
                connected: connected.map_or_else(
                    || "Unknown".to_owned(),
                    |c| format!("{} ({})", c.status, c.reason),
                ),
                connected_message: connected
                    .filter(|c| c.status != "True")
                    .map(|c| c.message.clone()),
                virtual_node: node.map(ResourceExt::name_any),
                virtual_node_ready: node_ready,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub(crate) fn info_text(info: &Info) -> String {
    let labels = |l: &BTreeMap<String, String>| {
        if l.is_empty() {
            "(none)".to_owned()
        } else {
            l.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let mut out = format!(
        "cluster ID:      {}\ncluster labels:  {}\n",
        info.cluster_id
            .as_deref()
            .or(info.cluster_id_unknown.as_deref())
            .unwrap_or("unknown"),
        labels(&info.cluster_labels)
    );
    if info.peers.is_empty() {
        out.push_str("peers:           none (add one with `namespace-offloading peer NAME --kubeconfig FILE`)\n");
        return out;
    }
    out.push_str("peers:\n");
    let cells: Vec<Vec<String>> = info
        .peers
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.cluster_id.clone().unwrap_or_else(|| "-".into()),
                labels(&p.labels),
                p.connected.clone(),
                p.virtual_node.clone().unwrap_or_else(|| "-".into()),
                p.virtual_node_ready.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "NAME",
            "CLUSTER ID",
            "LABELS",
            "CONNECTED",
            "VIRTUAL NODE",
            "NODE READY",
        ],
        &cells,
    ));
    for p in info.peers.iter().filter(|p| p.connected_message.is_some()) {
        out.push_str(&format!(
            "{}: {}\n",
            p.name,
            p.connected_message.as_deref().unwrap_or_default()
        ));
    }
    out
}

pub(crate) async fn info(args: InfoArgs) -> Result<(), CliError> {
    let client = args.kube.client().await?;
    // Peers are still worth showing to a user who may not read the manager's namespace.
    let (own, unknown) = match identity::read(&client, &args.namespace).await {
        Ok(Some(own)) => (Some(own), None),
        Ok(None) => (
            None,
            Some(format!(
                "unknown (no identity published in namespace {}: is the manager running there?)",
                args.namespace
            )),
        ),
        Err(e) => (None, Some(format!("unknown (cannot read it: {e})"))),
    };
    let remote_clusters = remote_clusters(client.clone()).await?;
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{TYPE_LABEL}={VIRTUAL_NODE}")))
        .await
        .map_err(|e| CliError::api("list the virtual nodes", e))?
        .items;
    let info = Info {
        cluster_id: own.as_ref().map(|i| i.cluster_id.clone()),
        cluster_id_unknown: unknown,
        cluster_labels: own.map(|i| i.labels).unwrap_or_default(),
        peers: peers(&remote_clusters, &nodes),
    };
    match args.output {
        Some(output) => print!("{}", output.render(&info)?),
        None => print!("{}", info_text(&info)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn offloading(namespace: &str, status: serde_json::Value) -> NamespaceOffloading {
        serde_json::from_value(json!({
            "apiVersion": "offloading.liqo.io/v1beta1", "kind": "NamespaceOffloading",
            "metadata": {"name": "offloading", "namespace": namespace},
            "spec": {"podOffloadingStrategy": "Remote"},
            "status": status,
        }))
        .unwrap()
    }

    fn peer(name: &str, id: &str) -> RemoteCluster {
        serde_json::from_value(json!({
            "apiVersion": "offloading.liqo.io/v1alpha1", "kind": "RemoteCluster",
            "metadata": {"name": name},
            "spec": {"kubeconfigSecret": {"namespace": "liqo", "name": name}},
            "status": {"clusterID": id, "clusterLabels": {"region": "eu"},
                       "conditions": [{"type": "Connected", "status": "False", "reason": "Unreachable",
                                       "message": "no answer", "lastTransitionTime": "2026-12-05T10:00:00Z"}]},
        }))
        .unwrap()
    }

    #[test]
    fn list_shows_each_clusters_state_by_its_peering_name() {
        let shop = offloading(
            "shop",
            json!({
                "offloadingPhase": "SomeFailed", "remoteNamespaceName": "shop-c1",
                "remoteNamespacesConditions": {
                    "c2": [{"type": "Ready", "status": "True", "reason": "NamespaceCreated"}],
                    "c3": [{"type": "Ready", "status": "False", "reason": "AlreadyExists", "message": "someone else's"}],
                    "c4": [{"type": "OffloadingRequired", "status": "False", "reason": "ClusterNotSelected"}],
                    "c5": [{"type": "OffloadingRequired", "status": "True", "reason": "ClusterSelected"}],
                },
            }),
        );
        let fresh = offloading("a-new", json!(null));
        let rows = rows(&[shop, fresh], &[peer("cluster-2", "c2")]);
        assert_eq!(rows[0].namespace, "a-new");
        assert_eq!(rows[0].phase, "Pending");
        let states: Vec<_> = rows[1]
            .clusters
            .iter()
            .map(|c| format!("{}={}", c.cluster, c.state))
            .collect();
        // Sorted by the names shown.
        assert_eq!(
            states,
            [
                "c3=AlreadyExists",
                "c4=NotSelected",
                "c5=Creating",
                "cluster-2=Ready"
            ]
        );
        assert_eq!(
            rows[1].clusters[0].message.as_deref(),
            Some("someone else's")
        );
        let text = list_table(&rows);
        let lines: Vec<_> = text.lines().collect();
        assert!(
            lines[0].starts_with(
                "NAMESPACE   PHASE        PODS     MAPPING       REMOTE NAMESPACE   CLUSTERS"
            ),
            "{text}"
        );
        assert!(lines[2].starts_with("shop        SomeFailed   Remote   DefaultName   shop-c1            c3=AlreadyExists,c4=NotSelected,c5=Creating,cluster-2=Ready"), "{text}");
        assert_eq!(list_table(&[]), "no namespace is offloaded\n");
    }

    #[test]
    fn info_names_each_peer_with_its_labels_reachability_and_virtual_node() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "liqo-c2", "labels": {"liqo.io/type": "virtual-node", "liqo.io/remote-cluster-id": "c2"}},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]},
        }))
        .unwrap();
        let peers = peers(&[peer("cluster-2", "c2")], &[node]);
        assert_eq!(peers[0].virtual_node.as_deref(), Some("liqo-c2"));
        assert_eq!(peers[0].connected, "False (Unreachable)");
        let text = info_text(&Info {
            cluster_id: Some("c1".into()),
            cluster_id_unknown: None,
            cluster_labels: BTreeMap::new(),
            peers,
        });
        assert!(text.contains("cluster ID:      c1"), "{text}");
        assert!(
            text.contains("cluster-2   c2           region=eu   False (Unreachable)   liqo-c2"),
            "{text}"
        );
        assert!(text.contains("cluster-2: no answer"), "{text}");
    }
}
