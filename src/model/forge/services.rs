//! Pure translation of a Service and its EndpointSlices into a remote namespace.
//!
//! A Service is copied into every selected cluster with its selector, so that cluster's
//! own endpoint controller covers the twins running there; what the local API server
//! allocated (cluster IPs, node ports, load-balancer addresses) is left for the remote one
//! to allocate. Local EndpointSlices follow it with our `managed-by`, which keeps the
//! remote endpoint controllers off them, without the endpoints of pods that already run in
//! that cluster, and with their addresses translated for that peering.

use k8s_openapi::api::{
    core::v1::{Service, ServicePort, ServiceSpec},
    discovery::v1::{Endpoint, EndpointSlice},
};
use kube::api::ObjectMeta;

use super::objects::{Destination, metadata};
use crate::model::markers::{MANAGED_BY_LABEL, SLICE_MANAGER};

/// The label naming the Service a slice belongs to.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

const EXTERNAL_NAME: &str = "ExternalName";
const HEADLESS: &str = "None";

/// The Service's copy: its type, ports (without node ports), selector and the settings a
/// user chose, what restricts who reaches it first; addresses are the remote cluster's to
/// allocate. docs/reflection.md lists every field left out, and why.
pub(crate) fn service(local: &Service, to: &Destination) -> Option<Service> {
    let spec = local.spec.as_ref()?;
    let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    let spec = if type_ == EXTERNAL_NAME {
        ServiceSpec {
            type_: Some(type_),
            external_name: spec.external_name.clone(),
            ports: ports(spec),
            ..ServiceSpec::default()
        }
    } else {
        ServiceSpec {
            type_: Some(type_),
            ports: ports(spec),
            selector: spec.selector.clone(),
            // Headless stays headless; any other address is the remote's to pick.
            cluster_ip: (spec.cluster_ip.as_deref() == Some(HEADLESS)).then(|| HEADLESS.into()),
            session_affinity: spec.session_affinity.clone(),
            session_affinity_config: spec.session_affinity_config.clone(),
            publish_not_ready_addresses: spec.publish_not_ready_addresses,
            // Who may reach it, and through which nodes: the remote's defaults are wider.
            load_balancer_source_ranges: spec.load_balancer_source_ranges.clone(),
            external_traffic_policy: spec.external_traffic_policy.clone(),
            internal_traffic_policy: spec.internal_traffic_policy.clone(),
            load_balancer_class: spec.load_balancer_class.clone(),
            allocate_load_balancer_node_ports: spec.allocate_load_balancer_node_ports,
            ip_family_policy: spec.ip_family_policy.clone(),
            ip_families: families(spec),
            ..ServiceSpec::default()
        }
    };
    Some(Service {
        metadata: metadata(&local.metadata, to.local_cluster_id, to.remote_namespace),
        spec: Some(spec),
        status: None,
    })
}

const PREFER_DUAL_STACK: &str = "PreferDualStack";

/// The address families asked for: as here, but with `PreferDualStack` only the first (the
/// remote adds its second family if it has one; asking for a family it lacks is refused).
fn families(spec: &ServiceSpec) -> Option<Vec<String>> {
    let families = spec.ip_families.clone()?;
    if spec.ip_family_policy.as_deref() == Some(PREFER_DUAL_STACK) {
        Some(families.into_iter().take(1).collect())
    } else {
        Some(families)
    }
}

/// The ports without the node ports this cluster allocated (they may be taken there).
fn ports(spec: &ServiceSpec) -> Option<Vec<ServicePort>> {
    spec.ports.as_ref().map(|ports| {
        ports
            .iter()
            .map(|p| ServicePort {
                node_port: None,
                ..p.clone()
            })
            .collect()
    })
}

/// Whether the remote Service says what `desired` does, apart from what its API server
/// allocated and defaulted.
pub(crate) fn same_service(remote: &Service, desired: &Service) -> bool {
    let (Some(r), Some(d)) = (remote.spec.as_ref(), desired.spec.as_ref()) else {
        return remote.spec.is_none() && desired.spec.is_none();
    };
    let headless = |s: &ServiceSpec| s.cluster_ip.as_deref() == Some(HEADLESS);
    // What the copy leaves unset, the remote API server may default.
    fn defaulted<T: PartialEq>(remote: &Option<T>, desired: &Option<T>) -> bool {
        desired.is_none() || remote == desired
    }
    // With PreferDualStack the remote may add a second family.
    let families = match (&r.ip_families, &d.ip_families) {
        (_, None) => true,
        (Some(r), Some(d)) => r.starts_with(d),
        (None, Some(_)) => false,
    };
    r.type_ == d.type_
        && ports(r) == d.ports
        && r.selector == d.selector
        && r.external_name == d.external_name
        && headless(r) == headless(d)
        && defaulted(&r.session_affinity, &d.session_affinity)
        && defaulted(&r.session_affinity_config, &d.session_affinity_config)
        && defaulted(&r.publish_not_ready_addresses, &d.publish_not_ready_addresses)
        // Never defaulted: a range added or removed there is a drift.
        && r.load_balancer_source_ranges.as_deref().unwrap_or_default()
            == d.load_balancer_source_ranges.as_deref().unwrap_or_default()
        // The remote's own default (a load-balancer controller's webhook) is no drift.
        && defaulted(&r.load_balancer_class, &d.load_balancer_class)
        && defaulted(&r.external_traffic_policy, &d.external_traffic_policy)
        && defaulted(&r.internal_traffic_policy, &d.internal_traffic_policy)
        && defaulted(
            &r.allocate_load_balancer_node_ports,
            &d.allocate_load_balancer_node_ports,
        )
        && defaulted(&r.ip_family_policy, &d.ip_family_policy)
        && families
}

