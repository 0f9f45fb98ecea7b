//! NamespaceOffloading admission: defaults written into the stored object, and the checks
//! that reject configurations which cannot work. Both read the object as plain JSON, so a
//! value outside the enums gets a message of ours rather than a decoding error.

use k8s_openapi::api::core::v1::NodeSelector;
use serde_json::Value;

use crate::model::{
    api::{
        DNS1123_LABEL_MAX, NamespaceMappingStrategy, OFFLOADING_NAME, PodOffloadingStrategy,
        offloading::default_cluster_selector,
    },
    labels::validate_dns_label,
    markers::OFFLOADING_FINALIZER,
    selector,
};

/// The object with Liqo's defaults filled in: both strategies, and the every-cluster
/// selector when `clusterSelector` is omitted or has no terms.
pub(crate) fn with_defaults(object: &Value) -> Value {
    let mut out = object.clone();
    let Some(root) = out.as_object_mut() else {
        return out;
    };
    let spec = root
        .entry("spec")
        .or_insert_with(|| Value::Object(Default::default()));
    if spec.is_null() {
        *spec = Value::Object(Default::default());
    }
    let Some(spec) = spec.as_object_mut() else {
        return out;
    };
    let mut default = |key: &str, value: Value| {
        if spec.get(key).is_none_or(Value::is_null) {
            spec.insert(key.into(), value);
        }
    };
    default("namespaceMappingStrategy", "DefaultName".into());
    default("podOffloadingStrategy", "LocalAndRemote".into());
    let no_terms = spec
        .get("clusterSelector")
        .and_then(|s| s.get("nodeSelectorTerms"))
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_terms {
        spec.insert(
            "clusterSelector".into(),
            serde_json::to_value(default_cluster_selector()).unwrap_or(Value::Null),
        );
    }
    out
}

/// The object as created: its defaults, and the controller's finalizer already in place, so
/// the controller needs no write of its own to add it (only `offloading` gets it: any
/// other name is refused, and would never be reconciled to remove it).
pub(crate) fn as_created(object: &Value) -> Value {
    let mut out = with_defaults(object);
    let named = out.pointer("/metadata/name").and_then(Value::as_str) == Some(OFFLOADING_NAME);
    let Some(metadata) = out.get_mut("metadata").and_then(Value::as_object_mut) else {
        return out;
    };
    if !named {
        return out;
    }
    let finalizers = metadata
        .entry("finalizers")
        .or_insert_with(|| Value::Array(Vec::new()));
    if finalizers.is_null() {
        *finalizers = Value::Array(Vec::new());
    }
    if let Some(list) = finalizers.as_array_mut()
        && !list.iter().any(|f| f == OFFLOADING_FINALIZER)
    {
        list.push(OFFLOADING_FINALIZER.into());
    }
    out
}

/// Namespaces that hold the cluster's own machinery: their pods must never wait on this
/// product's webhook (the pod webhooks' selectors leave them out), nor run elsewhere.
pub(crate) const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Refuses the offloading of the system namespaces and of the manager's own.
pub(crate) fn offloadable(namespace: &str, own_namespace: &str) -> Result<(), String> {
    if SYSTEM_NAMESPACES.contains(&namespace) {
        return Err(format!(
            "namespace {namespace} holds the cluster's own components and cannot be offloaded: offload the namespaces of your applications instead"
        ));
    }
    if namespace == own_namespace {
        return Err(format!(
            "namespace {namespace} is where namespace-offloading itself runs and cannot be offloaded (its manager must always be able to start here): offload the namespaces of your applications instead"
        ));
    }
    Ok(())
}

