//! What peering does towards a remote cluster: build a client from the credentials Secret,
//! learn the remote's identity (its published ConfigMap, read from the peer's watch once
//! connected) and check that it answers, and sum its nodes' allocatable.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{Api, Client, ResourceExt, runtime::reflector::ObjectRef};

use super::Context;
use crate::{
    api::{RemoteCluster, is_virtual_node},
    client::{self, REMOTE_TIMEOUT},
    controller::quantity,
    identity::{self, Identity},
    reason::{Problem, Reason},
};

/// What connecting found out.
pub struct Contact {
    pub cluster_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub reachable: Result<(), Problem>,
}

/// Where the remote publishes its identity.
pub fn identity_namespace(rc: &RemoteCluster) -> &str {
    rc.spec.identity_namespace.as_deref().unwrap_or("liqo")
}

/// A client for the RemoteCluster's credentials (the registered peer's while the Secret is
/// unchanged), and the Secret's version.
pub async fn remote_client(ctx: &Context, rc: &RemoteCluster) -> Result<(Client, String), Problem> {
    let r = &rc.spec.kubeconfig_secret;
    let watched = ctx
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
    let client = client::remote(&text, &ctx.local_cluster_id)
        .await
        .map_err(|e| bad(e.to_string()))?;
    Ok((client, version))
}

/// Who the remote is and whether it answers. A connected peer's identity comes from its
/// watch, and a cheap `/version` call is the heartbeat; a new connection reads the
/// identity once.
pub async fn contact(ctx: &Context, client: &Client, version: &str, rc: &RemoteCluster) -> Contact {
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
                .get(&ObjectRef::new(identity::CONFIGMAP).within(namespace))
        });
    let (published, reachable) = match watched {
        Some(cm) => {
            let answered = tokio::time::timeout(REMOTE_TIMEOUT, client.apiserver_version()).await;
            let reachable = match answered {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(Problem::new(
                    crate::reason::classify(&e),
                    format!("the remote API server failed: {e}"),
                )),
                Err(_) => Err(did_not_answer()),
            };
            match cm.as_deref().map(from_configmap).transpose() {
                Ok(published) => (published, reachable),
                Err(problem) => (None, reachable.and(Err(problem))),
            }
        }
        None => match tokio::time::timeout(REMOTE_TIMEOUT, Identity::read(client, namespace)).await
        {
            Ok(Ok(identity)) => (identity, Ok(())),
            Ok(Err(e)) => (None, Err(Problem::new(e.reason(), e.to_string()))),
            Err(_) => (None, Err(did_not_answer())),
        },
    };
    Contact {
        cluster_id: rc
            .spec
            .cluster_id
            .clone()
            .or_else(|| published.as_ref().map(|i| i.cluster_id.clone())),
        labels: rc
            .spec
            .cluster_labels
            .clone()
            .or_else(|| published.map(|i| i.labels))
            .unwrap_or_default(),
        reachable,
    }
}

fn from_configmap(cm: &ConfigMap) -> Result<Identity, Problem> {
    Identity::from_configmap(cm).map_err(|why| {
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

/// What the virtual node offers: the RemoteCluster's declared resources, or else the
/// total allocatable of the remote's Ready nodes (its own virtual nodes excluded), from
/// the peer's node watch. `None` until that watch has listed.
pub fn allocatable(
    ctx: &Context,
    cluster_id: &str,
    rc: &RemoteCluster,
) -> Option<BTreeMap<String, Quantity>> {
    if let Some(resources) = &rc.spec.resources {
        return Some(resources.clone());
    }
    let peer = ctx.peers.get(cluster_id)?;
    if !peer.nodes.listed.now() {
        return None;
    }
    let nodes = peer.nodes.store.state();
    let ready = nodes
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
        .filter_map(|n| n.status.as_ref()?.allocatable.as_ref());
    Some(quantity::sum(ready))
}
