//! RemoteCluster reconciliation: connect with the kubeconfig in the referenced Secret, read
//! the remote's published identity, keep the virtual node and its Lease, report
//! `Connected`. Requeued every few seconds: that is the heartbeat (node Lease, reachability).
//! Label changes on the remote arrive sooner, through a watch on its identity ConfigMap.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Node, Secret},
    },
    apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        controller::Action,
        events::{EventType, Recorder},
        finalizer::{Event as Finalizer, finalizer},
        reflector::Store,
    },
};

use super::{peers::Peers, quantity, virtual_node};
use crate::{
    api::{
        RemoteCluster, RemoteClusterStatus,
        remote_cluster::{claimed_elsewhere, duplicate_of, virtual_node_name},
    },
    identity::Identity,
    webhooks::FIELD_MANAGER,
};

pub const FINALIZER: &str = "offloading.liqo.io/peering";
/// How often a peering is re-checked (and the node Lease renewed).
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long one call to a remote API server may take.
pub const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Context {
    pub client: Client,
    pub peers: Peers,
    /// Every RemoteCluster, from the watch the offloading controller reads too: duplicates
    /// are found without listing them at every heartbeat.
    pub remote_clusters: Store<RemoteCluster>,
    pub recorder: Recorder,
    pub holder: String,
    pub metrics: Arc<super::metrics::ControllerMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeeringError {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

pub async fn reconcile(rc: Arc<RemoteCluster>, ctx: Arc<Context>) -> Result<Action, PeeringError> {
    let _timer = ctx.metrics.reconcile("peering");
    let api = Api::<RemoteCluster>::all(ctx.client.clone());
    finalizer(&api, FINALIZER, rc, |event| async {
        match event {
            Finalizer::Apply(rc) => apply(&rc, &ctx).await,
            Finalizer::Cleanup(rc) => cleanup(&rc, &ctx).await,
        }
    })
    .await
    .map_err(|e| PeeringError::Finalizer(e.to_string()))
}

pub fn error_policy(rc: Arc<RemoteCluster>, error: &PeeringError, ctx: Arc<Context>) -> Action {
    let reason = match error {
        PeeringError::Kube(_) => "kubernetes",
        PeeringError::Finalizer(_) => "finalizer",
    };
    ctx.metrics.error("peering", reason);
    tracing::warn!(remote_cluster = %rc.name_any(), %error, "peering reconcile failed");
    Action::requeue(HEARTBEAT)
}

/// What connecting found out.
struct Contact {
    cluster_id: Option<String>,
    labels: BTreeMap<String, String>,
    reachable: Result<(), (String, String)>,
}

async fn remote_client(
    ctx: &Context,
    rc: &RemoteCluster,
) -> Result<(Client, String), (String, String)> {
    let r = &rc.spec.kubeconfig_secret;
    let key = r.key.as_deref().unwrap_or("kubeconfig");
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &r.namespace)
        .get_opt(&r.name)
        .await
        .map_err(|e| {
            (
                "SecretUnreadable".to_owned(),
                format!("cannot read Secret {}/{}: {e}", r.namespace, r.name),
            )
        })?
        .ok_or_else(|| {
            (
                "SecretNotFound".to_owned(),
                format!("Secret {}/{} does not exist", r.namespace, r.name),
            )
        })?;
    let version = secret.resource_version().unwrap_or_default();
    let name = rc.name_any();
    if let Some((_, peer)) = ctx.peers.by_remote_cluster(&name)
        && peer.credentials_version == version
    {
        return Ok((peer.client, version));
    }
    let bad = |m: String| ("InvalidKubeconfig".to_owned(), m);
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
    let kubeconfig = Kubeconfig::from_yaml(&text)
        .map_err(|e| bad(format!("cannot parse the kubeconfig: {e}")))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| bad(format!("unusable kubeconfig: {e}")))?;
    config.connect_timeout = Some(REMOTE_TIMEOUT);
    let client =
        Client::try_from(config).map_err(|e| bad(format!("cannot build a client: {e}")))?;
    Ok((client, version))
}

