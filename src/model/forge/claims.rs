//! Pure translation of the PersistentVolumeClaims of offloaded pods. A claim of our storage
//! class (provisioner [`PROVISIONER`]) that the scheduler placed on a virtual node
//! (`volume.kubernetes.io/selected-node`) is provisioned in that node's cluster: a claim of
//! the same name in the remote namespace (its storage class mapped, or none: that cluster's
//! default), and here a placeholder PersistentVolume bound to the local claim, pinned to the
//! virtual node by its node affinity. The local claim is then Bound as any provisioned one
//! (the scheduler lets the pod onto the virtual node, and keeps every other pod using it
//! there: the data lives in that cluster), and the remote claim's status is mirrored on it.
//!
//! A claim bound to any other volume holds data that lives in this cluster: a pod using it
//! is not offloaded (its data does not move).

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::{
    LocalVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimCondition,
    PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, PersistentVolumeSpec, Pod,
    VolumeNodeAffinity,
};
use kube::api::ObjectMeta;

use crate::model::markers::{
    ORIGIN_CLAIM_UID_ANNOTATION, ORIGIN_CLUSTER_LABEL, ORIGIN_NAMESPACE_ANNOTATION,
    REMOTE_CLUSTER_ID_LABEL,
};

/// The provisioner our storage class names: claims of that class placed on a virtual node
/// are ours to provision (a real provisioner would try, and fail, to provision on a node
/// that has no kubelet).
pub(crate) const PROVISIONER: &str = "offloading.liqo.io/remote";
/// Where the PV controller writes the provisioner that should provision a claim.
const PROVISIONER_ANNOTATIONS: [&str; 2] = [
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
];
/// The node the scheduler picked for a claim of a WaitForFirstConsumer class.
pub(crate) const SELECTED_NODE_ANNOTATION: &str = "volume.kubernetes.io/selected-node";
/// Who provisioned a PersistentVolume (the PV controller leaves its deletion to them).
const PROVISIONED_BY_ANNOTATION: &str = "pv.kubernetes.io/provisioned-by";
/// The local claim's condition mirroring the remote claim's phase.
pub(crate) const CLAIM_CONDITION: &str = "offloading.liqo.io/RemoteClaim";
/// Prefix of the local placeholder volumes (then the local claim's uid).
const VOLUME_PREFIX: &str = "offloading-";

/// Local storage class name to the remote one (`run --storage-class-mapping`).
pub(crate) type ClassMapping = BTreeMap<String, String>;

/// Parses one `LOCAL=REMOTE` of `--storage-class-mapping`.
pub(crate) fn parse_class_mapping(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((local, remote)) if !local.is_empty() && !remote.is_empty() => {
            Ok((local.to_owned(), remote.to_owned()))
        }
        _ => Err(format!(
            "{text:?}: expected LOCAL=REMOTE (two storage class names)"
        )),
    }
}

/// The claims a pod's volumes name.
pub(crate) fn claim_names(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            let claim = v.persistent_volume_claim.as_ref()?;
            Some((v.name.clone(), claim.claim_name.clone()))
        })
        .collect()
}

/// The name of the placeholder volume standing here for a claim provisioned remotely.
pub(crate) fn local_volume_name(claim: &PersistentVolumeClaim) -> Option<String> {
    claim
        .metadata
        .uid
        .as_deref()
        .map(|uid| format!("{VOLUME_PREFIX}{uid}"))
}

/// Whether the PV controller handed the claim's provisioning to us (its class names our
/// provisioner, and a node was picked).
pub(crate) fn ours_to_provision(claim: &PersistentVolumeClaim) -> bool {
    let annotations = claim.metadata.annotations.as_ref();
    PROVISIONER_ANNOTATIONS
        .iter()
        .any(|k| annotations.and_then(|a| a.get(*k)).map(String::as_str) == Some(PROVISIONER))
}

/// The node the scheduler picked for the claim.
pub(crate) fn selected_node(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .metadata
        .annotations
        .as_ref()?
        .get(SELECTED_NODE_ANNOTATION)
        .map(String::as_str)
}

/// The volume a claim is bound to, if any.
pub(crate) fn bound_volume(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .spec
        .as_ref()?
        .volume_name
        .as_deref()
        .filter(|v| !v.is_empty())
}

/// Whether the claim is bound to our placeholder volume (provisioned remotely).
pub(crate) fn bound_remotely(claim: &PersistentVolumeClaim) -> bool {
    bound_volume(claim).is_some() && bound_volume(claim) == local_volume_name(claim).as_deref()
}

