//! What peering does towards a remote cluster: build a client from the credentials Secret,
//! learn the remote's identity (its published ConfigMap, read from the peer's watch once
//! connected), check that it is the cluster this peering is bound to and that it answers,
//! and sum its nodes' allocatable.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Node, Pod, Secret},
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{Api, Client, ResourceExt, runtime::reflector::ObjectRef};

use super::context::Context;
use crate::{
    context::peers::is_twin_of,
    model::{
        api::{RemoteCluster, is_virtual_node},
        identity::ClusterIdentity,
        markers::{ALLOW_EXEC_CREDENTIALS_ANNOTATION, UNVERIFIED_IDENTITY_ANNOTATION},
        quantity,
        reason::{Problem, Reason},
    },
    plumbing::client::{self, REMOTE_TIMEOUT},
};

/// What connecting found out.
pub(crate) struct Contact {
    pub(crate) cluster_id: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) reachable: Result<(), Problem>,
    /// The credentials reach a cluster other than the one this peering is bound to.
    pub(crate) impostor: Option<Problem>,
}

/// The cluster this peering is bound to: `spec.clusterID` (the `peer` command always sets
/// it), or for a RemoteCluster made without it, the cluster it first connected to (its
/// status). `None` only before the first connection.
pub(crate) fn bound_id(rc: &RemoteCluster) -> Option<&str> {
    rc.spec
        .cluster_id
        .as_deref()
        .or(rc.status.as_ref().and_then(|s| s.cluster_id.as_deref()))
}

/// Why the cluster the credentials reach (`published`: the ID it publishes) may not be
/// used for this peering, if it may not.
pub(crate) fn impostor(rc: &RemoteCluster, published: Option<&str>) -> Option<Problem> {
    let (bound, reached) = (bound_id(rc)?, published?);
    if bound == reached {
        return None;
    }
    let r = &rc.spec.kubeconfig_secret;
    let name = rc.name_any();
    Some(Problem::new(
        Reason::ClusterIdMismatch,
        format!(
            "the credentials in Secret {}/{} reach cluster {reached}, but RemoteCluster {name} is bound to cluster {bound}: nothing is read or written there. Put cluster {bound}'s kubeconfig back in the Secret; if that cluster was reinstalled under a new ID, `namespace-offloading unpeer {name}` and peer it again",
            r.namespace, r.name
        ),
    ))
}

/// Why credentials that reach a cluster publishing no readable identity may not be used
/// for a peering bound to a cluster ID (unless `peer` recorded that this one never publishes
/// any): that cluster cannot be told from another. One that does not answer is only
/// unreachable; it is checked when it answers again.
pub(crate) fn unverified(
    rc: &RemoteCluster,
    no_identity: bool,
    reachable: &Result<(), Problem>,
) -> Option<Problem> {
    let bound = bound_id(rc)?;
    let taken_on_trust = rc
        .annotations()
        .get(UNVERIFIED_IDENTITY_ANNOTATION)
        .is_some_and(|v| v == "true");
    if !no_identity
        || taken_on_trust
        || matches!(reachable, Err(p) if p.reason == Reason::Unreachable)
    {
        return None;
    }
    let r = &rc.spec.kubeconfig_secret;
    let why = match reachable {
        Err(p) => format!(": {}", p.message),
        Ok(()) => String::new(),
    };
    Some(Problem::new(
        Reason::IdentityUnverified,
        format!(
            "the credentials in Secret {}/{} reach a cluster that publishes no readable identity (ConfigMap {}/{}){why}, so it cannot be told from cluster {bound}: nothing is read or written there. Let the credentials read that ConfigMap (the manager publishes it), or put cluster {bound}'s kubeconfig back in the Secret",
            r.namespace,
            r.name,
            identity_namespace(rc),
            crate::model::markers::IDENTITY_CONFIGMAP
        ),
    ))
}