/// Where the remote publishes its identity.
fn identity_namespace(rc: &RemoteCluster) -> &str {
    rc.spec.identity_namespace.as_deref().unwrap_or("liqo")
}

async fn contact(client: &Client, rc: &RemoteCluster) -> Contact {
    let published = tokio::time::timeout(
        REMOTE_TIMEOUT,
        Identity::read(client, identity_namespace(rc)),
    )
    .await;
    let (published, reachable) = match published {
        Ok(Ok(identity)) => (identity, Ok(())),
        Ok(Err(e)) => (None, Err((e.reason().to_owned(), e.to_string()))),
        Err(_) => (
            None,
            Err((
                "Unreachable".to_owned(),
                format!("the remote API server did not answer within {REMOTE_TIMEOUT:?}"),
            )),
        ),
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

async fn allocatable(
    client: &Client,
    rc: &RemoteCluster,
) -> BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
    if let Some(resources) = &rc.spec.resources {
        return resources.clone();
    }
    let nodes = tokio::time::timeout(
        REMOTE_TIMEOUT,
        Api::<Node>::all(client.clone()).list(&Default::default()),
    )
    .await;
    let Ok(Ok(nodes)) = nodes else {
        return BTreeMap::new();
    };
    let ready: Vec<_> = nodes
        .items
        .iter()
        .filter(|n| {
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            // Virtual nodes of the remote's own peerings are not its capacity.
            let is_virtual = n.labels().get(crate::api::TYPE_LABEL).map(String::as_str)
                == Some(crate::api::VIRTUAL_NODE);
            ready && !is_virtual
        })
        .filter_map(|n| n.status.as_ref()?.allocatable.as_ref())
        .collect();
    quantity::sum(ready)
}

async fn apply(rc: &RemoteCluster, ctx: &Context) -> Result<Action, PeeringError> {
    let name = rc.name_any();
    let now = Time(Timestamp::now());
    let previous = rc.status.clone().unwrap_or_default();
    let (connected, cluster_id, labels) = match remote_client(ctx, rc).await {
        Err(problem) => (
            Err(problem),
            previous.cluster_id.clone(),
            previous.cluster_labels.clone(),
        ),
        Ok((client, version)) => {
            let contact = contact(&client, rc).await;
            let claimed = contact
                .cluster_id
                .as_deref()
                .or(previous.cluster_id.as_deref());
            let all = remote_clusters(ctx).await;
            let duplicate = claimed
                .and_then(|id| duplicate_of(all.iter().map(|a| &**a), rc, id))
                .map(ResourceExt::name_any);
            match (&contact.cluster_id, &contact.reachable) {
                // Another RemoteCluster already stands for this cluster: touch nothing (the
                // peer and the virtual node are the other one's), and say so.
                (id, _) if duplicate.is_some() => {
                    let other = duplicate.unwrap_or_default();
                    let id = id
                        .clone()
                        .or(previous.cluster_id.clone())
                        .unwrap_or_default();
                    let message = format!(
                        "cluster {id} is already peered as RemoteCluster {other}: this one is ignored; unpeer one of them"
                    );
                    (
                        Err(("DuplicateClusterID".to_owned(), message)),
                        Some(id),
                        contact.labels,
                    )
                }
                (Some(id), Ok(())) => {
                    register(ctx, id, rc, &version, &client, None);
                    let allocatable = allocatable(&client, rc).await;
                    apply_virtual_node(ctx, id, &contact.labels, &allocatable, true).await?;
                    (Ok(()), Some(id.clone()), contact.labels)
                }
                (None, Ok(())) => (
                    Err((
                        "NoClusterID".to_owned(),
                        "the remote publishes no identity ConfigMap and spec.clusterID is not set"
                            .to_owned(),
                    )),
                    None,
                    contact.labels,
                ),
                (id, Err(problem)) => {
                    let id = id.clone().or(previous.cluster_id.clone());
                    if let Some(id) = &id {
                        // Registered even while unreachable (e.g. down when we started):
                        // offloadings then report it Unreachable and termination waits for it.
                        // Only a cluster that does not answer is left alone; one whose
                        // identity is unreadable (Forbidden, invalid) still serves namespaces.
                        let unreachable = problem.0 == "Unreachable";
                        register(
                            ctx,
                            id,
                            rc,
                            &version,
                            &client,
                            unreachable.then(|| problem.clone()),
                        );
                        // Keep the node, marked not ready: pods stay, nothing new lands.
                        let labels = if contact.labels.is_empty() {
                            previous.cluster_labels.clone()
                        } else {
                            contact.labels.clone()
                        };
                        mark_unreachable(ctx, id, &labels).await?;
                    }
                    (Err(problem.clone()), id, previous.cluster_labels.clone())
                }
            }
        }
    };
    ctx.metrics.peering(&name, Some(connected.is_ok()));
    let condition = connected_condition(&connected, &previous.conditions, &now);
    let was = previous
        .conditions
        .iter()
        .find(|c| c.type_ == "Connected")
        .map(|c| c.status.clone());
    if was.as_deref() != Some(condition.status.as_str()) {
        tracing::info!(
            remote_cluster = %name,
            cluster_id = cluster_id.as_deref().unwrap_or_default(),
            connected = %condition.status,
            reason = %condition.reason,
            message = %condition.message,
            "peering connection changed"
        );
        let (type_, reason) = if connected.is_ok() {
            (EventType::Normal, "Connected")
        } else {
            (EventType::Warning, "Disconnected")
        };
        publish(ctx, rc, type_, reason, &condition.message).await;
    }
    let status = RemoteClusterStatus {
        cluster_id: cluster_id.clone(),
        cluster_labels: labels,
        virtual_node: cluster_id.as_deref().map(virtual_node_name),
        conditions: vec![condition],
    };
    if Some(&status) != rc.status.as_ref() {
        let patch = serde_json::json!({
            "apiVersion": "offloading.liqo.io/v1alpha1", "kind": "RemoteCluster",
            "status": status,
        });
        Api::<RemoteCluster>::all(ctx.client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await?;
    }
    Ok(Action::requeue(HEARTBEAT))
}

/// Every RemoteCluster, once the shared watch has listed them all.
async fn remote_clusters(ctx: &Context) -> Vec<Arc<RemoteCluster>> {
    // Fails only if the watch is gone, which ends the controllers anyway.
    let _ = ctx.remote_clusters.wait_until_ready().await;
    ctx.remote_clusters.state()
}

/// Makes `id` served by this RemoteCluster's client (a new one when its credentials
/// changed; duplicates were ruled out before) and records whether it answers.
fn register(
    ctx: &Context,
    id: &str,
    rc: &RemoteCluster,
    version: &str,
    client: &Client,
    unreachable: Option<(String, String)>,
) {
    let name = rc.name_any();
    if ctx
        .peers
        .get(id)
        .is_none_or(|p| p.remote_cluster != name || p.credentials_version != version)
    {
        ctx.peers
            .insert(id, &name, identity_namespace(rc), version, client.clone());
    }
    ctx.peers.set_unreachable(id, &name, unreachable);
}

fn connected_condition(
    connected: &Result<(), (String, String)>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let (status, reason, message) = match connected {
        Ok(()) => (
            "True",
            "Connected".to_owned(),
            "the remote API server answers with these credentials".to_owned(),
        ),
        Err((reason, message)) => ("False", reason.clone(), message.clone()),
    };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == "Connected" && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: "Connected".into(),
        status: status.into(),
        reason,
        message,
        observed_generation: None,
        last_transition_time,
    }
}

async fn apply_virtual_node(
    ctx: &Context,
    cluster_id: &str,
    labels: &BTreeMap<String, String>,
    allocatable: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    reachable: bool,
) -> Result<(), kube::Error> {
    let nodes = Api::<Node>::all(ctx.client.clone());
    let name = virtual_node_name(cluster_id);
    let existing = nodes.get_opt(&name).await?;
    let now = Time(Timestamp::now());
    let mut node = virtual_node::node(cluster_id, labels, allocatable, reachable, &now);
    // Keep the condition's times while its status holds, so an unchanged node is not
    // rewritten every heartbeat (every write would wake every NamespaceOffloading).
    if let Some(old) = existing
        .as_ref()
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        && let Some(new) = node.status.as_mut().and_then(|s| s.conditions.as_mut())
    {
        for c in new.iter_mut() {
            if let Some(o) = old
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status)
            {
                c.last_heartbeat_time = o.last_heartbeat_time.clone();
                c.last_transition_time = o.last_transition_time.clone();
            }
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let status = node.status.take();
    let body = serde_json::to_value(&node).map_err(kube::Error::SerdeError)?;
    nodes.patch(&name, &params, &Patch::Apply(body)).await?;
    let status = serde_json::json!({"apiVersion": "v1", "kind": "Node", "status": status});
    nodes
        .patch_status(&name, &params, &Patch::Apply(status))
        .await?;
    if reachable {
        let lease = virtual_node::lease(cluster_id, &ctx.holder, &MicroTime(Timestamp::now()));
        let body = serde_json::to_value(&lease).map_err(kube::Error::SerdeError)?;
        Api::<Lease>::namespaced(ctx.client.clone(), virtual_node::LEASE_NAMESPACE)
            .patch(&name, &params, &Patch::Apply(body))
            .await?;
    }
    Ok(())
}

async fn mark_unreachable(
    ctx: &Context,
    cluster_id: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), kube::Error> {
    let nodes = Api::<Node>::all(ctx.client.clone());
    let name = virtual_node_name(cluster_id);
    let Some(existing) = nodes.get_opt(&name).await? else {
        return Ok(());
    };
    let allocatable = existing
        .status
        .as_ref()
        .and_then(|s| s.allocatable.clone())
        .unwrap_or_default();
    apply_virtual_node(ctx, cluster_id, labels, &allocatable, false).await
}

async fn cleanup(rc: &RemoteCluster, ctx: &Context) -> Result<Action, PeeringError> {
    let name = rc.name_any();
    ctx.metrics.peering(&name, None);
    let mut ids = ctx.peers.remove_remote_cluster(&name);
    if let Some(id) = rc.status.as_ref().and_then(|s| s.cluster_id.clone()) {
        ids.push(id);
    }
    let all = remote_clusters(ctx).await;
    for id in ids {
        // A duplicate going away leaves the other peering's virtual node alone.
        if claimed_elsewhere(all.iter().map(|a| &**a), &name, &id).is_some() {
            continue;
        }
        let node = virtual_node_name(&id);
        for result in [
            Api::<Node>::all(ctx.client.clone())
                .delete(&node, &DeleteParams::default())
                .await
                .map(|_| ()),
            Api::<Lease>::namespaced(ctx.client.clone(), virtual_node::LEASE_NAMESPACE)
                .delete(&node, &DeleteParams::default())
                .await
                .map(|_| ()),
        ] {
            match result {
                Err(e) if !super::is_not_found(&e) => return Err(e.into()),
                _ => {}
            }
        }
    }
    publish(
        ctx,
        rc,
        EventType::Normal,
        "Unpeered",
        "peering removed; virtual node deleted",
    )
    .await;
    Ok(Action::await_change())
}

async fn publish(ctx: &Context, rc: &RemoteCluster, type_: EventType, reason: &str, note: &str) {
    super::publish(&ctx.recorder, rc, type_, reason, note, "Peering").await;
}
