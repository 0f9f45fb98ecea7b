//! Pure translation of a namespace's Ingresses and NetworkPolicies into each remote
//! namespace. An Ingress is copied with its rules, backends (the Services they name are
//! copied too) and TLS (its Secrets too); its class is kept unless `--ingress-class-mapping`
//! maps it (the IngressClass objects are the remote cluster's own, never copied). The
//! load-balancer addresses the remote ingress controllers publish come back to the local
//! Ingress's status. A NetworkPolicy is copied verbatim: its pod selectors select the
//! twins, which keep their labels; the remote cluster's network plugin enforces it (or, if
//! it has none that does, nothing does: docs/reflection.md).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressSpec, IngressStatus, NetworkPolicy,
};

use crate::model::forge::objects::{Destination, metadata};

/// How local ingress classes are named in the remote clusters (`LOCAL=REMOTE`; an empty
/// REMOTE leaves the class out, so the remote default class serves the copy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressClassMap(BTreeMap<String, String>);

impl IngressClassMap {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(pairs.into_iter().collect())
    }

    /// The class of the copy for a local class.
    pub(crate) fn remote(&self, local: Option<&str>) -> Option<String> {
        let local = local?;
        match self.0.get(local) {
            Some(remote) if remote.is_empty() => None,
            Some(remote) => Some(remote.clone()),
            None => Some(local.to_owned()),
        }
    }
}

/// Parses `LOCAL=REMOTE` (`--ingress-class-mapping`).
pub fn parse_class_pair(text: &str) -> Result<(String, String), String> {
    let (local, remote) = text.split_once('=').ok_or_else(|| {
        format!("{text:?} is not LOCAL=REMOTE: use e.g. nginx=traefik (or nginx= for the remote default class)")
    })?;
    if local.trim().is_empty() {
        return Err(format!("{text:?} names no local class: use LOCAL=REMOTE"));
    }
    Ok((local.trim().to_owned(), remote.trim().to_owned()))
}

/// The copy of an Ingress: spec with its class mapped, no status (the remote's controller
/// writes its own).
pub(crate) fn ingress(local: &Ingress, to: &Destination) -> Ingress {
    let spec = local.spec.clone().map(|spec| IngressSpec {
        ingress_class_name: to
            .policy
            .ingress_classes
            .remote(spec.ingress_class_name.as_deref()),
        ..spec
    });
    Ingress {
        metadata: metadata(&local.metadata, to.local_cluster_id, to.remote_namespace),
        spec,
        status: None,
    }
}

pub(crate) fn same_ingress(remote: &Ingress, desired: &Ingress) -> bool {
    remote.spec == desired.spec
}

/// The local Ingress's load-balancer addresses: those of its copies, in order of cluster,
/// each once. `None` when no copy has any yet (the local status is then left as it is).
pub(crate) fn ingress_status<'a>(
    copies: impl IntoIterator<Item = &'a Ingress>,
) -> Option<IngressStatus> {
    let mut seen = BTreeSet::new();
    let mut addresses: Vec<IngressLoadBalancerIngress> = Vec::new();
    for copy in copies {
        let entries = copy
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for entry in entries.into_iter().flatten() {
            let key = serde_json::to_string(entry).unwrap_or_default();
            if seen.insert(key) {
                addresses.push(entry.clone());
            }
        }
    }
    (!addresses.is_empty()).then_some(IngressStatus {
        load_balancer: Some(
            k8s_openapi::api::networking::v1::IngressLoadBalancerStatus {
                ingress: Some(addresses),
            },
        ),
    })
}

/// The copy of a NetworkPolicy: verbatim.
pub(crate) fn network_policy(local: &NetworkPolicy, to: &Destination) -> NetworkPolicy {
    NetworkPolicy {
        metadata: metadata(&local.metadata, to.local_cluster_id, to.remote_namespace),
        spec: local.spec.clone(),
    }
}

