//! This cluster's identity: its ID and the labels chosen at installation
//! (`--cluster-labels region=eu,provider=azure`), published in a ConfigMap that peers read
//! to label the virtual node standing for this cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;

use crate::model::{
    labels::{validate_label_key, validate_label_value},
    markers::{APP_NAME, APP_NAME_LABEL, IDENTITY_CONFIGMAP},
    reason::Reason,
};

const ID_KEY: &str = "clusterID";
const LABELS_KEY: &str = "clusterLabels";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClusterIdentity {
    pub(crate) cluster_id: String,
    pub(crate) labels: BTreeMap<String, String>,
}

/// Parses `k=v,k2=v2` (empty: no labels), checking Kubernetes label syntax.
pub(crate) fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("cluster label {pair:?} has no '=': use key=value"))?;
        validate_label_key(key).map_err(|e| format!("cluster label key {key:?}: {e}"))?;
        validate_label_value(value).map_err(|e| format!("cluster label {key}={value:?}: {e}"))?;
        if labels.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("cluster label {key:?} is given twice"));
        }
    }
    Ok(labels)
}

/// A cluster ID ends up in namespace names (`<namespace>-<id>`), label values and node names
/// (`liqo-<id>`): lowercase letters, digits and '-', alphanumeric at both ends, at most 63
/// characters (a UUID, such as the default kube-system UID, has 36).
pub(crate) fn validate_cluster_id(id: &str) -> Result<(), String> {
    let b = id.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if ok {
        Ok(())
    } else {
        Err("use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit (a UUID fits)".into())
    }
}

impl ClusterIdentity {
    pub(crate) fn to_configmap(&self, namespace: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(IDENTITY_CONFIGMAP.into()),
                namespace: Some(namespace.into()),
                labels: Some(BTreeMap::from([(
                    APP_NAME_LABEL.to_owned(),
                    APP_NAME.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                (ID_KEY.to_owned(), self.cluster_id.clone()),
                (
                    LABELS_KEY.to_owned(),
                    serde_json::to_string(&self.labels).unwrap_or_default(),
                ),
            ])),
            ..ConfigMap::default()
        }
    }

    /// The identity a ConfigMap publishes, if it is readable.
    pub(crate) fn from_configmap(cm: &ConfigMap) -> Result<Self, String> {
        let data = cm
            .data
            .as_ref()
            .ok_or("the identity ConfigMap has no data")?;
        let cluster_id = data
            .get(ID_KEY)
            .filter(|id| !id.is_empty())
            .ok_or("the identity ConfigMap has no clusterID")?
            .clone();
        let labels = match data.get(LABELS_KEY) {
            Some(json) if !json.is_empty() => serde_json::from_str(json).map_err(|e| {
                format!("the identity ConfigMap's clusterLabels is not a JSON map: {e}")
            })?,
            _ => BTreeMap::new(),
        };
        Ok(Self { cluster_id, labels })
    }
}

/// Why a remote's identity could not be read: each calls for a different fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("the remote API server did not answer: {0}")]
    Unreachable(String),
    #[error("the peering's credentials may not read the identity ConfigMap {0}")]
    Forbidden(String),
    #[error("the identity ConfigMap {0} is not valid")]
    Invalid(String),
}

impl ReadError {
    /// The condition reason for it.
    pub(crate) fn reason(&self) -> Reason {
        match self {
            Self::Unreachable(_) => Reason::Unreachable,
            Self::Forbidden(_) => Reason::Forbidden,
            Self::Invalid(_) => Reason::InvalidIdentity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_must_fit_namespace_and_node_names() {
        assert!(validate_cluster_id("6744c2c9-d98d-41e1-832a-f4c3f397e138").is_ok());
        assert!(validate_cluster_id("edge-1").is_ok());
        for bad in ["", "Edge", "edge_1", "-edge", "edge-", &"a".repeat(64)] {
            assert!(validate_cluster_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_parse_with_clear_errors() {
        let labels = parse_labels("region=eu, provider=azure").unwrap();
        assert_eq!(labels["region"], "eu");
        assert_eq!(labels["provider"], "azure");
        assert!(parse_labels("").unwrap().is_empty());
        assert!(parse_labels("liqo.io/tier=").unwrap()["liqo.io/tier"].is_empty());
        assert!(parse_labels("region").unwrap_err().contains("no '='"));
        assert!(parse_labels("-x=1").unwrap_err().contains("key"));
        assert!(parse_labels("x=a b").unwrap_err().contains("alphanumeric"));
        assert!(parse_labels("x=1,x=2").unwrap_err().contains("twice"));
    }

    #[test]
    fn identity_round_trips_through_its_configmap() {
        let id = ClusterIdentity {
            cluster_id: "5c1c0a4e-0000-4000-8000-000000000001".into(),
            labels: parse_labels("region=eu,provider=azure").unwrap(),
        };
        let cm = id.to_configmap("liqo");
        assert_eq!(ClusterIdentity::from_configmap(&cm).unwrap(), id);
        let empty = ConfigMap::default();
        assert!(ClusterIdentity::from_configmap(&empty).is_err());
    }
}
