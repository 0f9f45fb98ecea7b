//! Offloaded pods run in their remote cluster: the job a kubelet does for its node, done by
//! the manager for each virtual node. A local pod bound to a virtual node gets a twin in
//! that cluster's remote namespace; the twin's status becomes the local pod's; deleting
//! the local pod deletes the twin, then completes the local deletion. Local pods come from
//! the shared local pod watch, twins from each peer's watch of our twins; the API is called
//! only to change something.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, PodStatus};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::EventType,
        reflector::{ObjectRef, Store},
    },
};

use crate::model::forge::claims::Claims;
use crate::model::markers::{ORIGIN_NAMESPACE_ANNOTATION, TWIN_CONDITION};
use crate::model::remote_namespace::{Writable, writable};
use crate::plumbing::backoff;
use crate::{context::Shared, model::preconditions::only_this};
use crate::{
    context::peers::{Peer, cluster_of},
    model::{
        api::{
            NamespaceOffloading, OFFLOADING_NAME, RemoteCluster, remote_cluster::virtual_node_name,
        },
        markers::SCHEDULING_ENABLED_LABEL,
        reason::{Reason, classify, is_not_found, message},
    },
};
use crate::{
    context::remote_call::{RemoteError, remote},
    model::forge::home_api as home_forge,
    model::forge::twin::{self as forge, TwinOwner},
};

/// How soon a pod waiting on a remote change is looked at again (its watch usually wakes
/// it sooner).
const SOON: Duration = Duration::from_secs(2);

/// Reflection needs nothing beyond what every worker shares.
pub(crate) type Context = Shared;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PodError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("locally: {0}")]
    Local(#[from] kube::Error),
    #[error(transparent)]
    HomeApi(#[from] home_api::HomeApiError),
}

/// Whether a pod is bound to a virtual node, or to one of our names that is gone (its
/// peering was removed): ours to run, or to clean up.
pub(crate) fn on_virtual_node(nodes: &Store<Node>, pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| cluster_of(nodes, n).is_some() || gone_virtual_node(nodes, n))
}

/// A node name of ours (`liqo-<id>`) that no node carries any more.
fn gone_virtual_node(nodes: &Store<Node>, node_name: &str) -> bool {
    node_name.starts_with("liqo-") && nodes.get(&ObjectRef::new(node_name)).is_none()
}

/// How ServiceAccount admission says a pod's account does not exist (yet).
const ACCOUNT_NOT_YET: &str = "error looking up service account";

/// How long a twin waits for what it needs there (its ServiceAccount's copy, the peer's
/// classes) before the pod says why it waits.
const QUIET_WAIT: Duration = Duration::from_secs(30);

/// Whether the pod was created over [`QUIET_WAIT`] ago.
fn waited_long(pod: &Pod) -> bool {
    pod.metadata.creation_timestamp.as_ref().is_some_and(|t| {
        k8s_openapi::jiff::Timestamp::now()
            .duration_since(t.0)
            .unsigned_abs()
            > QUIET_WAIT
    })
}

/// Whether the pod runs as its namespace's `default` account, which every namespace has of
/// its own (the remote's is made a moment after its namespace).
fn uses_default_account(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .is_none_or(|a| a.is_empty() || a == "default")
}

/// Where the copy of a pod's ServiceAccount stands in the remote namespace.
#[derive(Debug, PartialEq, Eq)]
enum Account {
    /// Copied, or `default` (every namespace has its own).
    Copied,
    /// On its way (namespace objects): a twin sent before it would be refused there.
    OnItsWay,
    /// Still no copy of ours after [`QUIET_WAIT`] (its name taken there, its copy refused,
    /// or no such account here). The twin is not sent all the same: an account of that name
    /// there that is not our copy of this namespace's would run it.
    Missing(String),
}

fn account(ctx: &Context, peer: &Peer, pod: &Pod, remote_namespace: &str) -> Account {
    let Some(account) = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|a| !a.is_empty() && *a != "default")
    else {
        return Account::Copied;
    };
    let namespace = pod.namespace().unwrap_or_default();
    let copied = peer
        .service_accounts
        .store
        .get(&ObjectRef::new(account).within(remote_namespace))
        .is_some_and(|copy| {
            crate::model::forge::objects::ours(
                &copy.metadata,
                &ctx.replica.local_cluster_id,
                &namespace,
            )
        });
    if copied {
        return Account::Copied;
    }
    if waited_long(pod) {
        Account::Missing(account.to_owned())
    } else {
        Account::OnItsWay
    }
}

