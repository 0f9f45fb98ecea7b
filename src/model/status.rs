//! NamespaceOffloading status, computed from what happened in each remote cluster: the
//! per-cluster conditions, the phase (with the contract's precedence) and the top-level
//! `Ready` condition. Pure, so every rule has a unit test.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::model::{
    api::{OffloadingPhase, RemoteNamespaceCondition},
    reason::{Problem, Reason},
};

pub(crate) const READY: &str = "Ready";
pub(crate) const OFFLOADING_REQUIRED: &str = "OffloadingRequired";

/// Where one remote cluster stands for this namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ClusterState {
    /// The selector does not select it.
    NotSelected,
    /// Selected; its remote namespace is not created yet.
    Pending,
    /// The remote namespace exists and is ours.
    Ready,
    /// Creation failed, or the namespace is being deleted: a reason and a message a person
    /// can act on.
    Failed(Problem),
}

impl ClusterState {
    pub(crate) fn failed(reason: Reason, message: impl Into<String>) -> Self {
        Self::Failed(Problem::new(reason, message))
    }

    fn selected(&self) -> bool {
        !matches!(self, ClusterState::NotSelected)
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    previous: &[RemoteNamespaceCondition],
    now: &Time,
) -> RemoteNamespaceCondition {
    let status = if status { "True" } else { "False" }.to_owned();
    // The transition time moves only when the status does.
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .or_else(|| Some(now.clone()));
    RemoteNamespaceCondition {
        type_: type_.into(),
        status,
        last_transition_time,
        reason: Some(reason.into()),
        message: Some(message.into()),
    }
}

/// The conditions a cluster's entry in `remoteNamespacesConditions` carries.
pub(crate) fn cluster_conditions(
    state: &ClusterState,
    remote_namespace: &str,
    previous: &[RemoteNamespaceCondition],
    now: &Time,
) -> Vec<RemoteNamespaceCondition> {
    match state {
        ClusterState::NotSelected => vec![condition(
            OFFLOADING_REQUIRED,
            false,
            "ClusterNotSelected",
            "the clusterSelector does not select this cluster",
            previous,
            now,
        )],
        ClusterState::Pending => vec![condition(
            OFFLOADING_REQUIRED,
            true,
            "ClusterSelected",
            &format!("namespace {remote_namespace} is being created in this cluster"),
            previous,
            now,
        )],
        // OffloadingRequired=True is dropped once Ready appears, as in Liqo.
        ClusterState::Ready => vec![condition(
            READY,
            true,
            "NamespaceCreated",
            &format!("namespace {remote_namespace} exists in this cluster"),
            previous,
            now,
        )],
        ClusterState::Failed(p) => {
            vec![condition(
                READY,
                false,
                p.reason.as_str(),
                &p.message,
                previous,
                now,
            )]
        }
    }
}

/// The overall phase. Precedence: being deleted, then no cluster selected (or an invalid
/// selector), then all Ready, all failed, some failed, and otherwise InProgress (creation
/// under way is never shown as a failure).
pub(crate) fn phase(
    deleting: bool,
    selector_invalid: bool,
    clusters: &BTreeMap<String, ClusterState>,
) -> OffloadingPhase {
    let selected: Vec<&ClusterState> = clusters.values().filter(|s| s.selected()).collect();
    let failed = selected
        .iter()
        .filter(|s| matches!(s, ClusterState::Failed(_)))
        .count();
    if deleting {
        OffloadingPhase::Terminating
    } else if selector_invalid || selected.is_empty() {
        OffloadingPhase::NoClusterSelected
    } else if selected.iter().all(|s| **s == ClusterState::Ready) {
        OffloadingPhase::Ready
    } else if failed == selected.len() {
        OffloadingPhase::AllFailed
    } else if failed > 0 {
        OffloadingPhase::SomeFailed
    } else {
        OffloadingPhase::InProgress
    }
}

/// The top-level `Ready` condition (for `kubectl wait --for=condition=Ready`).
/// How a phase change is announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Announce {
    Normal,
    Warning,
}

/// Whether a change of phase gets an event, and of which type. Every event is one more
/// write in the namespace, so the normal course is told by the status alone: a new
/// offloading's first healthy phase (`InProgress`, then `Ready`), and its termination (the
/// user's own deletion; `OffloadingTerminated` marks its end). Failures, a phase that
/// leaves a failure (recovery) and losing clusters are announced.
pub(crate) fn phase_event(
    previous: Option<OffloadingPhase>,
    now: OffloadingPhase,
) -> Option<Announce> {
    use OffloadingPhase::*;
    if previous == Some(now) {
        return None;
    }
    match (previous, now) {
        (_, Terminating) => None,
        (None | Some(InProgress), InProgress | Ready) => None,
        (_, SomeFailed | AllFailed | NoClusterSelected) => Some(Announce::Warning),
        _ => Some(Announce::Normal),
    }
}