/// Whether the remote Service cannot be changed into `desired`: a cluster IP (headless or
/// not), a load-balancer class or a primary address family never change once set.
pub(crate) fn replaced_by(remote: &Service, desired: &Service) -> bool {
    let (Some(r), Some(d)) = (remote.spec.as_ref(), desired.spec.as_ref()) else {
        return false;
    };
    let headless = |s: &ServiceSpec| s.cluster_ip.as_deref() == Some(HEADLESS);
    let external = |s: &ServiceSpec| s.type_.as_deref() == Some(EXTERNAL_NAME);
    let primary = |s: &ServiceSpec| s.ip_families.as_ref().and_then(|f| f.first().cloned());
    let families_fixed = !external(r) && !external(d) && primary(d).is_some();
    (!external(r) && !external(d) && headless(r) != headless(d))
        || (d.load_balancer_class.is_some() && r.load_balancer_class != d.load_balancer_class)
        || (families_fixed && primary(r) != primary(d))
}

/// The slice's copy for one cluster, or `None` for slices that are not a Service's, or
/// that we wrote ourselves (reflected here from elsewhere).
pub(crate) fn endpoint_slice(local: &EndpointSlice, to: &Destination) -> Option<EndpointSlice> {
    let labels = local.metadata.labels.as_ref()?;
    labels.get(SERVICE_NAME_LABEL)?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(SLICE_MANAGER) {
        return None;
    }
    let mut metadata: ObjectMeta =
        metadata(&local.metadata, to.local_cluster_id, to.remote_namespace);
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert(MANAGED_BY_LABEL.into(), SLICE_MANAGER.into());
    }
    let endpoints = local
        .endpoints
        .iter()
        .flatten()
        // Pods running there already: that cluster's own controller lists their twins.
        .filter(|e| e.node_name.as_deref() != Some(to.virtual_node))
        .map(|e| Endpoint {
            addresses: e
                .addresses
                .iter()
                .map(|a| to.addresses.translate(a))
                .collect(),
            // Local pods and nodes mean nothing there.
            node_name: None,
            target_ref: None,
            hints: None,
            ..e.clone()
        })
        .collect();
    Some(EndpointSlice {
        endpoints: Some(endpoints),
        metadata,
        address_type: local.address_type.clone(),
        ports: local.ports.clone(),
    })
}

