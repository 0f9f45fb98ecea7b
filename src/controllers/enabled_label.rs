//! Quick offloading by label: `liqo.io/enabled=true` on a namespace creates the default
//! NamespaceOffloading (marked as label-created); removing the label deletes only such an
//! object. A user's own `offloading` is never touched; an event says why the label changed
//! nothing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};

use crate::context::Shared;
use crate::model::markers::CREATED_BY_ANNOTATION;
use crate::model::{
    api::{NamespaceOffloading, NamespaceOffloadingSpec, OFFLOADING_NAME},
    markers::{ENABLED_LABEL, OFFLOADING_FINALIZER, SCHEDULING_ENABLED_LABEL},
    reason::{Reason, classify, is_not_found, message},
};
use crate::plumbing::backoff;

/// How often a creation our admission refused is tried again (the cause rarely goes away).
const REJECTED_RETRY: Duration = Duration::from_secs(300);

/// How long a namespace may carry the scheduling label without a NamespaceOffloading
/// before the label is taken off: the admission webhook sets it just before the object is
/// stored, and a creation refused after that (rare) leaves it behind.
const STALE_MARK_GRACE: Duration = Duration::from_secs(30);

pub(crate) struct Context {
    pub(crate) shared: Shared,
    /// Namespaces seen with the scheduling label and no NamespaceOffloading, since when.
    pub(crate) unbacked_since: Mutex<HashMap<String, Instant>>,
    /// Namespaces whose NamespaceOffloading this controller created, and when, until the
    /// shared store shows it: a reconcile in between (the admission webhook's own label
    /// on the namespace wakes one) must not create it again.
    pub(crate) created: Mutex<HashMap<String, Instant>>,
}

/// How long a creation is trusted to reach the store before it is tried again.
const CREATED_SETTLE: Duration = Duration::from_secs(5);

