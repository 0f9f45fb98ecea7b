//! Which local objects cross into the remote namespaces, and what of their metadata: Liqo's
//! reflection policies. Per kind, `DenyList` reflects every object but those annotated
//! `liqo.io/skip-reflection`, `AllowList` only those annotated `liqo.io/allow-reflection`;
//! labels and annotations on the not-reflected lists never cross (with any object, twins
//! included). Twins and their status always cross: the pod is the point of offloading.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::ObjectMeta;

use crate::model::markers::{
    ORIGIN_CLAIM_UID_ANNOTATION, ORIGIN_CLUSTER_LABEL, ORIGIN_NAMESPACE_ANNOTATION,
    ORIGIN_POD_UID_ANNOTATION,
};

/// In `DenyList` mode, an object carrying it (`"true"`) stays home.
pub const SKIP_ANNOTATION: &str = "liqo.io/skip-reflection";
/// In `AllowList` mode, only objects carrying it (`"true"`) cross.
pub const ALLOW_ANNOTATION: &str = "liqo.io/allow-reflection";

/// Annotations that never cross unless `--annotations-not-reflected` says otherwise: what
/// kubectl keeps for itself, and what cloud load-balancer controllers write on a Service or
/// Ingress of this cluster (copied, they would point another cluster's controller at this
/// cluster's load balancers, or be fought over forever).
pub const DEFAULT_ANNOTATIONS_NOT_REFLECTED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "cloud.google.com/neg",
    "cloud.google.com/neg-status",
    "kubernetes.digitalocean.com/load-balancer-id",
    "ingress.kubernetes.io/backends",
    "ingress.kubernetes.io/forwarding-rule",
    "ingress.kubernetes.io/target-proxy",
    "ingress.kubernetes.io/url-map",
    "metallb.universe.tf/address-pool",
    "metallb.universe.tf/ip-allocated-from-pool",
    "metallb.universe.tf/loadBalancerIPs",
    "loadbalancer.openstack.org/load-balancer-id",
];

/// The RuntimeClass by which a pod asks for the virtual nodes, as in Liqo.
pub const DEFAULT_RUNTIME_CLASS: &str = "liqo";

/// A kind's policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "verbatim")]
pub enum ReflectionType {
    /// Every object but those annotated `liqo.io/skip-reflection: "true"`.
    #[default]
    DenyList,
    /// Only the objects annotated `liqo.io/allow-reflection: "true"`.
    AllowList,
}

/// The kinds a policy applies to (pods always cross).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum PolicyKind {
    #[value(name = "configmap")]
    ConfigMap,
    #[value(name = "secret")]
    Secret,
    #[value(name = "serviceaccount")]
    ServiceAccount,
    #[value(name = "service")]
    Service,
    /// Without a policy of its own, a slice follows its Service's (Liqo's way).
    #[value(name = "endpointslice")]
    EndpointSlice,
    #[value(name = "ingress")]
    Ingress,
    #[value(name = "networkpolicy")]
    NetworkPolicy,
}

/// What a marking annotation says: Go's `strconv.ParseBool`, as Liqo reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    Absent,
    True,
    False,
    /// Neither true nor false: read as the value that keeps the object home.
    Unreadable,
}

fn mark(meta: &ObjectMeta, key: &str) -> Mark {
    match meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
    {
        None => Mark::Absent,
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Mark::True,
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Mark::False,
        Some(_) => Mark::Unreadable,
    }
}

/// The reflection policies and the metadata left out of copies.
#[derive(Clone, Debug)]
pub struct ReflectionPolicy {
    types: BTreeMap<PolicyKind, ReflectionType>,
    labels_not_reflected: BTreeSet<String>,
    annotations_not_reflected: BTreeSet<String>,
    /// How ingress classes are named in the remote clusters.
    pub(crate) ingress_classes: IngressClassMap,
    /// The RuntimeClass by which pods opt in to the virtual nodes: it means nothing in the
    /// remote cluster, so twins leave it out.
    pub(crate) runtime_class: String,
}

