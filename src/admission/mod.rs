//! Admission reviews: decode, dispatch to the pure policies in `pod` and `offloading`, and
//! answer. Nothing here calls the API server: what a decision needs comes from watch
//! caches through [`Lookup`].

pub mod offloading;
pub mod pod;

use std::sync::Arc;

use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use serde_json::Value;

pub use self::pod::NodeInfo;
use crate::api::NamespaceOffloading;

/// What the webhooks read from the watch caches.
pub trait Lookup: Send + Sync {
    /// The namespace's `offloading` NamespaceOffloading, if any.
    fn offloading(&self, namespace: &str) -> Option<Arc<NamespaceOffloading>>;
    /// A node's labels, if the node exists.
    fn node(&self, name: &str) -> Option<NodeInfo>;
}

/// The webhooks this server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    Pod,
    OffloadingDefaults,
    OffloadingValidation,
}

impl Webhook {
    pub const ALL: [Webhook; 3] = [
        Webhook::Pod,
        Webhook::OffloadingDefaults,
        Webhook::OffloadingValidation,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Webhook::Pod => "/mutate/pod",
            Webhook::OffloadingDefaults => "/mutate/namespace-offloading",
            Webhook::OffloadingValidation => "/validate/namespace-offloading",
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Webhook::Pod => "pod",
            Webhook::OffloadingDefaults => "namespace-offloading-defaults",
            Webhook::OffloadingValidation => "namespace-offloading-validation",
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
    pub fn label(self) -> &'static str {
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

/// Answers one AdmissionReview body.
pub fn review(
    webhook: Webhook,
    body: &[u8],
    lookup: &dyn Lookup,
    local_cluster_id: &str,
) -> Result<(AdmissionReview<DynamicObject>, Verdict), BadRequest> {
    let request: AdmissionRequest<DynamicObject> =
        match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) {
            Ok(review) => review
                .try_into()
                .map_err(|_| BadRequest("the AdmissionReview has no request to answer".into()))?,
            Err(e) => return undecodable(body, &e),
        };
    let response = AdmissionResponse::from(&request);
    let decided = match webhook {
        Webhook::Pod => review_pod(&request, lookup),
        Webhook::OffloadingDefaults => review_defaults(&request),
        Webhook::OffloadingValidation => review_validation(&request, local_cluster_id),
    };
    let (response, verdict) = match decided {
        Ok(Decision::Allow(warnings)) => (with_warnings(response, warnings), Verdict::Allowed),
        Ok(Decision::Patch(patch)) => match response.clone().with_patch(patch) {
            Ok(r) => (r, Verdict::Patched),
            Err(e) => (
                response.deny(format!("cannot encode the patch: {e}")),
                Verdict::Denied,
            ),
        },
        Err(message) => (response.deny(message), Verdict::Denied),
    };
    Ok((response.into_review(), verdict))
}

enum Decision {
    Allow(Vec<String>),
    Patch(json_patch::Patch),
}

fn with_warnings(mut response: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

/// A body that parses as JSON with a request uid, but whose object cannot be decoded, gets
/// a denial echoing the uid (the API server discards answers without it); anything else
/// is a bad request.
fn undecodable(
    body: &[u8],
    error: &serde_json::Error,
) -> Result<(AdmissionReview<DynamicObject>, Verdict), BadRequest> {
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
    let mut response =
        AdmissionResponse::invalid(format!("cannot decode the admission request: {error}"));
    response.uid = uid.to_owned();
    if let Some(v) = value.get("apiVersion").and_then(Value::as_str) {
        response.types.api_version = v.to_owned();
    }
    Ok((response.into_review(), Verdict::Denied))
}

fn object_json(request: &AdmissionRequest<DynamicObject>) -> Result<Value, String> {
    let object = request
        .object
        .as_ref()
        .ok_or("the admission request carries no object")?;
    serde_json::to_value(object).map_err(|e| format!("cannot read the object: {e}"))
}

fn patch_between(before: &Value, after: &Value) -> Decision {
    let patch = json_patch::diff(before, after);
    if patch.0.is_empty() {
        Decision::Allow(Vec::new())
    } else {
        Decision::Patch(patch)
    }
}

fn review_pod(
    request: &AdmissionRequest<DynamicObject>,
    lookup: &dyn Lookup,
) -> Result<Decision, String> {
    if request.operation != Operation::Create {
        return Ok(Decision::Allow(Vec::new()));
    }
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let Some(offloading) = lookup.offloading(namespace) else {
        // The namespace carries the scheduling label but its configuration is gone (being
        // torn down) or not cached yet: nothing to impose.
        return Ok(Decision::Allow(vec![format!(
            "namespace {namespace:?} has no NamespaceOffloading \"offloading\": the pod was admitted without offloading constraints"
        )]));
    };
    let pod = object_json(request)?;
    if let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str)
        && !node.is_empty()
    {
        pod::check_preset_node(&offloading.spec, node, lookup.node(node).as_ref())?;
    }
    let mutated = pod::mutate(&pod, &offloading.spec)
        .map_err(|e| format!("cannot apply the offloading policy to the pod: {e}"))?;
    Ok(patch_between(&pod, &mutated))
}

fn review_defaults(request: &AdmissionRequest<DynamicObject>) -> Result<Decision, String> {
    let object = object_json(request)?;
    Ok(patch_between(&object, &offloading::with_defaults(&object)))
}

fn review_validation(
    request: &AdmissionRequest<DynamicObject>,
    local_cluster_id: &str,
) -> Result<Decision, String> {
    let object = object_json(request)?;
    match request.operation {
        Operation::Create => {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or(&request.name);
            let namespace = request.namespace.as_deref().unwrap_or_default();
            offloading::validate_create(name, namespace, &object, local_cluster_id)
                .map(Decision::Allow)
        }
        Operation::Update => {
            let old = request
                .old_object
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(|e| format!("cannot read the old object: {e}"))?
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
    use crate::api::NamespaceOffloadingSpec;

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

    fn answer(webhook: Webhook, body: &Value, lookup: &Fixed) -> (Value, Verdict) {
        let (review, verdict) = review(
            webhook,
            &serde_json::to_vec(body).unwrap(),
            lookup,
            "cluster-1-id",
        )
        .unwrap();
        (serde_json::to_value(review).unwrap(), verdict)
    }

    fn apply_patch(review: &Value, response: &Value) -> Value {
        // kube serializes the patch bytes as a JSON array of numbers, which the API
        // server's decoder accepts as well as base64.
        let bytes: Vec<u8> = serde_json::from_value(response["response"]["patch"].clone()).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
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

    #[test]
    fn pods_without_offloading_pass_unchanged_with_a_warning() {
        let body = pod_review("admission.k8s.io/v1", "u2", json!({"containers": []}));
        let (out, verdict) = answer(Webhook::Pod, &body, &Fixed::default());
        assert_eq!(verdict, Verdict::Allowed);
        assert!(out["response"].get("patch").is_none());
        assert!(
            out["response"]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("no NamespaceOffloading")
        );
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
            let err = review(Webhook::Pod, body, &Fixed::default(), "id").unwrap_err();
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