/// During a termination, progress that is not a failure (one more cluster done) is written
/// only once the termination has lasted this long: a quick one is reported by its start
/// and its end, a slow one shows where it stands.
pub(crate) const QUIET_TERMINATION: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a termination's status is worth a write now (the write itself is skipped when
/// nothing changed): its start (the phase becomes `Terminating`) and a cluster that fails
/// for another reason than its deletion under way are written at once; progress once the
/// termination has lasted [`QUIET_TERMINATION`]; its end only when something else holds
/// the object (not `only_ours`): otherwise it is about to go.
pub(crate) fn termination_worth_writing(
    phase: Option<OffloadingPhase>,
    remaining: &BTreeMap<String, ClusterState>,
    only_ours: bool,
    lasted: Option<std::time::Duration>,
) -> bool {
    if remaining.is_empty() && only_ours {
        return false;
    }
    let failing = remaining.values().any(|s| match s {
        ClusterState::Failed(p) => p.reason != Reason::Terminating,
        _ => false,
    });
    phase != Some(OffloadingPhase::Terminating)
        || failing
        || remaining.is_empty()
        || lasted.is_none_or(|d| d >= QUIET_TERMINATION)
}

/// When a top-level condition of this type last took this status: kept from `previous`
/// while the status stays, `now` when it changes.
pub(crate) fn transition_time(
    previous: &[Condition],
    type_: &str,
    status: &str,
    now: &Time,
) -> Time {
    previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone())
}