/// Annotations the local control plane writes on a claim: they describe its binding here.
fn local_annotation(key: &str) -> bool {
    [
        "pv.kubernetes.io/",
        "volume.kubernetes.io/",
        "volume.beta.kubernetes.io/",
    ]
    .iter()
    .any(|p| key.starts_with(p))
        || key == "kubectl.kubernetes.io/last-applied-configuration"
}

/// The claim to create in `remote_namespace`: same name, labels and annotations (minus
/// this cluster's binding), our markers; its size, access and volume modes; the storage
/// class `classes` maps its class to, else none (the remote's default class). Its
/// selector (of volumes here) is left out. A claim made from a data source here (a
/// snapshot, another claim) is not provisioned there: its data would not follow.
pub(crate) fn remote_claim(
    local: &PersistentVolumeClaim,
    local_cluster_id: &str,
    remote_namespace: &str,
    classes: &ClassMapping,
) -> Result<PersistentVolumeClaim, String> {
    let spec = local.spec.clone().unwrap_or_default();
    if spec.data_source.is_some() || spec.data_source_ref.is_some() {
        return Err(
            "it is made from a data source of this cluster (a snapshot or another claim), whose data would not follow it there".into(),
        );
    }
    let mut labels = local.metadata.labels.clone().unwrap_or_default();
    labels.insert(ORIGIN_CLUSTER_LABEL.into(), local_cluster_id.into());
    let mut annotations = local.metadata.annotations.clone().unwrap_or_default();
    annotations.retain(|k, _| !local_annotation(k));
    annotations.insert(
        ORIGIN_NAMESPACE_ANNOTATION.into(),
        local.metadata.namespace.clone().unwrap_or_default(),
    );
    annotations.insert(
        ORIGIN_CLAIM_UID_ANNOTATION.into(),
        local.metadata.uid.clone().unwrap_or_default(),
    );
    Ok(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: local.metadata.name.clone(),
            namespace: Some(remote_namespace.into()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: spec.access_modes,
            resources: spec.resources,
            volume_mode: spec.volume_mode,
            storage_class_name: spec
                .storage_class_name
                .as_ref()
                .and_then(|c| classes.get(c))
                .cloned(),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    })
}

/// Whose a remote claim is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClaimOwner {
    /// Ours, for this local claim.
    This,
    /// Ours, for an earlier local claim of that name (deleted since).
    Stale,
    /// Not ours: never touched.
    Other,
}

pub(crate) fn owner(
    remote: &PersistentVolumeClaim,
    local: &PersistentVolumeClaim,
    local_cluster_id: &str,
) -> ClaimOwner {
    let namespace = local.metadata.namespace.as_deref().unwrap_or_default();
    if !super::objects::ours(&remote.metadata, local_cluster_id, namespace) {
        return ClaimOwner::Other;
    }
    if origin_uid(remote) == local.metadata.uid.as_deref() {
        ClaimOwner::This
    } else {
        ClaimOwner::Stale
    }
}

/// The uid of the local claim a remote claim of ours stands for.
pub(crate) fn origin_uid(remote: &PersistentVolumeClaim) -> Option<&str> {
    remote
        .metadata
        .annotations
        .as_ref()?
        .get(ORIGIN_CLAIM_UID_ANNOTATION)
        .map(String::as_str)
}

