//! The AdmissionReview wire format, read and written with only what the webhooks use.
//!
//! A pod review carries a whole pod (5 KiB is common) of which placement reads three
//! fields: decoding all of it into typed objects, and answering with kube's generic
//! review, cost several times the work of the decision itself (see docs/benchmarks.md).
//! Here the object stays raw JSON until a webhook asks for the part it needs, and the
//! patch goes out base64-encoded, as the API server documents it, instead of as an array
//! of numbers three times the size.

use k8s_openapi::ByteString;
use kube::core::admission::Operation;
use serde::{Deserialize, Serialize};
use serde_json::{Value, value::RawValue};

/// The review's `apiVersion` when the request does not say (the API server always does).
const DEFAULT_API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<O> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default = "none")]
    request: Option<RequestIn<O>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<O> {
    uid: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default = "none")]
    object: Option<O>,
    #[serde(default)]
    old_object: Option<Box<RawValue>>,
}

fn none<T>() -> Option<T> {
    None
}

/// One admission request: what the webhooks decide on. The object is decoded as `O`:
/// raw JSON by default, or just the parts a webhook reads (`pod::PodView`), in the same
/// pass as the review.
pub(crate) struct Request<O = Box<RawValue>> {
    /// Echoed in the answer: the API server discards answers for another version.
    pub(crate) api_version: String,
    pub(crate) uid: String,
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) operation: Operation,
    pub(crate) dry_run: bool,
    pub(crate) object: Option<O>,
    pub(crate) old_object: Option<Box<RawValue>>,
}

/// Why a body is not a review that can be answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// Not JSON, or not shaped as an AdmissionReview (no uid, an unknown operation, an
    /// object of the wrong shape, ...): the error, naming the field.
    #[error("{0}")]
    Malformed(String),
    #[error("cannot parse the body as an AdmissionReview: it has no request to answer")]
    NoRequest,
}

impl<O: serde::de::DeserializeOwned> Request<O> {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, ReadError> {
        let review: ReviewIn<O> = match serde_json::from_slice(body) {
            Ok(review) => review,
            // Rare (the API server sends what it has decoded): parse again, tracking
            // where, so the message names the field.
            Err(e) => {
                let mut de = serde_json::Deserializer::from_slice(body);
                let message = match serde_path_to_error::deserialize::<_, ReviewIn<O>>(&mut de) {
                    Err(e) if e.path().iter().next().is_some() => {
                        format!("{}: {}", e.path(), e.inner())
                    }
                    _ => e.to_string(),
                };
                return Err(ReadError::Malformed(message));
            }
        };
        let request = review.request.ok_or(ReadError::NoRequest)?;
        Ok(Self {
            api_version: review
                .api_version
                .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned()),
            uid: request.uid,
            name: request.name,
            namespace: request.namespace.unwrap_or_default(),
            operation: request.operation,
            dry_run: request.dry_run.unwrap_or(false),
            object: request.object,
            old_object: request.old_object,
        })
    }
}

impl Request {
    /// The object as a JSON tree, for the small objects (NamespaceOffloadings) whose
    /// webhooks read it whole.
    pub(crate) fn object_json(&self) -> Result<Value, String> {
        let raw = self
            .object
            .as_deref()
            .ok_or("the admission request carries no object")?;
        serde_json::from_str(raw.get())
            .map_err(|e| format!("cannot decode the admission request: {e}"))
    }

    pub(crate) fn old_object_json(&self) -> Result<Option<Value>, String> {
        self.old_object
            .as_deref()
            .map(|raw| serde_json::from_str(raw.get()))
            .transpose()
            .map_err(|e| format!("cannot read the old object: {e}"))
    }
}

/// The answer: an AdmissionReview with only a response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    pub(crate) api_version: String,
    pub(crate) kind: &'static str,
    pub(crate) response: Response,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Response {
    pub(crate) uid: String,
    pub(crate) allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<Status>,
    /// base64 on the wire (k8s-openapi's `ByteString`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) patch: Option<ByteString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) warnings: Option<Vec<String>>,
}

/// Why a request was refused; the API server shows `message` to the user.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub(crate) status: &'static str,
    pub(crate) message: String,
    pub(crate) reason: &'static str,
    pub(crate) code: u16,
}

impl Review {
    pub(crate) fn allowed(api_version: &str, uid: &str, warnings: Vec<String>) -> Self {
        Self::new(api_version, uid, |r| {
            r.warnings = (!warnings.is_empty()).then_some(warnings);
        })
    }

    pub(crate) fn patched(
        api_version: &str,
        uid: &str,
        patch: Vec<u8>,
        warnings: Vec<String>,
    ) -> Self {
        Self::new(api_version, uid, |r| {
            r.patch = Some(ByteString(patch));
            r.patch_type = Some("JSONPatch");
            r.warnings = (!warnings.is_empty()).then_some(warnings);
        })
    }

    pub(crate) fn denied(api_version: &str, uid: &str, message: String) -> Self {
        Self::refused(api_version, uid, message, "Forbidden", 403)
    }

    /// Refused for now: something the answer needed failed, and a retry may succeed.
    pub(crate) fn unavailable(api_version: &str, uid: &str, message: String) -> Self {
        Self::refused(api_version, uid, message, "ServiceUnavailable", 503)
    }

    fn refused(
        api_version: &str,
        uid: &str,
        message: String,
        reason: &'static str,
        code: u16,
    ) -> Self {
        Self::new(api_version, uid, |r| {
            r.allowed = false;
            r.status = Some(Status {
                status: "Failure",
                message,
                reason,
                code,
            });
        })
    }

    fn new(api_version: &str, uid: &str, fill: impl FnOnce(&mut Response)) -> Self {
        let mut response = Response {
            uid: uid.to_owned(),
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
            warnings: None,
        };
        fill(&mut response);
        Self {
            api_version: api_version.to_owned(),
            kind: "AdmissionReview",
            response,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::admission::pod::PodView;

    #[test]
    fn a_pod_is_read_for_its_placement_fields_only() {
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "namespace": "ns", "operation": "CREATE", "name": "",
                        "object": {"metadata": {"name": "p", "labels": {"a": "b"}},
                                   "spec": {"nodeName": "n1", "containers": [{"name": "c"}],
                                            "tolerations": [{"operator": "Exists"}]}}},
        }))
        .unwrap();
        let request = Request::<PodView>::parse(&body).unwrap();
        assert_eq!(request.namespace, "ns");
        assert!(!request.dry_run);
        let pod = request.object.unwrap();
        assert_eq!(pod.node_name(), Some("n1"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.tolerations.unwrap().len(), 1);
        assert!(spec.affinity.is_none());
    }

    #[test]
    fn a_malformed_field_is_named() {
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "namespace": "ns", "operation": "CREATE",
                        "object": {"spec": {"affinity": {"nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": "eu"}}}}}},
        }))
        .unwrap();
        let Err(ReadError::Malformed(message)) = Request::<PodView>::parse(&body) else {
            panic!("a string where terms go must not parse");
        };
        assert!(
            message.starts_with("request.object.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: invalid type"),
            "{message}"
        );
    }

    #[test]
    fn the_patch_goes_out_as_base64() {
        let review = Review::patched("admission.k8s.io/v1", "u", b"[]".to_vec(), Vec::new());
        let out = serde_json::to_value(&review).unwrap();
        assert_eq!(out["response"]["patch"], "W10=");
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        assert!(out["response"].get("warnings").is_none());
        assert!(out["response"].get("status").is_none());
    }
}
