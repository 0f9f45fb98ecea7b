//! The home token of an offloaded pod (`run --home-api-access=token`): asked of this
//! cluster with a TokenRequest bound to the pod, kept in a Secret of the twin's namespace
//! that the twin owns (the remote cluster deletes it with the twin), and renewed at 80%
//! of its lifetime: the pod's reconcile is requeued for then. The pure part is
//! `model::forge::home_api`.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{Pod, Secret, ServiceAccount},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::reflector::ObjectRef,
};

use crate::context::Shared as Context;

/// Why a home token could not be issued or stored (retried with the pod's backoff).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HomeApiError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("locally: {0}")]
    Local(#[from] kube::Error),
    #[error("the token request for ServiceAccount {0} came back without a token")]
    NoToken(String),
}
use crate::{
    context::{
        peers::Peer,
        remote_call::{RemoteError, remote},
    },
    model::{
        forge::home_api::{self as forge, HomeApi, TokenAsked},
        markers::FIELD_MANAGER,
        reason::{Reason, classify, is_not_found, message},
    },
};

/// A token of this cluster for the pod, and when to renew it.
pub(super) struct Issued {
    token: String,
    renew_at: Timestamp,
    renew_in: Duration,
}

/// What the pod's home access needs before its twin is made, or why it cannot have it.
pub(super) enum Blocked {
    /// The Secret's name is taken there by one that is not ours.
    Taken(String),
    /// This cluster would not issue the token (no such account, or we may not ask).
    NotIssued(String),
}

impl Blocked {
    /// The reason and message said on the pod.
    pub(super) fn said(&self) -> (&'static str, &str) {
        match self {
            Self::Taken(why) => ("HomeTokenSecretTaken", why),
            Self::NotIssued(why) => ("HomeTokenNotIssued", why),
        }
    }
}

/// The home access `ctx` gives this pod: none when the feature is off or the pod mounts
/// no token.
pub(super) fn asked<'a>(ctx: &'a Context, pod: &Pod) -> Option<(&'a HomeApi, TokenAsked)> {
    let home = ctx.replica.home_api.as_deref()?;
    Some((home, forge::token_asked(pod)?))
}

/// Asks this cluster for the pod's token, refusing early when its Secret's name is taken
/// there (as the peer's watch of our Secrets knows it).
pub(super) async fn issue(
    ctx: &Context,
    peer: &Peer,
    pod: &Pod,
    asked: &TokenAsked,
    remote_namespace: &str,
) -> Result<Result<Issued, Blocked>, HomeApiError> {
    let name = forge::secret_name(&pod.name_any());
    if let Some(existing) = peer
        .secrets
        .store
        .get(&ObjectRef::new(&name).within(remote_namespace))
        && !forge::ours(&existing, &ctx.replica.local_cluster_id, pod)
    {
        return Ok(Err(taken(&name, remote_namespace)));
    }
    let accounts =
        Api::<ServiceAccount>::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let request = forge::token_request(pod, asked);
    let issued = match accounts
        .create_token_request(&asked.account, &PostParams::default(), &request)
        .await
    {
        Ok(issued) => issued,
        Err(e)
            if matches!(classify(&e), Reason::Forbidden | Reason::Invalid) || is_not_found(&e) =>
        {
            return Ok(Err(Blocked::NotIssued(format!(
                "this cluster issues no token for ServiceAccount {} bound to the pod: {}",
                asked.account,
                message(&e)
            ))));
        }
        Err(e) => return Err(e.into()),
    };
    let Some((token, expires)) = issued
        .status
        .and_then(|s| Some((s.token?, s.expiration_timestamp?)))
    else {
        return Err(HomeApiError::NoToken(asked.account.clone()));
    };
    let now = Timestamp::now();
    let renew_at = forge::renew_at(now, expires.0);
    let renew_in = renew_at.duration_since(now).unsigned_abs();
    Ok(Ok(Issued {
        token,
        renew_at,
        renew_in,
    }))
}

fn taken(name: &str, remote_namespace: &str) -> Blocked {
    Blocked::Taken(format!(
        "a Secret named {name} that is not this cluster's home token for the pod exists in namespace {remote_namespace}: it is left alone; rename or delete it there"
    ))
}

/// Writes the issued token into the pod's Secret there, owned by `twin`.
pub(super) async fn store(
    ctx: &Context,
    (peer, cluster_id): (&Peer, &str),
    pod: &Pod,
    home: &HomeApi,
    issued: &Issued,
    twin: &Pod,
) -> Result<Result<Duration, Blocked>, HomeApiError> {
    let remote_namespace = twin.namespace().unwrap_or_default();
    let desired = forge::secret(
        pod,
        &ctx.replica.local_cluster_id,
        &remote_namespace,
        &issued.token,
        issued.renew_at,
        home,
        Some(twin),
    );
    let name = desired.name_any();
    let api = Api::<Secret>::namespaced(peer.client.clone(), &remote_namespace);
    let known = peer
        .secrets
        .store
        .get(&ObjectRef::new(&name).within(&remote_namespace));
    let ours = match known {
        Some(existing) => forge::ours(&existing, &ctx.replica.local_cluster_id, pod),
        None => match remote(cluster_id, api.create(&PostParams::default(), &desired)).await {
            Ok(_) => return Ok(Ok(issued.renew_in)),
            Err(RemoteError::Api { source, .. }) if classify(&source) == Reason::AlreadyExists => {
                remote(cluster_id, api.get_opt(&name))
                    .await?
                    .is_some_and(|s| forge::ours(&s, &ctx.replica.local_cluster_id, pod))
            }
            Err(e) => return Err(e.into()),
        },
    };
    if !ours {
        return Ok(Err(taken(&name, &remote_namespace)));
    }
    // Ours: applied over (a renewal, or a new owner), as our field manager.
    let mut body = serde_json::to_value(&desired).map_err(|e| RemoteError::Api {
        cluster_id: cluster_id.to_owned(),
        source: kube::Error::SerdeError(e),
    })?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    remote(cluster_id, api.patch(&name, &params, &Patch::Apply(body))).await?;
    Ok(Ok(issued.renew_in))
}

/// How long the pod's Secret there serves its running twin before renewal; `None`: issue
/// and store a token now.
pub(super) fn fresh_for(ctx: &Context, peer: &Peer, pod: &Pod, twin: &Pod) -> Option<Duration> {
    let namespace = twin.namespace()?;
    let secret = peer
        .secrets
        .store
        .get(&ObjectRef::new(&forge::secret_name(&pod.name_any())).within(&namespace))?;
    if !forge::ours(&secret, &ctx.replica.local_cluster_id, pod) {
        return None;
    }
    forge::still_fresh(&secret, pod, Some(twin), Timestamp::now())
}
