//! `clusterSelector` (a core/v1 `NodeSelector`): syntax checks and matching against the
//! labels of the virtual nodes that stand for remote clusters, with Kubernetes semantics:
//! terms are ORed, a term's requirements ANDed, an empty term matches nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};

use crate::model::labels::validate_label_key;

/// Every problem found in a selector, each naming the field and how to fix it.
pub(crate) fn validate(selector: &NodeSelector, path: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (t, term) in selector.node_selector_terms.iter().enumerate() {
        let term_path = format!("{path}.nodeSelectorTerms[{t}]");
        for (e, req) in term.match_expressions.iter().flatten().enumerate() {
            let p = format!("{term_path}.matchExpressions[{e}]");
            if let Err(why) = validate_label_key(&req.key) {
                problems.push(format!("{p}.key: invalid label key {:?}: {why}", req.key));
            }
            problems.extend(validate_operator(req, &p));
            if matches!(req.operator.as_str(), "In" | "NotIn") {
                for (v, value) in values(req).iter().enumerate() {
                    if let Err(why) = crate::model::labels::validate_label_value(value) {
                        problems.push(format!(
                            "{p}.values[{v}]: {value:?} is not a valid label value: {why}"
                        ));
                    }
                }
            }
        }
        for (e, req) in term.match_fields.iter().flatten().enumerate() {
            let p = format!("{term_path}.matchFields[{e}]");
            if req.key != "metadata.name" {
                problems.push(format!(
                    "{p}.key: unsupported field {:?}: only \"metadata.name\" (the virtual node's name) can be matched",
                    req.key
                ));
            }
            match req.operator.as_str() {
                "In" | "NotIn" if values(req).len() == 1 => {}
                "In" | "NotIn" => problems.push(format!(
                    "{p}.values: must hold exactly one node name with operator {}",
                    req.operator
                )),
                other => problems.push(format!(
                    "{p}.operator: unsupported operator {other:?} for matchFields: use In or NotIn"
                )),
            }
        }
    }
    problems
}

fn values(req: &NodeSelectorRequirement) -> &[String] {
    req.values.as_deref().unwrap_or_default()
}

fn validate_operator(req: &NodeSelectorRequirement, path: &str) -> Option<String> {
    let n = values(req).len();
    match req.operator.as_str() {
        "In" | "NotIn" if n == 0 => Some(format!(
            "{path}.values: must list at least one value with operator {}",
            req.operator
        )),
        "Exists" | "DoesNotExist" if n > 0 => Some(format!(
            "{path}.values: must be empty with operator {} (found {n})",
            req.operator
        )),
        "Gt" | "Lt" if n != 1 || values(req)[0].parse::<i64>().is_err() => Some(format!(
            "{path}.values: operator {} takes exactly one integer value (found {:?})",
            req.operator,
            values(req)
        )),
        "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => None,
        other => Some(format!(
            "{path}.operator: unsupported operator {other:?}: use one of In, NotIn, Exists, DoesNotExist, Gt, Lt"
        )),
    }
}

/// Whether a node (its name and labels) satisfies the selector.
pub(crate) fn matches(
    selector: &NodeSelector,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|term| term_matches(term, name, labels))
}

