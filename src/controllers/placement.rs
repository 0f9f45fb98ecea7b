//! Placement enforcement: pods of an offloaded namespace that break its strategy (see
//! `crate::model::conformance`) are evicted when their owner can recreate them (the webhook then
//! places the new pod), or reported: a Warning event on the pod and on the
//! NamespaceOffloading, the `pods_breaking_strategy` metric, and the `PodsConform`
//! condition in the NamespaceOffloading's status.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{core::v1::Pod, policy::v1::Eviction},
    apimachinery::pkg::apis::meta::v1::{
        Condition, DeleteOptions, ObjectMeta, Preconditions, Status, Time,
    },
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::PostParams,
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};

use crate::context::Shared;
use crate::model::{
    api::NamespaceOffloading,
    conformance::{self, Finding, Remedy},
    reason::is_not_found,
};
use crate::plumbing::backoff;

/// The status condition this controller owns.
pub(crate) const PODS_CONFORM: &str = "PodsConform";
/// An eviction refused now (a PodDisruptionBudget, a transient error) may pass later.
const RETRY: Duration = Duration::from_secs(10);
/// At most this many pod names in a message.
const NAMES_SHOWN: usize = 5;

/// An owner whose replacements were evicted this often within [`EVICTION_WINDOW`] is not
/// fixed by evicting (the webhook does not reach its new pods): its pods are reported.
const EVICTIONS_BEFORE_GIVING_UP: usize = 3;
const EVICTION_WINDOW: Duration = Duration::from_secs(300);

pub(crate) struct Context {
    pub(crate) shared: Shared,
    /// Per namespace, the breaching pods already reported by an event (by uid), so one
    /// breach is one event.
    reported: Mutex<HashMap<String, HashSet<String>>>,
    /// Per namespace, the breaching pods last announced on the NamespaceOffloading.
    announced: Mutex<HashMap<String, Vec<String>>>,
    /// Per owner uid, when its pods were evicted.
    evictions: Mutex<HashMap<String, Vec<Instant>>>,
}

impl std::ops::Deref for Context {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Context {
    pub(crate) fn new(shared: Shared) -> Self {
        Self {
            shared,
            reported: Mutex::default(),
            announced: Mutex::default(),
            evictions: Mutex::default(),
        }
    }

    /// Drops what is kept about a namespace whose offloading is gone.
    pub(crate) fn forget(&self, namespace: &str) {
        self.metrics.pods_breaking(namespace, None);
        if let Ok(mut a) = self.announced.lock() {
            a.remove(namespace);
        }
        if let Ok(mut r) = self.reported.lock() {
            r.remove(namespace);
        }
    }

    /// Whether evicting the pods of this owner has stopped helping.
    fn evictions_exhausted(&self, owner: &str) -> bool {
        self.evictions.lock().is_ok_and(|mut e| {
            let times = e.entry(owner.to_owned()).or_default();
            times.retain(|t| t.elapsed() < EVICTION_WINDOW);
            times.len() >= EVICTIONS_BEFORE_GIVING_UP
        })
    }

