//! Property tests of every parser of the model that takes input from outside (issue 22,
//! point 7): the AdmissionReview decoding of the pod and NamespaceOffloading webhooks, the
//! quantity and selector parsers, and forging a twin from an arbitrary pod. Inputs are
//! drawn at random and from realistic fixtures mutated at random (a field replaced by any
//! JSON, or removed); the property is that nothing panics and every answer is well formed.
//!
//! `cargo test --lib fuzz` runs each for 256 cases (in CI); for longer:
//! `PROPTEST_CASES=100000 cargo test --release --lib fuzz`. A failure prints the input it
//! shrank to, and proptest keeps it in `proptest-regressions/` to try first next time.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::{NodeSelector, Pod};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{
    admission::{self, Lookup, NodeInfo, Outcome, Site, Webhook},
    api::{NamespaceOffloading, NamespaceOffloadingSpec},
    forge::twin as forge,
    quantity, selector,
};

/// Keys that real objects carry, so that random objects often hit real fields.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "request",
    "uid",
    "operation",
    "namespace",
    "name",
    "object",
    "oldObject",
    "dryRun",
    "metadata",
    "spec",
    "status",
    "labels",
    "annotations",
    "containers",
    "initContainers",
    "volumes",
    "affinity",
    "nodeAffinity",
    "requiredDuringSchedulingIgnoredDuringExecution",
    "nodeSelectorTerms",
    "matchExpressions",
    "matchFields",
    "key",
    "operator",
    "values",
    "tolerations",
    "nodeSelector",
    "nodeName",
    "serviceAccountName",
    "automountServiceAccountToken",
    "priorityClassName",
    "runtimeClassName",
    "resources",
    "requests",
    "limits",
    "env",
    "envFrom",
    "secretRef",
    "secretKeyRef",
    "valueFrom",
    "projected",
    "sources",
    "serviceAccountToken",
    "secret",
    "secretName",
    "configMap",
    "podOffloadingStrategy",
    "namespaceMappingStrategy",
    "clusterSelector",
    "image",
    "ports",
    "hostNetwork",
    "persistentVolumeClaim",
    "ephemeral",
    "hostPath",
    "schedulingGates",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "",
                "CREATE",
                "UPDATE",
                "DELETE",
                "CONNECT",
                "In",
                "NotIn",
                "Exists",
                "DoesNotExist",
                "Gt",
                "Lt",
                "Local",
                "Remote",
                "LocalAndRemote",
                "DefaultName",
                "EnforceSameName",
                "liqo.io/type",
                "virtual-node",
                "Pod",
                "NamespaceOffloading",
                "admission.k8s.io/v1",
                "v1",
                "100m",
                "1Gi",
                "-1",
                "1e400",
                "kube-system",
                "liqo",
            ][..]
        )
        .prop_map(str::to_owned),
        ".{0,24}",
    ]
}

