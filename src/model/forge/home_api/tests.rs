#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;
use crate::model::{
    api::{NamespaceOffloadingSpec, PodOffloadingStrategy},
    forge::twin::twin,
};

fn home() -> HomeApi {
    HomeApi {
        host: "api.home.example".into(),
        port: 6443,
        ca: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
    }
}

/// A pod as this cluster's ServiceAccount admission leaves it: its token volume mounted in
/// both containers, a container that sets the API server's host itself, and a token
/// volume of its own.
fn admitted() -> Pod {
    let mount = json!([{"name": "kube-api-access-x7k2p", "readOnly": true,
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]);
    serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1"},
        "spec": {
            "nodeName": "liqo-c2",
            "serviceAccountName": "web",
            "containers": [
                {"name": "app", "image": "nginx", "volumeMounts": mount,
                 "env": [{"name": "MODE", "value": "fast"}]},
                {"name": "proxy", "image": "envoy", "volumeMounts": mount,
                 "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "mine.example"}]}],
            "initContainers": [{"name": "init", "image": "busybox", "volumeMounts": mount}],
            "volumes": [
                {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}},
                {"name": "vault", "projected": {"sources": [
                    {"serviceAccountToken": {"audience": "vault", "path": "token"}}]}}],
        },
    }))
    .unwrap()
}