    fn evicted(&self, owner: &str) {
        if let Ok(mut e) = self.evictions.lock() {
            e.entry(owner.to_owned()).or_default().push(Instant::now());
            // Owners not seen for a while are forgotten.
            e.retain(|_, times| times.iter().any(|t| t.elapsed() < EVICTION_WINDOW));
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PlacementError {
    #[error("cannot write the PodsConform condition: {0}")]
    Status(#[source] kube::Error),
}

/// This worker's name in metrics and in the backoff's keys.
pub(crate) const WORKER: &str = "placement";

pub(crate) async fn reconcile(
    nso: Arc<NamespaceOffloading>,
    ctx: Arc<Context>,
) -> Result<Action, PlacementError> {
    // The end of an offloading is the offloading controller's (see `enforce_at_end`).
    if nso.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let _timer = ctx.metrics.reconcile("placement");
    // The caches are complete: controllers reconcile only once every watch has listed, and
    // a namespace just offloaded once its pods are (the pods' arrival wakes this).
    if !ctx
        .stores
        .covered
        .pods
        .covers(&nso.namespace().unwrap_or_default())
    {
        return Ok(Action::await_change());
    }
    let outcome = enforce(&nso, &ctx).await;
    write_condition(&nso, &ctx, &outcome.breaking).await?;
    Ok(if outcome.retry {
        Action::requeue(RETRY)
    } else {
        Action::await_change()
    })
}

pub(crate) fn error_policy(
    nso: Arc<NamespaceOffloading>,
    error: &PlacementError,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.error(WORKER, "kubernetes");
    tracing::warn!(namespace = nso.namespace().unwrap_or_default(), %error, "placement reconcile failed");
    Action::requeue(ctx.backoff.failed(&backoff::key(WORKER, &*nso)))
}

/// The pods of an offloaded namespace, for the controller's trigger.
pub(crate) fn offloading_of(pod: &Pod) -> Option<ObjectRef<NamespaceOffloading>> {
    pod.namespace()
        .map(|ns| ObjectRef::new(crate::model::api::OFFLOADING_NAME).within(&ns))
}

pub(crate) struct Enforced {
    /// Pods still breaking the placement (reported, or their eviction refused).
    pub(crate) breaking: Vec<Finding>,
    /// An eviction was refused or failed: try again later.
    pub(crate) retry: bool,
}

/// As the offloading ends: no pod still waiting for a node goes to a remote cluster.
/// Best effort, never an error: a pod that cannot be evicted is reported, and the
/// termination goes on.
pub(crate) async fn enforce_at_end(nso: &NamespaceOffloading, ctx: &Context) {
    enforce(nso, ctx).await;
}

/// Finds the namespace's breaching pods and carries out each remedy; a pod whose eviction
/// fails is reported with the cause instead.
pub(crate) async fn enforce(nso: &NamespaceOffloading, ctx: &Context) -> Enforced {
    let namespace = nso.namespace().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .stores
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .collect();
    let ending_since = nso.metadata.deletion_timestamp.as_ref();
    let findings = conformance::audit(
        &nso.spec,
        &ctx.reflection.runtime_class,
        ending_since,
        pods.iter().map(|p| &**p),
        |node| {
            ctx.stores
                .nodes
                .get(&ObjectRef::new(node))
                .filter(|n| crate::model::api::is_virtual_node(n.labels()))
                .map(|n| n.labels().clone())
        },
    );
    let strategy = if ending_since.is_some() {
        "the offloading is ending, so pods must stay local".to_owned()
    } else {
        format!(
            "podOffloadingStrategy {:?}",
            nso.spec.pod_offloading_strategy
        )
    };

    let mut breaking = Vec::new();
    let mut retry = false;
    for finding in findings {
        let Some(pod) = pods
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(&finding.uid))
        else {
            continue;
        };
        let exhausted = finding
            .owner_uid
            .as_deref()
            .is_some_and(|o| ctx.evictions_exhausted(o));
        let why_not_evicted = if finding.remedy != Remedy::Evict {
            None
        } else if exhausted {
            Some(format!(
                "its owner's new pods keep breaking it ({EVICTIONS_BEFORE_GIVING_UP} evictions in {} min), so the webhook does not reach them: check the webhook configuration",
                EVICTION_WINDOW.as_secs() / 60
            ))
        } else {
            match evict(ctx, pod).await {
                Ok(Evicted::Yes) => {
                    if let Some(owner) = &finding.owner_uid {
                        ctx.evicted(owner);
                    }
                    ctx.metrics.pod_evicted();
                    tracing::info!(namespace, pod = finding.name, breach = %finding.breach, "pod evicted to be placed again");
                    record(
                        ctx,
                        &**pod,
                        EventType::Normal,
                        "EvictedForPlacement",
                        &format!(
                            "evicted so that its owner creates it again and the webhook places it: {} ({strategy})",
                            finding.breach
                        ),
                    )
                    .await;
                    continue;
                }
                Ok(Evicted::Gone) => continue,
                Err(why) => {
                    retry = true;
                    Some(format!("its eviction failed: {why}"))
                }
            }
        };
        let note = match &why_not_evicted {
            Some(why) => format!("{strategy}; {why}"),
            None => strategy.clone(),
        };
        breaking.push(finding);
        if let Some(finding) = breaking.last() {
            report(ctx, &namespace, pod, finding, &note).await;
        }
    }
    if let Ok(mut r) = ctx.reported.lock() {
        // Only pods that still break it stay remembered.
        let current: HashSet<String> = breaking.iter().map(|f| f.uid.clone()).collect();
        if let Some(seen) = r.get_mut(&namespace) {
            seen.retain(|uid| current.contains(uid));
        }
    }
    ctx.metrics.pods_breaking(&namespace, Some(breaking.len()));
    announce(nso, ctx, &breaking, &strategy).await;
    Enforced { breaking, retry }
}

enum Evicted {
    Yes,
    Gone,
}

async fn evict(ctx: &Context, pod: &Pod) -> Result<Evicted, String> {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    // Only the pod just looked at, never one recreated under the same name since. The body is
    // written here rather than by kube's `Api::evict`, which names the options
    // `delete_options`: the API server drops that unknown field, and the precondition with it.
    let eviction = Eviction {
        metadata: ObjectMeta {
            name: Some(pod.name_any()),
            namespace: pod.namespace(),
            ..ObjectMeta::default()
        },
        delete_options: Some(DeleteOptions {
            preconditions: pod.metadata.uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteOptions::default()
        }),
    };
    let evicted: Result<Status, _> = api
        .create_subresource(
            "eviction",
            &pod.name_any(),
            &PostParams::default(),
            &eviction,
        )
        .await;
    match evicted {
        Ok(_) => Ok(Evicted::Yes),
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(Evicted::Gone),
        // 429 (a PodDisruptionBudget allows no disruption now), 403, 500: said on the pod.
        Err(kube::Error::Api(s)) => Err(format!("{} ({})", s.message, s.reason)),
        Err(e) => Err(e.to_string()),
    }
}

/// One Warning event per breaching pod.
async fn report(ctx: &Context, namespace: &str, pod: &Pod, finding: &Finding, strategy: &str) {
    let first = ctx
        .reported
        .lock()
        .map(|mut r| {
            r.entry(namespace.to_owned())
                .or_default()
                .insert(finding.uid.clone())
        })
        .unwrap_or(true);
    if first {
        record(
            ctx,
            pod,
            EventType::Warning,
            "BreaksOffloadingStrategy",
            &format!(
                "{} ({strategy}); it was not placed by the offloading webhook and cannot be recreated by an owner: delete it, and create it again to have it placed",
                finding.breach
            ),
        )
        .await;
    }
}

/// A Warning event on the NamespaceOffloading whenever the set of breaching pods changes.
async fn announce(nso: &NamespaceOffloading, ctx: &Context, breaking: &[Finding], strategy: &str) {
    let namespace = nso.namespace().unwrap_or_default();
    let names: Vec<String> = breaking.iter().map(|f| f.name.clone()).collect();
    let changed = ctx
        .announced
        .lock()
        .map(|mut a| {
            let before = a.insert(namespace.clone(), names.clone());
            before.unwrap_or_default() != names
        })
        .unwrap_or(false);
    if changed && !names.is_empty() {
        record(
            ctx,
            nso,
            EventType::Warning,
            "PodsBreakStrategy",
            &summary(breaking, strategy),
        )
        .await;
    }
}

fn summary(breaking: &[Finding], strategy: &str) -> String {
    let shown: Vec<String> = breaking
        .iter()
        .take(NAMES_SHOWN)
        .map(|f| format!("{} ({})", f.name, f.breach))
        .collect();
    let more = breaking.len().saturating_sub(NAMES_SHOWN);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(
        "{} pod(s) break the placement ({strategy}): {}{more}; see the Warning events on them",
        breaking.len(),
        shown.join("; ")
    )
}

/// The `PodsConform` condition, written only when it changes.
pub(crate) fn pods_conform_condition(
    breaking: &[Finding],
    strategy: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let (status, reason, message) = if breaking.is_empty() {
        (
            "True",
            "AllPodsConform",
            "every pod of the namespace keeps to the placement".to_owned(),
        )
    } else {
        ("False", "PodsBreakStrategy", summary(breaking, strategy))
    };
    let last_transition_time =
        crate::model::status::transition_time(previous, PODS_CONFORM, status, now);
    Condition {
        type_: PODS_CONFORM.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

async fn write_condition(
    nso: &NamespaceOffloading,
    ctx: &Context,
    breaking: &[Finding],
) -> Result<(), PlacementError> {
    let previous = nso
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let strategy = format!(
        "podOffloadingStrategy {:?}",
        nso.spec.pod_offloading_strategy
    );
    let now = Time(Timestamp::now());
    let condition =
        pods_conform_condition(breaking, &strategy, nso.metadata.generation, previous, &now);
    let unchanged = previous.iter().any(|c| {
        c.type_ == condition.type_
            && c.status == condition.status
            && c.reason == condition.reason
            && c.message == condition.message
            && c.observed_generation == condition.observed_generation
    });
    // After the offloading controller's first status (so `Ready` comes first in the list),
    // and not once the object is going away.
    let started = nso
        .status
        .as_ref()
        .is_some_and(|s| s.offloading_phase.is_some());
    if unchanged || !started || nso.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let status = serde_json::json!({"conditions": [condition]});
    match crate::context::writes::apply_offloading_status(
        &ctx.client,
        nso,
        crate::model::markers::PLACEMENT_FIELD_MANAGER,
        status,
    )
    .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(PlacementError::Status(e)),
    }
}

async fn record<K: kube::Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    crate::context::writes::record_event(
        &ctx.recorder,
        object,
        type_,
        reason,
        note,
        "EnforcePlacement",
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conformance::Breach;

    fn finding(name: &str) -> Finding {
        Finding {
            name: name.into(),
            uid: format!("uid-{name}"),
            owner_uid: None,
            breach: Breach::Unconstrained,
            remedy: Remedy::Report,
        }
    }

    #[test]
    fn the_condition_counts_and_names_breaching_pods_and_keeps_its_transition_time() {
        let then = Time(Timestamp::UNIX_EPOCH);
        let now = Time(Timestamp::now());
        let ok = pods_conform_condition(&[], "podOffloadingStrategy Remote", Some(1), &[], &then);
        assert_eq!(
            (ok.status.as_str(), ok.reason.as_str()),
            ("True", "AllPodsConform")
        );
        let pods: Vec<Finding> = (0..7).map(|i| finding(&format!("p{i}"))).collect();
        let bad = pods_conform_condition(
            &pods,
            "podOffloadingStrategy Remote",
            Some(1),
            std::slice::from_ref(&ok),
            &now,
        );
        assert_eq!(bad.status, "False");
        assert_eq!(bad.last_transition_time, now);
        assert!(
            bad.message
                .starts_with("7 pod(s) break the placement (podOffloadingStrategy Remote): p0 ("),
            "{}",
            bad.message
        );
        assert!(bad.message.contains("and 2 more"), "{}", bad.message);
        let again = pods_conform_condition(&[], "x", Some(1), std::slice::from_ref(&ok), &now);
        assert_eq!(again.last_transition_time, then);
    }
}

#[cfg(test)]
mod mocked_api;
