//! Admission reviews: decode, dispatch to the pure policies in `pod` and `offloading`, and
//! answer. Nothing here calls the API server: what a decision needs comes from watch
//! caches through [`Lookup`].

pub(crate) mod offloading;
pub(crate) mod pod;
pub(crate) mod wire;

use std::{borrow::Cow, sync::Arc};

use k8s_openapi::api::core::v1::NodeSelectorTerm;
use kube::core::admission::Operation;
use serde_json::Value;

pub use self::pod::NodeInfo;
use self::{
    pod::PodView,
    wire::{ReadError, Request, Review},
};
use crate::model::{
    api::{DNS1123_LABEL_MAX, NamespaceOffloading, NamespaceOffloadingSpec},
    markers::SCHEDULING_ENABLED_LABEL,
    remote_namespace::{claimants, claimed_message, taken_in},
};

/// What the webhooks read from the watch caches.
pub trait Lookup: Send + Sync {
    /// The namespace's `offloading` NamespaceOffloading, if any.
    fn offloading(&self, namespace: &str) -> Option<Arc<NamespaceOffloading>>;
    /// A node's labels, if the node exists.
    fn node(&self, name: &str) -> Option<NodeInfo>;
    /// Every NamespaceOffloading of the cluster (read when one is created, never for pods).
    fn offloadings(&self) -> Vec<Arc<NamespaceOffloading>>;
    /// The required node-affinity terms `nso`'s strategy imposes on its pods
    /// ([`pod::imposed_terms`]). The spec never changes once created (the CRD's CEL rule),
    /// so a cache may compute them once per object instead of once per pod.
    fn imposed_terms(&self, nso: &NamespaceOffloading) -> Arc<[NodeSelectorTerm]> {
        pod::imposed_terms(&nso.spec).into()
    }
}

/// The webhooks this server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    /// Pods in namespaces labelled `liqo.io/scheduling-enabled=true` (offloaded).
    Pod,
    /// Pods in namespaces labelled `liqo.io/enabled=true` but not (yet) the above: the
    /// label's defaults apply until its NamespaceOffloading exists.
    PodEnabledLabel,
    OffloadingDefaults,
    OffloadingValidation,
    /// Pods naming the offloading RuntimeClass in namespaces that are not offloaded.
    PodOptIn,
}

impl Webhook {
    pub(crate) const ALL: [Webhook; 5] = [
        Webhook::Pod,
        Webhook::PodEnabledLabel,
        Webhook::OffloadingDefaults,
        Webhook::OffloadingValidation,
        Webhook::PodOptIn,
    ];

    pub(crate) fn path(self) -> &'static str {
        match self {
            Webhook::Pod => "/mutate/pod",
            Webhook::PodEnabledLabel => "/mutate/pod/enabled-label",
            Webhook::OffloadingDefaults => "/mutate/namespace-offloading",
            Webhook::OffloadingValidation => "/validate/namespace-offloading",
            Webhook::PodOptIn => "/validate/pod/opt-in",
        }
    }

    /// The webhook served at `path`, if any.
    pub(crate) fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.path() == path)
    }

    /// The metrics label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Webhook::Pod => "pod",
            Webhook::PodEnabledLabel => "pod-enabled-label",
            Webhook::OffloadingDefaults => "namespace-offloading-defaults",
            Webhook::OffloadingValidation => "namespace-offloading-validation",
            Webhook::PodOptIn => "pod-opt-in",
        }
    }
}

/// How a review ended, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Patched,
    Denied,
}

impl Verdict {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Patched => "patched",
            Verdict::Denied => "denied",
        }
    }
}

/// A body that is not an AdmissionReview at all: answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// The review to send back, and how it ended; it borrows from the request's body.
pub type Answer<'a> = (Review<'a>, Verdict);

/// Where a review stands after the pure decision: answered, or waiting for one API call
/// that the caller makes (this module makes none).
// Lives for one call on the stack; boxing the answer would allocate on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum Outcome<'a> {
    Answered(Answer<'a>),
    /// The namespace's NamespaceOffloading is not in the cache (just created, or the cache
    /// is catching up): read it, then [`PendingPod::resume`].
    ReadOffloading(PendingPod<'a>),
    /// A NamespaceOffloading `offloading` is about to be created: label its namespace
    /// `liqo.io/scheduling-enabled=true` first, so the pod webhook covers the very next pod,
    /// then [`PendingMark::marked`] or [`PendingMark::failed`].
    MarkNamespace(PendingMark<'a>),
}

/// A pod review waiting for its namespace's NamespaceOffloading to be read.
pub struct PendingPod<'a> {
    request: Request<'a, PodView>,
    webhook: Webhook,
    local_cluster_id: String,
    runtime_class: String,
}

impl<'a> PendingPod<'a> {
    pub(crate) fn namespace(&self) -> &str {
        &self.request.namespace
    }

    /// Whether an absent NamespaceOffloading is worth reading again shortly: the namespace
    /// is marked, so one is most likely being stored right now.
    pub(crate) fn expects_offloading(&self) -> bool {
        self.webhook == Webhook::Pod
    }

    /// Answers with what the read found: `Ok(None)` when the namespace has no
    /// NamespaceOffloading, `Err` when it could not be read.
    pub(crate) fn resume(
        self,
        found: Result<Option<NamespaceOffloading>, String>,
        lookup: &dyn Lookup,
    ) -> Answer<'a> {
        let nso = match found {
            Ok(nso) => nso,
            Err(e) => {
                let message = format!(
                    "cannot read the NamespaceOffloading of namespace {:?} to place the pod: {e}; try again",
                    self.namespace()
                );
                return unavailable(&self.request, message);
            }
        };
        let site = Site {
            local_cluster_id: &self.local_cluster_id,
            own_namespace: "",
            runtime_class: &self.runtime_class,
        };
        let decided = place_pod(&self.request, self.webhook, nso.as_ref(), lookup, site);
        answer(&self.request, decided)
    }
}