impl Default for ReflectionPolicy {
    fn default() -> Self {
        Self::new(
            BTreeMap::new(),
            Vec::new(),
            DEFAULT_ANNOTATIONS_NOT_REFLECTED
                .iter()
                .map(|a| (*a).to_owned())
                .collect(),
        )
    }
}

impl ReflectionPolicy {
    /// Kinds not in `types` are `DenyList` (an endpoint slice: its Service's).
    pub fn new(
        types: BTreeMap<PolicyKind, ReflectionType>,
        labels_not_reflected: Vec<String>,
        annotations_not_reflected: Vec<String>,
    ) -> Self {
        Self {
            types,
            labels_not_reflected: labels_not_reflected.into_iter().collect(),
            annotations_not_reflected: annotations_not_reflected.into_iter().collect(),
            ingress_classes: IngressClassMap::default(),
            runtime_class: DEFAULT_RUNTIME_CLASS.to_owned(),
        }
    }

    /// With this opt-in RuntimeClass (empty: none).
    pub fn with_runtime_class(self, runtime_class: &str) -> Self {
        Self {
            runtime_class: runtime_class.to_owned(),
            ..self
        }
    }

    /// With these ingress classes mapped.
    pub fn with_ingress_classes(self, ingress_classes: IngressClassMap) -> Self {
        Self {
            ingress_classes,
            ..self
        }
    }

    pub(crate) fn type_of(&self, kind: PolicyKind) -> ReflectionType {
        match (kind, self.types.get(&kind)) {
            (_, Some(t)) => *t,
            (PolicyKind::EndpointSlice, None) => self.type_of(PolicyKind::Service),
            (_, None) => ReflectionType::DenyList,
        }
    }

    /// Whether an object of `kind` with this metadata crosses, by its own marks; `None` when
    /// it carries none in an `AllowList` kind or in a `DenyList` one (its kind decides).
    pub(crate) fn own_decision(&self, kind: PolicyKind, meta: &ObjectMeta) -> Option<bool> {
        // Marked to skip: home in either mode (the safe reading of both marks at once).
        if matches!(mark(meta, SKIP_ANNOTATION), Mark::True | Mark::Unreadable) {
            return Some(false);
        }
        match self.type_of(kind) {
            ReflectionType::DenyList => match mark(meta, SKIP_ANNOTATION) {
                Mark::Absent => None,
                Mark::False => Some(true),
                Mark::True | Mark::Unreadable => Some(false),
            },
            ReflectionType::AllowList => match mark(meta, ALLOW_ANNOTATION) {
                Mark::Absent => None,
                Mark::True => Some(true),
                Mark::False | Mark::Unreadable => Some(false),
            },
        }
    }

    /// Whether an object of `kind` crosses: its own marks, else its kind's default.
    pub(crate) fn reflects(&self, kind: PolicyKind, meta: &ObjectMeta) -> bool {
        self.own_decision(kind, meta)
            .unwrap_or(self.type_of(kind) == ReflectionType::DenyList)
    }

    /// An endpoint slice: its own marks, else those of its Service (`service`, when the
    /// local watch holds it), else the kind's default.
    pub(crate) fn reflects_slice(&self, slice: &ObjectMeta, service: Option<&ObjectMeta>) -> bool {
        if let Some(own) = self.own_decision(PolicyKind::EndpointSlice, slice) {
            return own;
        }
        match service {
            Some(service) => self.reflects(PolicyKind::Service, service),
            None => self.type_of(PolicyKind::EndpointSlice) == ReflectionType::DenyList,
        }
    }