/// Whether this peering's kubeconfig may get credentials from a program (`peer
/// --allow-exec-credentials`).
pub(crate) fn allows_exec(rc: &RemoteCluster) -> bool {
    rc.annotations()
        .get(ALLOW_EXEC_CREDENTIALS_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// Where the remote publishes its identity.
pub(crate) fn identity_namespace(rc: &RemoteCluster) -> &str {
    rc.spec.identity_namespace.as_deref().unwrap_or("liqo")
}

/// A client for the RemoteCluster's credentials (the registered peer's while the Secret is
/// unchanged), and the Secret's version.
pub(crate) async fn remote_client(
    ctx: &Context,
    rc: &RemoteCluster,
) -> Result<(Client, String), Problem> {
    let r = &rc.spec.kubeconfig_secret;
    let watched = ctx
        .stores
        .secrets
        .get(&ObjectRef::new(&r.name).within(&r.namespace));
    let secret = match watched {
        Some(secret) => secret,
        // Created a moment ago (the RemoteCluster came first)? Ask before calling it missing.
        None => Api::<Secret>::namespaced(ctx.client.clone(), &r.namespace)
            .get_opt(&r.name)
            .await
            .map_err(|e| {
                Problem::new(
                    Reason::SecretUnreadable,
                    format!("cannot read Secret {}/{}: {e}", r.namespace, r.name),
                )
            })?
            .map(Arc::new)
            .ok_or_else(|| {
                Problem::new(
                    Reason::SecretNotFound,
                    format!("Secret {}/{} does not exist", r.namespace, r.name),
                )
            })?,
    };
    let version = secret.resource_version().unwrap_or_default();
    if let Some((_, peer)) = ctx.peers.by_remote_cluster(&rc.name_any())
        && peer.credentials_version == version
    {
        return Ok((peer.client, version));
    }
    let key = r.key.as_deref().unwrap_or("kubeconfig");
    let bad = |m: String| Problem::new(Reason::InvalidKubeconfig, m);
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| {
            bad(format!(
                "Secret {}/{} has no key {key:?}",
                r.namespace, r.name
            ))
        })?;
    let text = String::from_utf8(bytes.0.clone())
        .map_err(|_| bad("the kubeconfig is not UTF-8".into()))?;
    let user_agent = client::remote_user_agent(&ctx.replica.local_cluster_id);
    // Checked at every build, not only by `peer`: the Secret can be edited later.
    let client = client::remote(&text, &user_agent, allows_exec(rc))
        .await
        .map_err(|e| match e {
            client::ClientError::ExecCredentials { .. } => {
                Problem::new(Reason::ExecCredentials, e.to_string())
            }
            e => bad(e.to_string()),
        })?;
    Ok((client, version))
}

/// Who the remote is and whether it answers. A connected peer's identity comes from its
/// watch, and a cheap `/version` call is the heartbeat; a new connection reads the
/// identity once.
pub(crate) async fn contact(
    ctx: &Context,
    client: &Client,
    version: &str,
    rc: &RemoteCluster,
) -> Contact {
    let namespace = identity_namespace(rc);
    let watched = ctx
        .peers
        .by_remote_cluster(&rc.name_any())
        .filter(|(_, p)| {
            p.credentials_version == version
                && p.identity_namespace == namespace
                && p.identity.listed.now()
        })
        .map(|(_, p)| {
            p.identity
                .store
                .get(&ObjectRef::new(crate::model::markers::IDENTITY_CONFIGMAP).within(namespace))
        });
    let (published, reachable) = match watched {
        Some(cm) => {
            let answered = tokio::time::timeout(REMOTE_TIMEOUT, client.apiserver_version()).await;
            let reachable = match answered {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(Problem::new(
                    crate::model::reason::classify(&e),
                    format!("the remote API server failed: {e}"),
                )),
                Err(_) => Err(did_not_answer()),
            };
            match cm.as_deref().map(from_configmap).transpose() {
                Ok(published) => (published, reachable),
                Err(problem) => (None, reachable.and(Err(problem))),
            }
        }
        None => match tokio::time::timeout(
            REMOTE_TIMEOUT,
            crate::plumbing::identity::read(client, namespace),
        )
        .await
        {
            Ok(Ok(identity)) => (identity, Ok(())),
            Ok(Err(e)) => (None, Err(Problem::new(e.reason(), e.to_string()))),
            Err(_) => (None, Err(did_not_answer())),
        },
    };
    let impostor = impostor(rc, published.as_ref().map(|i| i.cluster_id.as_str()))
        .or_else(|| unverified(rc, published.is_none(), &reachable));
    // An impostor's labels are not this cluster's either.
    let published = published.filter(|_| impostor.is_none());
    Contact {
        cluster_id: bound_id(rc)
            .map(str::to_owned)
            .or_else(|| published.as_ref().map(|i| i.cluster_id.clone())),
        labels: rc
            .spec
            .cluster_labels
            .clone()
            .or_else(|| published.map(|i| i.labels))
            .unwrap_or_default(),
        reachable,
        impostor,
    }
}

fn from_configmap(cm: &ConfigMap) -> Result<ClusterIdentity, Problem> {
    ClusterIdentity::from_configmap(cm).map_err(|why| {
        Problem::new(
            Reason::InvalidIdentity,
            format!(
                "the identity ConfigMap {} is not valid: {why}",
                cm.name_any()
            ),
        )
    })
}

fn did_not_answer() -> Problem {
    Problem::new(
        Reason::Unreachable,
        format!("the remote API server did not answer within {REMOTE_TIMEOUT:?}"),
    )
}

/// What the virtual node offers: the RemoteCluster's declared resources, or else what the
/// remote's Ready nodes (its own virtual nodes excluded) have left once its other pods'
/// requests are taken (our twins are accounted here, on the virtual node itself), from
/// the peer's node and pod watches. `None` until both have listed.
pub(crate) fn allocatable(
    ctx: &Context,
    cluster_id: &str,
    rc: &RemoteCluster,
) -> Option<BTreeMap<String, Quantity>> {
    if let Some(resources) = &rc.spec.resources {
        return Some(resources.clone());
    }
    let peer = ctx.peers.get(cluster_id)?;
    if !peer.nodes.listed.now() || !peer.pods.listed.now() {
        return None;
    }
    Some(offered(
        &peer.nodes.store.state(),
        &peer.pods.store.state(),
        &ctx.replica.local_cluster_id,
    ))
}

/// What a cluster's Ready nodes (its virtual nodes excluded) have left once the requests of
/// its running pods that are not our twins are taken.
pub(crate) fn offered(
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
    local_cluster_id: &str,
) -> BTreeMap<String, Quantity> {
    let ready: Vec<&Arc<Node>> = nodes
        .iter()
        .filter(|n| {
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            // Virtual nodes of the remote's own peerings are not its capacity.
            ready && !is_virtual_node(n.labels())
        })
        .collect();
    let total = quantity::sum(
        ready
            .iter()
            .filter_map(|n| n.status.as_ref()?.allocatable.as_ref()),
    );
    let mut used: BTreeMap<String, f64> = BTreeMap::new();
    for pod in pods {
        let on_ready_node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| ready.iter().any(|r| r.metadata.name.as_deref() == Some(n)));
        let finished = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if !on_ready_node || finished || is_twin_of(pod, local_cluster_id) {
            continue;
        }
        for (name, v) in quantity::pod_requests(pod) {
            *used.entry(name).or_default() += v;
        }
    }
    quantity::remaining(&total, &used)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn arc<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn remote_cluster(spec_id: Option<&str>, status_id: Option<&str>) -> RemoteCluster {
        serde_json::from_value(json!({
            "apiVersion": "offloading.liqo.io/v1alpha1", "kind": "RemoteCluster",
            "metadata": {"name": "eu"},
            "spec": {"kubeconfigSecret": {"namespace": "liqo", "name": "remote-eu-kubeconfig"},
                     "clusterID": spec_id},
            "status": {"clusterID": status_id},
        }))
        .unwrap()
    }

    #[test]
    fn credentials_that_reach_a_cluster_without_identity_are_unverified() {
        let rc = remote_cluster(Some("c2"), None);
        // Answers, but publishes none (the ConfigMap missing, or unreadable).
        let problem = unverified(&rc, true, &Ok(())).unwrap();
        assert_eq!(problem.reason, Reason::IdentityUnverified);
        assert!(
            problem.message.contains("cannot be told from cluster c2"),
            "{}",
            problem.message
        );
        let forbidden = Err(Problem::new(Reason::Forbidden, "configmaps is forbidden"));
        let problem = unverified(&rc, true, &forbidden).unwrap();
        assert!(
            problem.message.contains("configmaps is forbidden"),
            "{}",
            problem.message
        );
        // Publishing one (checked by `impostor`), not answering at all, not bound yet, or
        // peered as a cluster that never publishes one: nothing to say here.
        assert_eq!(unverified(&rc, false, &Ok(())), None);
        let down = Err(Problem::new(Reason::Unreachable, "no answer"));
        assert_eq!(unverified(&rc, true, &down), None);
        assert_eq!(unverified(&remote_cluster(None, None), true, &Ok(())), None);
        let mut trusted = rc.clone();
        trusted.metadata.annotations =
            Some([(UNVERIFIED_IDENTITY_ANNOTATION.to_owned(), "true".to_owned())].into());
        assert_eq!(unverified(&trusted, true, &Ok(())), None);
    }

    #[test]
    fn credentials_that_reach_another_cluster_than_the_bound_one_are_an_impostor() {
        // Bound at peering: spec.clusterID wins over what the status last saw.
        let rc = remote_cluster(Some("c2"), Some("c9"));
        assert_eq!(bound_id(&rc), Some("c2"));
        assert_eq!(impostor(&rc, Some("c2")), None);
        let problem = impostor(&rc, Some("c3")).unwrap();
        assert_eq!(problem.reason, Reason::ClusterIdMismatch);
        for part in [
            "cluster c3",
            "bound to cluster c2",
            "liqo/remote-eu-kubeconfig",
            "unpeer eu",
        ] {
            assert!(
                problem.message.contains(part),
                "{part}: {}",
                problem.message
            );
        }
        // Made without spec.clusterID: bound to the first cluster it connected to.
        let rc = remote_cluster(None, Some("c2"));
        assert!(impostor(&rc, Some("c3")).is_some());
        // Nothing to check against: the first connection, or a remote publishing no identity.
        assert_eq!(impostor(&remote_cluster(None, None), Some("c3")), None);
        assert_eq!(impostor(&rc, None), None);
    }

    #[test]
    fn a_virtual_node_offers_what_the_remote_has_left() {
        let node = |name: &str, ready: &str, labels: serde_json::Value| {
            arc::<Node>(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"allocatable": {"cpu": "4", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": ready}]},
            }))
        };
        let nodes = [
            node("a", "True", json!({})),
            node("b", "True", json!({})),
            node("down", "False", json!({})),
            node("liqo-x", "True", json!({"liqo.io/type": "virtual-node"})),
        ];
        let pod = |node: &str, cpu: &str, phase: &str, labels: serde_json::Value| {
            arc::<Pod>(json!({
                "metadata": {"name": "p", "labels": labels},
                "spec": {"nodeName": node, "containers": [
                    {"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
                "status": {"phase": phase},
            }))
        };
        let pods = [
            pod("a", "1", "Running", json!({})),
            pod("b", "500m", "Pending", json!({})),
            // Not counted: finished, on a node that is not Ready, on a virtual node, or ours.
            pod("a", "1", "Succeeded", json!({})),
            pod("down", "1", "Running", json!({})),
            pod("liqo-x", "1", "Running", json!({})),
            pod(
                "b",
                "1",
                "Running",
                json!({"offloading.liqo.io/origin-cluster-id": "us"}),
            ),
        ];
        let left = offered(&nodes, &pods, "us");
        assert_eq!(left["cpu"].0, "6500m");
        assert_eq!(left["pods"].0, "218");
    }
}
