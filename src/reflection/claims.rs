//! The PersistentVolumeClaims of offloaded pods, provisioned in the cluster their pods run
//! in: the manager is the provisioner of our storage class (`model::forge::claims`). A
//! claim of that class the scheduler placed on a virtual node gets a claim of ours in that
//! cluster's remote namespace, and here a placeholder volume it binds to (the scheduler
//! then lets its pod onto the virtual node, and the twin, which waits for the remote claim,
//! names it). The remote claim's status is mirrored on the local one. The remote claim
//! goes only with the local claim (never with a pod: the data would go with it), once no
//! offloaded pod uses it. Local claims come from the shared local watch, remote ones from
//! each peer's watch of our claims; the API is called only to change something.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};

use crate::{
    context::{
        Shared,
        peers::{Peer, cluster_of},
        remote_call::{RemoteError, remote},
    },
    model::{
        api::OFFLOADING_NAME,
        forge::claims::{self as forge, ClaimOwner, ClassMapping},
        markers::ORIGIN_NAMESPACE_ANNOTATION,
        preconditions::only_this,
        reason::{Reason, classify, is_not_found, message},
        remote_namespace::{Writable, writable},
    },
    plumbing::backoff,
};

/// How soon a claim waiting on a remote change is looked at again (its watch usually wakes
/// it sooner).
const SOON: Duration = Duration::from_secs(2);
/// How soon a claim that cannot be provisioned (yet) is looked at again.
const LATER: Duration = Duration::from_secs(30);

/// This worker's name in metrics and in the backoff's keys.
pub(crate) const WORKER: &str = "claims";

pub(crate) struct Context {
    pub(crate) shared: Shared,
    /// Local storage class to remote one (`--storage-class-mapping`).
    pub(crate) classes: ClassMapping,
}

impl std::ops::Deref for Context {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("locally: {0}")]
    Local(#[from] kube::Error),
}