pub(crate) fn ready_condition(
    phase: OffloadingPhase,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let ready = phase == OffloadingPhase::Ready;
    let status = if ready { "True" } else { "False" }.to_owned();
    let message = match phase {
        OffloadingPhase::Ready => "every selected cluster has its remote namespace",
        OffloadingPhase::NoClusterSelected => {
            "no remote cluster matches the clusterSelector (or it is invalid)"
        }
        OffloadingPhase::InProgress => "remote namespaces are being created",
        OffloadingPhase::SomeFailed => {
            "some remote namespaces could not be created: see remoteNamespacesConditions"
        }
        OffloadingPhase::AllFailed => {
            "no remote namespace could be created: see remoteNamespacesConditions"
        }
        OffloadingPhase::Terminating => "remote namespaces are being deleted",
    };
    let last_transition_time = transition_time(previous, READY, &status, now);
    Condition {
        type_: READY.into(),
        status,
        reason: format!("{phase:?}"),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn states(list: &[(&str, ClusterState)]) -> BTreeMap<String, ClusterState> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn failed() -> ClusterState {
        ClusterState::failed(Reason::AlreadyExists, "namespace x exists and is not ours")
    }

    #[test]
    fn a_termination_writes_its_start_failures_and_slow_progress_but_not_its_end() {
        use std::time::Duration;
        let deleting = ClusterState::failed(Reason::Terminating, "being deleted");
        let both = states(&[("c2", deleting.clone()), ("c3", deleting.clone())]);
        let one = states(&[("c3", deleting)]);
        let none = states(&[]);
        let early = Some(Duration::from_secs(2));
        let late = Some(QUIET_TERMINATION);
        let terminating = Some(OffloadingPhase::Terminating);
        // The start, whatever came before.
        assert!(termination_worth_writing(
            Some(OffloadingPhase::Ready),
            &both,
            true,
            early
        ));
        assert!(termination_worth_writing(None, &both, true, early));
        // Progress: not while the termination is young; once it has lasted.
        assert!(!termination_worth_writing(terminating, &one, true, early));
        assert!(termination_worth_writing(terminating, &one, true, late));
        // A cluster that cannot be cleaned is written at once.
        let stuck = states(&[(
            "c3",
            ClusterState::failed(Reason::Forbidden, "may not delete namespaces"),
        )]);
        assert!(termination_worth_writing(terminating, &stuck, true, early));
        // The end: the object is about to go, unless another finalizer keeps it.
        assert!(!termination_worth_writing(terminating, &none, true, late));
        assert!(termination_worth_writing(terminating, &none, false, early));
    }

    #[test]
    fn only_failures_recoveries_and_losses_of_clusters_are_announced() {
        use OffloadingPhase::*;
        // The normal course: the status says it.
        assert_eq!(phase_event(None, InProgress), None);
        assert_eq!(phase_event(None, Ready), None);
        assert_eq!(phase_event(Some(InProgress), Ready), None);
        assert_eq!(phase_event(Some(Ready), Ready), None);
        assert_eq!(phase_event(Some(Ready), Terminating), None);
        assert_eq!(phase_event(Some(SomeFailed), Terminating), None);
        // What someone should look at.
        assert_eq!(phase_event(None, AllFailed), Some(Announce::Warning));
        assert_eq!(
            phase_event(Some(Ready), SomeFailed),
            Some(Announce::Warning)
        );
        assert_eq!(
            phase_event(None, NoClusterSelected),
            Some(Announce::Warning)
        );
        assert_eq!(
            phase_event(Some(SomeFailed), AllFailed),
            Some(Announce::Warning)
        );
        // Back to health, or a cluster lost and work under way again.
        assert_eq!(phase_event(Some(SomeFailed), Ready), Some(Announce::Normal));
        assert_eq!(phase_event(Some(Ready), InProgress), Some(Announce::Normal));
        assert_eq!(
            phase_event(Some(NoClusterSelected), InProgress),
            Some(Announce::Normal)
        );
    }

    #[test]
    fn phase_follows_the_contract_precedence() {
        use ClusterState::*;
        use OffloadingPhase as P;
        let ready = states(&[("a", Ready), ("b", Ready), ("c", NotSelected)]);
        assert_eq!(phase(true, false, &ready), P::Terminating);
        assert_eq!(phase(false, true, &ready), P::NoClusterSelected);
        assert_eq!(phase(false, false, &ready), P::Ready);
        assert_eq!(
            phase(false, false, &states(&[("c", NotSelected)])),
            P::NoClusterSelected
        );
        assert_eq!(phase(false, false, &states(&[])), P::NoClusterSelected);
        assert_eq!(
            phase(false, false, &states(&[("a", failed()), ("b", failed())])),
            P::AllFailed
        );
        assert_eq!(
            phase(false, false, &states(&[("a", Ready), ("b", failed())])),
            P::SomeFailed
        );
        assert_eq!(
            phase(false, false, &states(&[("a", Pending), ("b", failed())])),
            P::SomeFailed
        );
        assert_eq!(
            phase(false, false, &states(&[("a", Ready), ("b", Pending)])),
            P::InProgress
        );
    }

    #[test]
    fn conditions_per_cluster_state() {
        let n = now();
        let c = cluster_conditions(&ClusterState::NotSelected, "ns-id", &[], &n);
        assert_eq!(
            (c[0].type_.as_str(), c[0].status.as_str()),
            (OFFLOADING_REQUIRED, "False")
        );
        let c = cluster_conditions(&ClusterState::Pending, "ns-id", &[], &n);
        assert_eq!(
            (c[0].type_.as_str(), c[0].status.as_str()),
            (OFFLOADING_REQUIRED, "True")
        );
        let c = cluster_conditions(&ClusterState::Ready, "ns-id", &[], &n);
        assert_eq!(
            c.len(),
            1,
            "OffloadingRequired is removed once Ready appears"
        );
        assert_eq!((c[0].type_.as_str(), c[0].status.as_str()), (READY, "True"));
        let c = cluster_conditions(&failed(), "ns-id", &[], &n);
        assert_eq!(
            (c[0].status.as_str(), c[0].reason.as_deref()),
            ("False", Some("AlreadyExists"))
        );
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
        let before = cluster_conditions(&ClusterState::Ready, "x", &[], &earlier);
        let same = cluster_conditions(&ClusterState::Ready, "x", &before, &now());
        assert_eq!(same[0].last_transition_time, Some(earlier.clone()));
        let changed = cluster_conditions(&failed(), "x", &before, &now());
        assert_eq!(changed[0].last_transition_time, Some(now()));

        let ready = ready_condition(OffloadingPhase::Ready, Some(1), &[], &earlier);
        assert_eq!(ready.status, "True");
        let still = ready_condition(
            OffloadingPhase::Ready,
            Some(2),
            std::slice::from_ref(&ready),
            &now(),
        );
        assert_eq!(still.last_transition_time, earlier);
        assert_eq!(still.observed_generation, Some(2));
        let not = ready_condition(OffloadingPhase::SomeFailed, Some(2), &[still], &now());
        assert_eq!(
            (not.status.as_str(), not.reason.as_str()),
            ("False", "SomeFailed")
        );
        assert_eq!(not.last_transition_time, now());
    }
}
