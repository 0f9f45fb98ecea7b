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
/// user chose; addresses are the remote cluster's to allocate.
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
            publish_not_ready_addresses: spec.publish_not_ready_addresses,
            ..ServiceSpec::default()
        }
    };
    Some(Service {
        metadata: metadata(&local.metadata, to.local_cluster_id, to.remote_namespace),
        spec: Some(spec),
        status: None,
    })
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
    let defaulted = |a: &Option<String>, b: &Option<String>| b.is_none() || a == b;
    r.type_ == d.type_
        && ports(r) == d.ports
        && r.selector == d.selector
        && r.external_name == d.external_name
        && headless(r) == headless(d)
        && defaulted(&r.session_affinity, &d.session_affinity)
        && (d.publish_not_ready_addresses.is_none()
            || r.publish_not_ready_addresses == d.publish_not_ready_addresses)
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

    fn to<'a>(addresses: &'a AddressMap) -> Destination<'a> {
        Destination {
            local_cluster_id: "c1",
            remote_namespace: "shop-c1",
            virtual_node: "liqo-c2",
            addresses,
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