impl std::ops::Deref for Context {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

#[derive(Debug, thiserror::Error)]
#[error("kubernetes: {0}")]
pub(crate) struct EnabledLabelError(#[from] kube::Error);

fn label_created(nso: &NamespaceOffloading) -> bool {
    nso.annotations()
        .get(CREATED_BY_ANNOTATION)
        .map(String::as_str)
        == Some(ENABLED_LABEL)
}

/// This worker's name in metrics and in the backoff's keys.
pub(crate) const WORKER: &str = "quick-offloading";

pub(crate) async fn reconcile(
    ns: Arc<Namespace>,
    ctx: Arc<Context>,
) -> Result<Action, EnabledLabelError> {
    let _timer = ctx.metrics.reconcile("quick-offloading");
    if ns.metadata.deletion_timestamp.is_some() {
        if let Ok(mut since) = ctx.unbacked_since.lock() {
            since.remove(&ns.name_any());
        }
        if let Ok(mut created) = ctx.created.lock() {
            created.remove(&ns.name_any());
        }
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let enabled = ns.labels().get(ENABLED_LABEL).map(String::as_str) == Some("true");
    let api = Api::<NamespaceOffloading>::namespaced(ctx.client.clone(), &name);
    let existing = ctx
        .stores
        .offloadings
        .get(&ObjectRef::new(OFFLOADING_NAME).within(&name));
    if let Some(wait) = unbacked_mark(&ctx, &ns, enabled || existing.is_some()).await? {
        return Ok(Action::requeue(wait));
    }
    if let Some(wait) = settling(&ctx, &name, existing.is_some()) {
        return Ok(Action::requeue(wait));
    }
    match (enabled, existing) {
        (true, None) => {
            let mut nso =
                NamespaceOffloading::new(OFFLOADING_NAME, NamespaceOffloadingSpec::label_default());
            nso.metadata = ObjectMeta {
                name: Some(OFFLOADING_NAME.into()),
                namespace: Some(name.clone()),
                annotations: Some(
                    [(CREATED_BY_ANNOTATION.to_owned(), ENABLED_LABEL.to_owned())].into(),
                ),
                // Created with it: the offloading controller then needs no write to add it.
                finalizers: Some(vec![OFFLOADING_FINALIZER.to_owned()]),
                ..ObjectMeta::default()
            };
            match api.create(&PostParams::default(), &nso).await {
                Ok(_) => {
                    if let Ok(mut created) = ctx.created.lock() {
                        created.insert(name.clone(), Instant::now());
                    }
                    record(
                        &ctx,
                        &ns,
                        EventType::Normal,
                        "OffloadingEnabled",
                        "default NamespaceOffloading created by the liqo.io/enabled label",
                    )
                    .await;
                }
                Err(e) if classify(&e) == Reason::AlreadyExists => {}
                // Refused for good (our own webhook, e.g. a name too long for DefaultName):
                // say so on the namespace, and do not hammer the API server.
                Err(e) if matches!(classify(&e), Reason::Invalid | Reason::Forbidden) => {
                    record(
                        &ctx,
                        &ns,
                        EventType::Warning,
                        "OffloadingRejected",
                        &format!(
                            "the liqo.io/enabled label cannot create the default NamespaceOffloading: {}",
                            message(&e)
                        ),
                    )
                    .await;
                    return Ok(Action::requeue(REJECTED_RETRY));
                }
                Err(e) => return Err(e.into()),
            }
        }
        (true, Some(nso)) if !label_created(&nso) => {
            record(
                &ctx,
                &ns,
                EventType::Normal,
                "OffloadingAlreadyConfigured",
                "the liqo.io/enabled label changes nothing: this namespace has its own NamespaceOffloading \"offloading\"",
            )
            .await;
        }
        (false, Some(nso)) if label_created(&nso) && nso.metadata.deletion_timestamp.is_none() => {
            // Only the object just looked at: if a user's own replaced it meanwhile, the
            // uid differs and the API server refuses.
            let params = DeleteParams {
                preconditions: crate::model::preconditions::only_this(&nso.metadata),
                ..DeleteParams::default()
            };
            match api.delete(OFFLOADING_NAME, &params).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) || classify(&e) == Reason::Conflict => {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                Err(e) => return Err(e.into()),
            }
            record(&ctx, &ns, EventType::Normal, "OffloadingDisabled", "the liqo.io/enabled label was removed: the default NamespaceOffloading is being deleted").await;
        }
        _ => {}
    }
    Ok(Action::await_change())
}

/// While a NamespaceOffloading this controller created has not reached the store yet, how
/// long to wait before looking again; `None` once the store shows it, or the wait is over.
fn settling(ctx: &Context, name: &str, stored: bool) -> Option<Duration> {
    let mut created = ctx.created.lock().ok()?;
    let since = *created.get(name)?;
    let left = CREATED_SETTLE
        .checked_sub(since.elapsed())
        .filter(|w| !w.is_zero());
    if stored || left.is_none() {
        created.remove(name);
        return None;
    }
    left
}

/// Takes the scheduling label off a namespace that has carried it without any
/// NamespaceOffloading for [`STALE_MARK_GRACE`]; returns when to look again while waiting.
async fn unbacked_mark(
    ctx: &Context,
    ns: &Namespace,
    backed: bool,
) -> Result<Option<Duration>, EnabledLabelError> {
    let name = ns.name_any();
    let marked = ns
        .labels()
        .get(SCHEDULING_ENABLED_LABEL)
        .map(String::as_str)
        == Some("true");
    let wait = {
        let Ok(mut since) = ctx.unbacked_since.lock() else {
            return Ok(None);
        };
        if backed || !marked {
            since.remove(&name);
            return Ok(None);
        }
        let waited = since
            .entry(name.clone())
            .or_insert_with(Instant::now)
            .elapsed();
        if waited >= STALE_MARK_GRACE {
            since.remove(&name);
        }
        STALE_MARK_GRACE
            .checked_sub(waited)
            .filter(|w| !w.is_zero())
    };
    if wait.is_some() {
        return Ok(wait);
    }
    let namespaces = Api::<Namespace>::all(ctx.client.clone());
    let patch = serde_json::json!({"metadata": {"labels": {SCHEDULING_ENABLED_LABEL: null}}});
    namespaces
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    // A NamespaceOffloading admitted meanwhile (the namespace was already marked) gets
    // its label back from the offloading controller, which sets it first thing.
    tracing::info!(namespace = %name, "scheduling label removed: the namespace has no NamespaceOffloading");
    Ok(None)
}

pub(crate) fn error_policy(
    ns: Arc<Namespace>,
    error: &EnabledLabelError,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.error(WORKER, "kubernetes");
    tracing::warn!(namespace = %ns.name_any(), %error, "enabled-label reconcile failed");
    Action::requeue(ctx.backoff.failed(&backoff::key(WORKER, &*ns)))
}

async fn record(ctx: &Context, ns: &Namespace, type_: EventType, reason: &str, note: &str) {
    crate::context::writes::record_event(&ctx.recorder, ns, type_, reason, note, "QuickOffloading")
        .await;
}

#[cfg(test)]
mod tests;
