//! Remote namespaces: the object we create in a selected cluster, and who owns an existing
//! one. Only namespaces annotated `liqo.io/remote-namespace=<our cluster ID>` are ever
//! modified or deleted; anything else of the same name is a conflict and left untouched.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::ObjectMeta;

use crate::model::markers::{ORIGIN_CLUSTER_LABEL, ORIGIN_NAMESPACE_LABEL};
use crate::model::{
    api::{
        NamespaceOffloading, NamespaceOffloadingStatus, OFFLOADING_NAME, RemoteNamespaceCondition,
    },
    markers::REMOTE_NAMESPACE_ANNOTATION,
    reason::Reason,
    status::READY,
};

/// The namespace to create in a remote cluster.
pub(crate) fn desired(name: &str, local_cluster_id: &str, origin_namespace: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(BTreeMap::from([(
                REMOTE_NAMESPACE_ANNOTATION.to_owned(),
                local_cluster_id.to_owned(),
            )])),
            labels: Some(BTreeMap::from([
                (
                    ORIGIN_NAMESPACE_LABEL.to_owned(),
                    origin_namespace.to_owned(),
                ),
                (ORIGIN_CLUSTER_LABEL.to_owned(), local_cluster_id.to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The offloadings of other local namespaces whose remote namespaces would be named
/// `remote` too.
pub(crate) fn claimants<'a>(
    namespace: &'a str,
    remote: &'a str,
    offloadings: impl IntoIterator<Item = &'a NamespaceOffloading> + 'a,
    local_cluster_id: &'a str,
) -> impl Iterator<Item = &'a NamespaceOffloading> + 'a {
    offloadings.into_iter().filter(move |other| {
        let ns = other.metadata.namespace.as_deref().unwrap_or_default();
        ns != namespace
            && other.metadata.name.as_deref() == Some(OFFLOADING_NAME)
            && other.spec.remote_name(ns, local_cluster_id) == remote
    })
}

/// The offloading of another local namespace that claims the same remote name before this
/// one (created earlier; within the same second, the one already Ready somewhere, then the
/// smaller namespace name): two namespaces of this cluster never share remote namespaces,
/// and the later one is the conflict.
pub(crate) fn earlier_claimant<'a>(
    nso: &'a NamespaceOffloading,
    remote: &'a str,
    offloadings: impl IntoIterator<Item = &'a NamespaceOffloading> + 'a,
    local_cluster_id: &'a str,
) -> Option<&'a NamespaceOffloading> {
    let namespace = nso.metadata.namespace.as_deref().unwrap_or_default();
    // Creation times have one-second resolution: of two made by one `kubectl apply`, the
    // one whose remote namespaces already exist keeps them.
    let ready_somewhere = |n: &NamespaceOffloading| {
        n.status
            .iter()
            .flat_map(|s| s.remote_namespaces_conditions.values())
            .flatten()
            .any(|c| c.type_ == READY && c.status == "True")
    };
    let order = |n: &NamespaceOffloading| {
        (
            n.metadata.creation_timestamp.clone().map(|t| t.0),
            !ready_somewhere(n),
            n.metadata.namespace.clone().unwrap_or_default(),
        )
    };
    claimants(namespace, remote, offloadings, local_cluster_id)
        .filter(|other| order(other) < order(nso))
        .min_by_key(|other| order(other))
}

/// The message for a namespace whose remote name another local namespace holds.
pub(crate) fn claimed_message(remote: &str, holder: &str) -> String {
    format!(
        "the remote namespace name {remote} is already that of namespace {holder}'s offloading in this cluster: two namespaces cannot share remote namespaces; choose another spec.remoteNamespaceName (namespaceMappingStrategy SelectedName), use DefaultName, or end {holder}'s offloading"
    )
}

/// What exists in the remote cluster under the name we want.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// Nothing: create it.
    Missing,
    /// Ours and live.
    Ours,
    /// Ours, being deleted (by us or someone else): wait for it to go.
    OursTerminating,
    /// Someone else's: never touched. The message says whose and what to do.
    Conflict(String),
}

/// Who owns `existing`. Ours means our cluster's annotation *and* our origin namespace: two
/// local namespaces can map to one remote name (`a` with DefaultName and `a-<id>` with
/// EnforceSameName), and one must never delete what the other created.
pub(crate) fn ownership(
    existing: Option<&Namespace>,
    local_cluster_id: &str,
    origin_namespace: &str,
) -> Ownership {
    let Some(ns) = existing else {
        return Ownership::Missing;
    };
    let name = ns.metadata.name.as_deref().unwrap_or_default();
    let owner = ns
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REMOTE_NAMESPACE_ANNOTATION));
    let origin = ns
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ORIGIN_NAMESPACE_LABEL));
    match owner {
        Some(id)
            if id == local_cluster_id && origin.map(String::as_str) == Some(origin_namespace) =>
        {
            if ns.metadata.deletion_timestamp.is_some() {
                Ownership::OursTerminating
            } else {
                Ownership::Ours
            }
        }
        Some(id) if id == local_cluster_id => Ownership::Conflict(format!(
            "namespace {name} already exists in this cluster and belongs to the offloading of namespace {} of this same cluster: it is left untouched; use namespaceMappingStrategy DefaultName, or stop that namespace's offloading",
            origin.map_or("(unknown)", String::as_str)
        )),
        Some(other) => Ownership::Conflict(format!(
            "namespace {name} already exists in this cluster and belongs to the offloading of cluster {other}: it is left untouched; use namespaceMappingStrategy DefaultName to get a name of your own"
        )),
        None => Ownership::Conflict(format!(
            "namespace {name} already exists in this cluster and was not created by offloading (no {REMOTE_NAMESPACE_ANNOTATION} annotation): it is left untouched; delete or rename it there, or use namespaceMappingStrategy DefaultName"
        )),
    }
}