/// Any JSON, of bounded size.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path (object keys and array indexes) in `value`.
fn paths(value: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(Step::Key(k.clone()));
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                prefix.push(Step::Index(i));
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// `fixture` with the value at one of its paths replaced by `with` (or removed, for `None`).
fn mutate(fixture: &Value, pick: usize, with: Option<Value>) -> Value {
    let mut all = Vec::new();
    paths(fixture, &mut Vec::new(), &mut all);
    let path = &all[pick % all.len()];
    let mut out = fixture.clone();
    let Some((last, parents)) = path.split_last() else {
        return with.unwrap_or(Value::Null);
    };
    let mut at = &mut out;
    for step in parents {
        at = match step {
            Step::Key(k) => &mut at[k.as_str()],
            Step::Index(i) => &mut at[*i],
        };
    }
    match (last, with) {
        (Step::Key(k), Some(v)) => at[k.as_str()] = v,
        (Step::Key(k), None) => {
            if let Some(map) = at.as_object_mut() {
                map.remove(k);
            }
        }
        (Step::Index(i), Some(v)) => at[*i] = v,
        (Step::Index(i), None) => {
            if let Some(items) = at.as_array_mut() {
                items.remove(*i);
            }
        }
    }
    out
}

/// A pod as kube-apiserver sends it for a Deployment's replica in an offloaded namespace.
fn pod_fixture() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-7d9f8-x2k4p", "generateName": "web-7d9f8-", "namespace": "shop",
                     "uid": "0b6c1a8e-2f1e-4d5c-9a43-5b8f5d2c7e11",
                     "labels": {"app": "web"}, "annotations": {"note": "x"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "web-7d9f8", "uid": "rs-1", "controller": true}]},
        "spec": {
            "containers": [{"name": "web", "image": "nginx:1.27",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "web-token", "key": "token"}}}],
                "envFrom": [{"secretRef": {"name": "db"}}],
                "volumeMounts": [{"name": "kube-api-access-abcde", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
            "volumes": [
                {"name": "kube-api-access-abcde", "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}},
                {"name": "config", "configMap": {"name": "web-config"}},
                {"name": "creds", "secret": {"secretName": "web-token"}}],
            "serviceAccountName": "web", "priorityClassName": "high", "runtimeClassName": "gvisor",
            "nodeName": "liqo-c2", "schedulerName": "default-scheduler",
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]}]}}},
            "tolerations": [{"key": "virtual-node.liqo.io/not-allowed", "operator": "Exists", "effect": "NoExecute"}],
        },
        "status": {"phase": "Pending"},
    })
}

fn pod_review(object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web-7d9f8-x2k4p", "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object, "oldObject": null, "dryRun": false,
        },
    })
}

fn offloading_review() -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "e911857d-c318-11e8-bbad-025000000001",
            "kind": {"group": "offloading.liqo.io", "version": "v1alpha1", "kind": "NamespaceOffloading"},
            "resource": {"group": "offloading.liqo.io", "version": "v1alpha1", "resource": "namespaceoffloadings"},
            "name": "offloading", "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": {"apiVersion": "offloading.liqo.io/v1alpha1", "kind": "NamespaceOffloading",
                "metadata": {"name": "offloading", "namespace": "shop"},
                "spec": {"namespaceMappingStrategy": "DefaultName", "podOffloadingStrategy": "LocalAndRemote",
                    "clusterSelector": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "region", "operator": "In", "values": ["eu"]}]}]}}},
            "oldObject": null, "dryRun": false,
        },
    })
}

/// The caches: `shop` offloaded (Remote, to region=eu), a local node and c2's virtual node.
struct Caches(BTreeMap<String, Arc<NamespaceOffloading>>);

impl Lookup for Caches {
    fn offloading(&self, namespace: &str) -> Option<Arc<NamespaceOffloading>> {
        self.0.get(namespace).cloned()
    }
    fn node(&self, _name: &str) -> Option<NodeInfo> {
        Some(NodeInfo::default())
    }
    fn offloadings(&self) -> Vec<Arc<NamespaceOffloading>> {
        self.0.values().cloned().collect()
    }
}

fn caches() -> Caches {
    let spec: NamespaceOffloadingSpec = serde_json::from_value(json!({
        "podOffloadingStrategy": "Remote",
        "clusterSelector": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "region", "operator": "In", "values": ["eu"]}]}]},
    }))
    .unwrap_or_else(|_| NamespaceOffloadingSpec::label_default());
    let mut nso = NamespaceOffloading::new("offloading", spec);
    nso.metadata.namespace = Some("shop".into());
    Caches([("shop".to_owned(), Arc::new(nso))].into())
}

const SITE: Site<'static> = Site {
    local_cluster_id: "c1",
    own_namespace: "liqo",
    runtime_class: "liqo",
};