pub(crate) async fn reconcile(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context>,
) -> Result<Action, ClaimError> {
    if claim.metadata.deletion_timestamp.is_some() {
        // Kept while pods use it (pvc-protection); ours goes once no offloaded pod does.
        if !users(&ctx, &claim).is_empty() {
            return Ok(Action::await_change());
        }
        release(&ctx, &claim).await?;
        return Ok(Action::await_change());
    }
    let Some(cluster_id) = placed_in(&ctx, &claim) else {
        return Ok(Action::await_change());
    };
    let _timer = ctx.metrics.reconcile(WORKER);
    let Some(peer) = ctx.peers.get(&cluster_id) else {
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    if peer.unreachable.is_some() {
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let namespace = claim.namespace().unwrap_or_default();
    let Some(offloading) = ctx
        .stores
        .offloadings
        .get(&ObjectRef::new(OFFLOADING_NAME).within(&namespace))
    else {
        return Ok(Action::await_change());
    };
    if offloading.metadata.deletion_timestamp.is_some() {
        // Its remote namespaces go with everything in them.
        return Ok(Action::await_change());
    }
    let remote_namespace = offloading
        .spec
        .remote_name(&namespace, &ctx.replica.local_cluster_id);
    let conditions = offloading
        .status
        .as_ref()
        .and_then(|s| s.remote_namespaces_conditions.get(&cluster_id))
        .map_or(&[][..], Vec::as_slice);
    let existing_namespace = peer
        .namespaces
        .store
        .get(&ObjectRef::new(&remote_namespace));
    match writable(
        existing_namespace.as_deref(),
        conditions,
        &ctx.replica.local_cluster_id,
        &namespace,
    ) {
        Writable::Yes => {}
        Writable::NotYet => return Ok(Action::requeue(SOON)),
        Writable::Never(_) => return Ok(Action::requeue(LATER)),
    }
    if !peer.claims.listed.now() {
        // A watch that fails (our account there may not read claims) is waited for slowly.
        let failing = peer.claims.failure.lock().is_ok_and(|f| f.is_some());
        return Ok(Action::requeue(if failing { LATER } else { SOON }));
    }
    let at = At {
        peer: &peer,
        cluster_id: &cluster_id,
        remote_namespace: &remote_namespace,
    };
    let name = claim.name_any();
    let existing = peer
        .claims
        .store
        .get(&ObjectRef::new(&name).within(&remote_namespace));
    let owner = existing
        .as_deref()
        .map(|e| forge::owner(e, &claim, &ctx.replica.local_cluster_id));
    match (existing, owner) {
        (Some(there), Some(ClaimOwner::This)) => {
            ensure_volume(&ctx, &claim, at).await?;
            reflect_status(&ctx, &claim, &there, &cluster_id).await?;
            Ok(Action::await_change())
        }
        (Some(there), Some(ClaimOwner::Stale)) => {
            // The claim of an earlier local claim of that name, which was deleted: it goes.
            delete_remote(at, &there).await?;
            Ok(Action::requeue(SOON))
        }
        (Some(_), _) => {
            conflict(&ctx, &claim, at).await;
            Ok(Action::requeue(LATER))
        }
        (None, _) => create(&ctx, &claim, at).await,
    }
}

/// Which cluster, peer and remote namespace a claim is provisioned in.
#[derive(Clone, Copy)]
struct At<'a> {
    peer: &'a Peer,
    cluster_id: &'a str,
    remote_namespace: &'a str,
}

/// The cluster a claim is (to be) provisioned in: the one of the virtual node the
/// scheduler picked for it, when our provisioner is to provision it; for one bound to our
/// placeholder volume, that cluster, or the one holding its claim of ours. `None`: the
/// claim is not ours (its data lives here, or another provisioner's).
fn placed_in(ctx: &Context, claim: &PersistentVolumeClaim) -> Option<String> {
    match forge::bound_volume(claim) {
        Some(_) if !forge::bound_remotely(claim) => return None,
        Some(_) => {}
        None if !forge::ours_to_provision(claim) => return None,
        None => {}
    }
    forge::selected_node(claim)
        .and_then(|node| cluster_of(&ctx.stores.nodes, node))
        .or_else(|| {
            holders(ctx, claim)
                .into_iter()
                .next()
                .map(|(cluster_id, _, _)| cluster_id)
        })
}

/// Whether a remote claim of ours sits where we write: the remote namespace of its origin
/// namespace's offloading, in a cluster where that namespace is ours. A claim of ours
/// found anywhere else there (copied into another namespace by a backup restore, say) is
/// not ours to act on: the peer's watch covers the whole cluster.
fn where_we_write(
    ctx: &Context,
    peer: &Peer,
    cluster_id: &str,
    there: &PersistentVolumeClaim,
) -> bool {
    let Some(origin) = there
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ORIGIN_NAMESPACE_ANNOTATION))
    else {
        return false;
    };
    let Some(offloading) = ctx
        .stores
        .offloadings
        .get(&ObjectRef::new(OFFLOADING_NAME).within(origin))
    else {
        return false;
    };
    let remote_namespace = offloading
        .spec
        .remote_name(origin, &ctx.replica.local_cluster_id);
    if there.metadata.namespace.as_deref() != Some(remote_namespace.as_str()) {
        return false;
    }
    let conditions = offloading
        .status
        .as_ref()
        .and_then(|s| s.remote_namespaces_conditions.get(cluster_id))
        .map_or(&[][..], Vec::as_slice);
    let existing = peer
        .namespaces
        .store
        .get(&ObjectRef::new(&remote_namespace));
    writable(
        existing.as_deref(),
        conditions,
        &ctx.replica.local_cluster_id,
        origin,
    ) == Writable::Yes
}

/// Our remote claims of this local claim, in every connected cluster.
fn holders(
    ctx: &Context,
    claim: &PersistentVolumeClaim,
) -> Vec<(String, Peer, Arc<PersistentVolumeClaim>)> {
    let mut found = Vec::new();
    for cluster_id in ctx.peers.cluster_ids() {
        let Some(peer) = ctx.peers.get(&cluster_id) else {
            continue;
        };
        let ours: Vec<_> = peer
            .claims
            .store
            .state()
            .into_iter()
            .filter(|r| {
                r.metadata.name == claim.metadata.name
                    && forge::owner(r, claim, &ctx.replica.local_cluster_id) == ClaimOwner::This
                    && where_we_write(ctx, &peer, &cluster_id, r)
            })
            .collect();
        for remote in ours {
            found.push((cluster_id.clone(), peer.clone(), remote));
        }
    }
    found
}

