//! The second admission reference: the same pod review answered the way a kube-rs webhook is
//! usually written, with kube's own types: `AdmissionReview<DynamicObject>` decoded whole,
//! the pod typed, the placement applied to it, `json_patch::diff` between the two, and
//! `AdmissionResponse::with_patch`. Same TLS and HTTP as the baseline server (`baseline`):
//! only the answer differs.

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Toleration,
};
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview},
};

/// What `Remote` imposes, as the fixtures' NamespaceOffloading says it (`region In eu`, on
/// the virtual nodes).
fn imposed() -> Vec<NodeSelectorRequirement> {
    let requirement = |key: &str, value: &str| NodeSelectorRequirement {
        key: key.into(),
        operator: "In".into(),
        values: Some(vec![value.into()]),
    };
    vec![
        requirement("liqo.io/type", "virtual-node"),
        requirement("region", "eu"),
    ]
}

/// The pod placed remotely: each of its own required terms with the imposed requirements
/// added (or the imposed ones alone), and the virtual nodes' taint tolerated.
fn place(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let required = node
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: Vec::new(),
        });
    if required.node_selector_terms.is_empty() {
        required
            .node_selector_terms
            .push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_expressions
            .get_or_insert_with(Vec::new)
            .extend(imposed());
    }
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            key: Some("virtual-node.liqo.io/not-allowed".into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Toleration::default()
        });
}

/// The answer to one review body, or an error for a body that is not a review.
pub fn answer(body: &[u8]) -> Result<Vec<u8>, String> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let request: AdmissionRequest<DynamicObject> = review.try_into().map_err(|e| format!("{e}"))?;
    let mut response = AdmissionResponse::from(&request);
    if let Some(object) = &request.object {
        let before = serde_json::to_value(object).map_err(|e| e.to_string())?;
        let mut pod: Pod = serde_json::from_value(before.clone()).map_err(|e| e.to_string())?;
        place(&mut pod);
        let after = serde_json::to_value(&pod).map_err(|e| e.to_string())?;
        response = response
            .with_patch(json_patch::diff(&before, &after))
            .map_err(|e| e.to_string())?;
    }
    serde_json::to_vec(&response.into_review()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_reference_patches_the_pod_as_a_remote_placement() {
        let body = crate::fixtures::pod_review("u-2", &crate::fixtures::pod("ns", 1));
        let out: serde_json::Value =
            serde_json::from_slice(&answer(&serde_json::to_vec(&body).unwrap()).unwrap()).unwrap();
        assert_eq!(out["response"]["uid"], "u-2");
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        // kube sends the patch as an array of numbers (the older releases) or base64.
        let raw = &out["response"]["patch"];
        let bytes = match raw.as_array() {
            Some(numbers) => numbers.iter().map(|n| n.as_u64().unwrap() as u8).collect(),
            None => base64_decode(raw.as_str().unwrap()),
        };
        let patch = String::from_utf8(bytes).unwrap();
        assert!(
            patch.contains("virtual-node.liqo.io/not-allowed"),
            "{patch}"
        );
        assert!(patch.contains("liqo.io/type"), "{patch}");
        assert!(answer(b"{}").is_err());
    }

    /// Enough base64 for the test (kube sends the patch encoded).
    fn base64_decode(text: &str) -> Vec<u8> {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in text.bytes().filter(|c| *c != b'=') {
            let v = alphabet.iter().position(|a| *a == c).unwrap() as u32;
            bits = (bits << 6) | v;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
                bits &= (1 << n) - 1;
            }
        }
        out
    }
}
