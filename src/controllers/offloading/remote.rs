//! What an offloading does to a remote cluster: create the namespace we own, delete it when
//! the cluster is no longer selected or the offloading ends, and never touch one we do not
//! own. What exists there is read from the peer's watch of our namespaces; the API is asked
//! only when that watch has not listed yet, or when a create finds the name taken.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, api::PostParams, runtime::reflector::ObjectRef};

use super::context::Context;
use crate::{
    context::peers::Peer,
    model::{
        reason::{Problem, Reason, classify, is_not_found},
        remote_namespace::{self, Ownership},
        status::ClusterState,
    },
    plumbing::client::REMOTE_TIMEOUT,
};

/// Runs a remote call within [`REMOTE_TIMEOUT`]; a failure becomes a condition's problem.
async fn remote<T>(
    what: &str,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Problem> {
    match tokio::time::timeout(REMOTE_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let reason = classify(&e);
            let message = match reason {
                Reason::Forbidden => {
                    format!("the credentials of this peering may not {what} there: {e}")
                }
                Reason::Invalid => {
                    format!("the remote API server refused to {what}: {e}")
                }
                _ => format!("the remote API server failed to {what}: {e}"),
            };
            Err(Problem::new(reason, message))
        }
        Err(_) => Err(Problem::new(
            Reason::Unreachable,
            format!("the remote API server did not answer within {REMOTE_TIMEOUT:?}"),
        )),
    }
}

/// A cluster whose peering heartbeat fails is not contacted (its calls would only time
/// out): it is reported at once and tried again when the peering reconnects, which
/// updates its virtual node and so wakes every NamespaceOffloading.
pub(crate) fn unreachable(peer: &Peer) -> Option<ClusterState> {
    let problem = peer.unreachable.as_ref()?;
    Some(ClusterState::failed(
        problem.reason,
        format!(
            "{} (RemoteCluster {}); retried when its peering reconnects",
            problem.message, peer.remote_cluster
        ),
    ))
}

/// How sure a look at the remote namespace must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Look {
    /// The watch will do: it holds our namespaces (by label), and a create that finds the
    /// name taken reads what is there.
    Watched,
    /// Something of ours may be there that the watch does not show (its label edited, or
    /// the watch lagging): before concluding it is gone, ask the API server.
    Confirmed,
}

/// The namespace of that name in the peer's cluster: from the watch once it has listed
/// (it holds only ours), else, or when the watch shows none and `look` asks for it, from
/// the API.
async fn existing(peer: &Peer, name: &str, look: Look) -> Result<Option<Arc<Namespace>>, Problem> {
    if peer.namespaces.listed.now() {
        let watched = peer.namespaces.store.get(&ObjectRef::new(name));
        if watched.is_some() || look == Look::Watched {
            return Ok(watched);
        }
    }
    let api = Api::<Namespace>::all(peer.client.clone());
    Ok(remote("read namespaces", api.get_opt(name))
        .await?
        .map(Arc::new))
}

/// Brings one cluster to what the configuration wants; reports where it stands.
/// `was_ready`: the status last said our namespace exists there.
pub(crate) async fn ensure(
    ctx: &Context,
    cluster_id: &str,
    (selected, was_ready): (bool, bool),
    may_delete: bool,
    remote_name: &str,
    origin: &str,
) -> ClusterState {
    let Some(peer) = ctx.peers.get(cluster_id) else {
        return match (selected, ctx.remote_cluster_of(cluster_id)) {
            (false, _) => ClusterState::NotSelected,
            // Its RemoteCluster exists but has not connected yet (e.g. just after start-up).
            (true, Some(_)) => ClusterState::Pending,
            (true, None) => ClusterState::failed(
                Reason::NoCredentials,
                format!(
                    "no RemoteCluster gives credentials for cluster {cluster_id}: peer it with `namespace-offloading peer`"
                ),
            ),
        };
    };
    if let Some(state) = unreachable(&peer) {
        return if selected {
            state
        } else {
            ClusterState::NotSelected
        };
    }
    // A cluster no longer selected where ours was: make sure before leaving it there.
    let look = if !selected && was_ready && may_delete {
        Look::Confirmed
    } else {
        Look::Watched
    };
    let found = match existing(&peer, remote_name, look).await {
        Ok(found) => found,
        Err(p) if selected => return ClusterState::Failed(p),
        Err(_) => return ClusterState::NotSelected,
    };
    let ownership =
        remote_namespace::ownership(found.as_deref(), &ctx.replica.local_cluster_id, origin);
    match (ownership, selected, found) {
        // No longer selected (its labels changed): remove what we created there, unless
        // the selector is invalid (then nothing is selected, but nothing is removed either).
        (Ownership::Ours, false, Some(found)) if may_delete => match delete(&peer, &found).await {
            Ok(()) => ClusterState::NotSelected,
            Err(p) => ClusterState::failed(
                p.reason,
                format!(
                    "this cluster is no longer selected, but deleting namespace {remote_name} failed: {}",
                    p.message
                ),
            ),
        },
        (_, false, _) => ClusterState::NotSelected,
        (Ownership::Missing, true, _) => create(ctx, &peer, remote_name, origin).await,
        (Ownership::Ours, true, _) => ClusterState::Ready,
        (Ownership::OursTerminating, true, _) => ClusterState::failed(
            Reason::Terminating,
            format!(
                "namespace {remote_name} is being deleted in this cluster; it is created again once gone"
            ),
        ),
        (Ownership::Conflict(message), true, _) => {
            ClusterState::failed(Reason::AlreadyExists, message)
        }
    }
}

