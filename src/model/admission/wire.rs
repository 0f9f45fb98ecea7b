//! The AdmissionReview wire format, read and written with only what the webhooks use.
//!
//! A pod review carries a whole pod (5 KiB is common) of which placement reads three
//! fields: decoding all of it into typed objects, and answering with kube's generic
//! review, cost several times the work of the decision itself (see docs/benchmarks.md).
//! Here the object stays raw JSON until a webhook asks for the part it needs, and the
//! patch goes out base64-encoded, as the API server documents it, instead of as an array
//! of numbers three times the size.

use std::borrow::Cow;

use k8s_openapi::ByteString;
use kube::core::admission::Operation;
use serde::{Deserialize, Serialize};
use serde_json::{Value, value::RawValue};

/// The review's `apiVersion` when the request does not say (the API server always does).
const DEFAULT_API_VERSION: &str = "admission.k8s.io/v1";

// The strings are borrowed from the body (copied only when they hold escapes): four
// allocations fewer per review, on the hot path.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a, O> {
    #[serde(default, borrow, deserialize_with = "borrowed_or_null")]
    api_version: Cow<'a, str>,
    #[serde(default = "none", borrow)]
    request: Option<RequestIn<'a, O>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a, O> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed_or_null")]
    namespace: Cow<'a, str>,
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

/// A string borrowed from the body when it has no escapes (serde borrows a `Cow` only when
/// it is the field's whole type, not inside an `Option`); `null` reads as empty.
fn borrowed_or_null<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Cow<'a, str>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }
    }
    deserializer.deserialize_option(OptionOf(Visitor))
}

/// Hands `Some`'s content to the inner visitor, so `deserialize_option` takes both.
struct OptionOf<V>(V);

impl<'de, V: serde::de::Visitor<'de>> serde::de::Visitor<'de> for OptionOf<V> {
    type Value = V::Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.0.expecting(f)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self.0)
    }
}

/// One admission request: what the webhooks decide on. The object is decoded as `O`:
/// raw JSON by default, or just the parts a webhook reads (`pod::PodView`), in the same
/// pass as the review. Its strings borrow from the body.
pub(crate) struct Request<'a, O = Box<RawValue>> {
    /// Echoed in the answer: the API server discards answers for another version.
    pub(crate) api_version: Cow<'a, str>,
    pub(crate) uid: Cow<'a, str>,
    pub(crate) name: Cow<'a, str>,
    pub(crate) namespace: Cow<'a, str>,
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

impl<'a, O: serde::de::DeserializeOwned> Request<'a, O> {
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, ReadError> {
        let review: ReviewIn<'a, O> = match serde_json::from_slice(body) {
            Ok(review) => review,
            // Rare (the API server sends what it has decoded): parse again, tracking
            // where, so the message names the field.
            Err(e) => {
                let mut de = serde_json::Deserializer::from_slice(body);
                let message = match serde_path_to_error::deserialize::<_, ReviewIn<'_, O>>(&mut de)
                {
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
            api_version: if review.api_version.is_empty() {
                Cow::Borrowed(DEFAULT_API_VERSION)
            } else {
                review.api_version
            },
            uid: request.uid,
            name: request.name,
            namespace: request.namespace,
            operation: request.operation,
            dry_run: request.dry_run.unwrap_or(false),
            object: request.object,
            old_object: request.old_object,
        })
    }
}

impl Request<'_> {
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

/// The answer: an AdmissionReview with only a response; its strings borrow from the
/// request's.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Review<'a> {
    pub(crate) api_version: Cow<'a, str>,
    pub(crate) kind: &'static str,
    pub(crate) response: Response<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Response<'a> {
    pub(crate) uid: Cow<'a, str>,
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

/// A review's identity, echoed in its answer: its `apiVersion` and `request.uid`.
pub(crate) type Echo<'a> = (Cow<'a, str>, Cow<'a, str>);

impl<'a> Review<'a> {
    pub(crate) fn allowed((api_version, uid): Echo<'a>, warnings: Vec<String>) -> Self {
        Self::new(api_version, uid, |r| {
            r.warnings = (!warnings.is_empty()).then_some(warnings);
        })
    }

    pub(crate) fn patched(
        (api_version, uid): Echo<'a>,
        patch: Vec<u8>,
        warnings: Vec<String>,
    ) -> Self {
        Self::new(api_version, uid, |r| {
            r.patch = Some(ByteString(patch));
            r.patch_type = Some("JSONPatch");
            r.warnings = (!warnings.is_empty()).then_some(warnings);
        })
    }

    pub(crate) fn denied((api_version, uid): Echo<'a>, message: String) -> Self {
        Self::refused(api_version, uid, message, "Forbidden", 403)
    }

    /// Refused for now: something the answer needed failed, and a retry may succeed.
    pub(crate) fn unavailable((api_version, uid): Echo<'a>, message: String) -> Self {
        Self::refused(api_version, uid, message, "ServiceUnavailable", 503)
    }

    fn refused(
        api_version: Cow<'a, str>,
        uid: Cow<'a, str>,
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

    fn new(api_version: Cow<'a, str>, uid: Cow<'a, str>, fill: impl FnOnce(&mut Response)) -> Self {
        let mut response = Response {
            uid,
            allowed: true,
            status: None,
            patch: None,
            patch_type: None,
            warnings: None,
        };
        fill(&mut response);
        Self {
            api_version,
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
    fn strings_are_borrowed_from_the_body_unless_escaped() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","request":{"uid":"u-1","namespace":"n\u0073","operation":"CREATE"}}"#;
        let request = Request::<PodView>::parse(body).unwrap();
        assert!(matches!(request.uid, Cow::Borrowed("u-1")));
        assert!(matches!(request.api_version, Cow::Borrowed(_)));
        // An escape has to be decoded into a string of its own.
        assert!(matches!(&request.namespace, Cow::Owned(n) if n == "ns"));
        let review = Review::allowed(("v".into(), request.uid.clone()), Vec::new());
        assert_eq!(
            serde_json::to_value(&review).unwrap()["response"]["uid"],
            "u-1"
        );

        // Absent or null, as other clients may send them: the defaults.
        let body = br#"{"request":{"uid":"u","namespace":null,"operation":"CREATE"}}"#;
        let request = Request::<PodView>::parse(body).unwrap();
        assert_eq!(request.api_version, DEFAULT_API_VERSION);
        assert_eq!(request.namespace, "");
        let body = br#"{"request":{"uid":"u","namespace":7,"operation":"CREATE"}}"#;
        let Err(ReadError::Malformed(message)) = Request::<PodView>::parse(body) else {
            panic!("a number is no namespace");
        };
        assert!(message.contains("request.namespace"), "{message}");
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
        let echo = ("admission.k8s.io/v1".into(), "u".into());
        let review = Review::patched(echo, b"[]".to_vec(), Vec::new());
        let out = serde_json::to_value(&review).unwrap();
        assert_eq!(out["response"]["patch"], "W10=");
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        assert!(out["response"].get("warnings").is_none());
        assert!(out["response"].get("status").is_none());
    }
}