/// A NamespaceOffloading creation, allowed once its namespace carries the scheduling label.
pub struct PendingMark<'a> {
    request: Request<'a>,
    warnings: Vec<String>,
}

impl<'a> PendingMark<'a> {
    pub(crate) fn namespace(&self) -> &str {
        &self.request.namespace
    }

    pub(crate) fn marked(self) -> Answer<'a> {
        answer(&self.request, Ok(Decision::Allow(self.warnings)))
    }

    pub(crate) fn failed(self, error: &str) -> Answer<'a> {
        let message = format!(
            "cannot label namespace {:?} {SCHEDULING_ENABLED_LABEL}=true, which makes the pod webhook place its pods from the first one: {error}; try again",
            self.namespace()
        );
        unavailable(&self.request, message)
    }
}

/// Where the webhooks run.
#[derive(Clone, Copy, Debug)]
pub struct Site<'a> {
    /// This cluster's ID.
    pub local_cluster_id: &'a str,
    /// The manager's own namespace, which is never offloaded.
    pub own_namespace: &'a str,
    /// The RuntimeClass by which a pod asks for the virtual nodes (empty: none).
    pub runtime_class: &'a str,
}

/// Decides one AdmissionReview body, from the caches alone.
pub fn review<'a>(
    webhook: Webhook,
    body: &'a [u8],
    lookup: &dyn Lookup,
    site: Site<'_>,
) -> Result<Outcome<'a>, BadRequest> {
    if matches!(webhook, Webhook::Pod | Webhook::PodEnabledLabel) {
        return review_pod(webhook, body, lookup, site);
    }
    if webhook == Webhook::PodOptIn {
        return review_opt_in(body, site);
    }
    let request = match Request::parse(body) {
        Ok(request) => request,
        Err(ReadError::Malformed(e)) => return undecodable(body, &e).map(Outcome::Answered),
        Err(e @ ReadError::NoRequest) => return Err(BadRequest(e.to_string())),
    };
    let decided = match webhook {
        Webhook::OffloadingValidation => match review_validation(&request, site, lookup) {
            Ok(Decision::Allow(warnings)) if needs_mark(&request) => {
                return Ok(Outcome::MarkNamespace(PendingMark { request, warnings }));
            }
            other => other,
        },
        _ => review_defaults(&request),
    };
    Ok(Outcome::Answered(answer(&request, decided)))
}

/// A pod review: its object decoded with the review, in one pass, for the three fields
/// placement reads.
fn review_pod<'a>(
    webhook: Webhook,
    body: &'a [u8],
    lookup: &dyn Lookup,
    site: Site<'_>,
) -> Result<Outcome<'a>, BadRequest> {
    let request = match Request::<PodView>::parse(body) {
        Ok(request) => request,
        Err(ReadError::Malformed(e)) => return undecodable(body, &e).map(Outcome::Answered),
        Err(e @ ReadError::NoRequest) => return Err(BadRequest(e.to_string())),
    };
    if request.operation != Operation::Create {
        return Ok(Outcome::Answered(answer(
            &request,
            Ok(Decision::Allow(Vec::new())),
        )));
    }
    let decided = match lookup.offloading(&request.namespace) {
        Some(nso) => place_pod(&request, webhook, Some(&nso), lookup, site),
        None => {
            return Ok(Outcome::ReadOffloading(PendingPod {
                request,
                webhook,
                local_cluster_id: site.local_cluster_id.to_owned(),
                runtime_class: site.runtime_class.to_owned(),
            }));
        }
    };
    Ok(Outcome::Answered(answer(&request, decided)))
}

/// A pod naming the offloading RuntimeClass in a namespace that is not offloaded: the
/// class would send it to a virtual node, where nothing would ever run it.
fn review_opt_in<'a>(body: &'a [u8], site: Site<'_>) -> Result<Outcome<'a>, BadRequest> {
    let request = match Request::<PodView>::parse(body) {
        Ok(request) => request,
        Err(ReadError::Malformed(e)) => return undecodable(body, &e).map(Outcome::Answered),
        Err(e @ ReadError::NoRequest) => return Err(BadRequest(e.to_string())),
    };
    let opts_in = request.operation == Operation::Create
        && request
            .object
            .as_ref()
            .is_some_and(|pod| pod.opts_in(site.runtime_class));
    let decided = if opts_in {
        Err(format!(
            "runtimeClassName {:?} runs the pod in a remote cluster only, and namespace {:?} is not offloaded; offload it first (label it liqo.io/enabled=true, or create its NamespaceOffloading), or remove runtimeClassName",
            site.runtime_class, request.namespace
        ))
    } else {
        Ok(Decision::Allow(Vec::new()))
    };
    Ok(Outcome::Answered(answer(&request, decided)))
}

/// A real (not dry-run) creation of the one NamespaceOffloading that has effect. Its
/// namespace is labelled before the object exists: a label without an object only makes
/// pods local (see [`place_pod`]) until the controller clears it.
/// (Validation has already refused any other name.)
fn needs_mark(request: &Request) -> bool {
    request.operation == Operation::Create && !request.dry_run
}