/// The offloaded pods (not ended) that use the claim, with the clusters they run in.
fn users(ctx: &Context, claim: &PersistentVolumeClaim) -> Vec<String> {
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    ctx.stores
        .pods
        .state()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter(|p| forge::claim_names(p).iter().any(|(_, c)| *c == name))
        .filter_map(|p| {
            let node = p.spec.as_ref()?.node_name.as_deref()?;
            cluster_of(&ctx.stores.nodes, node)
        })
        .collect()
}

/// Creates the claim there, then the placeholder volume here: the local binding does not
/// wait for the remote one (a WaitForFirstConsumer class there binds only once the twin is
/// scheduled, and the twin waits for the local pod, which waits for the local binding).
async fn create(
    ctx: &Context,
    claim: &PersistentVolumeClaim,
    at: At<'_>,
) -> Result<Action, ClaimError> {
    let mut desired = match forge::remote_claim(
        claim,
        &ctx.replica.local_cluster_id,
        at.remote_namespace,
        &ctx.classes,
    ) {
        Ok(desired) => desired,
        Err(why) => {
            let note = format!("not provisioned in cluster {}: {why}", at.cluster_id);
            event(ctx, claim, EventType::Warning, "ClaimNotProvisioned", &note).await;
            return Ok(Action::requeue(LATER));
        }
    };
    ctx.reflection.strip(&mut desired.metadata);
    let api = Api::<PersistentVolumeClaim>::namespaced(at.peer.client.clone(), at.remote_namespace);
    let name = claim.name_any();
    match remote(at.cluster_id, api.create(&PostParams::default(), &desired)).await {
        Ok(_) => {
            tracing::info!(namespace = claim.namespace().unwrap_or_default(), claim = %name, cluster_id = at.cluster_id, "claim created remotely");
        }
        Err(RemoteError::Api { source, .. }) if classify(&source) == Reason::AlreadyExists => {
            // Not in our watch: someone else's (or ours, not seen yet).
            let found = remote(at.cluster_id, api.get_opt(&name)).await?;
            if found.is_some_and(|f| {
                forge::owner(&f, claim, &ctx.replica.local_cluster_id) == ClaimOwner::Other
            }) {
                conflict(ctx, claim, at).await;
                return Ok(Action::requeue(LATER));
            }
            return Ok(Action::requeue(SOON));
        }
        // The namespace there is not made yet, or going: its offloading is on it.
        Err(RemoteError::Api { source, .. }) if is_not_found(&source) => {
            return Ok(Action::requeue(SOON));
        }
        Err(RemoteError::Api { source, .. })
            if matches!(classify(&source), Reason::Invalid | Reason::Forbidden) =>
        {
            let note = format!(
                "cluster {} refused the claim: {}; tried again",
                at.cluster_id,
                message(&source)
            );
            event(ctx, claim, EventType::Warning, "ReflectionRefused", &note).await;
            return Ok(Action::requeue(LATER));
        }
        Err(e) => return Err(e.into()),
    }
    ensure_volume(ctx, claim, at).await?;
    Ok(Action::requeue(SOON))
}