/// Whether anything may be written into a remote namespace now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Writable {
    /// Ours, and the offloading reports it Ready for that cluster.
    Yes,
    /// Not (yet) created, not yet reported Ready, or being deleted: the offloading's next
    /// status says more.
    NotYet,
    /// Someone else's: nothing is ever written there. The message says whose and the fix.
    Never(String),
}

/// Whether the remote namespace `existing` (from the peer's watch of our namespaces) may
/// receive twins and copies, given the offloading's conditions for that cluster. Both must
/// agree: the status can lag a namespace replaced by someone else's, and the watch holds
/// only namespaces labelled ours, so a foreign one is known from the status alone.
pub(crate) fn writable(
    existing: Option<&Namespace>,
    conditions: &[RemoteNamespaceCondition],
    local_cluster_id: &str,
    origin_namespace: &str,
) -> Writable {
    let ready = conditions.iter().find(|c| c.type_ == READY);
    match ownership(existing, local_cluster_id, origin_namespace) {
        Ownership::Conflict(message) => Writable::Never(message),
        Ownership::Ours if ready.is_some_and(|c| c.status == "True") => Writable::Yes,
        Ownership::Ours | Ownership::OursTerminating => Writable::NotYet,
        Ownership::Missing => match ready {
            Some(c) if c.status != "True" && never_ours(c.reason.as_deref()) => {
                Writable::Never(c.message.clone().unwrap_or_else(|| {
                    "the remote namespace exists and was not created by this cluster's offloading".into()
                }))
            }
            _ => Writable::NotYet,
        },
    }
}

/// Whether a `Ready=False` reason says the remote name is someone else's: a namespace
/// there that is not ours, or a name another local namespace's offloading holds.
fn never_ours(reason: Option<&str>) -> bool {
    reason == Some(Reason::AlreadyExists.as_str()) || reason == Some(Reason::NameClaimed.as_str())
}

