//! Lease-based leader election (`coordination.k8s.io/v1`): every replica serves the
//! webhooks, only the holder of the Lease runs the controllers. A replica that loses the
//! Lease stops, as client-go's elector does, so two never reconcile at once.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;

use crate::model::markers::LEADER_LEASE;

/// How long a Lease holds without renewal before another replica may take it.
pub(crate) const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews and the others check.
pub(crate) const RETRY: Duration = Duration::from_secs(2);

/// What to do with the Lease as it is now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// No Lease yet: create it, held by us.
    Create,
    /// Ours: renew it.
    Renew,
    /// Someone else's and expired (or released): take it over.
    Acquire,
    /// Someone else's and live: wait.
    Follow,
}

pub(crate) fn step(lease: Option<&Lease>, me: &str, now: Timestamp) -> Step {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return if lease.is_some() {
            Step::Acquire
        } else {
            Step::Create
        };
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == me {
        return Step::Renew;
    }
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let expired = spec
        .renew_time
        .as_ref()
        .is_none_or(|t| t.0 + SignedDuration::from_secs(seconds) < now);
    if holder.is_empty() || expired {
        Step::Acquire
    } else {
        Step::Follow
    }
}

fn spec(me: &str, now: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(me.into()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LeaderError {
    #[error("another replica took the leader Lease")]
    Taken,
    #[error("could not renew the leader Lease in time: {0}")]
    NotRenewed(#[source] kube::Error),
}

/// Runs the election until `stop` turns true; `leader` says whether we hold the Lease.
/// Returns `Err` when leadership was lost (the caller exits), `Ok` on a clean stop, after
/// releasing the Lease so another replica takes over at once.
pub(crate) async fn run(
    client: Client,
    namespace: String,
    me: String,
    leader: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), LeaderError> {
    let api = Api::<Lease>::namespaced(client, &namespace);
    let mut last_renewal: Option<tokio::time::Instant> = None;
    // The Lease as we last wrote it: while we hold it, renewing needs no read first (a
    // write that lost to another replica fails on its resourceVersion, and we read again).
    let mut written: Option<Lease> = None;
    loop {
        let now = Timestamp::now();
        let current = match written.take() {
            Some(lease) => Ok(Some(lease)),
            None => api.get_opt(LEADER_LEASE).await,
        };
        let result = match current {
            Err(e) => Err(e),
            Ok(current) => match step(current.as_ref(), &me, now) {
                Step::Follow => Ok(None),
                Step::Create => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(LEADER_LEASE.into()),
                            namespace: Some(namespace.clone()),
                            ..ObjectMeta::default()
                        },
                        spec: Some(spec(&me, now, 0)),
                    };
                    api.create(&PostParams::default(), &lease).await.map(Some)
                }
                Step::Renew | Step::Acquire => {
                    // `replace` carries the resourceVersion we read: of two replicas racing
                    // for an expired Lease, only one write succeeds.
                    let mut lease = current.unwrap_or_default();
                    let old = lease.spec.clone().unwrap_or_default();
                    let mut new = spec(&me, now, old.lease_transitions.unwrap_or(0));
                    if old.holder_identity.as_deref() == Some(me.as_str()) {
                        new.acquire_time = old.acquire_time;
                    } else {
                        new.lease_transitions = Some(new.lease_transitions.unwrap_or(0) + 1);
                    }
                    lease.spec = Some(new);
                    api.replace(LEADER_LEASE, &PostParams::default(), &lease)
                        .await
                        .map(Some)
                }
            },
        };
        let was = *leader.borrow();
        match result {
            Ok(Some(lease)) => {
                written = Some(lease);
                last_renewal = Some(tokio::time::Instant::now());
                if !was {
                    tracing::info!(%me, "became the leader: running the controllers");
                    let _ = leader.send(true);
                }
            }
            Ok(None) if was => return Err(LeaderError::Taken),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "leader election: cannot read or write the Lease");
                // Still ours until it would have expired for the others.
                if was && last_renewal.is_none_or(|t| t.elapsed() > LEASE_DURATION - RETRY) {
                    return Err(LeaderError::NotRenewed(e));
                }
            }
        }
        let stopping = tokio::select! {
            _ = tokio::time::sleep(RETRY) => false,
            // Stop requested, or the sender is gone (shutting down either way).
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            let holding = *leader.borrow();
            if holding {
                release(&api, &me).await;
            }
            return Ok(());
        }
    }
}

/// Gives the Lease up on shutdown: no holder, so the next replica need not wait it out.
async fn release(api: &Api<Lease>, me: &str) {
    if let Ok(Some(mut lease)) = api.get_opt(LEADER_LEASE).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(me)
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        if api
            .replace(LEADER_LEASE, &PostParams::default(), &lease)
            .await
            .is_ok()
        {
            tracing::info!("leader Lease released");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_secs_ago: i64) -> Lease {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: (!holder.is_empty()).then(|| holder.to_owned()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn election_steps() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        assert_eq!(step(None, "a", now), Step::Create);
        assert_eq!(step(Some(&lease("a", 5)), "a", now), Step::Renew);
        assert_eq!(step(Some(&lease("b", 5)), "a", now), Step::Follow);
        assert_eq!(step(Some(&lease("b", 20)), "a", now), Step::Acquire);
        assert_eq!(
            step(Some(&lease("", 1)), "a", now),
            Step::Acquire,
            "released"
        );
    }
}
