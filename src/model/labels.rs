//! Label syntax (keys and values), as the API server checks it: cluster labels and
//! selector requirements are refused with the API server's reasons before they fail there.

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters, alphanumeric at both ends, with `-`, `_` and `.` inside.
pub(crate) fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > 253 {
            return Err(
                "the prefix before '/' must be a DNS subdomain of 1 to 253 characters".into(),
            );
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !prefix.split('.').all(label_ok) {
            return Err(format!(
                "prefix {prefix:?} is not a DNS subdomain (lowercase letters, digits, '-' and '.')"
            ));
        }
    }
    if name.is_empty() || name.len() > 63 {
        return Err("the name part must have 1 to 63 characters".into());
    }
    let bytes = name.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ends_ok =
        bytes[0].is_ascii_alphanumeric() && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if !(inner_ok && ends_ok) {
        return Err(format!(
            "name {name:?} must be alphanumeric at both ends with only '-', '_' or '.' inside"
        ));
    }
    Ok(())
}

/// A DNS-1123 label, as namespace names are: 1 to 63 lowercase letters, digits and `-`,
/// alphanumeric at both ends.
pub(crate) fn validate_dns_label(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 63 {
        return Err(format!(
            "a namespace name has 1 to 63 characters, and {name:?} has {}",
            b.len()
        ));
    }
    let inner_ok = b
        .iter()
        .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !inner_ok || b[0] == b'-' || b[b.len() - 1] == b'-' {
        return Err(format!(
            "{name:?} is not a valid namespace name: use lowercase letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label value: at most 63 characters, empty or alphanumeric at both ends with `-`, `_`
/// and `.` inside.
pub(crate) fn validate_label_value(value: &str) -> Result<(), String> {
    let b = value.as_bytes();
    if b.len() > 63 {
        return Err("a label value has at most 63 characters".into());
    }
    let ok = b.is_empty()
        || (b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')));
    if ok {
        Ok(())
    } else {
        Err("must be alphanumeric at both ends with only '-', '_' or '.' inside".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys() {
        for ok in ["liqo.io/type", "region", "a.b-c/x_y.z", "A1"] {
            assert!(validate_label_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/x",
            "Liqo.IO/type",
            "a/",
            "x/-y",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(validate_label_key(bad).is_err(), "{bad}");
        }
    }
}