pub(crate) fn same_network_policy(remote: &NetworkPolicy, desired: &NetworkPolicy) -> bool {
    remote.spec == desired.spec
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::model::{
        forge::objects::ours, reflection_policy::ReflectionPolicy, translation::AddressMap,
    };

    fn to<'a>(addresses: &'a AddressMap, policy: &'a ReflectionPolicy) -> Destination<'a> {
        Destination {
            local_cluster_id: "c1",
            remote_namespace: "shop-c1",
            virtual_node: "liqo-c2",
            addresses,
            policy,
        }
    }

    fn web_ingress(class: Option<&str>) -> Ingress {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "3",
                         "labels": {"app": "web"}},
            "spec": {
                "ingressClassName": class,
                "tls": [{"hosts": ["shop.example"], "secretName": "shop-tls"}],
                "rules": [{"host": "shop.example", "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}],
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
        }))
        .unwrap()
    }

    #[test]
    fn an_ingress_copy_keeps_rules_and_tls_and_maps_its_class() {
        let map = AddressMap::default();
        let local = web_ingress(Some("nginx"));
        let default = ReflectionPolicy::default();
        let kept = ingress(&local, &to(&map, &default));
        assert!(ours(&kept.metadata, "c1", "shop"));
        assert!(kept.metadata.uid.is_none() && kept.metadata.resource_version.is_none());
        assert!(kept.status.is_none());
        let spec = kept.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        assert_eq!(spec.rules, local.spec.as_ref().unwrap().rules);
        assert_eq!(spec.tls, local.spec.as_ref().unwrap().tls);

        let classes = ReflectionPolicy::default().with_ingress_classes(IngressClassMap::new([
            ("nginx".to_owned(), "traefik".to_owned()),
            ("internal".to_owned(), String::new()),
        ]));
        let mapped = ingress(&local, &to(&map, &classes));
        assert_eq!(
            mapped.spec.unwrap().ingress_class_name.as_deref(),
            Some("traefik")
        );
        let dropped = ingress(&web_ingress(Some("internal")), &to(&map, &classes));
        assert_eq!(dropped.spec.unwrap().ingress_class_name, None);
        let none = ingress(&web_ingress(None), &to(&map, &classes));
        assert_eq!(none.spec.unwrap().ingress_class_name, None);
    }

    #[test]
    fn the_local_status_lists_every_copys_addresses_once() {
        let copy = |entries: serde_json::Value| -> Ingress {
            serde_json::from_value(json!({"metadata": {"name": "web"},
                "status": {"loadBalancer": {"ingress": entries}}}))
            .unwrap()
        };
        let a = copy(json!([{"ip": "198.51.100.7"}]));
        let b = copy(json!([{"hostname": "lb.us.example"}, {"ip": "198.51.100.7"}]));
        let empty: Ingress = serde_json::from_value(json!({"metadata": {"name": "web"}})).unwrap();
        let status = ingress_status([&a, &empty, &b]).unwrap();
        let entries = status.load_balancer.unwrap().ingress.unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(entries[1].hostname.as_deref(), Some("lb.us.example"));
        assert!(ingress_status([&empty]).is_none());
    }

    #[test]
    fn a_network_policy_is_copied_verbatim() {
        let map = AddressMap::default();
        let policy = ReflectionPolicy::default();
        let local: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "db-only-from-web", "namespace": "shop", "uid": "u"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                  "ports": [{"port": 5432, "protocol": "TCP"}]}]},
        }))
        .unwrap();
        let copy = network_policy(&local, &to(&map, &policy));
        assert!(ours(&copy.metadata, "c1", "shop"));
        assert_eq!(copy.spec, local.spec);
        assert!(same_network_policy(
            &copy,
            &network_policy(&local, &to(&map, &policy))
        ));
    }

    #[test]
    fn class_pairs_parse_with_clear_errors() {
        assert_eq!(
            parse_class_pair("nginx=traefik").unwrap(),
            ("nginx".to_owned(), "traefik".to_owned())
        );
        assert_eq!(
            parse_class_pair("nginx=").unwrap(),
            ("nginx".to_owned(), String::new())
        );
        assert!(
            parse_class_pair("nginx")
                .unwrap_err()
                .contains("LOCAL=REMOTE")
        );
        assert!(
            parse_class_pair("=x")
                .unwrap_err()
                .contains("no local class")
        );
    }
}
