//! RemoteCluster reconciliation: connect with the kubeconfig in the referenced Secret, learn
//! the remote's published identity, keep the virtual node and its Lease, report
//! `Connected`. Requeued every few seconds: that is the heartbeat (node Lease, reachability).
//! Label changes on the remote arrive sooner, through the peer's watch of its identity.
//!
//! `connect` is what we do towards the remote, `node` the virtual node here, `status` how
//! the peering reports; `context` what they all read.

mod connect;
mod context;
mod node;
mod status;

pub(crate) use context::Context;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
        reflector::{ObjectRef, Store},
    },
};

use crate::model::{
    api::{
        RemoteCluster, RemoteClusterStatus,
        remote_cluster::{claimed_elsewhere, duplicate_of, virtual_node_name},
    },
    reason::{Problem, Reason},
};
use crate::plumbing::backoff;

/// How often a peering is re-checked (and the node Lease renewed).
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub(crate) enum PeeringError {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<PeeringError>>),
}

/// This worker's name in metrics and in the backoff's keys.
pub(crate) const WORKER: &str = "peering";

pub(crate) async fn reconcile(
    rc: Arc<RemoteCluster>,
    ctx: Arc<Context>,
) -> Result<Action, PeeringError> {
    let _timer = ctx.metrics.reconcile("peering");
    let api = Api::<RemoteCluster>::all(ctx.client.clone());
    finalizer(
        &api,
        crate::model::markers::PEERING_FINALIZER,
        rc,
        |event| async {
            match event {
                Finalizer::Apply(rc) => apply(&rc, &ctx).await,
                Finalizer::Cleanup(rc) => cleanup(&rc, &ctx).await,
            }
        },
    )
    .await
    .map_err(|e| PeeringError::Finalizer(Box::new(e)))
}

pub(crate) fn error_policy(
    rc: Arc<RemoteCluster>,
    error: &PeeringError,
    ctx: Arc<Context>,
) -> Action {
    let reason = match error {
        PeeringError::Kube(_) => "kubernetes",
        PeeringError::Finalizer(_) => "finalizer",
    };
    ctx.metrics.error(WORKER, reason);
    tracing::warn!(remote_cluster = %rc.name_any(), %error, "peering reconcile failed");
    // Never later than the next heartbeat, which renews the node's Lease.
    let delay = ctx.backoff.failed(&backoff::key(WORKER, &*rc));
    Action::requeue(delay.min(HEARTBEAT))
}

/// The RemoteClusters whose credentials are this Secret (a rotated Secret is used at
/// once, not at the next heartbeat).
pub(crate) fn using_secret(
    remote_clusters: &Store<RemoteCluster>,
    secret: &Secret,
) -> Vec<ObjectRef<RemoteCluster>> {
    let (namespace, name) = (secret.namespace(), secret.name_any());
    remote_clusters
        .state()
        .iter()
        .filter(|rc| {
            let r = &rc.spec.kubeconfig_secret;
            r.name == name && Some(&r.namespace) == namespace.as_ref()
        })
        .map(|rc| ObjectRef::from(&**rc))
        .collect()
}