/// Where the pod's claims stand in that cluster: the local ones from the shared watch,
/// ours there from the peer's.
fn claims(ctx: &Context, peer: &Peer, pod: &Pod, remote_namespace: &str) -> Claims {
    let namespace = pod.namespace().unwrap_or_default();
    crate::model::forge::claims::pod_claims(
        pod,
        |name| {
            ctx.stores
                .claims
                .get(&ObjectRef::new(name).within(&namespace))
        },
        |name| {
            peer.claims
                .store
                .get(&ObjectRef::new(name).within(remote_namespace))
        },
        &ctx.replica.local_cluster_id,
    )
}

/// Whether the offloading's (valid) cluster selector no longer picks virtual node
/// `node_name`. An invalid selector deselects nothing: it removes nothing either.
fn deselected(nodes: &Store<Node>, offloading: &NamespaceOffloading, node_name: &str) -> bool {
    let Some(node) = nodes.get(&ObjectRef::new(node_name)) else {
        return false;
    };
    let selector = &offloading.spec.cluster_selector;
    crate::model::selector::validate(selector, "spec.clusterSelector").is_empty()
        && !crate::model::selector::matches(selector, node_name, node.labels())
}

/// Whether a live RemoteCluster still stands for the cluster of virtual node `node_name`:
/// only the end of a peering sends its pods back, not the loss of its node object.
fn still_peered(remote_clusters: &Store<RemoteCluster>, node_name: &str) -> bool {
    remote_clusters.state().iter().any(|rc| {
        rc.metadata.deletion_timestamp.is_none()
            && rc
                .cluster_id()
                .is_some_and(|id| virtual_node_name(id) == node_name)
    })
}

/// This worker's name in metrics and in the backoff's keys.
pub(crate) const WORKER: &str = "pods";

