//! Kubernetes resource quantities ("3800m", "16Gi", "1.5e3"), as far as summing a remote
//! cluster's allocatable resources for its virtual node needs.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The value in base units (cores, bytes, pods), or `None` if it is not a quantity.
pub fn parse(q: &str) -> Option<f64> {
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
    Some(number * factor)
}

/// A base-unit value as a quantity: whole numbers plain, fractions in milli-units.
pub fn format(value: f64) -> Quantity {
    if (value - value.round()).abs() < 1e-9 {
        Quantity(format!("{}", value.round() as i64))
    } else {
        Quantity(format!("{}m", (value * 1000.0).round() as i64))
    }
}

/// Adds up resource lists (such as the allocatable of every Ready node); entries that do
/// not parse are skipped.
pub fn sum<'a>(
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