#[test]
fn addresses_parse_as_host_and_port() {
    assert_eq!(
        parse_address("10.0.0.1:6443"),
        Ok(("10.0.0.1".into(), 6443))
    );
    assert_eq!(
        parse_address("api.home.example:443"),
        Ok(("api.home.example".into(), 443))
    );
    assert_eq!(
        parse_address("[fd00::1]:6443"),
        Ok(("fd00::1".into(), 6443))
    );
    for bad in [
        "api.home.example",
        "fd00::1:6443",
        ":6443",
        "host:0",
        "host:x",
        "https://h:1",
    ] {
        assert!(parse_address(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_token_asked_is_the_one_admission_injected() {
    let asked = token_asked(&admitted()).unwrap();
    assert_eq!(
        asked,
        TokenAsked {
            volume: "kube-api-access-x7k2p".into(),
            account: "web".into(),
            path: "token".into(),
            audience: None,
            expiration_seconds: Some(3607),
        }
    );
    // The pod said no: no token, even with such a volume.
    let mut pod = admitted();
    pod.spec.as_mut().unwrap().automount_service_account_token = Some(false);
    assert!(token_asked(&pod).is_none());
    // Only its own token volume (another audience): nothing admission injected.
    let mut pod = admitted();
    pod.spec
        .as_mut()
        .unwrap()
        .volumes
        .as_mut()
        .unwrap()
        .remove(0);
    assert!(token_asked(&pod).is_none());
}

#[test]
fn the_token_request_is_bound_to_the_pod_with_the_original_audience_and_lifetime_never_a_year() {
    let pod = admitted();
    let mut asked = token_asked(&pod).unwrap();
    let request = serde_json::to_value(token_request(&pod, &asked)).unwrap();
    assert_eq!(
        request["spec"],
        json!({"expirationSeconds": 3600,
               "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "uid": "u-1"}})
    );
    asked.audience = Some("https://kubernetes.default.svc".into());
    asked.expiration_seconds = Some(7200);
    let request = token_request(&pod, &asked);
    assert_eq!(
        request.spec.as_ref().unwrap().expiration_seconds,
        Some(7200)
    );
    assert_eq!(
        request.spec.unwrap().audiences,
        Some(vec!["https://kubernetes.default.svc".to_string()])
    );
}

#[test]
fn tokens_are_renewed_at_four_fifths_of_their_lifetime() {
    let issued: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
    let expires: Timestamp = "2026-12-01T11:00:00Z".parse().unwrap();
    assert_eq!(
        renew_at(issued, expires),
        "2026-12-01T10:48:00Z".parse::<Timestamp>().unwrap()
    );
}

#[test]
fn the_secret_is_named_per_pod_and_marked_apart_from_copies() {
    assert_eq!(secret_name("web-1"), "home-api-web-1");
    let long = "a".repeat(253);
    let named = secret_name(&long);
    assert!(named.len() <= 253, "{}", named.len());
    assert_ne!(named, secret_name(&"a".repeat(252)));
    assert_eq!(named, secret_name(&long));

    let pod = admitted();
    let renew: Timestamp = "2026-12-01T10:48:00Z".parse().unwrap();
    let s = secret(&pod, "c1", "shop-c1", "tok", renew, &home(), None);
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["metadata"]["name"], "home-api-web-1");
    assert_eq!(v["metadata"]["namespace"], "shop-c1");
    assert_eq!(v["metadata"]["labels"][ORIGIN_CLUSTER_LABEL], "c1");
    assert_eq!(
        v["metadata"]["annotations"][HOME_API_POD_ANNOTATION],
        "shop/web-1"
    );
    // No copy of a local Secret: the namespace's reflection leaves it alone.
    assert!(
        !crate::model::forge::objects::ours(&s.metadata, "c1", "shop"),
        "{v}"
    );
    assert!(ours(&s, "c1", &pod));
    assert!(!ours(&s, "c9", &pod));
    let data = s.data.as_ref().unwrap();
    assert_eq!(data["token"].0, b"tok");
    assert_eq!(data["namespace"].0, b"shop");
    assert_eq!(data["ca.crt"].0, home().ca.as_bytes());
    assert!(s.metadata.owner_references.is_none());
}

#[test]
fn a_secret_is_fresh_for_its_pod_and_twin_until_renewal() {
    let pod = admitted();
    let now: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
    let renew: Timestamp = "2026-12-01T10:48:00Z".parse().unwrap();
    let twin: Pod =
        serde_json::from_value(json!({"metadata": {"name": "web-1", "uid": "twin-1"}})).unwrap();
    let unowned = secret(&pod, "c1", "shop-c1", "tok", renew, &home(), None);
    assert_eq!(
        still_fresh(&unowned, &pod, None, now),
        Some(Duration::from_secs(48 * 60))
    );
    // The twin exists: the Secret must become its own.
    assert_eq!(still_fresh(&unowned, &pod, Some(&twin), now), None);
    let owned = secret(&pod, "c1", "shop-c1", "tok", renew, &home(), Some(&twin));
    assert_eq!(
        owned.metadata.owner_references.as_ref().unwrap()[0].uid,
        "twin-1"
    );
    assert!(still_fresh(&owned, &pod, Some(&twin), now).is_some());
    // Due, or made for an earlier pod of that name.
    assert_eq!(still_fresh(&owned, &pod, Some(&twin), renew), None);
    let mut again = pod.clone();
    again.metadata.uid = Some("u-2".into());
    assert_eq!(still_fresh(&owned, &again, Some(&twin), now), None);
}

fn offloading() -> NamespaceOffloadingSpec {
    serde_json::from_value(json!({"podOffloadingStrategy": PodOffloadingStrategy::Remote})).unwrap()
}

#[test]
fn the_twin_mounts_the_home_token_where_admission_did_and_is_told_the_address() {
    let pod = admitted();
    let asked = token_asked(&pod).unwrap();
    let twin = twin(
        &with_home_access(&pod, &asked, &home()),
        &offloading(),
        "c1",
        "shop-c1",
    );
    // Made with home access, it mounts the home token; a twin made without does not.
    assert!(mounts_home_secret(&twin, &pod));
    let without = super::super::twin::twin(&pod, &offloading(), "c1", "shop-c1");
    assert!(!mounts_home_secret(&without, &pod));
    let spec = serde_json::to_value(twin.spec.unwrap()).unwrap();
    assert_eq!(
        spec["volumes"][0],
        json!({"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
            {"secret": {"name": "home-api-web-1", "optional": false, "items": [
                {"key": "token", "path": "token"},
                {"key": "ca.crt", "path": "ca.crt"},
                {"key": "namespace", "path": "namespace"}]}}]}})
    );
    // The pod's own token volume is the remote's business, as without the feature.
    assert_eq!(spec["volumes"][1]["name"], "vault");
    // Every mount stays; the remote's admission adds no token of its own.
    for c in ["containers", "initContainers"] {
        for container in spec[c].as_array().unwrap() {
            assert_eq!(
                container["volumeMounts"][0]["name"], "kube-api-access-x7k2p",
                "{container}"
            );
        }
    }
    assert_eq!(spec["automountServiceAccountToken"], false);
    let env = |c: &str, i: usize| spec[c][i]["env"].clone();
    assert_eq!(
        env("containers", 0),
        json!([{"name": "MODE", "value": "fast"},
               {"name": "KUBERNETES_SERVICE_HOST", "value": "api.home.example"},
               {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}])
    );
    // What a container sets itself is its own.
    assert_eq!(
        env("containers", 1),
        json!([{"name": "KUBERNETES_SERVICE_HOST", "value": "mine.example"},
               {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}])
    );
    assert_eq!(env("initContainers", 0).as_array().unwrap().len(), 2);
}

#[test]
fn certificates_become_a_pem_bundle() {
    let pem = pem_bundle(&[vec![0u8; 60], vec![1, 2, 3]]);
    let blocks: Vec<&str> = pem.split("-----END CERTIFICATE-----\n").collect();
    assert_eq!(blocks.len(), 3, "{pem}");
    // 60 bytes: 80 base64 characters, on lines of 64.
    assert!(
        pem.starts_with(&format!(
            "-----BEGIN CERTIFICATE-----\n{}\n{}\n",
            "A".repeat(64),
            "A".repeat(16)
        )),
        "{pem}"
    );
    assert!(blocks[1].contains("AQID"), "{pem}");
}