pub(crate) async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, PodError> {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return Ok(Action::await_change());
    };
    if gone_virtual_node(&ctx.stores.nodes, &node) {
        if still_peered(&ctx.stores.remote_clusters, &node) {
            // Deleted by hand or by an autoscaler, not unpeered: the twin runs on, and the
            // peering puts the node back within moments.
            return Ok(Action::requeue(SOON));
        }
        // Its cluster was unpeered: nothing runs it any more (and nothing can be deleted
        // there). As for a node that is gone, the pod goes; its owner creates it again.
        return send_back(
            &ctx,
            &pod,
            &format!("node {node} is gone: its cluster was unpeered"),
        )
        .await;
    }
    let Some(cluster_id) = cluster_of(&ctx.stores.nodes, &node) else {
        return Ok(Action::await_change());
    };
    let _timer = ctx.metrics.reconcile("pods");
    let Some(peer) = ctx.peers.get(&cluster_id) else {
        // No connection to that cluster (yet): like a node whose kubelet is away.
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    if peer.unreachable.is_some() {
        // Keep the last status; the peering's reconnection wakes everything.
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let namespace = pod.namespace().unwrap_or_default();
    let Some(offloading) = ctx
        .stores
        .offloadings
        .get(&ObjectRef::new(OFFLOADING_NAME).within(&namespace))
    else {
        // Not offloaded (any more), or not seen yet: only a namespace without the
        // scheduling label is surely not offloaded.
        let marked = ctx
            .stores
            .namespaces
            .get(&ObjectRef::new(&namespace))
            .is_some_and(|ns| {
                ns.labels()
                    .get(SCHEDULING_ENABLED_LABEL)
                    .map(String::as_str)
                    == Some("true")
            });
        if marked {
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
        return send_back(&ctx, &pod, "its namespace is no longer offloaded").await;
    };
    if offloading.metadata.deletion_timestamp.is_some() && pod.metadata.deletion_timestamp.is_none()
    {
        // The offloading ends and its remote namespaces go with the twins: the pod goes
        // too, and its owner creates it again here (the webhook places it locally now).
        return send_back(&ctx, &pod, "the namespace's offloading is ending").await;
    }
    let remote_namespace = offloading
        .spec
        .remote_name(&namespace, &ctx.replica.local_cluster_id);
    let name = pod.name_any();
    let twin = peer
        .pods
        .store
        .get(&ObjectRef::new(&name).within(&remote_namespace));
    let owner = twin
        .as_deref()
        .map(|t| forge::owner(t, &pod, &ctx.replica.local_cluster_id));

    if pod.metadata.deletion_timestamp.is_some() {
        return finish_deletion(&ctx, &pod, &peer, &cluster_id, twin.as_deref(), owner).await;
    }
    if deselected(&ctx.stores.nodes, &offloading, &node) {
        // Its cluster no longer matches the namespace's clusterSelector (its labels, or the
        // selector, changed): the offloading controller removes our namespace there. As at
        // the end of a peering, the twin goes and so does the pod; its owner creates it
        // again, and the webhook places it where the strategy now says.
        if let (Some(twin), Some(TwinOwner::This)) = (twin.as_deref(), owner) {
            let params = DeleteParams {
                preconditions: only_this(&twin.metadata),
                ..DeleteParams::default()
            };
            let api = Api::<Pod>::namespaced(peer.client.clone(), &remote_namespace);
            match remote(&cluster_id, api.delete(&name, &params)).await {
                Err(RemoteError::Api { source, .. })
                    if is_not_found(&source) || classify(&source) == Reason::Conflict => {}
                other => {
                    other?;
                }
            }
        }
        let why =
            format!("cluster {cluster_id} is no longer selected by the namespace's offloading");
        return send_back(&ctx, &pod, &why).await;
    }
    match (twin, owner) {
        (Some(twin), Some(TwinOwner::This)) => {
            if let Some(status) = &twin.status {
                reflect_status(&ctx, &pod, status).await?;
            }
            if let Some((home, asked)) = home_api::asked(&ctx, &pod) {
                return keep_home_token(&ctx, (&peer, &cluster_id), &pod, (home, &asked), &twin)
                    .await;
            }
            Ok(Action::await_change())
        }
        (Some(twin), Some(TwinOwner::Stale)) => {
            // The twin of an earlier pod of this name: it goes first.
            match delete_this_twin(&peer, &cluster_id, &twin).await {
                Err(RemoteError::Api { source, .. }) if is_not_found(&source) => {}
                other => {
                    other?;
                }
            }
            Ok(Action::requeue(SOON))
        }
        _ => {
            let ended = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            if ended {
                // It ran and ended: it keeps its final status, and no new twin starts.
                return Ok(Action::await_change());
            }
            if let Some(why) = forge::unsupported(&pod) {
                report(&ctx, &pod, "Unsupported", &why).await?;
                return Ok(Action::await_change());
            }
            // Nothing goes into a remote namespace that is not ours, and Ready there.
            let conditions = offloading
                .status
                .as_ref()
                .and_then(|s| s.remote_namespaces_conditions.get(&cluster_id))
                .map_or(&[][..], Vec::as_slice);
            let existing = peer
                .namespaces
                .store
                .get(&ObjectRef::new(&remote_namespace));
            match writable(
                existing.as_deref(),
                conditions,
                &ctx.replica.local_cluster_id,
                &namespace,
            ) {
                Writable::Yes => {}
                // Its offloading's status change wakes the pod.
                Writable::NotYet => return Ok(Action::requeue(SOON)),
                Writable::Never(why) => {
                    let why = format!("cluster {cluster_id}: {why}");
                    report(&ctx, &pod, "NamespaceNotOurs", &why).await?;
                    return Ok(Action::requeue(Duration::from_secs(30)));
                }
            }
            match account(&ctx, &peer, &pod, &remote_namespace) {
                Account::Copied => {}
                Account::OnItsWay => return Ok(Action::requeue(SOON)),
                Account::Missing(account) => {
                    let why = format!(
                        "cluster {cluster_id}: ServiceAccount {account} has no copy of ours in namespace {remote_namespace} yet (its events say why: a name taken there, a refusal), and the pod is not sent there to run as another account"
                    );
                    report(&ctx, &pod, "AccountNotCopied", &why).await?;
                    // Its copy's arrival does not wake the pod: look again now and then.
                    return Ok(Action::requeue(Duration::from_secs(30)));
                }
            }
            // Its claims are provisioned there before it (crate::reflection::claims).
            match claims(&ctx, &peer, &pod, &remote_namespace) {
                Claims::Ready => {}
                Claims::Unsupported(why) => {
                    let why = format!("cluster {cluster_id}: {why}");
                    report(&ctx, &pod, "Unsupported", &why).await?;
                    return Ok(Action::requeue(Duration::from_secs(30)));
                }
                Claims::Waiting(why) if waited_long(&pod) => {
                    let why = format!("cluster {cluster_id}: {why}");
                    report(&ctx, &pod, "ClaimNotReady", &why).await?;
                    return Ok(Action::requeue(Duration::from_secs(30)));
                }
                Claims::Waiting(_) => return Ok(Action::requeue(SOON)),
            }
            let placement =
                forge::placement_of(&pod, &offloading.spec, &ctx.reflection.runtime_class);
            // With home access, the twin mounts a Secret of the home token in place of its
            // token volume (the token itself is asked for last, once nothing else holds the
            // twin back: no token is minted for a twin that is not made).
            let home = home_api::asked(&ctx, &pod);
            let with_home = home
                .as_ref()
                .map(|(home, asked)| home_forge::with_home_access(&pod, asked, home));
            let mut twin = forge::twin(
                with_home.as_ref().unwrap_or(&pod),
                &placement,
                &ctx.replica.local_cluster_id,
                &remote_namespace,
            );
            forge::without_opt_in(&mut twin, &ctx.reflection.runtime_class);
            ctx.reflection.strip(&mut twin.metadata);
            // No token of this cluster goes there; only classes that cluster has.
            let tokens = crate::reflection::namespace_objects::home_tokens(&ctx, &pod).await?;
            match forge::adapt(&mut twin, &tokens, &peer.classes()) {
                Ok(notes) => {
                    for note in notes {
                        crate::context::writes::record_event(
                            &ctx.recorder,
                            &*pod,
                            EventType::Normal,
                            note.reason,
                            &format!("in cluster {cluster_id}: {}", note.message),
                            "Offloading",
                        )
                        .await;
                    }
                }
                Err(forge::Unfit::NotKnownYet) if waited_long(&pod) => {
                    let why = format!(
                        "cluster {cluster_id}: the pod names a priority or runtime class, and that cluster's classes are not listed yet (the peering's credentials need list and watch on PriorityClasses and RuntimeClasses there)"
                    );
                    report(&ctx, &pod, "ClassesNotKnown", &why).await?;
                    return Ok(Action::requeue(Duration::from_secs(30)));
                }
                Err(forge::Unfit::NotKnownYet) => return Ok(Action::requeue(SOON)),
                Err(forge::Unfit::Unsupported(why)) => {
                    let why = format!("cluster {cluster_id}: {why}");
                    report(&ctx, &pod, "Unsupported", &why).await?;
                    // Nothing wakes it when the class appears there: look again now and then.
                    return Ok(Action::requeue(Duration::from_secs(30)));
                }
            }
            // A pod this cluster issues no token for waits here, rather than run there
            // without it.
            let home = match home {
                Some((home, asked)) => {
                    match home_api::issue(&ctx, &peer, &pod, &asked, &remote_namespace).await? {
                        Ok(issued) => Some((home, asked, issued)),
                        Err(blocked) => {
                            let (reason, why) = blocked.said();
                            report(&ctx, &pod, reason, &format!("cluster {cluster_id}: {why}"))
                                .await?;
                            return Ok(Action::requeue(Duration::from_secs(30)));
                        }
                    }
                }
                None => None,
            };
            let api = Api::<Pod>::namespaced(peer.client.clone(), &remote_namespace);
            match remote(&cluster_id, api.create(&PostParams::default(), &twin)).await {
                Ok(created) => {
                    tracing::debug!(%namespace, pod = %name, %cluster_id, "twin created");
                    if let Some((home, _, issued)) = &home {
                        // After the twin, which owns it: the kubelet there mounts it
                        // as soon as it exists.
                        let stored = home_api::store(
                            &ctx,
                            (&peer, &cluster_id),
                            &pod,
                            home,
                            issued,
                            &created,
                        )
                        .await?;
                        if let Err(blocked) = stored {
                            home_token_warning(&ctx, &pod, &cluster_id, &blocked).await;
                        }
                    }
                    Ok(Action::requeue(SOON))
                }
                Err(RemoteError::Api { source, .. })
                    if classify(&source) == Reason::AlreadyExists =>
                {
                    // Not in our watch of twins: someone else's (or ours, not seen yet).
                    let existing = remote(&cluster_id, api.get_opt(&name)).await?;
                    if existing.as_ref().is_some_and(|e| {
                        forge::owner(e, &pod, &ctx.replica.local_cluster_id) == TwinOwner::Other
                    }) {
                        let why = format!(
                            "a pod named {name} that this cluster did not create exists in namespace {remote_namespace} of cluster {cluster_id}: it is left alone; rename or delete it there"
                        );
                        report(&ctx, &pod, "NameTaken", &why).await?;
                        return Ok(Action::requeue(Duration::from_secs(30)));
                    }
                    Ok(Action::requeue(SOON))
                }
                // The remote's `default` account is created a moment after its namespace:
                // its ServiceAccount admission refuses pods until then.
                Err(RemoteError::Api { source, .. })
                    if classify(&source) == Reason::Forbidden
                        && uses_default_account(&pod)
                        && message(&source).contains(ACCOUNT_NOT_YET) =>
                {
                    Ok(Action::requeue(SOON))
                }
                Err(RemoteError::Api { source, .. })
                    if matches!(classify(&source), Reason::Invalid | Reason::Forbidden)
                        && !is_not_found(&source) =>
                {
                    let why = format!("cluster {cluster_id} refused the pod: {}", message(&source));
                    report(&ctx, &pod, "Refused", &why).await?;
                    Ok(Action::requeue(Duration::from_secs(30)))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Keeps the running twin's home token fresh: renewed at 80% of its lifetime, when the
/// pod is requeued for.
async fn keep_home_token(
    ctx: &Context,
    (peer, cluster_id): (&Peer, &str),
    pod: &Pod,
    (home, asked): (&home_forge::HomeApi, &home_forge::TokenAsked),
    twin: &Pod,
) -> Result<Action, PodError> {
    let ended = matches!(
        twin.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    // A twin made without the home token (before the flag was turned on) does not mount
    // one: none is written for it (a credential nothing uses would only be exposed).
    if ended || !home_forge::mounts_home_secret(twin, pod) {
        return Ok(Action::await_change());
    }
    if let Some(left) = home_api::fresh_for(ctx, peer, pod, twin) {
        return Ok(Action::requeue(left.max(SOON)));
    }
    let remote_namespace = twin.namespace().unwrap_or_default();
    let stored = match home_api::issue(ctx, peer, pod, asked, &remote_namespace).await? {
        Ok(issued) => home_api::store(ctx, (peer, cluster_id), pod, home, &issued, twin).await?,
        Err(blocked) => Err(blocked),
    };
    match stored {
        Ok(renew_in) => Ok(Action::requeue(renew_in.max(SOON))),
        Err(blocked) => {
            home_token_warning(ctx, pod, cluster_id, &blocked).await;
            Ok(Action::requeue(Duration::from_secs(30)))
        }
    }
}

/// Says on the pod that its twin's home token could not be written or renewed.
async fn home_token_warning(
    ctx: &Context,
    pod: &Pod,
    cluster_id: &str,
    blocked: &home_api::Blocked,
) {
    let (reason, why) = blocked.said();
    tracing::warn!(namespace = pod.namespace().unwrap_or_default(), pod = %pod.name_any(), %cluster_id, why, "home token not kept");
    crate::context::writes::record_event(
        &ctx.recorder,
        pod,
        EventType::Warning,
        reason,
        &format!("in cluster {cluster_id}: {why}"),
        "Offloading",
    )
    .await;
}

/// A local pod being deleted: its twin goes first, with the same grace period; then the
/// local deletion is completed, as a kubelet does once its containers stopped.
async fn finish_deletion(
    ctx: &Context,
    pod: &Pod,
    peer: &Peer,
    cluster_id: &str,
    twin: Option<&Pod>,
    owner: Option<TwinOwner>,
) -> Result<Action, PodError> {
    if let (Some(twin), Some(TwinOwner::This)) = (twin, owner) {
        if twin.metadata.deletion_timestamp.is_none() {
            let api = Api::<Pod>::namespaced(
                peer.client.clone(),
                twin.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let params = DeleteParams {
                grace_period_seconds: pod
                    .metadata
                    .deletion_grace_period_seconds
                    .and_then(|s| u32::try_from(s).ok()),
                preconditions: only_this(&twin.metadata),
                ..DeleteParams::default()
            };
            match remote(cluster_id, api.delete(&twin.name_any(), &params)).await {
                Err(RemoteError::Api { source, .. }) if is_not_found(&source) => {}
                other => {
                    other?;
                }
            }
        }
        if let Some(status) = &twin.status {
            reflect_status(ctx, pod, status).await?;
        }
        return Ok(Action::requeue(SOON));
    }
    if !peer.pods.listed.now() {
        // No twin in a store that has not listed (just connected, or re-listing after an
        // error) is no proof that none runs there: wait for the listing, which wakes it.
        return Ok(Action::requeue(SOON));
    }
    complete_local_deletion(ctx, pod).await
}

/// Removes the local pod at once (grace 0: nothing runs it any more); one already gone, or
/// replaced meanwhile (uid precondition), is left as it is.
async fn complete_local_deletion(ctx: &Context, pod: &Pod) -> Result<Action, PodError> {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: only_this(&pod.metadata),
        ..DeleteParams::default()
    };
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if is_not_found(&e) || classify(&e) == Reason::Conflict => {
            Ok(Action::await_change())
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes a local pod that can no longer run remotely (its owner, if any, creates it again
/// and the webhook places the new one); says why in an event first.
async fn send_back(ctx: &Context, pod: &Pod, why: &str) -> Result<Action, PodError> {
    tracing::info!(namespace = pod.namespace().unwrap_or_default(), pod = %pod.name_any(), why, "offloaded pod deleted");
    crate::context::writes::record_event(
        &ctx.recorder,
        pod,
        EventType::Normal,
        "OffloadedPodDeleted",
        &format!("deleted: {why}; its owner, if it has one, creates it again"),
        "Offloading",
    )
    .await;
    complete_local_deletion(ctx, pod).await
}

/// Writes the twin's status onto the local pod, when it says something new.
async fn reflect_status(ctx: &Context, pod: &Pod, twin: &PodStatus) -> Result<(), PodError> {
    let wanted = forge::local_status(twin, pod.status.as_ref());
    if forge::status_current(pod.status.as_ref(), &wanted) {
        return Ok(());
    }
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let patch = serde_json::json!({"status": wanted});
    match api
        .patch_status(
            &pod.name_any(),
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

/// Says on the local pod why it has no twin: a condition (`kubectl describe pod`) and an
/// event, once per reason.
async fn report(ctx: &Context, pod: &Pod, reason: &str, why: &str) -> Result<(), PodError> {
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == TWIN_CONDITION));
    if current
        .is_some_and(|c| c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(why))
    {
        return Ok(());
    }
    let condition = PodCondition {
        type_: TWIN_CONDITION.into(),
        status: "False".into(),
        reason: Some(reason.into()),
        message: Some(why.into()),
        last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        )),
        ..PodCondition::default()
    };
    let mut conditions: Vec<PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.retain(|c| c.type_ != TWIN_CONDITION);
    conditions.push(condition);
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let patch = serde_json::json!({"status": {"conditions": conditions}});
    match api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(namespace = pod.namespace().unwrap_or_default(), pod = %pod.name_any(), reason, why, "pod cannot run remotely");
    crate::context::writes::record_event(
        &ctx.recorder,
        pod,
        EventType::Warning,
        &format!("RemotePod{reason}"),
        why,
        "Offloading",
    )
    .await;
    Ok(())
}

pub(crate) fn error_policy(pod: Arc<Pod>, error: &PodError, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(WORKER, "kubernetes");
    tracing::warn!(namespace = pod.namespace().unwrap_or_default(), pod = %pod.name_any(), %error, "pod reflection failed");
    Action::requeue(ctx.backoff.failed(&backoff::key(WORKER, &*pod)))
}

/// A local pod gone (even forced, without the graceful steps): its twin goes too, unless
/// its deletion is already under way (the graceful steps began it).
pub(crate) async fn delete_twin_of(ctx: &Context, pod: &Pod) {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
        return;
    };
    let Some(cluster_id) = cluster_of(&ctx.stores.nodes, node) else {
        return;
    };
    let Some(peer) = ctx.peers.get(&cluster_id) else {
        return;
    };
    let Some(twin) = twin_of_gone(ctx, &peer, pod) else {
        return;
    };
    if twin.metadata.deletion_timestamp.is_some() {
        return;
    }
    if let Err(e) = delete_this_twin(&peer, &cluster_id, &twin).await {
        let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        tracing::warn!(%namespace, pod = %name, %cluster_id, error = %e, "cannot delete the twin of a deleted pod; the sweep tries again");
    }
}

/// Deletes this very twin (its uid), not whatever may bear its name there by then.
async fn delete_this_twin(peer: &Peer, cluster_id: &str, twin: &Pod) -> Result<(), RemoteError> {
    let api = Api::<Pod>::namespaced(
        peer.client.clone(),
        twin.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let params = DeleteParams {
        preconditions: only_this(&twin.metadata),
        ..DeleteParams::default()
    };
    remote(cluster_id, api.delete(&twin.name_any(), &params))
        .await
        .map(|_| ())
}

/// The twin of a pod that is gone: looked up where its offloading puts it, or, once the
/// offloading is gone too (the namespace leaving), found by its origin among the peer's
/// twins. Under a mass deletion that is one lookup per pod, not a scan.
fn twin_of_gone(ctx: &Context, peer: &Peer, pod: &Pod) -> Option<Arc<Pod>> {
    let namespace = pod.namespace()?;
    let name = pod.name_any();
    let local_cluster_id = &ctx.replica.local_cluster_id;
    let ours = |twin: &Pod| {
        twin.metadata.name.as_deref() == Some(name.as_str())
            && forge::owner(twin, pod, local_cluster_id) == TwinOwner::This
    };
    match ctx
        .stores
        .offloadings
        .get(&ObjectRef::new(OFFLOADING_NAME).within(&namespace))
    {
        Some(offloading) => {
            let remote_namespace = offloading.spec.remote_name(&namespace, local_cluster_id);
            peer.pods
                .store
                .get(&ObjectRef::new(&name).within(&remote_namespace))
                .filter(|twin| ours(twin))
        }
        None => peer.pods.store.find(|twin| ours(twin)),
    }
}

/// Twins whose local pod is gone (deleted while this manager was away, or a delete that
/// failed) are deleted: run every so often for every peer.
pub(crate) async fn sweep(ctx: &Context, local_pods: &Store<Pod>) {
    for cluster_id in ctx.peers.cluster_ids() {
        let Some(peer) = ctx.peers.get(&cluster_id) else {
            continue;
        };
        if peer.unreachable.is_some() || !peer.pods.listed.now() {
            continue;
        }
        for twin in peer.pods.store.state() {
            let Some(origin) = twin
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ORIGIN_NAMESPACE_ANNOTATION))
            else {
                continue;
            };
            // Pods of a namespace not listed here yet are not missing, only not known.
            if !ctx.stores.covered.pods.covers(origin) {
                continue;
            }
            let local = local_pods.get(&ObjectRef::new(&twin.name_any()).within(origin));
            let orphan = match &local {
                None => true,
                Some(local) => {
                    forge::owner(&twin, local, &ctx.replica.local_cluster_id) == TwinOwner::Stale
                }
            };
            if orphan && twin.metadata.deletion_timestamp.is_none() {
                match delete_this_twin(&peer, &cluster_id, &twin).await {
                    Ok(()) => {
                        tracing::info!(%cluster_id, pod = %twin.name_any(), "orphaned twin deleted")
                    }
                    Err(e) => {
                        tracing::debug!(%cluster_id, error = %e, "cannot delete an orphaned twin")
                    }
                }
            }
        }
    }
}

mod home_api;

#[cfg(test)]
mod tests;
