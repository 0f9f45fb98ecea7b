//! Pod placement: the node affinity and toleration a namespace's offloading strategy
//! imposes on its pods, merged with the pod's own constraints.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Toleration};
use serde::{Deserialize, Serialize};

use crate::model::{
    api::{NamespaceOffloadingSpec, PodOffloadingStrategy, offloading::virtual_node_requirement},
    markers::{NOT_ALLOWED_TAINT, REMOTE_CLUSTER_ID_LABEL},
    selector,
};

/// `liqo.io/type NotIn (virtual-node)`: any node that is not a remote cluster.
fn not_virtual_node() -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        operator: "NotIn".into(),
        ..virtual_node_requirement()
    }
}

/// Tolerates the taint that keeps ordinary pods off virtual nodes.
pub(crate) fn virtual_node_toleration() -> Toleration {
    Toleration {
        key: Some(NOT_ALLOWED_TAINT.into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        ..Toleration::default()
    }
}

fn term(expressions: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: Some(expressions),
        match_fields: None,
    }
}

/// At most this many required terms after the merge: the merge is a cross product, and a
/// pod with thousands of terms must get a clear denial, not minutes of CPU.
pub(crate) const MAX_MERGED_TERMS: usize = 256;

/// An empty term matches no node (Kubernetes semantics).
pub(crate) fn is_empty_term(t: &NodeSelectorTerm) -> bool {
    t.match_expressions.as_ref().is_none_or(Vec::is_empty)
        && t.match_fields.as_ref().is_none_or(Vec::is_empty)
}

/// The required node-affinity terms a strategy imposes (ORed). Empty selector terms select
/// nothing, so they are left out (ANDed with the virtual-node requirement they would
/// otherwise turn into "any virtual node").
pub(crate) fn imposed_terms(spec: &NamespaceOffloadingSpec) -> Vec<NodeSelectorTerm> {
    let selected: Vec<NodeSelectorTerm> = spec
        .cluster_selector
        .node_selector_terms
        .iter()
        .filter(|t| !is_empty_term(t))
        .cloned()
        .collect();
    match spec.pod_offloading_strategy {
        // Only the selected clusters' virtual nodes.
        PodOffloadingStrategy::Remote => selected
            .iter()
            .map(|t| conjunction(t, &term(vec![virtual_node_requirement()])))
            .collect(),
        // The selected clusters, or any node that is not a virtual node.
        PodOffloadingStrategy::LocalAndRemote => {
            let mut terms = selected;
            terms.push(term(vec![not_virtual_node()]));
            dedup(terms)
        }
        // Beyond Liqo, which relied on the taint alone: a pod tolerating everything would
        // otherwise escape to a virtual node.
        PodOffloadingStrategy::Local => vec![term(vec![not_virtual_node()])],
    }
}

/// The strategy with the clusters in `excluded` left out of every selector term (their
/// virtual nodes carry the cluster ID label).
pub(crate) fn without_clusters(
    spec: &NamespaceOffloadingSpec,
    excluded: &[String],
) -> NamespaceOffloadingSpec {
    let mut spec = spec.clone();
    for t in &mut spec.cluster_selector.node_selector_terms {
        if is_empty_term(t) {
            continue;
        }
        t.match_expressions
            .get_or_insert_with(Vec::new)
            .push(NodeSelectorRequirement {
                key: REMOTE_CLUSTER_ID_LABEL.into(),
                operator: "NotIn".into(),
                values: Some(excluded.to_vec()),
            });
    }
    spec
}

