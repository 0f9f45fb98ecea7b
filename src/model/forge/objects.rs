//! Pure translation of what an offloaded pod needs to start: the ConfigMaps, Secrets and
//! ServiceAccounts of its namespace, copied into each remote namespace with our markers
//! (Services and EndpointSlices: `services`).
//! Cluster-specific objects stay home: `kube-root-ca.crt` (each cluster has its own),
//! service-account and bootstrap token Secrets (this cluster's credentials), and the
//! `default` ServiceAccount (every namespace has one). What restricts an object is kept:
//! `immutable`, a Secret's `type` (it decides which keys it must hold), an account's
//! `automountServiceAccountToken`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::ObjectMeta;

use crate::model::markers::ORIGIN_CLUSTER_LABEL;
use crate::model::{
    markers::ORIGIN_NAMESPACE_ANNOTATION, reflection_policy::ReflectionPolicy,
    translation::AddressMap,
};

/// Where a copy goes: one cluster's remote namespace.
pub(crate) struct Destination<'a> {
    pub(crate) local_cluster_id: &'a str,
    pub(crate) remote_namespace: &'a str,
    /// The virtual node standing for that cluster here.
    pub(crate) virtual_node: &'a str,
    /// How this cluster's addresses appear there.
    pub(crate) addresses: &'a AddressMap,
    /// What crosses, and with which metadata.
    pub(crate) policy: &'a ReflectionPolicy,
}

/// The copy's metadata: the object's labels and annotations plus our markers.
pub(crate) fn metadata(
    local: &ObjectMeta,
    local_cluster_id: &str,
    remote_namespace: &str,
) -> ObjectMeta {
    let mut labels = local.labels.clone().unwrap_or_default();
    labels.insert(ORIGIN_CLUSTER_LABEL.into(), local_cluster_id.into());
    let mut annotations: BTreeMap<String, String> = local.annotations.clone().unwrap_or_default();
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    annotations.insert(
        ORIGIN_NAMESPACE_ANNOTATION.into(),
        local.namespace.clone().unwrap_or_default(),
    );
    ObjectMeta {
        name: local.name.clone(),
        namespace: Some(remote_namespace.into()),
        labels: Some(labels),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    }
}

/// Whether a remote object is a copy made by this cluster from that namespace.
pub(crate) fn ours(remote: &ObjectMeta, local_cluster_id: &str, origin_namespace: &str) -> bool {
    remote
        .labels
        .as_ref()
        .and_then(|l| l.get(ORIGIN_CLUSTER_LABEL))
        .is_some_and(|id| id == local_cluster_id)
        && remote
            .annotations
            .as_ref()
            .and_then(|a| a.get(ORIGIN_NAMESPACE_ANNOTATION))
            .is_some_and(|ns| ns == origin_namespace)
}

/// Whether the copy says what `desired` does (labels, annotations; data compared apart).
pub(crate) fn same_metadata(remote: &ObjectMeta, desired: &ObjectMeta) -> bool {
    remote.labels == desired.labels && remote.annotations == desired.annotations
}

/// Each cluster's own CA bundle, in every namespace: never copied.
pub(crate) const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// Each namespace's own account: never copied.
pub(crate) const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Tokens a cluster issues for its own accounts: never copied.
pub(crate) const TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";
/// Tokens that let a node join this cluster: never copied either.
const BOOTSTRAP_TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";

pub(crate) fn configmap(
    local: &ConfigMap,
    local_cluster_id: &str,
    remote_namespace: &str,
) -> Option<ConfigMap> {
    if local.metadata.name.as_deref() == Some(ROOT_CA_CONFIGMAP) {
        return None;
    }
    Some(ConfigMap {
        metadata: metadata(&local.metadata, local_cluster_id, remote_namespace),
        data: local.data.clone(),
        binary_data: local.binary_data.clone(),
        immutable: local.immutable,
    })
}

pub(crate) fn secret(
    local: &Secret,
    local_cluster_id: &str,
    remote_namespace: &str,
) -> Option<Secret> {
    if matches!(
        local.type_.as_deref(),
        Some(TOKEN_SECRET_TYPE | BOOTSTRAP_TOKEN_SECRET_TYPE)
    ) {
        return None;
    }
    Some(Secret {
        metadata: metadata(&local.metadata, local_cluster_id, remote_namespace),
        data: local.data.clone(),
        string_data: None,
        type_: local.type_.clone(),
        immutable: local.immutable,
    })
}