/// The placeholder volume standing here for the claim provisioned in `cluster_id`: bound
/// to the local claim (its claimRef, with its uid), of its class, size and modes, pinned to
/// the virtual node. A `local` source: nothing attaches or mounts it (no kubelet runs the
/// virtual node); the path only says where the data is.
pub(crate) fn local_volume(
    claim: &PersistentVolumeClaim,
    virtual_node: &str,
    cluster_id: &str,
    remote_namespace: &str,
) -> Option<PersistentVolume> {
    let name = local_volume_name(claim)?;
    let spec = claim.spec.clone().unwrap_or_default();
    let claim_name = claim.metadata.name.clone().unwrap_or_default();
    let capacity = spec.resources.as_ref().and_then(|r| r.requests.clone());
    Some(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some([(REMOTE_CLUSTER_ID_LABEL.to_owned(), cluster_id.to_owned())].into()),
            annotations: Some(
                [(PROVISIONED_BY_ANNOTATION.to_owned(), PROVISIONER.to_owned())].into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes,
            capacity,
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: Some(claim_name.clone()),
                uid: claim.metadata.uid.clone(),
                ..ObjectReference::default()
            }),
            storage_class_name: spec.storage_class_name,
            volume_mode: spec.volume_mode,
            // Its deletion is ours: the PV controller leaves a Released volume of an
            // external provisioner to it.
            persistent_volume_reclaim_policy: Some("Delete".into()),
            local: Some(LocalVolumeSource {
                path: format!("/remote/{cluster_id}/{remote_namespace}/{claim_name}"),
                fs_type: None,
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![virtual_node.into()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    })
}

/// The local claim's status as the remote claim's says: its capacity once bound there, its
/// conditions, and ours (the remote phase). The phase and access modes stay the PV
/// controller's: the claim is Bound here to its placeholder volume.
pub(crate) fn local_status(
    remote: Option<&PersistentVolumeClaimStatus>,
    cluster_id: &str,
    current: Option<&PersistentVolumeClaimStatus>,
) -> PersistentVolumeClaimStatus {
    let phase = remote
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    let bound = phase == "Bound";
    let mut conditions: Vec<PersistentVolumeClaimCondition> = remote
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let previous = current
        .and_then(|c| c.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == CLAIM_CONDITION));
    let status = if bound { "True" } else { "False" };
    let message = format!("the claim of that name in cluster {cluster_id} is {phase}");
    let transition = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        )),
    };
    conditions.push(PersistentVolumeClaimCondition {
        type_: CLAIM_CONDITION.into(),
        status: status.into(),
        reason: Some(phase),
        message: Some(message),
        last_transition_time: transition,
        last_probe_time: None,
    });
    PersistentVolumeClaimStatus {
        capacity: if bound {
            remote.and_then(|s| s.capacity.clone())
        } else {
            current.and_then(|c| c.capacity.clone())
        },
        conditions: Some(conditions),
        ..PersistentVolumeClaimStatus::default()
    }
}

/// Whether the local status already says what `wanted` does (transition times aside).
pub(crate) fn status_current(
    current: Option<&PersistentVolumeClaimStatus>,
    wanted: &PersistentVolumeClaimStatus,
) -> bool {
    let Some(current) = current else {
        return false;
    };
    let strip = |c: &Option<Vec<PersistentVolumeClaimCondition>>| -> Vec<(String, String, Option<String>, Option<String>)> {
        c.iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone()))
            .collect()
    };
    current.capacity == wanted.capacity && strip(&current.conditions) == strip(&wanted.conditions)
}

/// Where a pod's claims stand for a twin in one cluster.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claims {
    /// Every claim has its remote claim there (or the pod uses none).
    Ready,
    /// A claim is being provisioned (or its copy there is not seen yet): look again soon.
    Waiting(String),
    /// A claim's data lives in this cluster: the pod does not run remotely.
    Unsupported(String),
}

/// Whether the twin may be created: each claim the pod uses must be provisioned remotely
/// (bound here to its placeholder volume) and its claim of ours exist there. `local` and
/// `remote` look a claim up by name in the local namespace and the remote one.
pub(crate) fn pod_claims(
    pod: &Pod,
    local: impl Fn(&str) -> Option<Arc<PersistentVolumeClaim>>,
    remote: impl Fn(&str) -> Option<Arc<PersistentVolumeClaim>>,
    local_cluster_id: &str,
) -> Claims {
    for (volume, name) in claim_names(pod) {
        let Some(claim) = local(&name) else {
            return Claims::Waiting(format!("claim {name} (volume {volume:?}) does not exist"));
        };
        match bound_volume(&claim) {
            Some(pv) if !bound_remotely(&claim) => {
                return Claims::Unsupported(format!(
                    "volume {volume:?} is claim {name}, bound to volume {pv} of this cluster: its data lives here and does not move; keep the pod local, or use a claim of a storage class provisioned by {PROVISIONER}"
                ));
            }
            Some(_) => {}
            None => {
                return Claims::Waiting(format!(
                    "claim {name} (volume {volume:?}) is not provisioned yet (is its storage class's provisioner {PROVISIONER}, with volumeBindingMode WaitForFirstConsumer?)"
                ));
            }
        }
        let there = remote(&name);
        if there
            .as_deref()
            .is_none_or(|r| owner(r, &claim, local_cluster_id) != ClaimOwner::This)
        {
            return Claims::Waiting(format!(
                "claim {name} (volume {volume:?}) has no claim of ours there yet (the claim's events say why: a name taken there, a refusal)"
            ));
        }
    }
    Claims::Ready
}

#[cfg(test)]
mod tests;