/// Both terms at once: requirements concatenated, each kept once.
fn conjunction(a: &NodeSelectorTerm, b: &NodeSelectorTerm) -> NodeSelectorTerm {
    fn join(
        a: &Option<Vec<NodeSelectorRequirement>>,
        b: &Option<Vec<NodeSelectorRequirement>>,
    ) -> Option<Vec<NodeSelectorRequirement>> {
        let mut out: Vec<NodeSelectorRequirement> = a.clone().unwrap_or_default();
        for r in b.iter().flatten() {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        (!out.is_empty()).then_some(out)
    }
    NodeSelectorTerm {
        match_expressions: join(&a.match_expressions, &b.match_expressions),
        match_fields: join(&a.match_fields, &b.match_fields),
    }
}

/// Whether every requirement of `inner` is already in `outer` (so `outer` implies `inner`).
fn implies(outer: &NodeSelectorTerm, inner: &NodeSelectorTerm) -> bool {
    let subset = |o: &Option<Vec<NodeSelectorRequirement>>,
                  i: &Option<Vec<NodeSelectorRequirement>>| {
        i.iter()
            .flatten()
            .all(|r| o.iter().flatten().any(|x| x == r))
    };
    subset(&outer.match_expressions, &inner.match_expressions)
        && subset(&outer.match_fields, &inner.match_fields)
}

fn dedup(terms: Vec<NodeSelectorTerm>) -> Vec<NodeSelectorTerm> {
    let mut out: Vec<NodeSelectorTerm> = Vec::with_capacity(terms.len());
    for t in terms {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// How many terms `merge_terms` gives at most, without building them: a pod term that is
/// empty or already implies an imposed one stays one term (so a pod that was admitted before
/// is never refused when admitted again), any other becomes one per imposed term.
fn merged_len(pod_terms: &[NodeSelectorTerm], imposed: &[NodeSelectorTerm]) -> usize {
    if pod_terms.is_empty() {
        return imposed.len();
    }
    pod_terms
        .iter()
        .map(|p| {
            if is_empty_term(p) || imposed.iter().any(|i| implies(p, i)) {
                1
            } else {
                imposed.len()
            }
        })
        .fold(0usize, usize::saturating_add)
}

/// The pod's own terms P1..Pn ANDed with the imposed I1..Im: every Pi ∧ Ij. A Pi that
/// already implies some Ij is kept as it is (Pi ∧ (I1 ∨ … ∨ Im) = Pi then), which is what
/// makes admitting the same pod twice change nothing.
pub(crate) fn merge_terms(
    pod_terms: &[NodeSelectorTerm],
    imposed: &[NodeSelectorTerm],
) -> Vec<NodeSelectorTerm> {
    if pod_terms.is_empty() {
        return imposed.to_vec();
    }
    let mut out = Vec::new();
    for p in pod_terms {
        // An empty term matches nothing, and nothing ANDed with anything is still nothing:
        // crossing it would widen it to the imposed term.
        if is_empty_term(p) || imposed.iter().any(|i| implies(p, i)) {
            out.push(p.clone());
        } else {
            out.extend(imposed.iter().map(|i| conjunction(p, i)));
        }
    }
    dedup(out)
}

/// What placement reads of a pod, decoded straight from the admission request: every
/// other field is skipped while parsing, since a 5 KiB pod is mostly fields placement
/// neither reads nor changes.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct PodView {
    #[serde(default)]
    pub(crate) spec: Option<PodSpecView>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodSpecView {
    #[serde(default)]
    pub(crate) node_name: Option<String>,
    #[serde(default)]
    pub(crate) affinity: Option<AffinityView>,
    #[serde(default)]
    pub(crate) tolerations: Option<Vec<Toleration>>,
    #[serde(default)]
    pub(crate) runtime_class_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AffinityView {
    #[serde(default)]
    pub(crate) node_affinity: Option<NodeAffinityView>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct NodeAffinityView {
    #[serde(default, rename = "requiredDuringSchedulingIgnoredDuringExecution")]
    pub(crate) required: Option<NodeSelectorView>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodeSelectorView {
    #[serde(default)]
    pub(crate) node_selector_terms: Option<Vec<NodeSelectorTerm>>,
}

impl PodView {
    /// Whether the pod asks for the virtual nodes by naming the offloading RuntimeClass.
    pub(crate) fn opts_in(&self, runtime_class: &str) -> bool {
        opts_in(
            self.spec
                .as_ref()
                .and_then(|s| s.runtime_class_name.as_deref()),
            runtime_class,
        )
    }

    /// `spec.nodeName`, when set.
    pub(crate) fn node_name(&self) -> Option<&str> {
        self.spec
            .as_ref()?
            .node_name
            .as_deref()
            .filter(|n| !n.is_empty())
    }
}

/// Whether a pod's `runtimeClassName` is the offloading RuntimeClass (Liqo's per-pod
/// opt-in): such a pod goes to the selected clusters whatever the strategy.
pub(crate) fn opts_in(runtime_class_name: Option<&str>, runtime_class: &str) -> bool {
    !runtime_class.is_empty() && runtime_class_name == Some(runtime_class)
}

/// The placement of a pod that opted in: the namespace's selector, remotely only.
pub(crate) fn opted_in(spec: &NamespaceOffloadingSpec) -> NamespaceOffloadingSpec {
    NamespaceOffloadingSpec {
        pod_offloading_strategy: PodOffloadingStrategy::Remote,
        ..spec.clone()
    }
}

/// One JSON-patch operation. Placement only ever adds: "add" on an existing member
/// replaces it, so the same operation covers a field that is absent, null or present.
#[derive(Debug, Serialize)]
pub(crate) struct PatchOp {
    pub(crate) op: &'static str,
    pub(crate) path: &'static str,
    pub(crate) value: PatchValue,
}

/// What an operation adds, encoded straight from the typed terms (no JSON tree between).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum PatchValue {
    /// At `.../requiredDuringSchedulingIgnoredDuringExecution`.
    Required(Required),
    /// At `/spec/affinity/nodeAffinity`.
    NodeAffinity {
        #[serde(rename = "requiredDuringSchedulingIgnoredDuringExecution")]
        required: Required,
    },
    /// At `/spec/affinity`.
    Affinity {
        #[serde(rename = "nodeAffinity")]
        node_affinity: Box<PatchValue>,
    },
    Toleration(Toleration),
    Tolerations([Toleration; 1]),
}

#[derive(Debug, Serialize)]
pub(crate) struct Required {
    #[serde(rename = "nodeSelectorTerms")]
    pub(crate) node_selector_terms: Vec<NodeSelectorTerm>,
}

const REQUIRED_PATH: &str =
    "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution";

/// The operations that make `pod` obey `spec`: its required node-affinity terms merged
/// with the imposed ones (`imposed`: [`imposed_terms`] of `spec`, which the caller may have
/// cached), and the virtual-node toleration unless the strategy is Local.
/// Nothing else changes (nodeSelector, preferred terms, pod (anti-)affinity stay as they
/// are). Empty when the pod already obeys, so admitting it again changes nothing.
pub(crate) fn patch(
    pod: &PodView,
    spec: &NamespaceOffloadingSpec,
    imposed: &[NodeSelectorTerm],
) -> Result<Vec<PatchOp>, String> {
    let pod_spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let node_affinity = pod_spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref());
    let required = node_affinity.and_then(|n| n.required.as_ref());
    let own: &[NodeSelectorTerm] = required
        .and_then(|r| r.node_selector_terms.as_deref())
        .unwrap_or_default();
    if imposed.is_empty() {
        return Err("the namespace's NamespaceOffloading has podOffloadingStrategy Remote and every clusterSelector term is empty, so no node may run this pod: give the NamespaceOffloading a selector term that matches a cluster (delete and recreate it)".into());
    }
    let product = merged_len(own, imposed);
    if product > MAX_MERGED_TERMS {
        return Err(format!(
            "the pod's {} required node-affinity terms combined with the {} the offloading imposes would give up to {product} terms, more than {MAX_MERGED_TERMS}: use fewer nodeSelectorTerms",
            own.len(),
            imposed.len()
        ));
    }
    let mut ops = Vec::with_capacity(2);
    let merged = merge_terms(own, imposed);
    if required.is_none_or(|r| r.node_selector_terms.as_deref() != Some(&merged[..])) {
        let required = Required {
            node_selector_terms: merged,
        };
        // The deepest parent that exists receives the new subtree.
        let (path, value) = if node_affinity.is_some() {
            (REQUIRED_PATH, PatchValue::Required(required))
        } else if pod_spec.affinity.is_some() {
            (
                "/spec/affinity/nodeAffinity",
                PatchValue::NodeAffinity { required },
            )
        } else {
            (
                "/spec/affinity",
                PatchValue::Affinity {
                    node_affinity: Box::new(PatchValue::NodeAffinity { required }),
                },
            )
        };
        ops.push(PatchOp {
            op: "add",
            path,
            value,
        });
    }
    if spec.pod_offloading_strategy != PodOffloadingStrategy::Local {
        let toleration = virtual_node_toleration();
        match &pod_spec.tolerations {
            Some(list) if list.contains(&toleration) => {}
            Some(_) => ops.push(PatchOp {
                op: "add",
                path: "/spec/tolerations/-",
                value: PatchValue::Toleration(toleration),
            }),
            None => ops.push(PatchOp {
                op: "add",
                path: "/spec/tolerations",
                value: PatchValue::Tolerations([toleration]),
            }),
        }
    }
    Ok(ops)
}

/// What the pod webhook knows of a node, from its watch cache.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub labels: BTreeMap<String, String>,
}

/// A pod bound in advance (`spec.nodeName`) skips the scheduler, so the affinity cannot
/// protect it: check the node against the strategy and selector here instead.
pub(crate) fn check_preset_node(
    spec: &NamespaceOffloadingSpec,
    node_name: &str,
    node: Option<&NodeInfo>,
) -> Result<(), String> {
    let Some(node) = node else {
        return Err(format!(
            "spec.nodeName names node {node_name:?}, which does not exist: the offloading strategy cannot be checked; remove spec.nodeName and let the scheduler place the pod"
        ));
    };
    match node_violation(spec, node_name, &node.labels) {
        Some(why) => Err(format!(
            "spec.nodeName: node {node_name:?} {why} (podOffloadingStrategy {:?}); remove spec.nodeName or choose an allowed node",
            spec.pod_offloading_strategy
        )),
        None => Ok(()),
    }
}

/// Why a pod on the node named `node_name`, with these labels, breaks the strategy, if it
/// does.
pub(crate) fn node_violation(
    spec: &NamespaceOffloadingSpec,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'static str> {
    let is_virtual = crate::model::api::is_virtual_node(labels);
    match spec.pod_offloading_strategy {
        PodOffloadingStrategy::Local if is_virtual => Some(
            "is a virtual node (a remote cluster), but pods of this namespace must run locally",
        ),
        PodOffloadingStrategy::Remote if !is_virtual => {
            Some("is a local node, but pods of this namespace must run in a remote cluster")
        }
        PodOffloadingStrategy::Remote | PodOffloadingStrategy::LocalAndRemote
            if is_virtual && !selector::matches(&spec.cluster_selector, node_name, labels) =>
        {
            Some("is a virtual node of a remote cluster that the clusterSelector does not select")
        }
        _ => None,
    }
}

/// Whether a pod's own required node-affinity terms already keep it where the strategy
/// allows, so that the webhook would add nothing to them: every term is empty (matches no
/// node) or implies one of the imposed terms.
pub(crate) fn terms_conform(own: &[NodeSelectorTerm], spec: &NamespaceOffloadingSpec) -> bool {
    let imposed = imposed_terms(spec);
    !own.is_empty()
        && own
            .iter()
            .all(|p| is_empty_term(p) || imposed.iter().any(|i| implies(p, i)))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::model::api::{NamespaceMappingStrategy, offloading::default_cluster_selector};

    fn spec(strategy: PodOffloadingStrategy, selector: Option<Value>) -> NamespaceOffloadingSpec {
        NamespaceOffloadingSpec {
            namespace_mapping_strategy: NamespaceMappingStrategy::DefaultName,
            remote_namespace_name: None,
            pod_offloading_strategy: strategy,
            cluster_selector: selector
                .map(|s| serde_json::from_value(s).unwrap())
                .unwrap_or_else(default_cluster_selector),
        }
    }

    /// The pod as the API server stores it after our patch: decoded as the webhook
    /// decodes it, patched with the operations placement returns.
    fn mutate(pod: &Value, spec: &NamespaceOffloadingSpec) -> Result<Value, String> {
        let view: PodView = serde_json::from_value(pod.clone()).map_err(|e| e.to_string())?;
        let ops = patch(&view, spec, &imposed_terms(spec))?;
        let ops: json_patch::Patch =
            serde_json::from_value(serde_json::to_value(ops).unwrap()).unwrap();
        let mut out = pod.clone();
        json_patch::patch(&mut out, &ops).map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// Applies the JSON patch the webhook would return, as the API server does.
    fn admit(pod: &Value, spec: &NamespaceOffloadingSpec) -> Value {
        let mutated = mutate(pod, spec).unwrap();
        let patch = json_patch::diff(pod, &mutated);
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched, mutated);
        patched
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web", "namespace": "test-namespace"}, "spec": spec})
    }

    fn container() -> Value {
        json!([{"name": "app", "image": "nginx"}])
    }

    fn required(p: &Value) -> &Value {
        &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    }

    const VN: &str = "virtual-node";

    #[test]
    fn local_and_remote_default_matches_the_contract_example() {
        let out = admit(
            &pod(json!({"containers": container()})),
            &spec(PodOffloadingStrategy::LocalAndRemote, None),
        );
        assert_eq!(
            required(&out),
            &json!([
                {"matchExpressions": [{"key": "liqo.io/type", "operator": "In", "values": [VN]}]},
                {"matchExpressions": [{"key": "liqo.io/type", "operator": "NotIn", "values": [VN]}]},
            ])
        );
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": NOT_ALLOWED_TAINT, "operator": "Exists", "effect": "NoExecute"}])
        );
    }

    #[test]
    fn remote_appends_the_virtual_node_requirement_to_each_selected_term() {
        let selector = json!({"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "region", "operator": "In", "values": ["eu"]}]},
            {"matchExpressions": [{"key": "provider", "operator": "In", "values": ["azure"]}],
             "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["liqo-c2"]}]},
        ]});
        let out = admit(
            &pod(json!({"containers": container()})),
            &spec(PodOffloadingStrategy::Remote, Some(selector)),
        );
        assert_eq!(
            required(&out),
            &json!([
                {"matchExpressions": [
                    {"key": "region", "operator": "In", "values": ["eu"]},
                    {"key": "liqo.io/type", "operator": "In", "values": [VN]}]},
                {"matchExpressions": [
                    {"key": "provider", "operator": "In", "values": ["azure"]},
                    {"key": "liqo.io/type", "operator": "In", "values": [VN]}],
                 "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["liqo-c2"]}]},
            ])
        );
        assert_eq!(out["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn remote_with_default_selector_does_not_repeat_the_requirement() {
        let out = admit(
            &pod(json!({"containers": container()})),
            &spec(PodOffloadingStrategy::Remote, None),
        );
        assert_eq!(
            required(&out),
            &json!([{"matchExpressions": [{"key": "liqo.io/type", "operator": "In", "values": [VN]}]}])
        );
    }

    #[test]
    fn local_keeps_pods_off_virtual_nodes_without_toleration() {
        let p = pod(json!({
            "containers": container(),
            // A broad toleration would let it onto tainted virtual nodes: the affinity stops it.
            "tolerations": [{"operator": "Exists"}],
        }));
        let out = admit(&p, &spec(PodOffloadingStrategy::Local, None));
        assert_eq!(
            required(&out),
            &json!([{"matchExpressions": [{"key": "liqo.io/type", "operator": "NotIn", "values": [VN]}]}])
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"operator": "Exists"}]));
    }

    #[test]
    fn own_terms_are_crossed_with_imposed_ones_and_the_rest_left_alone() {
        let p = pod(json!({
            "containers": container(),
            "nodeSelector": {"disk": "ssd"},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                    ]},
                    "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference":
                        {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}}],
                },
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}]},
            },
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "x", "effect": "NoSchedule"}],
        }));
        let out = admit(&p, &spec(PodOffloadingStrategy::LocalAndRemote, None));
        let zone = json!({"key": "zone", "operator": "In", "values": ["a"]});
        let name = json!({"key": "metadata.name", "operator": "In", "values": ["n1"]});
        let vn = json!({"key": "liqo.io/type", "operator": "In", "values": [VN]});
        let not_vn = json!({"key": "liqo.io/type", "operator": "NotIn", "values": [VN]});
        assert_eq!(
            required(&out),
            &json!([
                {"matchExpressions": [zone, vn]},
                {"matchExpressions": [zone, not_vn]},
                {"matchExpressions": [vn], "matchFields": [name]},
                {"matchExpressions": [not_vn], "matchFields": [name]},
            ])
        );
        assert_eq!(out["spec"]["nodeSelector"], p["spec"]["nodeSelector"]);
        assert_eq!(
            out["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"],
            p["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        );
        assert_eq!(
            out["spec"]["affinity"]["podAntiAffinity"],
            p["spec"]["affinity"]["podAntiAffinity"]
        );
        assert_eq!(out["spec"]["tolerations"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn admitting_the_same_pod_twice_changes_nothing_more() {
        let selector = json!({"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "region", "operator": "In", "values": ["eu"]}]},
            {"matchExpressions": [{"key": "region", "operator": "In", "values": ["us"]}]},
        ]});
        for strategy in [
            PodOffloadingStrategy::Local,
            PodOffloadingStrategy::Remote,
            PodOffloadingStrategy::LocalAndRemote,
        ] {
            let s = spec(strategy, Some(selector.clone()));
            let p = pod(
                json!({"containers": container(), "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}),
            );
            let once = admit(&p, &s);
            let twice = mutate(&once, &s).unwrap();
            assert!(
                json_patch::diff(&once, &twice).0.is_empty(),
                "{strategy:?}: second admission changed {once} into {twice}"
            );
        }
    }

    #[test]
    fn null_and_missing_parents_are_created() {
        let p = pod(json!({"containers": container(), "affinity": null, "tolerations": null}));
        let out = admit(&p, &spec(PodOffloadingStrategy::Remote, None));
        assert_eq!(required(&out).as_array().unwrap().len(), 1);
        assert_eq!(out["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn empty_selector_terms_never_widen_to_every_virtual_node() {
        let eu =
            json!({"matchExpressions": [{"key": "region", "operator": "In", "values": ["eu"]}]});
        let selector = json!({"nodeSelectorTerms": [{}, eu]});
        let out = admit(
            &pod(json!({"containers": container()})),
            &spec(PodOffloadingStrategy::Remote, Some(selector)),
        );
        assert_eq!(
            required(&out),
            &json!([{"matchExpressions": [
                {"key": "region", "operator": "In", "values": ["eu"]},
                {"key": "liqo.io/type", "operator": "In", "values": [VN]}]}])
        );
        // Nothing but empty terms: no node may run the pod, and the denial says why.
        let nothing = spec(
            PodOffloadingStrategy::Remote,
            Some(json!({"nodeSelectorTerms": [{}]})),
        );
        let err = mutate(&pod(json!({"containers": container()})), &nothing).unwrap_err();
        assert!(err.contains("every clusterSelector term is empty"), "{err}");
    }

    #[test]
    fn a_pods_own_empty_term_stays_empty() {
        let zone =
            json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]});
        let p = pod(
            json!({"containers": container(), "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}, zone]}}}}),
        );
        let out = admit(&p, &spec(PodOffloadingStrategy::Local, None));
        assert_eq!(
            required(&out),
            &json!([{}, {"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a"]},
                {"key": "liqo.io/type", "operator": "NotIn", "values": [VN]}]}])
        );
    }

    #[test]
    fn too_many_merged_terms_are_denied_not_computed() {
        let terms: Vec<Value> = (0..200)
            .map(|i| json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": [format!("z{i}")]}]}))
            .collect();
        let p = pod(
            json!({"containers": container(), "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}),
        );
        // 200 terms are fine alone (Local imposes one term) ...
        assert_eq!(
            required(&admit(&p, &spec(PodOffloadingStrategy::Local, None)))
                .as_array()
                .unwrap()
                .len(),
            200
        );
        // ... but crossed with LocalAndRemote's two they would be 400.
        let err = mutate(&p, &spec(PodOffloadingStrategy::LocalAndRemote, None)).unwrap_err();
        assert!(err.contains("up to 400 terms, more than 256"), "{err}");
    }

    #[test]
    fn a_merged_pod_near_the_cap_is_admitted_again_unchanged() {
        // Remote to 20 clusters picked by name, a pod with 10 terms of its own: 200 terms.
        let names: Vec<Value> = (0..20)
            .map(|i| json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [format!("liqo-c{i}")]}]}))
            .collect();
        let s = spec(
            PodOffloadingStrategy::Remote,
            Some(json!({"nodeSelectorTerms": names})),
        );
        let terms: Vec<Value> = (0..10)
            .map(|i| json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": [format!("z{i}")]}]}))
            .collect();
        let p = pod(
            json!({"containers": container(), "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}),
        );
        let once = admit(&p, &s);
        assert_eq!(required(&once).as_array().unwrap().len(), 200);
        // Reinvoked (reinvocationPolicy IfNeeded): 200 terms x 20 imposed is no bound here,
        // since each already implies an imposed term.
        assert_eq!(admit(&once, &s), once);
    }

    #[test]
    fn unreadable_affinity_is_an_error_not_a_panic() {
        let p = pod(
            json!({"containers": container(), "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": "eu"}}}}),
        );
        // The webhook names the field (see admission::wire); here, just no panic.
        let err = mutate(&p, &spec(PodOffloadingStrategy::Remote, None)).unwrap_err();
        assert!(err.contains("expected a sequence"), "{err}");
        assert!(
            mutate(
                &json!({"kind": "Pod"}),
                &spec(PodOffloadingStrategy::Local, None)
            )
            .is_err()
        );
        let bad_tolerations = pod(json!({"containers": container(), "tolerations": {"a": 1}}));
        assert!(mutate(&bad_tolerations, &spec(PodOffloadingStrategy::Remote, None)).is_err());
    }

    #[test]
    fn preset_node_name_is_checked_against_strategy_and_selector() {
        let virtual_eu = NodeInfo {
            labels: [("liqo.io/type", VN), ("region", "eu")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
        };
        let local = NodeInfo::default();
        let eu = Some(json!({"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "region", "operator": "In", "values": ["eu"]}]}]}));
        let us = Some(json!({"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "region", "operator": "In", "values": ["us"]}]}]}));
        use PodOffloadingStrategy::*;
        assert!(check_preset_node(&spec(Local, None), "local", Some(&local)).is_ok());
        assert!(check_preset_node(&spec(Local, None), "vn", Some(&virtual_eu)).is_err());
        assert!(check_preset_node(&spec(Remote, eu.clone()), "vn", Some(&virtual_eu)).is_ok());
        assert!(check_preset_node(&spec(Remote, us.clone()), "vn", Some(&virtual_eu)).is_err());
        let err = check_preset_node(&spec(Remote, eu), "local", Some(&local)).unwrap_err();
        assert!(err.contains("must run in a remote cluster"), "{err}");
        assert!(check_preset_node(&spec(LocalAndRemote, us), "vn", Some(&virtual_eu)).is_err());
        assert!(check_preset_node(&spec(LocalAndRemote, None), "local", Some(&local)).is_ok());
        assert!(check_preset_node(&spec(LocalAndRemote, None), "ghost", None).is_err());
    }
}