fn term_matches(term: &NodeSelectorTerm, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(name);
            value.is_some() && requirement_matches(r, value)
        })
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let vals = values(req);
    match (req.operator.as_str(), value) {
        ("In", Some(v)) => vals.iter().any(|x| x == v),
        ("In", None) => false,
        ("NotIn", Some(v)) => !vals.iter().any(|x| x == v),
        ("NotIn", None) => true,
        ("Exists", v) => v.is_some(),
        ("DoesNotExist", v) => v.is_none(),
        (op @ ("Gt" | "Lt"), Some(v)) => {
            let (Ok(actual), Some(Ok(bound))) =
                (v.parse::<i64>(), vals.first().map(|b| b.parse::<i64>()))
            else {
                return false;
            };
            if op == "Gt" {
                actual > bound
            } else {
                actual < bound
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn selector(v: serde_json::Value) -> NodeSelector {
        serde_json::from_value(v).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn terms_are_ored_and_expressions_anded() {
        let s = selector(json!({"nodeSelectorTerms": [
            {"matchExpressions": [
                {"key": "region", "operator": "In", "values": ["eu"]},
                {"key": "provider", "operator": "NotIn", "values": ["aws"]},
            ]},
            {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
        ]}));
        assert!(matches(
            &s,
            "n",
            &labels(&[("region", "eu"), ("provider", "azure")])
        ));
        assert!(!matches(
            &s,
            "n",
            &labels(&[("region", "eu"), ("provider", "aws")])
        ));
        assert!(matches(
            &s,
            "n",
            &labels(&[("provider", "aws"), ("tier", "gold")])
        ));
        assert!(!matches(&s, "n", &labels(&[("region", "us")])));
    }

    #[test]
    fn operators_follow_kubernetes() {
        let one = |op: &str, vals: &[&str]| {
            selector(json!({"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "k", "operator": op, "values": vals}
            ]}]}))
        };
        let with = labels(&[("k", "5")]);
        let without = labels(&[]);
        assert!(
            matches(&one("NotIn", &["x"]), "n", &without),
            "NotIn matches a missing key"
        );
        assert!(matches(&one("DoesNotExist", &[]), "n", &without));
        assert!(!matches(&one("DoesNotExist", &[]), "n", &with));
        assert!(matches(&one("Gt", &["4"]), "n", &with));
        assert!(!matches(&one("Gt", &["5"]), "n", &with));
        assert!(matches(&one("Lt", &["6"]), "n", &with));
        assert!(!matches(&one("Lt", &["6"]), "n", &labels(&[("k", "six")])));
        assert!(!matches(&one("Gt", &["1"]), "n", &without));
    }

    #[test]
    fn match_fields_select_by_node_name_and_empty_terms_match_nothing() {
        let s = selector(json!({"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["liqo-a"]}]},
        ]}));
        assert!(matches(&s, "liqo-a", &labels(&[])));
        assert!(!matches(&s, "liqo-b", &labels(&[])));
        let empty = selector(json!({"nodeSelectorTerms": [{}]}));
        assert!(!matches(&empty, "liqo-a", &labels(&[("k", "v")])));
    }

    #[test]
    fn validation_names_each_problem() {
        let s = selector(json!({"nodeSelectorTerms": [{
            "matchExpressions": [
                {"key": "region", "operator": "in", "values": ["eu"]},
                {"key": "-bad", "operator": "Exists"},
                {"key": "zone", "operator": "In"},
                {"key": "tier", "operator": "Exists", "values": ["x"]},
                {"key": "cpu", "operator": "Gt", "values": ["many"]},
                {"key": "cpu", "operator": "Lt", "values": ["1", "2"]},
                {"key": "example.com/ok", "operator": "Gt", "values": ["3"]},
            ],
            "matchFields": [
                {"key": "metadata.labels", "operator": "In", "values": ["a"]},
                {"key": "metadata.name", "operator": "Exists"},
            ],
        }]}));
        let problems = validate(&s, "spec.clusterSelector");
        let p = "spec.clusterSelector.nodeSelectorTerms[0]";
        let expected = [
            format!("{p}.matchExpressions[0].operator: unsupported operator \"in\""),
            format!("{p}.matchExpressions[1].key: invalid label key \"-bad\""),
            format!("{p}.matchExpressions[2].values: must list at least one value"),
            format!("{p}.matchExpressions[3].values: must be empty"),
            format!("{p}.matchExpressions[4].values: operator Gt takes exactly one integer"),
            format!("{p}.matchExpressions[5].values: operator Lt takes exactly one integer"),
            format!("{p}.matchFields[0].key: unsupported field \"metadata.labels\""),
            format!("{p}.matchFields[1].operator: unsupported operator \"Exists\""),
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (got, want) in problems.iter().zip(&expected) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }
}