async fn apply(rc: &RemoteCluster, ctx: &Context) -> Result<Action, PeeringError> {
    let name = rc.name_any();
    let now = Time(Timestamp::now());
    let previous = rc.status.clone().unwrap_or_default();
    let (connected, cluster_id, labels) = match connect::remote_client(ctx, rc).await {
        Err(problem) => {
            // Credentials that cannot be used (a Secret gone, a kubeconfig invalid or
            // refused) leave a node deleted meanwhile with pods bound to it put back, not
            // ready: the pod garbage collector would otherwise remove them.
            if let Some(id) = connect::bound_id(rc)
                && node_kept(ctx, id)
            {
                node::apply(ctx, id, &previous.cluster_labels, None, false).await?;
            }
            (
                Err(problem),
                previous.cluster_id.clone(),
                previous.cluster_labels.clone(),
            )
        }
        Ok((client, version)) => 'connected: {
            let contact = connect::contact(ctx, &client, &version, rc).await;
            if let Some(problem) = contact.impostor {
                refuse_impostor(ctx, &name, contact.cluster_id.as_deref(), &previous).await?;
                break 'connected (
                    Err(problem),
                    contact.cluster_id,
                    previous.cluster_labels.clone(),
                );
            }
            let claimed = contact
                .cluster_id
                .as_deref()
                .or(previous.cluster_id.as_deref());
            let all = ctx.stores.remote_clusters.state();
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
                        Err(Problem::new(Reason::DuplicateClusterId, message)),
                        Some(id),
                        contact.labels,
                    )
                }
                (Some(id), Ok(())) => {
                    register(ctx, id, rc, &version, &client, None);
                    let allocatable = connect::allocatable(ctx, id, rc);
                    node::apply(ctx, id, &contact.labels, allocatable.as_ref(), true).await?;
                    (Ok(()), Some(id.clone()), contact.labels)
                }
                (None, Ok(())) => (
                    Err(Problem::new(
                        Reason::NoClusterId,
                        "the remote publishes no identity ConfigMap and spec.clusterID is not set",
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
                        // identity is unreadable was refused above (IdentityUnverified)
                        // unless it was peered as publishing none.
                        let unreachable = problem.reason == Reason::Unreachable;
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
                        if node_kept(ctx, id) {
                            node::apply(ctx, id, &labels, None, false).await?;
                        }
                    }
                    (Err(problem.clone()), id, previous.cluster_labels.clone())
                }
            }
        }
    };
    ctx.metrics.peering(&name, Some(connected.is_ok()));
    let mut conditions = vec![status::connected_condition(
        &connected,
        &previous.conditions,
        &now,
    )];
    // Its watches, while it has a peer (one that fails retries on its own, with backoff).
    if let Some(peer) = cluster_id
        .as_deref()
        .and_then(|id| ctx.peers.get(id))
        .filter(|p| p.remote_cluster == name)
    {
        let states = peer.watch_states();
        for state in &states {
            ctx.metrics.peer_watch(&name, state.kind, state.listed);
        }
        conditions.push(status::watches_condition(
            &states,
            &previous.conditions,
            &now,
        ));
    }
    let status = RemoteClusterStatus {
        cluster_id: cluster_id.clone(),
        cluster_labels: labels,
        virtual_node: cluster_id.as_deref().map(virtual_node_name),
        conditions,
    };
    status::write(ctx, rc, status, connected.is_ok()).await?;
    Ok(Action::requeue(HEARTBEAT))
}

/// The credentials reach a cluster other than `bound`: their client is used for nothing
/// (no namespaces, twins or copies there, no watches), and the peer they may have replaced
/// is dropped. The virtual node stays, not ready: pods stay put, nothing new lands.
async fn refuse_impostor(
    ctx: &Context,
    name: &str,
    bound: Option<&str>,
    previous: &RemoteClusterStatus,
) -> Result<(), PeeringError> {
    ctx.peers.remove_remote_cluster(name);
    if let Some(id) = bound
        && node_kept(ctx, id)
    {
        node::apply(ctx, id, &previous.cluster_labels, None, false).await?;
    }
    Ok(())
}

/// Whether the virtual node of `id` is kept (marked not ready) while its cluster cannot be
/// used: it exists, or it was deleted (by hand, or by an autoscaler) with pods still bound
/// to it, which would otherwise be force-deleted by the pod garbage collector while their
/// twins run on.
fn node_kept(ctx: &Context, id: &str) -> bool {
    let name = virtual_node_name(id);
    ctx.stores.nodes.get(&ObjectRef::new(&name)).is_some()
        || ctx
            .stores
            .pods
            .state()
            .iter()
            .any(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
}

/// Makes `id` served by this RemoteCluster's client (a new one when its credentials
/// changed; duplicates were ruled out before) and records whether it answers.
fn register(
    ctx: &Context,
    id: &str,
    rc: &RemoteCluster,
    version: &str,
    client: &Client,
    unreachable: Option<Problem>,
) {
    let name = rc.name_any();
    let namespace = connect::identity_namespace(rc);
    if ctx.peers.get(id).is_none_or(|p| {
        p.remote_cluster != name
            || p.credentials_version != version
            || p.identity_namespace != namespace
    }) {
        ctx.peers
            .insert(id, &name, namespace, version, client.clone());
    }
    ctx.peers.set_unreachable(id, &name, unreachable);
}

async fn cleanup(rc: &RemoteCluster, ctx: &Context) -> Result<Action, PeeringError> {
    let name = rc.name_any();
    ctx.metrics.peering(&name, None);
    ctx.metrics
        .forget_peer_watches(&name, &crate::context::peers::WATCH_KINDS);
    let mut ids = ctx.peers.remove_remote_cluster(&name);
    if let Some(id) = rc.status.as_ref().and_then(|s| s.cluster_id.clone()) {
        ids.push(id);
    }
    let all = ctx.stores.remote_clusters.state();
    for id in ids {
        // A duplicate going away leaves the other peering's virtual node alone.
        if claimed_elsewhere(all.iter().map(|a| &**a), &name, &id).is_some() {
            continue;
        }
        node::delete(ctx, &id).await?;
    }
    status::record(
        ctx,
        rc,
        EventType::Normal,
        "Unpeered",
        "peering removed; virtual node deleted",
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests;
