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
/// How long the holder keeps trying to renew before it stops leading: well before the
/// Lease runs out for the others (client-go's renewDeadline), so that two replicas never
/// act at once even when the holder's connection hangs.
pub(crate) const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// The longest one call of the election may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the next call may take: `None` when the holder's renewal deadline has passed
/// (it must stop leading now). `since_renewal` is `None` while not leading.
pub(crate) fn call_budget(since_renewal: Option<Duration>) -> Option<Duration> {
    match since_renewal {
        None => Some(CALL_TIMEOUT),
        Some(elapsed) => {
            let left = RENEW_DEADLINE.checked_sub(elapsed)?;
            (!left.is_zero()).then_some(left.min(CALL_TIMEOUT))
        }
    }
}

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
    #[error("could not renew the leader Lease within {RENEW_DEADLINE:?}: {0}")]
    NotRenewed(#[source] CallError),
}

/// A call of the election that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("the API server did not answer within {0:?}")]
    TimedOut(Duration),
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
    let mut last_error: Option<CallError> = None;
    loop {
        let was = *leader.borrow();
        let since_renewal =
            was.then(|| last_renewal.map(|t| t.elapsed()).unwrap_or(RENEW_DEADLINE));
        let Some(budget) = call_budget(since_renewal) else {
            // Stop acting first, then say so: the Lease may be the others' any moment.
            let _ = leader.send(false);
            return Err(LeaderError::NotRenewed(
                last_error.unwrap_or(CallError::TimedOut(RENEW_DEADLINE)),
            ));
        };
        // The Lease's renewTime is taken as the call starts: the deadline counts from there.
        let started = tokio::time::Instant::now();
        let attempt = attempt(&api, &namespace, &me, written.take());
        let result = match tokio::time::timeout(budget, attempt).await {
            Ok(result) => result.map_err(CallError::Api),
            Err(_) => Err(CallError::TimedOut(budget)),
        };
        match result {
            Ok(Some(lease)) => {
                written = Some(lease);
                last_renewal = Some(started);
                last_error = None;
                if !was {
                    tracing::info!(%me, "became the leader: running the controllers");
                    let _ = leader.send(true);
                }
            }
            Ok(None) if was => {
                let _ = leader.send(false);
                return Err(LeaderError::Taken);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "leader election: cannot read or write the Lease");
                // Still ours until the renewal deadline (checked at the top).
                last_error = Some(e);
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
                let _ = tokio::time::timeout(CALL_TIMEOUT, release(&api, &me)).await;
            }
            return Ok(());
        }
    }
}

/// One step of the election against the Lease as it is now (`written`: as we last wrote
/// it, so that renewing needs no read): the Lease as we wrote it, or `None` while another
/// replica holds it.
async fn attempt(
    api: &Api<Lease>,
    namespace: &str,
    me: &str,
    written: Option<Lease>,
) -> Result<Option<Lease>, kube::Error> {
    let now = Timestamp::now();
    let current = match written {
        Some(lease) => Some(lease),
        None => api.get_opt(LEADER_LEASE).await?,
    };
    match step(current.as_ref(), me, now) {
        Step::Follow => Ok(None),
        Step::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEADER_LEASE.into()),
                    namespace: Some(namespace.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec(me, now, 0)),
            };
            api.create(&PostParams::default(), &lease).await.map(Some)
        }
        Step::Renew | Step::Acquire => {
            // `replace` carries the resourceVersion we read: of two replicas racing for an
            // expired Lease, only one write succeeds.
            let mut lease = current.unwrap_or_default();
            let old = lease.spec.clone().unwrap_or_default();
            let mut new = spec(me, now, old.lease_transitions.unwrap_or(0));
            if old.holder_identity.as_deref() == Some(me) {
                new.acquire_time = old.acquire_time;
            } else {
                new.lease_transitions = Some(new.lease_transitions.unwrap_or(0) + 1);
            }
            lease.spec = Some(new);
            api.replace(LEADER_LEASE, &PostParams::default(), &lease)
                .await
                .map(Some)
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
    fn a_holder_stops_before_its_lease_can_run_out_for_the_others() {
        // Not leading: every call gets the whole timeout.
        assert_eq!(call_budget(None), Some(CALL_TIMEOUT));
        // Leading: a call never runs past the renewal deadline...
        assert_eq!(call_budget(Some(Duration::ZERO)), Some(CALL_TIMEOUT));
        assert_eq!(
            call_budget(Some(Duration::from_secs(7))),
            Some(Duration::from_secs(3))
        );
        // ...and once it has passed, the holder stops.
        assert_eq!(call_budget(Some(RENEW_DEADLINE)), None);
        assert_eq!(call_budget(Some(Duration::from_secs(60))), None);
        // With room to spare: the others take the Lease only once it ran out, counted
        // from the renewal's start as the holder's deadline is.
        assert!(RENEW_DEADLINE + RETRY < LEASE_DURATION);
        assert!(CALL_TIMEOUT < RENEW_DEADLINE);
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