pub(crate) fn validate_create(
    name: &str,
    namespace: &str,
    object: &Value,
    local_cluster_id: &str,
) -> Result<Vec<String>, String> {
    if name != OFFLOADING_NAME {
        return Err(format!(
            "a NamespaceOffloading must be named {OFFLOADING_NAME:?} (one configuration per namespace); {name:?} would have no effect: create it as {OFFLOADING_NAME:?}"
        ));
    }
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let mut problems = Vec::new();
    let mapping = check_enum(
        &spec,
        "namespaceMappingStrategy",
        &NamespaceMappingStrategy::VALUES,
        &mut problems,
    );
    check_enum(
        &spec,
        "podOffloadingStrategy",
        &PodOffloadingStrategy::VALUES,
        &mut problems,
    );
    let mut warnings = Vec::new();
    match spec.get("clusterSelector").filter(|s| !s.is_null()) {
        None => {}
        Some(raw) => match serde_json::from_value::<NodeSelector>(raw.clone()) {
            Ok(s) => {
                problems.extend(selector::validate(&s, "spec.clusterSelector"));
                let remote = spec.get("podOffloadingStrategy").and_then(Value::as_str)
                    == Some("Remote");
                let all_empty = s.node_selector_terms.iter().all(crate::model::admission::pod::is_empty_term);
                // `[]` is defaulted by the mutating webhook; reaching here means it was not.
                if remote && all_empty {
                    problems.push("spec.clusterSelector: every term is empty, so it selects no cluster, and podOffloadingStrategy Remote would leave pods nowhere to run: add matchExpressions, or omit clusterSelector to select every cluster".into());
                }
                for (i, t) in s.node_selector_terms.iter().enumerate() {
                    if t.match_expressions.as_ref().is_none_or(Vec::is_empty)
                        && t.match_fields.as_ref().is_none_or(Vec::is_empty)
                    {
                        warnings.push(format!(
                            "spec.clusterSelector.nodeSelectorTerms[{i}] is empty and selects no cluster"
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!(
                "spec.clusterSelector: not a valid NodeSelector ({e}): use nodeSelectorTerms with matchExpressions or matchFields"
            )),
        },
    }
    check_selected_name(&spec, mapping.as_deref(), &mut problems);
    if mapping.as_deref().unwrap_or("DefaultName") == "DefaultName" {
        let remote = format!("{namespace}-{local_cluster_id}");
        if remote.len() > DNS1123_LABEL_MAX {
            let max = DNS1123_LABEL_MAX.saturating_sub(local_cluster_id.len() + 1);
            problems.push(format!(
                "the remote namespace name {remote:?} would have {} characters, over the {DNS1123_LABEL_MAX}-character limit of a namespace name: with namespaceMappingStrategy DefaultName the local namespace name can have at most {max} characters, and {namespace:?} has {}; use a shorter namespace or namespaceMappingStrategy EnforceSameName",
                remote.len(),
                namespace.len()
            ));
        }
    }
    if problems.is_empty() {
        Ok(warnings)
    } else {
        Err(problems.join("; "))
    }
}

/// `SelectedName` needs its name, a valid one, and no other strategy takes one (Liqo
/// ignores it there; here it is refused, so that a forgotten strategy is not a silent
/// DefaultName).
fn check_selected_name(spec: &Value, mapping: Option<&str>, problems: &mut Vec<String>) {
    let selected = mapping == Some("SelectedName");
    let name = spec.get("remoteNamespaceName").filter(|v| !v.is_null());
    match (selected, name) {
        (true, None) => problems.push(
            "spec.remoteNamespaceName is required with namespaceMappingStrategy SelectedName: set the name the remote namespaces get".into(),
        ),
        (true, Some(Value::String(name))) => {
            if let Err(why) = validate_dns_label(name) {
                problems.push(format!("spec.remoteNamespaceName: {why}"));
            }
        }
        (true, Some(other)) => problems.push(format!(
            "spec.remoteNamespaceName: {other} is not a string: give the namespace name as a string"
        )),
        (false, Some(_)) => problems.push(
            "spec.remoteNamespaceName is used only with namespaceMappingStrategy SelectedName: remove it, or set namespaceMappingStrategy to SelectedName".into(),
        ),
        (false, None) => {}
    }
}

fn check_enum(
    spec: &Value,
    key: &str,
    allowed: &[&str],
    problems: &mut Vec<String>,
) -> Option<String> {
    match spec.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Some(s.clone()),
        Some(other) => {
            problems.push(format!(
                "spec.{key}: unsupported value {other}: use one of {}",
                allowed.join(", ")
            ));
            None
        }
    }
}

/// What the validating webhook decides for an UPDATE: the spec may not change (metadata
/// and finalizers may, so the controller can always finish its work).
pub(crate) fn validate_update(old: &Value, new: &Value) -> Result<(), String> {
    let old_spec = with_defaults(old).get("spec").cloned();
    let new_spec = with_defaults(new).get("spec").cloned();
    if old_spec == new_spec {
        Ok(())
    } else {
        Err(
            "spec is immutable: delete the NamespaceOffloading and create it again with the new configuration (the remote namespaces are recreated)"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ID: &str = "2b9d6e3c-8f1a-4c55-9e3b-7d2f0a1c4e5b";

    fn nso(spec: Value) -> Value {
        json!({"apiVersion": "offloading.liqo.io/v1alpha1", "kind": "NamespaceOffloading",
               "metadata": {"name": "offloading", "namespace": "test-namespace"}, "spec": spec})
    }

    #[test]
    fn system_namespaces_and_the_managers_own_are_never_offloaded() {
        for ns in ["kube-system", "kube-public", "kube-node-lease"] {
            let err = offloadable(ns, "liqo").unwrap_err();
            assert!(err.contains("cannot be offloaded"), "{err}");
        }
        let err = offloadable("liqo", "liqo").unwrap_err();
        assert!(
            err.contains("where namespace-offloading itself runs"),
            "{err}"
        );
        assert!(offloadable("shop", "liqo").is_ok());
    }

    #[test]
    fn defaults_fill_what_is_missing_only() {
        let out = with_defaults(&json!({"metadata": {"name": "offloading"}}));
        assert_eq!(out["spec"]["namespaceMappingStrategy"], "DefaultName");
        assert_eq!(out["spec"]["podOffloadingStrategy"], "LocalAndRemote");
        assert_eq!(
            out["spec"]["clusterSelector"],
            json!({"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]}]})
        );
        let empty_terms =
            with_defaults(&nso(json!({"clusterSelector": {"nodeSelectorTerms": []}})));
        assert_eq!(
            empty_terms["spec"]["clusterSelector"],
            out["spec"]["clusterSelector"]
        );

        let custom = nso(json!({
            "namespaceMappingStrategy": "EnforceSameName",
            "podOffloadingStrategy": "Remote",
            "clusterSelector": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "region", "operator": "In", "values": ["eu"]}]}]},
        }));
        assert_eq!(with_defaults(&custom), custom);
    }

    fn v1beta1(spec: Value) -> Value {
        let mut object = nso(spec);
        object["apiVersion"] = "offloading.liqo.io/v1beta1".into();
        object
    }

    #[test]
    fn selected_name_takes_a_valid_name_and_no_other_strategy_takes_one() {
        let selected = |name: Value| {
            v1beta1(
                json!({"namespaceMappingStrategy": "SelectedName", "remoteNamespaceName": name}),
            )
        };
        assert!(validate_create("offloading", "ns", &selected("shop-eu".into()), ID).is_ok());
        // 63 characters fit; 64 do not.
        let longest = "a".repeat(63);
        assert!(validate_create("offloading", "ns", &selected(longest.clone().into()), ID).is_ok());
        let err = validate_create(
            "offloading",
            "ns",
            &selected(format!("{longest}b").into()),
            ID,
        )
        .unwrap_err();
        assert!(
            err.contains("spec.remoteNamespaceName: a namespace name has 1 to 63 characters"),
            "{err}"
        );
        for bad in ["Shop", "-shop", "shop-", "shop.eu", ""] {
            let err = validate_create("offloading", "ns", &selected(bad.into()), ID).unwrap_err();
            assert!(
                err.starts_with("spec.remoteNamespaceName: "),
                "{bad}: {err}"
            );
        }
        let err = validate_create("offloading", "ns", &selected(7.into()), ID).unwrap_err();
        assert!(err.contains("7 is not a string"), "{err}");

        let err = validate_create(
            "offloading",
            "ns",
            &v1beta1(json!({"namespaceMappingStrategy": "SelectedName"})),
            ID,
        )
        .unwrap_err();
        assert!(
            err.contains(
                "spec.remoteNamespaceName is required with namespaceMappingStrategy SelectedName"
            ),
            "{err}"
        );
        for other in [
            json!({}),
            json!({"namespaceMappingStrategy": "EnforceSameName"}),
        ] {
            let mut spec = other.clone();
            spec["remoteNamespaceName"] = "shop".into();
            let err = validate_create("offloading", "ns", &v1beta1(spec), ID).unwrap_err();
            assert!(
                err.contains("used only with namespaceMappingStrategy SelectedName"),
                "{err}"
            );
        }
        // A SelectedName escapes the DefaultName length limit of the local name.
        let long_namespace = "n".repeat(40);
        assert!(
            validate_create("offloading", &long_namespace, &selected("short".into()), ID).is_ok()
        );
    }

    #[test]
    fn liqo_0_10_v1alpha1_manifests_with_selected_name_are_accepted() {
        // Liqo's v1alpha1 has had SelectedName since 0.10.2: the same rules in both versions.
        let alpha =
            nso(json!({"namespaceMappingStrategy": "SelectedName", "remoteNamespaceName": "shop"}));
        assert!(validate_create("offloading", "ns", &alpha, ID).is_ok());
        let err = validate_create(
            "offloading",
            "ns",
            &nso(json!({"namespaceMappingStrategy": "SelectedName"})),
            ID,
        )
        .unwrap_err();
        assert!(
            err.contains("spec.remoteNamespaceName is required"),
            "{err}"
        );
    }

    #[test]
    fn only_the_name_offloading_is_accepted() {
        let err = validate_create("custom", "ns", &nso(json!({})), ID).unwrap_err();
        assert!(err.contains("must be named \"offloading\""), "{err}");
        assert!(validate_create("offloading", "ns", &nso(json!({})), ID).is_ok());
    }

    #[test]
    fn enum_values_are_checked_with_the_allowed_list() {
        let err = validate_create(
            "offloading",
            "ns",
            &nso(json!({"podOffloadingStrategy": "Anywhere", "namespaceMappingStrategy": 3})),
            ID,
        )
        .unwrap_err();
        assert!(err.contains("spec.namespaceMappingStrategy: unsupported value 3: use one of EnforceSameName, DefaultName, SelectedName"), "{err}");
        assert!(err.contains("spec.podOffloadingStrategy: unsupported value \"Anywhere\": use one of Local, Remote, LocalAndRemote"), "{err}");
    }

    #[test]
    fn selector_problems_are_reported() {
        let err = validate_create(
            "offloading",
            "ns",
            &nso(
                json!({"clusterSelector": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "cpu", "operator": "Gt", "values": ["two"]}]}]}}),
            ),
            ID,
        )
        .unwrap_err();
        assert!(
            err.contains("matchExpressions[0].values: operator Gt takes exactly one integer"),
            "{err}"
        );
        let err = validate_create(
            "offloading",
            "ns",
            &nso(json!({"clusterSelector": "eu"})),
            ID,
        )
        .unwrap_err();
        assert!(
            err.contains("spec.clusterSelector: not a valid NodeSelector"),
            "{err}"
        );
        let warnings = validate_create(
            "offloading",
            "ns",
            &nso(json!({"clusterSelector": {"nodeSelectorTerms": [{}]}})),
            ID,
        )
        .unwrap();
        assert_eq!(warnings.len(), 1);
        // The same with Remote cannot work: pods would have nowhere to run.
        let err = validate_create(
            "offloading",
            "ns",
            &nso(json!({"podOffloadingStrategy": "Remote", "clusterSelector": {"nodeSelectorTerms": [{}]}})),
            ID,
        )
        .unwrap_err();
        assert!(err.contains("every term is empty"), "{err}");
        // Values must be label values, or every pod would later be rejected for them.
        let err = validate_create(
            "offloading",
            "ns",
            &nso(
                json!({"clusterSelector": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "region", "operator": "In", "values": ["eu", "eu west"]}]}]}}),
            ),
            ID,
        )
        .unwrap_err();
        assert!(
            err.contains("matchExpressions[0].values[1]: \"eu west\" is not a valid label value"),
            "{err}"
        );
    }

    #[test]
    fn default_name_must_fit_a_dns_label() {
        let ok = "a".repeat(26);
        assert!(validate_create("offloading", &ok, &nso(json!({})), ID).is_ok());
        let long = "a".repeat(27);
        let err = validate_create("offloading", &long, &nso(json!({})), ID).unwrap_err();
        assert!(err.contains("would have 64 characters"), "{err}");
        assert!(
            err.contains("at most 26 characters, and \"aaaaaaaaaaaaaaaaaaaaaaaaaaa\" has 27"),
            "{err}"
        );
        let same = nso(json!({"namespaceMappingStrategy": "EnforceSameName"}));
        assert!(validate_create("offloading", &long, &same, ID).is_ok());
    }

    #[test]
    fn spec_changes_are_rejected_but_metadata_changes_pass() {
        let old = with_defaults(&nso(json!({})));
        let mut finalized = old.clone();
        finalized["metadata"]["finalizers"] = json!(["offloading.liqo.io/remote-namespaces"]);
        assert!(validate_update(&old, &finalized).is_ok());
        // Re-applying the original manifest, without the defaults, changes nothing.
        assert!(validate_update(&old, &nso(json!({}))).is_ok());
        let changed = nso(json!({"podOffloadingStrategy": "Remote"}));
        let err = validate_update(&old, &changed).unwrap_err();
        assert!(
            err.contains("delete the NamespaceOffloading and create it again"),
            "{err}"
        );
    }
}