/// Whether the remote slice says what `desired` does (an empty list and none alike: the
/// API server may return either, and a difference there would rewrite it forever).
pub(crate) fn same_slice(remote: &EndpointSlice, desired: &EndpointSlice) -> bool {
    remote.address_type == desired.address_type
        && remote.endpoints.as_deref().unwrap_or_default()
            == desired.endpoints.as_deref().unwrap_or_default()
        && remote.ports.as_deref().unwrap_or_default()
            == desired.ports.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;
    use crate::model::{forge::objects::ours, translation::AddressMap};

    static POLICY: std::sync::LazyLock<crate::model::reflection_policy::ReflectionPolicy> =
        std::sync::LazyLock::new(Default::default);

    fn to<'a>(addresses: &'a AddressMap) -> Destination<'a> {
        Destination {
            local_cluster_id: "c1",
            remote_namespace: "shop-c1",
            virtual_node: "liqo-c2",
            addresses,
            policy: &POLICY,
        }
    }

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u", "labels": {"app": "web"}},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_service_copy_leaves_addresses_and_node_ports_to_the_remote() {
        let map = AddressMap::default();
        let local = svc(json!({
            "type": "NodePort", "clusterIP": "10.0.0.12", "clusterIPs": ["10.0.0.12"],
            "selector": {"app": "web"}, "sessionAffinity": "None",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}],
        }));
        let copy = service(&local, &to(&map)).unwrap();
        let spec = copy.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert!(spec.cluster_ip.is_none() && spec.cluster_ips.is_none());
        assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, None);
        assert_eq!(spec.selector, local.spec.as_ref().unwrap().selector);
        assert!(ours(&copy.metadata, "c1", "shop"));
        // What the remote API server then fills in does not count as a difference.
        let mut remote = copy.clone();
        let rs = remote.spec.as_mut().unwrap();
        rs.cluster_ip = Some("10.96.4.4".into());
        rs.ports.as_mut().unwrap()[0].node_port = Some(31999);
        rs.internal_traffic_policy = Some("Cluster".into());
        assert!(same_service(&remote, &copy));
        remote.spec.as_mut().unwrap().selector =
            Some([("app".to_string(), "api".to_string())].into());
        assert!(!same_service(&remote, &copy));
    }

    /// A load balancer limited to one range, kept on its nodes' pods, of one class, without
    /// node ports, preferring two families (the test bed has one).
    fn restricted() -> Service {
        svc(json!({
            "type": "LoadBalancer", "clusterIP": "10.0.0.40", "clusterIPs": ["10.0.0.40"],
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            "loadBalancerSourceRanges": ["192.0.2.0/24"],
            "externalTrafficPolicy": "Local", "healthCheckNodePort": 31555,
            "internalTrafficPolicy": "Local",
            "loadBalancerClass": "example.com/internal",
            "allocateLoadBalancerNodePorts": false,
            "ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"],
            "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
            "externalIPs": ["198.51.100.7"], "loadBalancerIP": "203.0.113.9",
            "trafficDistribution": "PreferClose",
        }))
    }

    #[test]
    fn a_service_copy_keeps_what_restricts_it() {
        let map = AddressMap::default();
        let copy = service(&restricted(), &to(&map)).unwrap();
        let v = serde_json::to_value(copy.spec.as_ref().unwrap()).unwrap();
        assert_eq!(v["loadBalancerSourceRanges"], json!(["192.0.2.0/24"]));
        assert_eq!(v["externalTrafficPolicy"], "Local");
        assert_eq!(v["internalTrafficPolicy"], "Local");
        assert_eq!(v["loadBalancerClass"], "example.com/internal");
        assert_eq!(v["allocateLoadBalancerNodePorts"], false);
        assert_eq!(v["ipFamilyPolicy"], "PreferDualStack");
        // The primary family; the remote adds its second if it has one.
        assert_eq!(v["ipFamilies"], json!(["IPv4"]));
        assert_eq!(
            v["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            600
        );
        // This cluster's addresses and allocations stay here (docs/reflection.md).
        for field in [
            "clusterIP",
            "clusterIPs",
            "healthCheckNodePort",
            "externalIPs",
            "loadBalancerIP",
            "trafficDistribution",
        ] {
            assert!(v[field].is_null(), "{field} copied: {v}");
        }
        let single =
            svc(json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"]}));
        let copy = service(&single, &to(&map)).unwrap();
        assert_eq!(copy.spec.unwrap().ip_families.unwrap(), ["IPv6", "IPv4"]);
    }

    #[test]
    fn a_drift_in_what_restricts_is_noticed() {
        let map = AddressMap::default();
        let copy = service(&restricted(), &to(&map)).unwrap();
        // As the remote API server stores it: its own allocations, a second family.
        let mut remote = copy.clone();
        let rs = remote.spec.as_mut().unwrap();
        rs.cluster_ip = Some("10.96.0.40".into());
        rs.health_check_node_port = Some(30001);
        rs.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
        assert!(same_service(&remote, &copy));
        let drifts: [fn(&mut ServiceSpec); 8] = [
            |s| s.load_balancer_source_ranges = None,
            |s| s.load_balancer_source_ranges = Some(vec!["0.0.0.0/0".into()]),
            |s| s.external_traffic_policy = Some("Cluster".into()),
            |s| s.internal_traffic_policy = Some("Cluster".into()),
            |s| s.load_balancer_class = None,
            |s| s.allocate_load_balancer_node_ports = Some(true),
            |s| s.ip_family_policy = Some("SingleStack".into()),
            |s| s.ip_families = Some(vec!["IPv6".into()]),
        ];
        for (i, drift) in drifts.iter().enumerate() {
            let mut edited = remote.clone();
            drift(edited.spec.as_mut().unwrap());
            assert!(!same_service(&edited, &copy), "drift {i} not noticed");
        }
        // Ranges set there on a copy that has none: a drift too.
        let plain = service(
            &svc(json!({"type": "LoadBalancer", "selector": {"app": "web"}})),
            &to(&map),
        )
        .unwrap();
        let mut edited = plain.clone();
        edited.spec.as_mut().unwrap().load_balancer_source_ranges =
            Some(vec!["192.0.2.0/24".into()]);
        assert!(!same_service(&edited, &plain));
    }

    #[test]
    fn what_cannot_change_there_makes_a_new_copy() {
        let map = AddressMap::default();
        let copy = service(&restricted(), &to(&map)).unwrap();
        assert!(!replaced_by(&copy, &copy));
        let mut other = restricted();
        other.spec.as_mut().unwrap().load_balancer_class = Some("example.com/public".into());
        assert!(replaced_by(&copy, &service(&other, &to(&map)).unwrap()));
        let mut v6 = restricted();
        v6.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into()]);
        assert!(replaced_by(&copy, &service(&v6, &to(&map)).unwrap()));
        let headless = svc(json!({"clusterIP": "None", "selector": {"app": "web"}}));
        let plain = svc(json!({"selector": {"app": "web"}}));
        let (headless, plain) = (
            service(&headless, &to(&map)).unwrap(),
            service(&plain, &to(&map)).unwrap(),
        );
        assert!(replaced_by(&headless, &plain) && replaced_by(&plain, &headless));
        // To or from ExternalName, the API server changes the address itself.
        let external = service(
            &svc(json!({"type": "ExternalName", "externalName": "db.example.com"})),
            &to(&map),
        )
        .unwrap();
        assert!(!replaced_by(&external, &plain) && !replaced_by(&plain, &external));
    }

    #[test]
    fn headless_and_external_name_services_keep_their_nature() {
        let map = AddressMap::default();
        let headless = svc(json!({"clusterIP": "None", "selector": {"app": "db"},
                                  "ports": [{"port": 5432, "targetPort": 5432, "protocol": "TCP"}]}));
        let copy = service(&headless, &to(&map)).unwrap();
        assert_eq!(copy.spec.unwrap().cluster_ip.as_deref(), Some("None"));
        let external = svc(
            json!({"type": "ExternalName", "externalName": "db.example.com",
                                  "selector": {"app": "ignored"}}),
        );
        let copy = service(&external, &to(&map)).unwrap();
        let spec = copy.spec.unwrap();
        assert_eq!(spec.external_name.as_deref(), Some("db.example.com"));
        assert!(spec.selector.is_none() && spec.cluster_ip.is_none());
    }

    fn slice(labels: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-x7k2p", "namespace": "shop", "labels": labels},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.101.0.5"], "conditions": {"ready": true}, "nodeName": "worker-1",
                 "targetRef": {"kind": "Pod", "name": "web-a", "namespace": "shop", "uid": "a"}},
                {"addresses": ["10.102.0.9"], "conditions": {"ready": true}, "nodeName": "liqo-c2",
                 "targetRef": {"kind": "Pod", "name": "web-b", "namespace": "shop", "uid": "b"}},
                {"addresses": ["10.103.0.4"], "conditions": {"ready": false}, "nodeName": "liqo-c3",
                 "targetRef": {"kind": "Pod", "name": "web-c", "namespace": "shop", "uid": "c"}},
            ],
        }))
        .unwrap()
    }

    #[test]
    fn a_slice_copy_skips_pods_running_there_and_translates_addresses() {
        let map = AddressMap::new(&[crate::model::api::remote_cluster::AddressTranslation {
            from: "10.101.0.0/16".into(),
            to: "10.201.0.0/16".into(),
        }])
        .unwrap();
        let local = slice(json!({
            "kubernetes.io/service-name": "web",
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
        }));
        let copy = endpoint_slice(&local, &to(&map)).unwrap();
        let labels = copy.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], SLICE_MANAGER);
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert!(ours(&copy.metadata, "c1", "shop"));
        let endpoints = copy.endpoints.as_ref().unwrap();
        let addresses: Vec<&str> = endpoints.iter().map(|e| e.addresses[0].as_str()).collect();
        // web-b runs in c2 (the destination): left to c2's own controller.
        assert_eq!(addresses, ["10.201.0.5", "10.103.0.4"]);
        assert!(
            endpoints
                .iter()
                .all(|e| e.node_name.is_none() && e.target_ref.is_none())
        );
        assert_eq!(
            endpoints[1].conditions,
            local.endpoints.as_ref().unwrap()[2].conditions
        );
        assert!(same_slice(&copy.clone(), &copy));
        let empty = |endpoints| EndpointSlice {
            endpoints,
            ..copy.clone()
        };
        assert!(same_slice(&empty(None), &empty(Some(vec![]))));
        assert!(!same_slice(&empty(None), &copy));
    }

    #[test]
    fn slices_of_no_service_or_written_by_us_are_not_copied() {
        let map = AddressMap::default();
        assert!(endpoint_slice(&slice(json!({"app": "x"})), &to(&map)).is_none());
        let reflected = slice(json!({
            "kubernetes.io/service-name": "web",
            "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER,
        }));
        assert!(endpoint_slice(&reflected, &to(&map)).is_none());
    }
}
