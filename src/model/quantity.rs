//! Kubernetes resource quantities ("3800m", "16Gi", "1.5e3"), as far as a virtual node's
//! allocatable needs: a remote cluster's Ready nodes' total, less what its pods request.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The value in base units (cores, bytes, pods), or `None` if it is not a quantity.
pub(crate) fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    // "1e400" or "0E310" (infinite, or 0 × ∞): not a usable amount.
    let value = number * factor;
    value.is_finite().then_some(value)
}

/// A base-unit value as a quantity: whole numbers plain, fractions in milli-units.
pub(crate) fn format(value: f64) -> Quantity {
    if (value - value.round()).abs() < 1e-9 {
        Quantity(format!("{}", value.round() as i64))
    } else {
        Quantity(format!("{}m", (value * 1000.0).round() as i64))
    }
}

/// Adds up resource lists (such as the allocatable of every Ready node); entries that do
/// not parse are skipped.
pub(crate) fn sum<'a>(
    lists: impl IntoIterator<Item = &'a BTreeMap<String, Quantity>>,
) -> BTreeMap<String, Quantity> {
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    for list in lists {
        for (name, q) in list {
            if let Some(v) = parse(&q.0) {
                *totals.entry(name.clone()).or_default() += v;
            }
        }
    }
    totals.into_iter().map(|(k, v)| (k, format(v))).collect()
}

/// What is left of `total` once `used` is taken: per resource, never below zero;
/// resources not in `total` are not offered.
pub(crate) fn remaining(
    total: &BTreeMap<String, Quantity>,
    used: &BTreeMap<String, f64>,
) -> BTreeMap<String, Quantity> {
    total
        .iter()
        .filter_map(|(name, q)| {
            let left = parse(&q.0)? - used.get(name).copied().unwrap_or_default();
            Some((name.clone(), format(left.max(0.0))))
        })
        .collect()
}

/// What a pod asks of its node, in base units: its containers' requests (an init container
/// asks at most for the largest of them while it runs), its overhead, and one pod.
pub(crate) fn pod_requests(pod: &k8s_openapi::api::core::v1::Pod) -> BTreeMap<String, f64> {
    let mut total: BTreeMap<String, f64> = BTreeMap::from([("pods".to_owned(), 1.0)]);
    let Some(spec) = pod.spec.as_ref() else {
        return total;
    };
    let requests = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default()
    };
    let mut containers: BTreeMap<String, f64> = BTreeMap::new();
    for c in &spec.containers {
        for (name, q) in requests(c) {
            *containers.entry(name).or_default() += parse(&q.0).unwrap_or_default();
        }
    }
    for c in spec.init_containers.iter().flatten() {
        for (name, q) in requests(c) {
            let v = parse(&q.0).unwrap_or_default();
            let e = containers.entry(name).or_default();
            *e = e.max(v);
        }
    }
    for (name, q) in spec.overhead.iter().flatten() {
        *containers.entry(name.clone()).or_default() += parse(&q.0).unwrap_or_default();
    }
    for (name, v) in containers {
        *total.entry(name).or_default() += v;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_suffixes() {
        assert_eq!(parse("4"), Some(4.0));
        assert!((parse("3800m").unwrap() - 3.8).abs() < 1e-9);
        assert_eq!(parse("16Gi"), Some(16.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1k"), Some(1000.0));
        assert_eq!(parse("1.5e3"), Some(1500.0));
        assert_eq!(parse("lots"), None);
        assert_eq!(parse("4Q"), None);
    }

    #[test]
    fn amounts_past_a_float_are_not_quantities() {
        // Found by the fuzz tests (model::fuzz): 0 × ∞ was NaN, and poisoned the sums.
        assert_eq!(parse("0E310"), None);
        assert_eq!(parse("1e400"), None);
        assert_eq!(parse("9E18Ei"), None);
        assert!(parse("1E308").is_some_and(f64::is_finite));
    }

    #[test]
    fn what_is_left_once_pods_request_theirs() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                    {"name": "b", "resources": {"requests": {"cpu": "250m"}}}],
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
            },
        }))
        .unwrap();
        let used = pod_requests(&pod);
        assert_eq!(used["pods"], 1.0);
        assert!((used["cpu"] - 2.0).abs() < 1e-9, "{used:?}");
        let total = BTreeMap::from([
            ("cpu".to_owned(), Quantity("4".into())),
            ("memory".to_owned(), Quantity("1Gi".into())),
            ("pods".to_owned(), Quantity("110".into())),
        ]);
        let left = remaining(&total, &used);
        assert_eq!(left["cpu"].0, "2");
        assert_eq!(left["memory"].0, "0");
        assert_eq!(left["pods"].0, "109");
        // More used than there is: nothing left, never negative.
        let over = remaining(&total, &BTreeMap::from([("cpu".to_owned(), 9.0)]));
        assert_eq!(over["cpu"].0, "0");
    }

    #[test]
    fn sums_node_allocatable() {
        let a = BTreeMap::from([
            ("cpu".to_owned(), Quantity("3800m".into())),
            ("memory".to_owned(), Quantity("8Gi".into())),
            ("pods".to_owned(), Quantity("110".into())),
        ]);
        let b = BTreeMap::from([
            ("cpu".to_owned(), Quantity("4".into())),
            ("memory".to_owned(), Quantity("1024Mi".into())),
            ("pods".to_owned(), Quantity("110".into())),
        ]);
        let total = sum([&a, &b]);
        assert_eq!(total["cpu"].0, "7800m");
        assert_eq!(total["memory"].0, (9u64 * 1024 * 1024 * 1024).to_string());
        assert_eq!(total["pods"].0, "220");
    }
}