/// The clusters whose remote namespace the offloading reports taken by someone else: no
/// new pod is placed on their virtual nodes.
pub(crate) fn taken_in(status: Option<&NamespaceOffloadingStatus>) -> Vec<String> {
    status
        .iter()
        .flat_map(|s| s.remote_namespaces_conditions.iter())
        .filter(|(_, conditions)| {
            conditions
                .iter()
                .any(|c| c.type_ == READY && c.status != "True" && never_ours(c.reason.as_deref()))
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Delete options that only delete the very object we looked at: if it was deleted and
/// recreated by someone else in between, the API server refuses (409) instead.
pub(crate) fn delete_exactly(existing: &Namespace) -> kube::api::DeleteParams {
    kube::api::DeleteParams {
        preconditions: crate::model::preconditions::only_this(&existing.metadata),
        ..kube::api::DeleteParams::background()
    }
}

/// The origin namespace a remote namespace of ours carries.
pub(crate) fn origin_of(namespace: &Namespace) -> Option<String> {
    namespace
        .metadata
        .labels
        .as_ref()?
        .get(ORIGIN_NAMESPACE_LABEL)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "11111111-1111-4111-8111-111111111111";

    #[test]
    fn desired_namespace_carries_ownership_and_origin() {
        let ns = desired("web-id", ME, "web");
        assert_eq!(
            ns.metadata.annotations.as_ref().unwrap()[REMOTE_NAMESPACE_ANNOTATION],
            ME
        );
        assert_eq!(
            ns.metadata.labels.as_ref().unwrap()[ORIGIN_NAMESPACE_LABEL],
            "web"
        );
        assert_eq!(ownership(Some(&ns), ME, "web"), Ownership::Ours);
    }

    #[test]
    fn only_our_annotation_makes_a_namespace_ours() {
        assert_eq!(ownership(None, ME, "web"), Ownership::Missing);
        let mut theirs = desired("web", "22222222-2222-4222-8222-222222222222", "web");
        match ownership(Some(&theirs), ME, "web") {
            Ownership::Conflict(m) => assert!(
                m.contains("belongs to the offloading of cluster 2222"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        theirs.metadata.annotations = None;
        match ownership(Some(&theirs), ME, "web") {
            Ownership::Conflict(m) => assert!(m.contains("was not created by offloading"), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut going = desired("web", ME, "web");
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert_eq!(
            ownership(Some(&going), ME, "web"),
            Ownership::OursTerminating
        );
    }

    fn offloading(namespace: &str, spec: serde_json::Value, created: i64) -> NamespaceOffloading {
        let mut nso =
            NamespaceOffloading::new(OFFLOADING_NAME, serde_json::from_value(spec).unwrap());
        nso.metadata.namespace = Some(namespace.into());
        nso.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
            ));
        nso
    }

    #[test]
    fn the_later_of_two_namespaces_asking_one_remote_name_is_the_conflict() {
        let selected = serde_json::json!({"namespaceMappingStrategy": "SelectedName", "remoteNamespaceName": "shop"});
        let first = offloading("a", selected.clone(), 100);
        let second = offloading("b", selected.clone(), 200);
        let same_name = offloading(
            "shop",
            serde_json::json!({"namespaceMappingStrategy": "EnforceSameName"}),
            300,
        );
        let elsewhere = offloading("c", serde_json::json!({}), 50);
        let all = [first.clone(), second.clone(), same_name.clone(), elsewhere];
        assert!(earlier_claimant(&first, "shop", &all, ME).is_none());
        let holder = |nso: &NamespaceOffloading| {
            earlier_claimant(nso, "shop", &all, ME).and_then(|h| h.metadata.namespace.clone())
        };
        assert_eq!(holder(&second).as_deref(), Some("a"));
        assert_eq!(holder(&same_name).as_deref(), Some("a"));
        // Created in the same second: the smaller namespace name holds it.
        let tie = offloading("0", selected, 100);
        let all = [first.clone(), tie.clone()];
        assert_eq!(
            earlier_claimant(&first, "shop", &all, ME)
                .and_then(|h| h.metadata.namespace.clone())
                .as_deref(),
            Some("0")
        );
        assert!(earlier_claimant(&tie, "shop", &all, ME).is_none());
        // ...unless the other is already Ready somewhere.
        let mut ready_first = first.clone();
        ready_first.status = Some(NamespaceOffloadingStatus {
            remote_namespaces_conditions: [("c2".to_owned(), ready("True", "NamespaceCreated"))]
                .into(),
            ..NamespaceOffloadingStatus::default()
        });
        let all = [ready_first.clone(), tie.clone()];
        assert!(earlier_claimant(&ready_first, "shop", &all, ME).is_none());
        assert_eq!(
            earlier_claimant(&tie, "shop", &all, ME)
                .and_then(|h| h.metadata.namespace.clone())
                .as_deref(),
            Some("a")
        );
        let all = [first.clone(), tie.clone()];
        // Any other claimant, for a creation (the webhook): named.
        let names: Vec<_> = claimants("new", "shop", &all, ME)
            .filter_map(|n| n.metadata.namespace.clone())
            .collect();
        assert_eq!(names, ["a", "0"]);
        assert!(claimed_message("shop", "a").contains("choose another spec.remoteNamespaceName"));
    }

    #[test]
    fn another_local_namespaces_remote_namespace_is_a_conflict() {
        // Local "web" (DefaultName) and local "web-<id>" (EnforceSameName) map to one name.
        let ns = desired(&format!("web-{ME}"), ME, "web");
        match ownership(Some(&ns), ME, &format!("web-{ME}")) {
            Ownership::Conflict(m) => {
                assert!(
                    m.contains("offloading of namespace web of this same cluster"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        let mut unlabelled = ns.clone();
        unlabelled.metadata.labels = None;
        assert!(matches!(
            ownership(Some(&unlabelled), ME, "web"),
            Ownership::Conflict(_)
        ));
    }

    fn ready(status: &str, reason: &str) -> Vec<RemoteNamespaceCondition> {
        vec![RemoteNamespaceCondition {
            type_: READY.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(format!("{reason} says so")),
            last_transition_time: None,
        }]
    }

    #[test]
    fn only_our_namespace_reported_ready_is_written_into() {
        let ours = desired("web", ME, "web");
        let created = ready("True", "NamespaceCreated");
        assert_eq!(writable(Some(&ours), &created, ME, "web"), Writable::Yes);
        // Ours, but the status has not caught up (or says it is failing): not yet.
        assert_eq!(writable(Some(&ours), &[], ME, "web"), Writable::NotYet);
        assert_eq!(
            writable(Some(&ours), &ready("False", "Terminating"), ME, "web"),
            Writable::NotYet
        );
        // Reported Ready, but the watch does not hold it (deleted, or not seen yet).
        assert_eq!(writable(None, &created, ME, "web"), Writable::NotYet);
        // A foreign namespace is not in the watch; the status says it is taken.
        match writable(None, &ready("False", "AlreadyExists"), ME, "web") {
            Writable::Never(m) => assert_eq!(m, "AlreadyExists says so"),
            other => panic!("{other:?}"),
        }
        // Another cluster's namespace that the status still calls Ready (it lags).
        let theirs = desired("web", "22222222-2222-4222-8222-222222222222", "web");
        assert!(matches!(
            writable(Some(&theirs), &created, ME, "web"),
            Writable::Never(_)
        ));
    }

    #[test]
    fn only_clusters_reporting_the_name_taken_are_kept_from_new_pods() {
        let status = NamespaceOffloadingStatus {
            remote_namespaces_conditions: [
                ("c2".to_owned(), ready("False", "AlreadyExists")),
                ("c3".to_owned(), ready("True", "NamespaceCreated")),
                ("c4".to_owned(), ready("False", "Unreachable")),
                ("c5".to_owned(), ready("False", "NameClaimed")),
            ]
            .into(),
            ..NamespaceOffloadingStatus::default()
        };
        assert_eq!(
            taken_in(Some(&status)),
            vec!["c2".to_owned(), "c5".to_owned()]
        );
        assert!(matches!(
            writable(None, &ready("False", "NameClaimed"), ME, "web"),
            Writable::Never(_)
        ));
        assert!(taken_in(None).is_empty());
    }

    #[test]
    fn deletes_are_bound_to_the_uid_seen() {
        let mut ns = desired("web", ME, "web");
        ns.metadata.uid = Some("u-1".into());
        let params = delete_exactly(&ns);
        assert_eq!(params.preconditions.unwrap().uid.as_deref(), Some("u-1"));
    }
}
