//! Pure translation of a namespace's Ingresses and NetworkPolicies into each remote
//! namespace. An Ingress is copied with its rules, backends (the Services they name are
//! copied too) and TLS (its Secrets too); its class is kept unless `--ingress-class-mapping`
//! maps it (the IngressClass objects are the remote cluster's own, never copied). The
//! load-balancer addresses the remote ingress controllers publish come back to the local
//! Ingress's status. A NetworkPolicy is copied verbatim: its pod selectors select the
//! twins, which keep their labels; the remote cluster's network plugin enforces it (or, if
//! it has none that does, nothing does: docs/reflection.md).

use k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressSpec, NetworkPolicy,
};

use crate::model::forge::objects::{Destination, metadata};
#[cfg(test)]
use crate::model::reflection_policy::{IngressClassMap, parse_class_pair};

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

/// The load-balancer addresses of an Ingress's copies, in order of cluster, each once.
pub(crate) fn copies_addresses<'a>(
    copies: impl IntoIterator<Item = &'a Ingress>,
) -> Vec<IngressLoadBalancerIngress> {
    let mut addresses: Vec<IngressLoadBalancerIngress> = Vec::new();
    for copy in copies {
        for entry in entries(copy) {
            if !addresses.contains(entry) {
                addresses.push(entry.clone());
            }
        }
    }
    addresses
}

fn entries(ingress: &Ingress) -> &[IngressLoadBalancerIngress] {
    ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
}

/// What to write on the local Ingress so that its status lists the copies' addresses
/// (`remote`) beside what others wrote there (a local ingress controller): the addresses
/// we added last time are recorded in [`LOAD_BALANCER_ANNOTATION`], so only those are
/// ever taken out.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct StatusPlan {
    /// The new `status.loadBalancer.ingress`, when it changes.
    pub(crate) status: Option<Vec<IngressLoadBalancerIngress>>,
    /// The new annotation (`Some(None)`: removed), when it changes.
    pub(crate) annotation: Option<Option<String>>,
}

/// Records, on the local Ingress, the load-balancer addresses we added to its status.
pub(crate) const LOAD_BALANCER_ANNOTATION: &str = "offloading.liqo.io/load-balancer-ingress";

pub(crate) fn status_plan(local: &Ingress, remote: &[IngressLoadBalancerIngress]) -> StatusPlan {
    let recorded = local
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LOAD_BALANCER_ANNOTATION));
    let ours_before: Vec<IngressLoadBalancerIngress> = recorded
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let current = entries(local);
    let mut desired: Vec<IngressLoadBalancerIngress> = current
        .iter()
        .filter(|e| !ours_before.contains(e))
        .cloned()
        .collect();
    for entry in remote {
        if !desired.contains(entry) {
            desired.push(entry.clone());
        }
    }
    let wanted_annotation = (!remote.is_empty())
        .then(|| serde_json::to_string(remote).ok())
        .flatten();
    StatusPlan {
        status: (desired.as_slice() != current).then_some(desired),
        annotation: (wanted_annotation.as_ref() != recorded).then_some(wanted_annotation),
    }
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
    fn the_local_status_lists_every_copys_addresses_once_beside_others() {
        let with = |entries: serde_json::Value, annotation: Option<&str>| -> Ingress {
            serde_json::from_value(json!({"metadata": {"name": "web",
                "annotations": annotation.map(|a| json!({LOAD_BALANCER_ANNOTATION: a}))},
                "status": {"loadBalancer": {"ingress": entries}}}))
            .unwrap()
        };
        let a = with(json!([{"ip": "198.51.100.7"}]), None);
        let b = with(
            json!([{"hostname": "lb.us.example"}, {"ip": "198.51.100.7"}]),
            None,
        );
        let empty: Ingress = serde_json::from_value(json!({"metadata": {"name": "web"}})).unwrap();
        let remote = copies_addresses([&a, &empty, &b]);
        assert_eq!(remote.len(), 2);
        assert_eq!(remote[0].ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(remote[1].hostname.as_deref(), Some("lb.us.example"));

        // A local controller's address stays; ours are added and recorded.
        let local = with(json!([{"ip": "192.0.2.1"}]), None);
        let plan = status_plan(&local, &remote);
        let status = plan.status.unwrap();
        assert_eq!(status.len(), 3);
        assert_eq!(status[0].ip.as_deref(), Some("192.0.2.1"));
        let recorded = plan.annotation.unwrap().unwrap();
        // Written: nothing more to do.
        let written = with(serde_json::to_value(&status).unwrap(), Some(&recorded));
        assert_eq!(status_plan(&written, &remote), StatusPlan::default());
        // The copies gone: ours go, the local controller's stays, the record goes.
        let plan = status_plan(&written, &[]);
        let status = plan.status.unwrap();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(plan.annotation, Some(None));
        // Nothing ever written by us, nothing there: nothing to do.
        assert_eq!(status_plan(&empty, &[]), StatusPlan::default());
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