fn answer<'a, O>(request: &Request<'a, O>, decided: Result<Decision, String>) -> Answer<'a> {
    let echo = echo(request);
    match decided {
        Ok(Decision::Allow(warnings)) => (Review::allowed(echo, warnings), Verdict::Allowed),
        Ok(Decision::Patch(patch, warnings)) => {
            (Review::patched(echo, patch, warnings), Verdict::Patched)
        }
        Err(message) => (Review::denied(echo, message), Verdict::Denied),
    }
}

/// What the answer echoes; borrowed from the body, like the request's own.
fn echo<'a, O>(request: &Request<'a, O>) -> wire::Echo<'a> {
    (request.api_version.clone(), request.uid.clone())
}

/// A refusal that a retry may overcome (an API call that failed or timed out): HTTP 503,
/// which the API server passes on, so clients and controllers retry instead of taking the
/// refusal for a verdict on the object.
fn unavailable<'a, O>(request: &Request<'a, O>, message: String) -> Answer<'a> {
    let review = Review::unavailable(echo(request), message);
    (review, Verdict::Denied)
}

enum Decision {
    Allow(Vec<String>),
    /// A JSON patch, encoded.
    Patch(Vec<u8>, Vec<String>),
}

/// A body that parses as JSON with a request uid, but whose object cannot be decoded, gets
/// a denial echoing the uid (the API server discards answers without it); anything else
/// is a bad request.
fn undecodable(body: &[u8], error: &str) -> Result<Answer<'static>, BadRequest> {
    let bad = || {
        BadRequest(format!(
            "cannot parse the body as an AdmissionReview: {error}"
        ))
    };
    let value: Value = serde_json::from_slice(body).map_err(|_| bad())?;
    let uid = value
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .ok_or_else(bad)?;
    let version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("admission.k8s.io/v1");
    let message = format!("cannot decode the admission request: {error}");
    let echo = (version.to_owned().into(), uid.to_owned().into());
    Ok((Review::denied(echo, message), Verdict::Denied))
}

fn patch_between(before: &Value, after: &Value, warnings: Vec<String>) -> Result<Decision, String> {
    let patch = json_patch::diff(before, after);
    if patch.0.is_empty() {
        return Ok(Decision::Allow(warnings));
    }
    serde_json::to_vec(&patch)
        .map(|bytes| Decision::Patch(bytes, warnings))
        .map_err(|e| format!("cannot encode the patch: {e}"))
}

/// The placement in force for a new pod, given its namespace's NamespaceOffloading (if
/// any) and which webhook saw the pod, with a warning when it is not the object's own.
pub(crate) fn placement_for<'a>(
    webhook: Webhook,
    namespace: &str,
    nso: Option<&'a NamespaceOffloading>,
    lookup: &dyn Lookup,
    local_cluster_id: &str,
) -> (Cow<'a, NamespaceOffloadingSpec>, Option<String>) {
    match nso {
        Some(nso) if nso.metadata.deletion_timestamp.is_none() => (Cow::Borrowed(&nso.spec), None),
        // No new pod goes to a remote cluster once the offloading is ending.
        Some(_) => (
            Cow::Owned(NamespaceOffloadingSpec::local_only()),
            Some(format!(
                "the offloading of namespace {namespace:?} is terminating: the pod is kept in the local cluster"
            )),
        ),
        // The label was just set and its NamespaceOffloading is not created yet: the label
        // stands for the defaults.
        None if webhook == Webhook::PodEnabledLabel => {
            let defaults = NamespaceOffloadingSpec::label_default();
            // Only if the label's NamespaceOffloading can exist at all (DefaultName must fit
            // a namespace name, and be no other local namespace's remote name: the webhook
            // refuses both); otherwise nothing is offloaded, and pods stay local.
            let remote = defaults.remote_name(namespace, local_cluster_id);
            if let Some(claimed) = remote_name_claimed(namespace, &remote, lookup, local_cluster_id)
            {
                (
                    Cow::Owned(NamespaceOffloadingSpec::local_only()),
                    Some(format!(
                        "the liqo.io/enabled label's default NamespaceOffloading cannot be made ({claimed}): the pod is kept in the local cluster"
                    )),
                )
            } else if remote.len() <= DNS1123_LABEL_MAX {
                (Cow::Owned(defaults), None)
            } else {
                (
                    Cow::Owned(NamespaceOffloadingSpec::local_only()),
                    Some(format!(
                        "namespace {namespace:?} is too long for the liqo.io/enabled label's default NamespaceOffloading (DefaultName): nothing is offloaded, the pod is kept in the local cluster"
                    )),
                )
            }
        }
        None => (
            Cow::Owned(NamespaceOffloadingSpec::local_only()),
            Some(format!(
                "namespace {namespace:?} has no NamespaceOffloading \"offloading\": the pod is kept in the local cluster"
            )),
        ),
    }
}