/// Makes the placeholder volume the local claim binds to (the PV controller binds them),
/// unless the claim is bound already.
async fn ensure_volume(
    ctx: &Context,
    claim: &PersistentVolumeClaim,
    at: At<'_>,
) -> Result<(), ClaimError> {
    if forge::bound_volume(claim).is_some() {
        return Ok(());
    }
    let virtual_node = crate::model::api::remote_cluster::virtual_node_name(at.cluster_id);
    let Some(volume) =
        forge::local_volume(claim, &virtual_node, at.cluster_id, at.remote_namespace)
    else {
        return Ok(());
    };
    let api = Api::<PersistentVolume>::all(ctx.client.clone());
    match api.create(&PostParams::default(), &volume).await {
        Ok(_) => Ok(()),
        Err(e) if classify(&e) == Reason::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Mirrors the remote claim's status on the local claim, once that is bound here.
async fn reflect_status(
    ctx: &Context,
    claim: &PersistentVolumeClaim,
    there: &PersistentVolumeClaim,
    cluster_id: &str,
) -> Result<(), ClaimError> {
    if !forge::bound_remotely(claim) {
        // Until the PV controller bound it, the status is its own.
        return Ok(());
    }
    let wanted = forge::local_status(there.status.as_ref(), cluster_id, claim.status.as_ref());
    if forge::status_current(claim.status.as_ref(), &wanted) {
        return Ok(());
    }
    let api = Api::<PersistentVolumeClaim>::namespaced(
        ctx.client.clone(),
        &claim.namespace().unwrap_or_default(),
    );
    let patch = serde_json::json!({"status": wanted});
    match api
        .patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes one remote claim of ours (that one only: uid precondition).
async fn delete_remote(at: At<'_>, there: &PersistentVolumeClaim) -> Result<(), ClaimError> {
    if there.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let api = Api::<PersistentVolumeClaim>::namespaced(
        at.peer.client.clone(),
        there.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let params = DeleteParams {
        preconditions: only_this(&there.metadata),
        ..DeleteParams::default()
    };
    match remote(at.cluster_id, api.delete(&there.name_any(), &params)).await {
        Err(RemoteError::Api { source, .. })
            if is_not_found(&source) || classify(&source) == Reason::Conflict =>
        {
            Ok(())
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

/// Deletes the placeholder volume of local claim `namespace/name` (uid `origin`), if
/// there is one and it is that claim's: where the uid comes from another cluster (the
/// sweep), only a volume bound to that very claim is ever deleted.
async fn delete_volume(
    ctx: &Context,
    origin: &str,
    namespace: &str,
    name: &str,
) -> Result<(), kube::Error> {
    let api = Api::<PersistentVolume>::all(ctx.client.clone());
    let volume_name = format!("offloading-{origin}");
    let Some(volume) = api.get_opt(&volume_name).await? else {
        return Ok(());
    };
    let bound_to = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let that_claim = bound_to.is_some_and(|r| {
        r.namespace.as_deref() == Some(namespace)
            && r.name.as_deref() == Some(name)
            && r.uid.as_deref() == Some(origin)
    });
    if !that_claim {
        tracing::warn!(volume = %volume_name, namespace, claim = name, "a placeholder volume not bound to its claim is left alone");
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: only_this(&volume.metadata),
        ..DeleteParams::default()
    };
    match api.delete(&volume_name, &params).await {
        Err(e) if is_not_found(&e) || classify(&e) == Reason::Conflict => Ok(()),
        other => other.map(|_| ()),
    }
}

/// A local claim deleted (or being deleted, and used by no offloaded pod): its claims of
/// ours go, in every cluster, and so does its placeholder volume.
pub(crate) async fn release(
    ctx: &Context,
    claim: &PersistentVolumeClaim,
) -> Result<(), ClaimError> {
    let mut any = forge::bound_remotely(claim);
    for (cluster_id, peer, there) in holders(ctx, claim) {
        any = true;
        let at = At {
            peer: &peer,
            cluster_id: &cluster_id,
            remote_namespace: there.metadata.namespace.as_deref().unwrap_or_default(),
        };
        delete_remote(at, &there).await?;
        tracing::info!(namespace = claim.namespace().unwrap_or_default(), claim = %claim.name_any(), %cluster_id, "remote claim deleted with its local claim");
    }
    if any && let Some(uid) = claim.metadata.uid.as_deref() {
        delete_volume(
            ctx,
            uid,
            &claim.namespace().unwrap_or_default(),
            &claim.name_any(),
        )
        .await?;
    }
    Ok(())
}

/// A local claim gone (its deletion completed): its remote claims go, unless a local pod
/// still uses it there (the sweep looks again).
pub(crate) async fn claim_gone(ctx: &Context, claim: &PersistentVolumeClaim) {
    if !users(ctx, claim).is_empty() {
        return;
    }
    if let Err(e) = release(ctx, claim).await {
        tracing::warn!(claim = %claim.name_any(), error = %e, "cannot delete the remote claim of a deleted claim; the sweep tries again");
    }
}

/// Remote claims of ours whose local claim is gone (deleted while this manager was away,
/// or a delete that failed) are deleted, once no local pod uses that name any more: run
/// every so often.
pub(crate) async fn sweep(ctx: &Context) {
    for cluster_id in ctx.peers.cluster_ids() {
        let Some(peer) = ctx.peers.get(&cluster_id) else {
            continue;
        };
        if peer.unreachable.is_some() || !peer.claims.listed.now() {
            continue;
        }
        for there in peer.claims.store.state() {
            let Some(origin) = there
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ORIGIN_NAMESPACE_ANNOTATION))
            else {
                continue;
            };
            // Claims of a namespace not listed here are not missing, only not known.
            if !ctx.stores.covered.claims.covers(origin)
                || !where_we_write(ctx, &peer, &cluster_id, &there)
            {
                continue;
            }
            let local = ctx
                .stores
                .claims
                .get(&ObjectRef::new(&there.name_any()).within(origin));
            let orphan = local.as_deref().is_none_or(|l| {
                forge::owner(&there, l, &ctx.replica.local_cluster_id) == ClaimOwner::Stale
            });
            if !orphan {
                continue;
            }
            // As the local claim was, the remote one stays while a pod here uses its name.
            let mut gone = PersistentVolumeClaim::default();
            gone.metadata.name = there.metadata.name.clone();
            gone.metadata.namespace = Some(origin.clone());
            if local.is_none() && !users(ctx, &gone).is_empty() {
                continue;
            }
            let at = At {
                peer: &peer,
                cluster_id: &cluster_id,
                remote_namespace: there.metadata.namespace.as_deref().unwrap_or_default(),
            };
            match delete_remote(at, &there).await {
                Ok(()) => {
                    tracing::info!(%cluster_id, claim = %there.name_any(), "orphaned remote claim deleted");
                    if let Some(uid) = forge::origin_uid(&there)
                        && let Err(e) = delete_volume(ctx, uid, origin, &there.name_any()).await
                    {
                        tracing::debug!(error = %e, "cannot delete a placeholder volume");
                    }
                }
                Err(e) => {
                    tracing::debug!(%cluster_id, error = %e, "cannot delete an orphaned claim")
                }
            }
        }
    }
}

/// The local claims a pod names (its deletion may release them).
pub(crate) fn claims_of(pod: &Pod) -> Vec<ObjectRef<PersistentVolumeClaim>> {
    let namespace = pod.namespace().unwrap_or_default();
    forge::claim_names(pod)
        .into_iter()
        .map(|(_, name)| ObjectRef::new(&name).within(&namespace))
        .collect()
}

/// Reports, on the local claim, that its name is taken there by a claim we did not make.
async fn conflict(ctx: &Context, claim: &PersistentVolumeClaim, at: At<'_>) {
    let name = claim.name_any();
    let note = format!(
        "PersistentVolumeClaim {name} exists in namespace {} of cluster {} and was not made here: it is left alone, and pods using this claim are not sent there; rename or delete it there",
        at.remote_namespace, at.cluster_id
    );
    ctx.metrics
        .reflection_conflict("PersistentVolumeClaim", at.cluster_id);
    event(ctx, claim, EventType::Warning, "ReflectionConflict", &note).await;
}

async fn event(
    ctx: &Context,
    claim: &PersistentVolumeClaim,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    crate::context::writes::record_event(&ctx.recorder, claim, type_, reason, note, "Provisioning")
        .await;
}

pub(crate) fn error_policy(
    claim: Arc<PersistentVolumeClaim>,
    error: &ClaimError,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.error(WORKER, "kubernetes");
    tracing::warn!(namespace = claim.namespace().unwrap_or_default(), claim = %claim.name_any(), %error, "claim reflection failed");
    Action::requeue(ctx.backoff.failed(&backoff::key(WORKER, &*claim)))
}

#[cfg(test)]
mod tests;
