//! Address translation per peering: endpoint addresses written into a remote cluster are
//! rewritten CIDR to CIDR (host bits kept), for networks that reach this cluster's pods
//! there under other addresses (a NAT-ing fabric). Without rules, addresses pass through.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::api::remote_cluster::AddressTranslation;

/// A rule that cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TranslationError {
    #[error("addressTranslation {field} {value:?} is not a CIDR (like 10.244.0.0/16)")]
    NotACidr { field: &'static str, value: String },
    #[error(
        "addressTranslation {from} -> {to}: both sides need the same family and prefix length, so each address has exactly one image"
    )]
    Mismatch { from: String, to: String },
}

/// The rules of one peering, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AddressMap(Vec<(IpNet, IpNet)>);

impl AddressMap {
    pub(crate) fn new(rules: &[AddressTranslation]) -> Result<Self, TranslationError> {
        let parse = |field, value: &str| {
            value
                .parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| TranslationError::NotACidr {
                    field,
                    value: value.to_owned(),
                })
        };
        rules
            .iter()
            .map(|rule| {
                let from = parse("from", &rule.from)?;
                let to = parse("to", &rule.to)?;
                let same_shape = from.prefix_len() == to.prefix_len()
                    && matches!(
                        (from, to),
                        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
                    );
                if same_shape {
                    Ok((from, to))
                } else {
                    Err(TranslationError::Mismatch {
                        from: rule.from.clone(),
                        to: rule.to.clone(),
                    })
                }
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The address as the remote cluster sees it: the first rule containing it maps it;
    /// anything else (including what is not an IP) passes unchanged.
    pub(crate) fn translate(&self, address: &str) -> String {
        let Ok(ip) = address.parse::<IpAddr>() else {
            return address.to_owned();
        };
        for (from, to) in &self.0 {
            if !from.contains(&ip) {
                continue;
            }
            let mapped = match (ip, from, to) {
                (IpAddr::V4(ip), IpNet::V4(f), IpNet::V4(t)) => {
                    let host = u32::from(ip) & u32::from(f.hostmask());
                    IpAddr::V4((u32::from(t.network()) | host).into())
                }
                (IpAddr::V6(ip), IpNet::V6(f), IpNet::V6(t)) => {
                    let host = u128::from(ip) & u128::from(f.hostmask());
                    IpAddr::V6((u128::from(t.network()) | host).into())
                }
                _ => continue,
            };
            return mapped.to_string();
        }
        address.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rule(from: &str, to: &str) -> AddressTranslation {
        AddressTranslation {
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn addresses_in_a_rule_keep_their_host_bits() {
        let map = AddressMap::new(&[
            rule("10.101.0.0/16", "10.201.0.0/16"),
            rule("fd00:1::/64", "fd00:9::/64"),
        ])
        .unwrap();
        assert_eq!(map.translate("10.101.3.7"), "10.201.3.7");
        assert_eq!(map.translate("10.102.3.7"), "10.102.3.7");
        assert_eq!(map.translate("fd00:1::42"), "fd00:9::42");
        assert_eq!(map.translate("not-an-ip"), "not-an-ip");
        assert_eq!(AddressMap::default().translate("10.101.3.7"), "10.101.3.7");
    }

    #[test]
    fn rules_that_cannot_map_one_to_one_are_refused() {
        assert!(matches!(
            AddressMap::new(&[rule("10.101.0.0/16", "10.201.0.0/24")]),
            Err(TranslationError::Mismatch { .. })
        ));
        assert!(matches!(
            AddressMap::new(&[rule("10.101.0.0/16", "fd00::/16")]),
            Err(TranslationError::Mismatch { .. })
        ));
        let err = AddressMap::new(&[rule("ten", "10.201.0.0/16")]).unwrap_err();
        assert!(err.to_string().contains("\"ten\" is not a CIDR"), "{err}");
    }
}