fn place_pod(
    request: &Request<'_, PodView>,
    webhook: Webhook,
    nso: Option<&NamespaceOffloading>,
    lookup: &dyn Lookup,
    site: Site<'_>,
) -> Result<Decision, String> {
    let pod = request
        .object
        .as_ref()
        .ok_or("the admission request carries no object")?;
    let namespace = &request.namespace;
    let (spec, warning) = placement_for(webhook, namespace, nso, lookup, site.local_cluster_id);
    let from_object = matches!(spec, Cow::Borrowed(_));
    // Liqo's per-pod opt-in: the offloading RuntimeClass sends the pod to the selected
    // clusters whatever the strategy; with nowhere to send it, it is refused rather than
    // left Pending (its class's node selector allows only virtual nodes).
    let spec = if pod.opts_in(site.runtime_class) {
        if let Some(why) = &warning {
            return Err(format!(
                "runtimeClassName {:?} runs the pod in a remote cluster only, and none can take it now ({why}); offload namespace {namespace:?} first (label it liqo.io/enabled=true, or create its NamespaceOffloading), or remove runtimeClassName",
                site.runtime_class
            ));
        }
        Cow::Owned(pod::opted_in(&spec))
    } else {
        spec
    };
    let mut warnings: Vec<String> = warning.into_iter().collect();
    if let Some(node) = pod.node_name() {
        // A node chosen by hand is the user's call; reflection says why no twin runs.
        pod::check_preset_node(&spec, node, lookup.node(node).as_ref())?;
    }
    let taken = nso.map(|n| taken_in(n.status.as_ref())).unwrap_or_default();
    let spec = if taken.is_empty() || !from_object || pod.node_name().is_some() {
        spec
    } else {
        warnings.push(format!(
            "the remote namespace is someone else's in cluster(s) {}: the pod is not placed there (see the NamespaceOffloading's status)",
            taken.join(", ")
        ));
        Cow::Owned(pod::without_clusters(&spec, &taken))
    };
    // The object's own strategy, unchanged (the common case): its terms from the cache.
    let imposed = match (&spec, nso) {
        (Cow::Borrowed(_), Some(nso)) => lookup.imposed_terms(nso),
        _ => pod::imposed_terms(&spec).into(),
    };
    let ops = pod::patch(pod, &spec, &imposed)
        .map_err(|e| format!("cannot apply the offloading policy to the pod: {e}"))?;
    if ops.is_empty() {
        return Ok(Decision::Allow(warnings));
    }
    serde_json::to_vec(&ops)
        .map(|bytes| Decision::Patch(bytes, warnings))
        .map_err(|e| format!("cannot encode the patch: {e}"))
}

fn review_defaults(request: &Request) -> Result<Decision, String> {
    let object = request.object_json()?;
    let wanted = if request.operation == Operation::Create {
        offloading::as_created(&object)
    } else {
        // Never on UPDATE: the finalizer's removal is an update, and must stay removed.
        offloading::with_defaults(&object)
    };
    patch_between(&object, &wanted, Vec::new())
}

/// Another namespace of this cluster whose offloading already has the remote name this one
/// asks for, as the refusal's message.
fn remote_name_holder(
    namespace: &str,
    object: &Value,
    lookup: &dyn Lookup,
    local_cluster_id: &str,
) -> Option<String> {
    let spec: NamespaceOffloadingSpec =
        serde_json::from_value(offloading::with_defaults(object).get("spec")?.clone()).ok()?;
    remote_name_claimed(
        namespace,
        &spec.remote_name(namespace, local_cluster_id),
        lookup,
        local_cluster_id,
    )
}

/// Whether another namespace's offloading has `remote` as its remote name, as the message
/// that names it.
fn remote_name_claimed(
    namespace: &str,
    remote: &str,
    lookup: &dyn Lookup,
    local_cluster_id: &str,
) -> Option<String> {
    let all = lookup.offloadings();
    let holder = claimants(
        namespace,
        remote,
        all.iter().map(|n| &**n),
        local_cluster_id,
    )
    .next()?
    .metadata
    .namespace
    .clone()
    .unwrap_or_default();
    Some(claimed_message(remote, &holder))
}