    /// Leaves out of a copy's metadata the labels and annotations that never cross (our
    /// own markers always stay: ownership rests on them).
    pub(crate) fn strip(&self, meta: &mut ObjectMeta) {
        const MARKERS: [&str; 4] = [
            ORIGIN_CLUSTER_LABEL,
            ORIGIN_NAMESPACE_ANNOTATION,
            ORIGIN_POD_UID_ANNOTATION,
            ORIGIN_CLAIM_UID_ANNOTATION,
        ];
        if let Some(labels) = meta.labels.as_mut() {
            labels.retain(|k, _| {
                MARKERS.contains(&k.as_str()) || !self.labels_not_reflected.contains(k)
            });
        }
        if let Some(annotations) = meta.annotations.as_mut() {
            annotations.retain(|k, _| {
                MARKERS.contains(&k.as_str()) || !self.annotations_not_reflected.contains(k)
            });
        }
    }
}

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

/// Parses `KIND=TYPE` (`--reflection-type`), e.g. `secret=AllowList`.
pub fn parse_type(text: &str) -> Result<(PolicyKind, ReflectionType), String> {
    use clap::ValueEnum;
    let kinds = || {
        PolicyKind::value_variants()
            .iter()
            .filter_map(|k| k.to_possible_value().map(|v| v.get_name().to_owned()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (kind, kind_type) = text.split_once('=').ok_or_else(|| {
        format!(
            "{text:?} is not KIND=TYPE: use e.g. secret=AllowList (kinds: {}; types: DenyList, AllowList)",
            kinds()
        )
    })?;
    let kind = PolicyKind::from_str(kind.trim(), true)
        .map_err(|_| format!("unknown kind {kind:?}: use one of {}", kinds()))?;
    let kind_type = ReflectionType::from_str(kind_type.trim(), true)
        .map_err(|_| format!("unknown reflection type {kind_type:?}: use DenyList or AllowList"))?;
    Ok((kind, kind_type))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn meta(annotations: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(json!({"name": "x", "annotations": annotations})).unwrap()
    }

    fn policy(types: &[(PolicyKind, ReflectionType)]) -> ReflectionPolicy {
        ReflectionPolicy::new(types.iter().copied().collect(), vec![], vec![])
    }

    #[test]
    fn deny_list_reflects_all_but_the_skipped() {
        let p = policy(&[]);
        assert!(p.reflects(PolicyKind::ConfigMap, &meta(json!({}))));
        assert!(!p.reflects(
            PolicyKind::ConfigMap,
            &meta(json!({SKIP_ANNOTATION: "true"}))
        ));
        assert!(p.reflects(
            PolicyKind::ConfigMap,
            &meta(json!({SKIP_ANNOTATION: "false"}))
        ));
        // The allow mark means nothing in DenyList mode.
        assert!(!p.reflects(
            PolicyKind::Secret,
            &meta(json!({SKIP_ANNOTATION: "True", ALLOW_ANNOTATION: "true"}))
        ));
        // Unreadable: stays home (the safe reading).
        assert!(!p.reflects(PolicyKind::Secret, &meta(json!({SKIP_ANNOTATION: "yes"}))));
    }

    #[test]
    fn allow_list_reflects_only_the_allowed() {
        let p = policy(&[(PolicyKind::ConfigMap, ReflectionType::AllowList)]);
        assert!(!p.reflects(PolicyKind::ConfigMap, &meta(json!({}))));
        assert!(p.reflects(
            PolicyKind::ConfigMap,
            &meta(json!({ALLOW_ANNOTATION: "true"}))
        ));
        assert!(p.reflects(PolicyKind::ConfigMap, &meta(json!({ALLOW_ANNOTATION: "1"}))));
        assert!(!p.reflects(
            PolicyKind::ConfigMap,
            &meta(json!({ALLOW_ANNOTATION: "false"}))
        ));
        assert!(!p.reflects(
            PolicyKind::ConfigMap,
            &meta(json!({ALLOW_ANNOTATION: "please"}))
        ));
        // Other kinds keep their default.
        assert!(p.reflects(PolicyKind::Secret, &meta(json!({}))));
        // Both marks: the skip wins, in either mode.
        let both = meta(json!({ALLOW_ANNOTATION: "true", SKIP_ANNOTATION: "true"}));
        assert!(!p.reflects(PolicyKind::ConfigMap, &both));
        assert!(!p.reflects(PolicyKind::Secret, &both));
    }

    #[test]
    fn a_slice_follows_its_service_unless_marked_itself() {
        let p = policy(&[(PolicyKind::Service, ReflectionType::AllowList)]);
        assert_eq!(
            p.type_of(PolicyKind::EndpointSlice),
            ReflectionType::AllowList
        );
        let allowed = meta(json!({ALLOW_ANNOTATION: "true"}));
        let plain = meta(json!({}));
        assert!(p.reflects_slice(&plain, Some(&allowed)));
        assert!(!p.reflects_slice(&plain, Some(&plain)));
        assert!(!p.reflects_slice(&plain, None));
        assert!(p.reflects_slice(&allowed, Some(&plain)));
        let deny = policy(&[]);
        let skipped = meta(json!({SKIP_ANNOTATION: "true"}));
        assert!(!deny.reflects_slice(&plain, Some(&skipped)));
        assert!(deny.reflects_slice(&meta(json!({SKIP_ANNOTATION: "false"})), Some(&skipped)));
        // A slice's own policy, when set, is its own.
        let own = policy(&[
            (PolicyKind::Service, ReflectionType::AllowList),
            (PolicyKind::EndpointSlice, ReflectionType::DenyList),
        ]);
        assert!(own.reflects_slice(&plain, None));
    }

    #[test]
    fn strip_leaves_out_the_listed_keys_but_never_our_markers() {
        let p = ReflectionPolicy::new(
            BTreeMap::new(),
            vec!["team".into(), ORIGIN_CLUSTER_LABEL.into()],
            vec!["secret-note".into(), ORIGIN_NAMESPACE_ANNOTATION.into()],
        );
        let mut m: ObjectMeta = serde_json::from_value(json!({
            "labels": {"team": "a", "app": "web", ORIGIN_CLUSTER_LABEL: "c1"},
            "annotations": {"secret-note": "x", "keep": "y", ORIGIN_NAMESPACE_ANNOTATION: "shop"},
        }))
        .unwrap();
        p.strip(&mut m);
        let labels = m.labels.unwrap();
        assert!(!labels.contains_key("team"));
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[ORIGIN_CLUSTER_LABEL], "c1");
        let annotations = m.annotations.unwrap();
        assert!(!annotations.contains_key("secret-note"));
        assert_eq!(annotations["keep"], "y");
        assert_eq!(annotations[ORIGIN_NAMESPACE_ANNOTATION], "shop");
    }

    #[test]
    fn the_default_leaves_out_last_applied_and_cloud_annotations() {
        let p = ReflectionPolicy::default();
        let mut m = meta(json!({
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "cloud.google.com/neg-status": "{}",
            "note": "kept",
        }));
        p.strip(&mut m);
        assert_eq!(
            m.annotations.unwrap().keys().collect::<Vec<_>>(),
            vec!["note"]
        );
    }

    #[test]
    fn kind_type_pairs_parse_with_clear_errors() {
        assert_eq!(
            parse_type("secret=AllowList").unwrap(),
            (PolicyKind::Secret, ReflectionType::AllowList)
        );
        assert_eq!(
            parse_type("ConfigMap=denylist").unwrap(),
            (PolicyKind::ConfigMap, ReflectionType::DenyList)
        );
        let e = parse_type("secret").unwrap_err();
        assert!(
            e.contains("KIND=TYPE") && e.contains("networkpolicy"),
            "{e}"
        );
        let e = parse_type("pod=AllowList").unwrap_err();
        assert!(e.contains("unknown kind \"pod\""), "{e}");
        let e = parse_type("secret=Maybe").unwrap_err();
        assert!(e.contains("DenyList or AllowList"), "{e}");
    }
}