/// Every webhook decides `body` without panicking; an answer is a well-formed review.
fn every_webhook_answers(body: &[u8]) {
    let lookup = caches();
    for webhook in Webhook::ALL {
        // Refused (400), or waiting on one API call, is as fine as answered.
        if let Ok(Outcome::Answered((review, _))) = admission::review(webhook, body, &lookup, SITE)
        {
            let text = serde_json::to_value(&review).unwrap_or(Value::Null);
            assert!(text["response"]["uid"].is_string(), "{webhook:?}: {text}");
        }
    }
}

proptest! {
    #[test]
    fn any_bytes_are_answered_or_refused(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        every_webhook_answers(&body);
    }

    #[test]
    fn any_json_is_answered_or_refused(value in any_json()) {
        every_webhook_answers(value.to_string().as_bytes());
    }

    #[test]
    fn a_pod_review_mutated_anywhere_is_answered_or_refused(
        pick in any::<usize>(),
        with in proptest::option::weighted(0.8, any_json()),
    ) {
        let review = mutate(&pod_review(pod_fixture()), pick, with);
        every_webhook_answers(review.to_string().as_bytes());
    }

    #[test]
    fn an_offloading_review_mutated_anywhere_is_answered_or_refused(
        pick in any::<usize>(),
        with in proptest::option::weighted(0.8, any_json()),
    ) {
        let review = mutate(&offloading_review(), pick, with);
        every_webhook_answers(review.to_string().as_bytes());
    }

    #[test]
    fn a_truncated_review_is_refused_not_a_panic(cut in any::<usize>()) {
        let body = pod_review(pod_fixture()).to_string();
        every_webhook_answers(&body.as_bytes()[..cut % body.len()]);
    }

    #[test]
    fn quantities_parse_or_are_refused(
        q in prop_oneof![".{0,16}", "[-+]?[0-9]{0,6}(\\.[0-9]{0,4})?([numkMGTPE]|[KMGTPE]i|[eE][-+]?[0-9]{0,4})?"],
    ) {
        if let Some(v) = quantity::parse(&q) {
            // Found by this test: "0E310" gave NaN (0 × ∞), which poisoned the sums.
            prop_assert!(v.is_finite(), "{q} gave {v}");
            let _ = quantity::format(v);
        }
    }

    #[test]
    fn any_selector_validates_and_matches_without_panic(
        value in any_json(),
        labels in proptest::collection::btree_map(string(), string(), 0..4),
        name in string(),
    ) {
        let wrapped = json!({"nodeSelectorTerms": [value.clone()]});
        for candidate in [value, wrapped] {
            if let Ok(selector) = serde_json::from_value::<NodeSelector>(candidate) {
                let problems = selector::validate(&selector, "spec.clusterSelector");
                prop_assert!(problems.iter().all(|p| p.contains("spec.clusterSelector")), "{problems:?}");
                let _ = selector::matches(&selector, &name, &labels);
            }
        }
    }

    #[test]
    fn a_twin_is_forged_from_any_pod(
        pick in any::<usize>(),
        with in proptest::option::weighted(0.8, any_json()),
        spec in any_json(),
    ) {
        let mutated = mutate(&pod_fixture(), pick, with);
        if let Ok(pod) = serde_json::from_value::<Pod>(mutated) {
            let offloading: NamespaceOffloadingSpec = serde_json::from_value(spec)
                .unwrap_or_else(|_| NamespaceOffloadingSpec::label_default());
            let _ = forge::unsupported(&pod);
            let mut twin = forge::twin(&pod, &offloading, "c1", "shop-c1");
            // Never this cluster's node, never a token of this cluster.
            prop_assert!(twin.spec.as_ref().is_none_or(|s| s.node_name.is_none()));
            let tokens = forge::secret_names(&pod);
            let classes = forge::RemoteClasses {
                priority: Some(["high".to_owned()].into()),
                runtime: Some(Default::default()),
            };
            let _ = forge::adapt(&mut twin, &tokens, &classes);
            if let Some(status) = pod.status.as_ref() {
                let _ = forge::local_status(status, pod.status.as_ref());
            }
        }
    }
}
