//! `--selector` of `offload namespace`, as liqoctl takes it: one label query per flag, its
//! requirements ANDed into one `nodeSelectorTerm`, several flags ORed. Besides liqoctl's
//! `k=v`, `k==v` and `k!=v`, the rest of kubectl's label-query syntax: `k`, `!k`,
//! `k in (a,b)` and `k notin (a,b)`.

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

use crate::model::labels::{validate_label_key, validate_label_value};

/// Why a `--selector` does not parse, with the query and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "--selector {query:?}: {why}; write requirements like 'region=eu,provider!=aws' (also 'key', '!key', 'key in (a,b)', 'key notin (a,b)'), one --selector per alternative"
)]
pub struct SelectorError {
    query: String,
    why: String,
}

/// Parses one `--selector` into the term it stands for.
pub fn parse_term(query: &str) -> Result<NodeSelectorTerm, SelectorError> {
    let fail = |why: String| SelectorError {
        query: query.to_owned(),
        why,
    };
    let mut requirements = Vec::new();
    for part in split_top_level(query).map_err(&fail)? {
        requirements.push(requirement(part.trim()).map_err(&fail)?);
    }
    if requirements.is_empty() {
        return Err(fail("it has no requirement".into()));
    }
    Ok(NodeSelectorTerm {
        match_expressions: Some(requirements),
        match_fields: None,
    })
}

/// Splits at the commas outside parentheses.
fn split_top_level(query: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in query.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or("a ')' closes nothing".to_owned())?
            }
            ',' if depth == 0 => {
                parts.push(&query[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err("a '(' is not closed".into());
    }
    parts.push(&query[start..]);
    if parts.iter().any(|p| p.trim().is_empty()) && query.trim().is_empty() {
        return Ok(Vec::new());
    }
    if let Some(empty) = parts.iter().position(|p| p.trim().is_empty()) {
        return Err(format!("requirement {} is empty", empty + 1));
    }
    Ok(parts)
}

fn requirement(text: &str) -> Result<NodeSelectorRequirement, String> {
    let made = |key: &str, operator: &str, values: Vec<String>| {
        let key = key.trim();
        validate_label_key(key).map_err(|e| format!("label key {key:?}: {e}"))?;
        for value in &values {
            validate_label_value(value).map_err(|e| format!("label value {value:?}: {e}"))?;
        }
        Ok(NodeSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: (!values.is_empty()).then_some(values),
        })
    };
    if let Some((key, value)) = text.split_once("!=") {
        return made(key, "NotIn", vec![value.trim().to_owned()]);
    }
    if let Some((key, value)) = text.split_once("==").or_else(|| text.split_once('=')) {
        return made(key, "In", vec![value.trim().to_owned()]);
    }
    if let Some(open) = text.find('(') {
        let head = text[..open].trim();
        let list = text[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| format!("{text:?}: the set must end with ')'"))?;
        let values: Vec<String> = list.split(',').map(|v| v.trim().to_owned()).collect();
        if values.iter().any(String::is_empty) {
            return Err(format!("{text:?}: a value of the set is empty"));
        }
        let (key, operator) = match head.rsplit_once(char::is_whitespace) {
            Some((key, "in")) => (key, "In"),
            Some((key, "notin")) => (key, "NotIn"),
            _ => {
                return Err(format!(
                    "{text:?}: a set needs 'in' or 'notin' between the key and '('"
                ));
            }
        };
        return made(key, operator, values);
    }
    if let Some(key) = text.strip_prefix('!') {
        return made(key, "DoesNotExist", Vec::new());
    }
    if text.contains(char::is_whitespace) {
        return Err(format!("{text:?} is not a requirement"));
    }
    made(text, "Exists", Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(query: &str) -> Vec<(String, String, Vec<String>)> {
        parse_term(query)
            .unwrap()
            .match_expressions
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.operator, r.values.unwrap_or_default()))
            .collect()
    }

    fn one(key: &str, op: &str, values: &[&str]) -> (String, String, Vec<String>) {
        (
            key.into(),
            op.into(),
            values.iter().map(|v| (*v).to_owned()).collect(),
        )
    }

    #[test]
    fn liqoctl_queries_become_one_anded_term() {
        assert_eq!(
            ops("region=eu,provider!=aws, tier==gold"),
            [
                one("region", "In", &["eu"]),
                one("provider", "NotIn", &["aws"]),
                one("tier", "In", &["gold"])
            ]
        );
        assert_eq!(
            ops("gpu,!spot,zone in (a, b),liqo.io/provider notin (kind)"),
            [
                one("gpu", "Exists", &[]),
                one("spot", "DoesNotExist", &[]),
                one("zone", "In", &["a", "b"]),
                one("liqo.io/provider", "NotIn", &["kind"])
            ]
        );
        // An empty value is a valid label value.
        assert_eq!(ops("region="), [one("region", "In", &[""])]);
    }

    #[test]
    fn bad_queries_name_the_problem_and_the_syntax() {
        for (query, why) in [
            ("", "it has no requirement"),
            ("region=eu,,x=y", "requirement 2 is empty"),
            ("zone in (a,b", "a '(' is not closed"),
            ("zone in a,b)", "a ')' closes nothing"),
            ("zone within (a)", "needs 'in' or 'notin'"),
            ("region=e u", "label value \"e u\""),
            ("Bad Key=x", "label key \"Bad Key\""),
            ("zone in (a,)", "a value of the set is empty"),
        ] {
            let err = parse_term(query).unwrap_err().to_string();
            assert!(err.contains(why), "{query}: {err}");
            assert!(err.contains("region=eu,provider!=aws"), "{err}");
        }
    }
}