/// Creates our namespace; if the name is taken (by someone else, or by ours the watch has
/// not shown yet), reads what is there to tell which.
async fn create(ctx: &Context, peer: &Peer, remote_name: &str, origin: &str) -> ClusterState {
    let api = Api::<Namespace>::all(peer.client.clone());
    let desired = remote_namespace::desired(remote_name, &ctx.replica.local_cluster_id, origin);
    match remote(
        "create namespaces",
        api.create(&PostParams::default(), &desired),
    )
    .await
    {
        Ok(_) => ClusterState::Ready,
        Err(p) if p.reason == Reason::AlreadyExists => {
            let found = match remote("read namespaces", api.get_opt(remote_name)).await {
                Ok(found) => found,
                Err(p) => return ClusterState::Failed(p),
            };
            match remote_namespace::ownership(found.as_ref(), &ctx.replica.local_cluster_id, origin)
            {
                Ownership::Ours => ClusterState::Ready,
                Ownership::Missing => ClusterState::Pending,
                Ownership::OursTerminating => ClusterState::failed(
                    Reason::Terminating,
                    format!(
                        "namespace {remote_name} is being deleted in this cluster; it is created again once gone"
                    ),
                ),
                Ownership::Conflict(message) => {
                    ClusterState::failed(Reason::AlreadyExists, message)
                }
            }
        }
        Err(p) => ClusterState::Failed(p),
    }
}

/// Deletes exactly the namespace we looked at (uid precondition); one already gone is
/// deleted.
async fn delete(peer: &Peer, found: &Namespace) -> Result<(), Problem> {
    let api = Api::<Namespace>::all(peer.client.clone());
    let name = found.metadata.name.as_deref().unwrap_or_default();
    let params = remote_namespace::delete_exactly(found);
    let deleted = async {
        match api.delete(name, &params).await {
            Err(e) if is_not_found(&e) => Ok(()),
            other => other.map(|_| ()),
        }
    };
    remote("delete namespaces", deleted).await
}

/// At termination: deletes our namespace in this cluster; `None` once nothing of ours is
/// left there, else where it stands.
pub(crate) async fn remove(
    ctx: &Context,
    cluster_id: &str,
    remote_name: &str,
    origin: &str,
) -> Option<ClusterState> {
    let Some(peer) = ctx.peers.get(cluster_id) else {
        return Some(ClusterState::failed(
            Reason::NotConnected,
            format!(
                "waiting for the peering of cluster {cluster_id} to connect, to delete namespace {remote_name} there; `namespace-offloading unpeer` gives it up"
            ),
        ));
    };
    if let Some(state) = unreachable(&peer) {
        return Some(state);
    }
    // Termination ends with what is found here: never on the watch's word alone.
    let found = match existing(&peer, remote_name, Look::Confirmed).await {
        Ok(found) => found,
        Err(p) => return Some(ClusterState::Failed(p)),
    };
    match (
        remote_namespace::ownership(found.as_deref(), &ctx.replica.local_cluster_id, origin),
        found,
    ) {
        (Ownership::Missing | Ownership::Conflict(_), _) => None,
        (Ownership::Ours, Some(found)) => Some(match delete(&peer, &found).await {
            Ok(()) => deleting(remote_name),
            Err(p) => ClusterState::failed(
                p.reason,
                format!("cannot delete namespace {remote_name}: {}", p.message),
            ),
        }),
        (Ownership::Ours | Ownership::OursTerminating, _) => Some(deleting(remote_name)),
    }
}

fn deleting(remote_name: &str) -> ClusterState {
    ClusterState::failed(
        Reason::Terminating,
        format!("namespace {remote_name} is being deleted in this cluster, with everything in it"),
    )
}

#[cfg(test)]
mod tests;