/// The account without its token Secrets (the remote cluster issues its own tokens).
pub(crate) fn service_account(
    local: &ServiceAccount,
    local_cluster_id: &str,
    remote_namespace: &str,
) -> Option<ServiceAccount> {
    if local.metadata.name.as_deref() == Some(DEFAULT_SERVICE_ACCOUNT) {
        return None;
    }
    Some(ServiceAccount {
        metadata: metadata(&local.metadata, local_cluster_id, remote_namespace),
        automount_service_account_token: local.automount_service_account_token,
        image_pull_secrets: local.image_pull_secrets.clone(),
        secrets: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn copies_carry_the_data_and_our_markers() {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "settings", "namespace": "shop", "uid": "u", "resourceVersion": "7",
                         "labels": {"app": "web"}},
            "data": {"mode": "fast"},
        }))
        .unwrap();
        let copy = configmap(&cm, "c1", "shop-c1").unwrap();
        assert_eq!(copy.metadata.namespace.as_deref(), Some("shop-c1"));
        assert!(copy.metadata.uid.is_none() && copy.metadata.resource_version.is_none());
        assert_eq!(copy.data, cm.data);
        assert!(ours(&copy.metadata, "c1", "shop"));
        assert!(!ours(&copy.metadata, "c2", "shop"));
        assert!(!ours(&copy.metadata, "c1", "other"));
        assert!(!ours(&cm.metadata, "c1", "shop"));
        assert_eq!(copy.metadata.labels.unwrap()["app"], "web");
    }

    #[test]
    fn cluster_specific_objects_stay_home() {
        let ca: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "kube-root-ca.crt"}})).unwrap();
        assert!(configmap(&ca, "c1", "x").is_none());
        let token: Secret = serde_json::from_value(json!({
            "metadata": {"name": "t"}, "type": "kubernetes.io/service-account-token"}))
        .unwrap();
        assert!(secret(&token, "c1", "x").is_none());
        let default: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        assert!(service_account(&default, "c1", "x").is_none());
        let app: ServiceAccount = serde_json::from_value(json!({
            "metadata": {"name": "app"}, "secrets": [{"name": "app-token"}],
            "imagePullSecrets": [{"name": "registry"}]}))
        .unwrap();
        let copy = service_account(&app, "c1", "x").unwrap();
        assert!(copy.secrets.is_none());
        assert_eq!(copy.image_pull_secrets, app.image_pull_secrets);
        let bootstrap: Secret = serde_json::from_value(json!({
            "metadata": {"name": "bootstrap-token-abcdef"}, "type": "bootstrap.kubernetes.io/token"}))
        .unwrap();
        assert!(secret(&bootstrap, "c1", "x").is_none());
    }

    #[test]
    fn copies_keep_what_restricts() {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "settings"}, "data": {"a": "1"}, "immutable": true}))
        .unwrap();
        assert_eq!(configmap(&cm, "c1", "x").unwrap().immutable, Some(true));
        let tls: Secret = serde_json::from_value(json!({
            "metadata": {"name": "cert"}, "type": "kubernetes.io/tls", "immutable": true,
            "data": {"tls.crt": "", "tls.key": ""}}))
        .unwrap();
        let copy = secret(&tls, "c1", "x").unwrap();
        assert_eq!(copy.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(copy.immutable, Some(true));
        // No token of this cluster, but its word on mounting one, and who may mount what.
        let app: ServiceAccount = serde_json::from_value(json!({
            "metadata": {"name": "app", "annotations": {"kubernetes.io/enforce-mountable-secrets": "true"}},
            "automountServiceAccountToken": false, "secrets": [{"name": "app-token-x7k2p"}]}))
        .unwrap();
        let copy = service_account(&app, "c1", "x").unwrap();
        assert_eq!(copy.automount_service_account_token, Some(false));
        assert!(copy.secrets.is_none());
        assert_eq!(
            copy.metadata.annotations.unwrap()["kubernetes.io/enforce-mountable-secrets"],
            "true"
        );
    }
}