fn review_validation(
    request: &Request,
    site: Site<'_>,
    lookup: &dyn Lookup,
) -> Result<Decision, String> {
    let local_cluster_id = site.local_cluster_id;
    let object = request.object_json()?;
    match request.operation {
        Operation::Create => {
            offloading::offloadable(&request.namespace, site.own_namespace)?;
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or(&request.name);
            let warnings =
                offloading::validate_create(name, &request.namespace, &object, local_cluster_id)?;
            if let Some(holder) =
                remote_name_holder(&request.namespace, &object, lookup, local_cluster_id)
            {
                return Err(holder);
            }
            Ok(Decision::Allow(warnings))
        }
        Operation::Update => {
            let old = request
                .old_object_json()?
                .ok_or("an UPDATE review carries no old object")?;
            offloading::validate_update(&old, &object).map(|()| Decision::Allow(Vec::new()))
        }
        _ => Ok(Decision::Allow(Vec::new())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::model::api::NamespaceOffloadingSpec;

    #[derive(Default)]
    struct Fixed {
        offloadings: BTreeMap<String, Arc<NamespaceOffloading>>,
        nodes: BTreeMap<String, NodeInfo>,
    }

    impl Lookup for Fixed {
        fn offloading(&self, namespace: &str) -> Option<Arc<NamespaceOffloading>> {
            self.offloadings.get(namespace).cloned()
        }
        fn node(&self, name: &str) -> Option<NodeInfo> {
            self.nodes.get(name).cloned()
        }
        fn offloadings(&self) -> Vec<Arc<NamespaceOffloading>> {
            self.offloadings.values().cloned().collect()
        }
    }

    fn lookup_with(namespace: &str, spec: Value) -> Fixed {
        let spec: NamespaceOffloadingSpec = serde_json::from_value(spec).unwrap();
        let mut nso = NamespaceOffloading::new("offloading", spec);
        nso.metadata.namespace = Some(namespace.into());
        let mut f = Fixed::default();
        f.offloadings.insert(namespace.into(), Arc::new(nso));
        f.nodes.insert("local-1".into(), NodeInfo::default());
        f
    }

    /// A review as kube-apiserver 1.34 sends it for `kubectl run web --image=nginx`.
    fn pod_review(api_version: &str, uid: &str, pod_spec: Value) -> Value {
        json!({
            "apiVersion": api_version, "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "web", "namespace": "test-namespace", "operation": "CREATE",
                "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
                "object": {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "web", "namespace": "test-namespace", "labels": {"run": "web"}},
                    "spec": pod_spec, "status": {}},
                "oldObject": null, "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "kubectl-run"},
            },
        })
    }

    const SITE: Site<'static> = Site {
        local_cluster_id: "cluster-1-id",
        own_namespace: "liqo",
        runtime_class: "liqo",
    };

    /// The pure decision on a review, with nothing in the caches. (The outcome borrows
    /// from the body, which a test's few reviews can afford to leak.)
    fn decide(webhook: Webhook, body: &Value) -> Outcome<'static> {
        let body: &'static [u8] = Vec::leak(serde_json::to_vec(body).unwrap());
        let Ok(outcome) = review(webhook, body, &Fixed::default(), SITE) else {
            panic!("the review must parse");
        };
        outcome
    }

    /// Answers as the server does, with the lookup standing in for the API server too (a
    /// namespace it lacks has no NamespaceOffloading; marking always succeeds).
    fn answer(webhook: Webhook, body: &Value, lookup: &Fixed) -> (Value, Verdict) {
        let body = serde_json::to_vec(body).unwrap();
        let outcome = review(webhook, &body, lookup, SITE).unwrap();
        let (review, verdict) = match outcome {
            Outcome::Answered(a) => a,
            Outcome::ReadOffloading(pending) => pending.resume(Ok(None), lookup),
            Outcome::MarkNamespace(pending) => pending.marked(),
        };
        (serde_json::to_value(review).unwrap(), verdict)
    }

    fn apply_patch(review: &Value, response: &Value) -> Value {
        // base64, as the API server documents the field.
        let bytes: k8s_openapi::ByteString =
            serde_json::from_value(response["response"]["patch"].clone()).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes.0).unwrap();
        let mut object = review["request"]["object"].clone();
        json_patch::patch(&mut object, &patch).unwrap();
        object
    }

    #[test]
    fn pod_review_is_patched_with_uid_and_api_version_echoed() {
        let lookup = lookup_with("test-namespace", json!({"podOffloadingStrategy": "Remote"}));
        let body = pod_review(
            "admission.k8s.io/v1",
            "705ab4f5-6393-11e8-b7cc-42010a800002",
            json!({"containers": [{"name": "web", "image": "nginx"}]}),
        );
        let (out, verdict) = answer(Webhook::Pod, &body, &lookup);
        assert_eq!(verdict, Verdict::Patched);
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(
            out["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let pod = apply_patch(&body, &out);
        assert_eq!(
            pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"],
            json!([{"matchExpressions": [{"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]}])
        );
        assert_eq!(
            pod["spec"]["tolerations"][0]["key"],
            "virtual-node.liqo.io/not-allowed"
        );

        // The API server resends the patched pod when another webhook changed it: no patch.
        let mut again = body.clone();
        again["request"]["object"] = pod;
        let (out, verdict) = answer(Webhook::Pod, &again, &lookup);
        assert_eq!(verdict, Verdict::Allowed);
        assert!(out["response"].get("patch").is_none());
    }

    #[test]
    fn api_version_is_mirrored() {
        let lookup = lookup_with("test-namespace", json!({}));
        let body = pod_review("admission.k8s.io/v1beta1", "u1", json!({"containers": []}));
        let (out, _) = answer(Webhook::Pod, &body, &lookup);
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1beta1");
    }

    fn required_terms(pod: &Value) -> &Value {
        &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    }

    fn has_toleration(pod: &Value) -> bool {
        pod["spec"]["tolerations"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["key"] == "virtual-node.liqo.io/not-allowed")
        })
    }

    const NOT_VN: &str = r#"[{"matchExpressions":[{"key":"liqo.io/type","operator":"NotIn","values":["virtual-node"]}]}]"#;

    #[test]
    fn a_marked_namespace_without_offloading_keeps_pods_local_with_a_warning() {
        let body = pod_review("admission.k8s.io/v1", "u2", json!({"containers": []}));
        let outcome = decide(Webhook::Pod, &body);
        // Not in the cache: the server must read it before answering.
        let Outcome::ReadOffloading(pending) = outcome else {
            panic!("a cache miss must ask for a read");
        };
        assert_eq!(pending.namespace(), "test-namespace");
        let (out, verdict) = pending.resume(Ok(None), &Fixed::default());
        assert_eq!(verdict, Verdict::Patched);
        let out = serde_json::to_value(out).unwrap();
        let pod = apply_patch(&body, &out);
        assert_eq!(
            required_terms(&pod),
            &serde_json::from_str::<Value>(NOT_VN).unwrap()
        );
        assert!(!has_toleration(&pod));
        assert!(
            out["response"]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("no NamespaceOffloading"),
            "{out}"
        );
    }

    #[test]
    fn a_failed_read_denies_the_pod_with_the_cause() {
        let body = pod_review("admission.k8s.io/v1", "u5", json!({"containers": []}));
        let Outcome::ReadOffloading(pending) = decide(Webhook::Pod, &body) else {
            panic!("a cache miss must ask for a read");
        };
        let (out, _) = pending.resume(Err("connection refused".into()), &Fixed::default());
        let out = serde_json::to_value(out).unwrap();
        // Transient: 503, which clients retry, not a 403 verdict on the pod.
        assert_eq!(out["response"]["status"]["code"], 503);
        let message = denial((out, Verdict::Denied), "u5");
        assert!(
            message.contains("cannot read the NamespaceOffloading"),
            "{message}"
        );
        assert!(message.contains("connection refused"), "{message}");
    }

    #[test]
    fn the_enabled_label_stands_for_the_defaults_until_its_offloading_exists() {
        let body = pod_review("admission.k8s.io/v1", "u6", json!({"containers": []}));
        let (out, verdict) = answer(Webhook::PodEnabledLabel, &body, &Fixed::default());
        assert_eq!(verdict, Verdict::Patched);
        let pod = apply_patch(&body, &out);
        assert_eq!(
            required_terms(&pod),
            &json!([
                {"matchExpressions": [{"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]},
                {"matchExpressions": [{"key": "liqo.io/type", "operator": "NotIn", "values": ["virtual-node"]}]},
            ])
        );
        assert!(has_toleration(&pod));
        assert!(out["response"].get("warnings").is_none());

        // A user's own configuration wins over the label's defaults.
        let lookup = lookup_with("test-namespace", json!({"podOffloadingStrategy": "Remote"}));
        let (out, _) = answer(Webhook::PodEnabledLabel, &body, &lookup);
        let pod = apply_patch(&body, &out);
        assert_eq!(
            required_terms(&pod),
            &json!([{"matchExpressions": [{"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]}])
        );
    }

    #[test]
    fn the_label_stands_for_nothing_where_its_default_cannot_exist() {
        let long = "a-namespace-name-far-too-long-for-default-name-mapping";
        let mut body = pod_review("admission.k8s.io/v1", "u8", json!({"containers": []}));
        body["request"]["namespace"] = json!(long);
        let (out, _) = answer(Webhook::PodEnabledLabel, &body, &Fixed::default());
        let pod = apply_patch(&body, &out);
        assert_eq!(
            required_terms(&pod),
            &serde_json::from_str::<Value>(NOT_VN).unwrap()
        );
        assert!(!has_toleration(&pod));
        assert!(
            out["response"]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("too long"),
            "{out}"
        );
    }

    #[test]
    fn the_label_stands_for_nothing_where_its_default_name_is_another_namespaces() {
        // "test-namespace-cluster-1-id", offloaded with EnforceSameName, has the remote name
        // the label's default would give "test-namespace".
        let lookup = lookup_with(
            "test-namespace-cluster-1-id",
            json!({"namespaceMappingStrategy": "EnforceSameName"}),
        );
        let body = pod_review("admission.k8s.io/v1", "u9", json!({"containers": []}));
        let (out, _) = answer(Webhook::PodEnabledLabel, &body, &lookup);
        let pod = apply_patch(&body, &out);
        assert_eq!(
            required_terms(&pod),
            &serde_json::from_str::<Value>(NOT_VN).unwrap()
        );
        let warning = out["response"]["warnings"][0].as_str().unwrap();
        assert!(
            warning.contains("already that of namespace test-namespace-cluster-1-id's offloading"),
            "{warning}"
        );
    }

    #[test]
    fn a_terminating_offloading_keeps_new_pods_local() {
        let mut lookup = lookup_with("test-namespace", json!({"podOffloadingStrategy": "Remote"}));
        let nso = lookup.offloadings.get_mut("test-namespace").unwrap();
        Arc::make_mut(nso).metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let body = pod_review(
            "admission.k8s.io/v1",
            "u7",
            json!({"containers": [], "tolerations": [{"operator": "Exists"}]}),
        );
        let (out, verdict) = answer(Webhook::Pod, &body, &lookup);
        assert_eq!(verdict, Verdict::Patched);
        let pod = apply_patch(&body, &out);
        assert_eq!(
            required_terms(&pod),
            &serde_json::from_str::<Value>(NOT_VN).unwrap()
        );
        assert!(!has_toleration(&pod));
        assert!(
            out["response"]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("is terminating"),
            "{out}"
        );
    }

    /// Issue 24, point 1: `runtimeClassName: liqo` sends a pod to the selected clusters
    /// whatever the strategy; anything else a Local namespace keeps local.
    #[test]
    fn the_offloading_runtime_class_opts_a_pod_in_to_the_virtual_nodes() {
        let vn_only = r#"[{"matchExpressions":[{"key":"region","operator":"In","values":["eu"]},{"key":"liqo.io/type","operator":"In","values":["virtual-node"]}]}]"#;
        let selector = json!({"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "region", "operator": "In", "values": ["eu"]}]}]});
        for strategy in ["Local", "LocalAndRemote", "Remote"] {
            let lookup = lookup_with(
                "test-namespace",
                json!({"podOffloadingStrategy": strategy, "clusterSelector": selector}),
            );
            // As the RuntimeClass admission leaves it, before our webhook.
            let opted_in = pod_review(
                "admission.k8s.io/v1",
                "u10",
                json!({"containers": [], "runtimeClassName": "liqo",
                       "nodeSelector": {"liqo.io/type": "virtual-node"},
                       "tolerations": [{"key": "virtual-node.liqo.io/not-allowed", "operator": "Exists", "effect": "NoExecute"}]}),
            );
            let (out, verdict) = answer(Webhook::Pod, &opted_in, &lookup);
            assert_eq!(verdict, Verdict::Patched, "{strategy}: {out}");
            let pod = apply_patch(&opted_in, &out);
            assert_eq!(
                required_terms(&pod),
                &serde_json::from_str::<Value>(vn_only).unwrap(),
                "{strategy}"
            );
            assert!(has_toleration(&pod));
        }
        // Another class, or none, in a Local namespace: local, even with the toleration.
        let lookup = lookup_with("test-namespace", json!({"podOffloadingStrategy": "Local"}));
        let other = pod_review(
            "admission.k8s.io/v1",
            "u11",
            json!({"containers": [], "runtimeClassName": "gvisor",
                   "tolerations": [{"operator": "Exists"}]}),
        );
        let (out, _) = answer(Webhook::Pod, &other, &lookup);
        let pod = apply_patch(&other, &out);
        assert_eq!(
            required_terms(&pod),
            &serde_json::from_str::<Value>(NOT_VN).unwrap()
        );
    }

    #[test]
    fn in_a_namespace_not_offloaded_the_opt_in_is_refused_and_nothing_else() {
        let opted_in = pod_review(
            "admission.k8s.io/v1",
            "u13",
            json!({"containers": [], "runtimeClassName": "liqo"}),
        );
        let message = denial(
            answer(Webhook::PodOptIn, &opted_in, &Fixed::default()),
            "u13",
        );
        assert!(
            message.contains("namespace \"test-namespace\" is not offloaded")
                && message.contains("remove runtimeClassName"),
            "{message}"
        );
        let other = pod_review(
            "admission.k8s.io/v1",
            "u14",
            json!({"containers": [], "runtimeClassName": "gvisor"}),
        );
        let (out, verdict) = answer(Webhook::PodOptIn, &other, &Fixed::default());
        assert_eq!(verdict, Verdict::Allowed, "{out}");
    }

    #[test]
    fn an_opted_in_pod_with_nowhere_to_go_is_refused_saying_why() {
        let opted_in = pod_review(
            "admission.k8s.io/v1",
            "u12",
            json!({"containers": [], "runtimeClassName": "liqo"}),
        );
        // The offloading is ending.
        let mut lookup = lookup_with("test-namespace", json!({"podOffloadingStrategy": "Local"}));
        let nso = lookup.offloadings.get_mut("test-namespace").unwrap();
        Arc::make_mut(nso).metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let message = denial(answer(Webhook::Pod, &opted_in, &lookup), "u12");
        assert!(
            message.contains("runtimeClassName \"liqo\"") && message.contains("is terminating"),
            "{message}"
        );
        // No NamespaceOffloading at all.
        let Outcome::ReadOffloading(pending) = decide(Webhook::Pod, &opted_in) else {
            panic!("a cache miss must ask for a read");
        };
        let (out, verdict) = pending.resume(Ok(None), &Fixed::default());
        assert_eq!(verdict, Verdict::Denied);
        let out = serde_json::to_value(out).unwrap();
        let message = out["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("offload namespace \"test-namespace\" first"),
            "{message}"
        );
    }

    #[test]
    fn creating_the_offloading_marks_its_namespace_except_on_dry_run() {
        let body = nso_review("CREATE", "offloading", nso("offloading", json!({})), None);
        let outcome = decide(Webhook::OffloadingValidation, &body);
        let Outcome::MarkNamespace(pending) = outcome else {
            panic!("a creation must mark the namespace");
        };
        assert_eq!(pending.namespace(), "test-namespace");
        let (out, verdict) = pending.failed("namespaces \"test-namespace\" is forbidden");
        assert_eq!(verdict, Verdict::Denied);
        let out = serde_json::to_value(out).unwrap();
        let message = out["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains("cannot label namespace"), "{message}");
        assert!(message.contains("is forbidden"), "{message}");

        let mut dry = body.clone();
        dry["request"]["dryRun"] = json!(true);
        let outcome = decide(Webhook::OffloadingValidation, &dry);
        assert!(matches!(outcome, Outcome::Answered((_, Verdict::Allowed))));

        // A refused creation marks nothing.
        let bad = nso_review("CREATE", "mine", nso("mine", json!({})), None);
        let outcome = decide(Webhook::OffloadingValidation, &bad);
        assert!(matches!(outcome, Outcome::Answered((_, Verdict::Denied))));
    }

    #[test]
    fn preset_node_name_breaking_the_strategy_is_denied() {
        let lookup = lookup_with("test-namespace", json!({"podOffloadingStrategy": "Remote"}));
        let body = pod_review(
            "admission.k8s.io/v1",
            "u3",
            json!({"nodeName": "local-1", "containers": [{"name": "web", "image": "nginx"}]}),
        );
        let message = denial(answer(Webhook::Pod, &body, &lookup), "u3");
        assert!(
            message.contains("must run in a remote cluster"),
            "{message}"
        );
    }

    /// Checks that an answer is a denial echoing `uid` and returns its message.
    fn denial((out, verdict): (Value, Verdict), uid: &str) -> String {
        assert_eq!(verdict, Verdict::Denied);
        assert_eq!(out["response"]["uid"], uid);
        assert_eq!(out["response"]["allowed"], false);
        out["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn unreadable_object_is_denied_with_the_uid() {
        let mut body = pod_review("admission.k8s.io/v1", "u4", json!({}));
        body["request"]["object"] = json!("not an object");
        let message = denial(answer(Webhook::Pod, &body, &Fixed::default()), "u4");
        assert!(
            message.starts_with("cannot decode the admission request"),
            "{message}"
        );
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        for body in [
            &b"{"[..],
            b"[]",
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
            b"\xff",
        ] {
            let Err(err) = review(Webhook::Pod, body, &Fixed::default(), SITE) else {
                panic!("a malformed body must be a bad request");
            };
            assert!(!err.0.is_empty());
        }
    }

    fn nso_review(operation: &str, name: &str, object: Value, old: Option<Value>) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "nso-uid",
                "kind": {"group": "offloading.liqo.io", "version": "v1alpha1", "kind": "NamespaceOffloading"},
                "resource": {"group": "offloading.liqo.io", "version": "v1alpha1", "resource": "namespaceoffloadings"},
                "name": name, "namespace": "test-namespace", "operation": operation,
                "userInfo": {"username": "alice"},
                "object": object, "oldObject": old,
            },
        })
    }

    fn nso(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "offloading.liqo.io/v1alpha1", "kind": "NamespaceOffloading",
               "metadata": {"name": name, "namespace": "test-namespace"}, "spec": spec})
    }

    #[test]
    fn defaults_are_patched_in() {
        let body = nso_review("CREATE", "offloading", nso("offloading", json!({})), None);
        let (out, verdict) = answer(Webhook::OffloadingDefaults, &body, &Fixed::default());
        assert_eq!(verdict, Verdict::Patched);
        let object = apply_patch(&body, &out);
        assert_eq!(object["spec"]["namespaceMappingStrategy"], "DefaultName");
        assert_eq!(object["spec"]["podOffloadingStrategy"], "LocalAndRemote");
        assert_eq!(
            object["spec"]["clusterSelector"]["nodeSelectorTerms"][0]["matchExpressions"][0]["key"],
            "liqo.io/type"
        );
    }

    #[test]
    fn the_finalizer_is_set_at_creation_and_never_put_back_on_update() {
        let finalizer = crate::model::markers::OFFLOADING_FINALIZER;
        let mut with_other = nso("offloading", json!({}));
        with_other["metadata"]["finalizers"] = json!(["someone.else/keep"]);
        let body = nso_review("CREATE", "offloading", with_other, None);
        let object = apply_patch(
            &body,
            &answer(Webhook::OffloadingDefaults, &body, &Fixed::default()).0,
        );
        assert_eq!(
            object["metadata"]["finalizers"],
            json!(["someone.else/keep", finalizer])
        );
        // Any other name is refused by validation and never reconciled: no finalizer.
        let body = nso_review("CREATE", "other", nso("other", json!({})), None);
        let object = apply_patch(
            &body,
            &answer(Webhook::OffloadingDefaults, &body, &Fixed::default()).0,
        );
        assert!(object["metadata"].get("finalizers").is_none(), "{object}");
        // The controller's removal at the end is an UPDATE that must stand.
        let defaulted = offloading::with_defaults(&nso("offloading", json!({})));
        let body = nso_review("UPDATE", "offloading", defaulted.clone(), Some(defaulted));
        let (out, verdict) = answer(Webhook::OffloadingDefaults, &body, &Fixed::default());
        assert_eq!(verdict, Verdict::Allowed, "{out}");
    }

    #[test]
    fn a_remote_name_another_namespace_has_is_refused_naming_it() {
        // Namespace web is offloaded with EnforceSameName: its remote namespaces are "web".
        let lookup = lookup_with(
            "web",
            json!({"namespaceMappingStrategy": "EnforceSameName"}),
        );
        let mut object = nso(
            "offloading",
            json!({"namespaceMappingStrategy": "SelectedName", "remoteNamespaceName": "web"}),
        );
        object["apiVersion"] = "offloading.liqo.io/v1beta1".into();
        let body = nso_review("CREATE", "offloading", object.clone(), None);
        let message = denial(
            answer(Webhook::OffloadingValidation, &body, &lookup),
            "nso-uid",
        );
        assert!(
            message.contains("the remote namespace name web is already that of namespace web's offloading in this cluster"),
            "{message}"
        );
        // Another name is fine.
        object["spec"]["remoteNamespaceName"] = "web-2".into();
        let body = nso_review("CREATE", "offloading", object, None);
        let (_, verdict) = answer(Webhook::OffloadingValidation, &body, &lookup);
        assert_eq!(verdict, Verdict::Allowed);
    }

    #[test]
    fn validation_denies_wrong_names_and_spec_changes() {
        let body = nso_review("CREATE", "mine", nso("mine", json!({})), None);
        let message = denial(
            answer(Webhook::OffloadingValidation, &body, &Fixed::default()),
            "nso-uid",
        );
        assert!(
            message.contains("must be named \"offloading\""),
            "{message}"
        );

        let old = nso("offloading", json!({"podOffloadingStrategy": "Local"}));
        let new = nso("offloading", json!({"podOffloadingStrategy": "Remote"}));
        let body = nso_review("UPDATE", "offloading", new, Some(old.clone()));
        let message = denial(
            answer(Webhook::OffloadingValidation, &body, &Fixed::default()),
            "nso-uid",
        );
        assert!(message.contains("spec is immutable"), "{message}");

        let body = nso_review("UPDATE", "offloading", old.clone(), Some(old));
        assert_eq!(
            answer(Webhook::OffloadingValidation, &body, &Fixed::default()).1,
            Verdict::Allowed
        );
    }
}
