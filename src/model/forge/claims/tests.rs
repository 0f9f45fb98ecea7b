use serde_json::json;

use super::*;

/// Local claim `shop/data` (uid `u-1`) of class `liqo`, placed on `liqo-c2`, handed to us.
fn claim() -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": "data", "namespace": "shop", "uid": "u-1",
            "labels": {"app": "db"},
            "annotations": {
                "team": "storage",
                SELECTED_NODE_ANNOTATION: "liqo-c2",
                "volume.kubernetes.io/storage-provisioner": PROVISIONER,
                "pv.kubernetes.io/bind-completed": "yes",
                "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"storageClassName": "liqo", "accessModes": ["ReadWriteOnce"],
                 "volumeMode": "Filesystem",
                 "selector": {"matchLabels": {"disk": "ssd"}},
                 "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap()
}

fn bound(mut claim: PersistentVolumeClaim, volume: &str) -> PersistentVolumeClaim {
    claim.spec.as_mut().unwrap().volume_name = Some(volume.into());
    claim
}

#[test]
fn the_mapping_flag_takes_two_names() {
    assert_eq!(
        parse_class_mapping("liqo=fast").unwrap(),
        ("liqo".to_owned(), "fast".to_owned())
    );
    for bad in ["liqo", "=fast", "liqo=", ""] {
        assert!(parse_class_mapping(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_claim_handed_to_our_provisioner_on_a_node_is_ours() {
    let c = claim();
    assert!(ours_to_provision(&c));
    assert_eq!(selected_node(&c), Some("liqo-c2"));
    let mut other = claim();
    other.metadata.annotations.as_mut().unwrap().insert(
        "volume.kubernetes.io/storage-provisioner".into(),
        "rancher.io/local-path".into(),
    );
    assert!(!ours_to_provision(&other));
}

#[test]
fn the_remote_claim_keeps_size_and_modes_and_maps_the_class() {
    let none = ClassMapping::new();
    let remote = remote_claim(&claim(), "c1", "shop-c1", &none).unwrap();
    assert_eq!(remote.metadata.name.as_deref(), Some("data"));
    assert_eq!(remote.metadata.namespace.as_deref(), Some("shop-c1"));
    let labels = remote.metadata.labels.clone().unwrap();
    assert_eq!(labels["app"], "db");
    assert_eq!(labels[ORIGIN_CLUSTER_LABEL], "c1");
    let annotations = remote.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["team"], "storage");
    assert_eq!(annotations[ORIGIN_NAMESPACE_ANNOTATION], "shop");
    assert_eq!(annotations[ORIGIN_CLAIM_UID_ANNOTATION], "u-1");
    // This cluster's binding stays here.
    assert_eq!(annotations.len(), 3, "{annotations:?}");
    let spec = remote.spec.clone().unwrap();
    assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".into()]));
    assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
    assert_eq!(
        spec.resources.unwrap().requests.unwrap()["storage"].0,
        "1Gi"
    );
    // No mapping: no class, so the remote's default class applies.
    assert_eq!(spec.storage_class_name, None);
    assert_eq!(spec.selector, None);
    assert_eq!(spec.volume_name, None);
    let mapped: ClassMapping = [("liqo".to_owned(), "fast".to_owned())].into();
    let remote = remote_claim(&claim(), "c1", "shop-c1", &mapped).unwrap();
    assert_eq!(
        remote.spec.unwrap().storage_class_name.as_deref(),
        Some("fast")
    );
}

#[test]
fn a_claim_made_from_data_here_is_not_provisioned_there() {
    let mut cloned = claim();
    cloned.spec.as_mut().unwrap().data_source = Some(
        serde_json::from_value(json!({"kind": "PersistentVolumeClaim", "name": "old"})).unwrap(),
    );
    let why = remote_claim(&cloned, "c1", "shop-c1", &ClassMapping::new()).unwrap_err();
    assert!(why.contains("data source"), "{why}");
}

#[test]
fn a_remote_claim_is_ours_only_for_the_claim_it_was_made_for() {
    let remote = remote_claim(&claim(), "c1", "shop-c1", &ClassMapping::new()).unwrap();
    assert_eq!(owner(&remote, &claim(), "c1"), ClaimOwner::This);
    let mut again = claim();
    again.metadata.uid = Some("u-2".into());
    assert_eq!(owner(&remote, &again, "c1"), ClaimOwner::Stale);
    assert_eq!(owner(&remote, &claim(), "c9"), ClaimOwner::Other);
    let mut foreign = remote.clone();
    foreign.metadata.annotations = None;
    assert_eq!(owner(&foreign, &claim(), "c1"), ClaimOwner::Other);
}

#[test]
fn the_placeholder_volume_is_bound_to_the_claim_and_pinned_to_the_virtual_node() {
    let pv = local_volume(&claim(), "liqo-c2", "c2", "shop-c1").unwrap();
    assert_eq!(pv.metadata.name.as_deref(), Some("offloading-u-1"));
    assert_eq!(
        pv.metadata.annotations.as_ref().unwrap()["pv.kubernetes.io/provisioned-by"],
        PROVISIONER
    );
    let spec = pv.spec.unwrap();
    let claim_ref = spec.claim_ref.unwrap();
    assert_eq!(claim_ref.name.as_deref(), Some("data"));
    assert_eq!(claim_ref.namespace.as_deref(), Some("shop"));
    assert_eq!(claim_ref.uid.as_deref(), Some("u-1"));
    assert_eq!(spec.storage_class_name.as_deref(), Some("liqo"));
    assert_eq!(spec.capacity.unwrap()["storage"].0, "1Gi");
    let term = &spec
        .node_affinity
        .unwrap()
        .required
        .unwrap()
        .node_selector_terms[0];
    assert_eq!(
        term.match_expressions.as_ref().unwrap()[0].values,
        Some(vec!["liqo-c2".to_owned()])
    );
    assert!(bound_remotely(&bound(claim(), "offloading-u-1")));
    assert!(!bound_remotely(&bound(claim(), "pv-local")));
    assert!(!bound_remotely(&claim()));
}

#[test]
fn the_remote_status_is_mirrored_once_bound_there() {
    let remote: PersistentVolumeClaimStatus = serde_json::from_value(json!({
        "phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "2Gi"},
        "conditions": [{"type": "Resizing", "status": "True"}],
    }))
    .unwrap();
    let current: PersistentVolumeClaimStatus = serde_json::from_value(json!({
        "phase": "Bound", "capacity": {"storage": "1Gi"},
    }))
    .unwrap();
    let wanted = local_status(Some(&remote), "c2", Some(&current));
    assert_eq!(wanted.capacity.as_ref().unwrap()["storage"].0, "2Gi");
    assert_eq!(wanted.phase, None, "the phase stays the PV controller's");
    let conditions = wanted.conditions.clone().unwrap();
    assert_eq!(conditions[0].type_, "Resizing");
    assert_eq!(conditions[1].type_, CLAIM_CONDITION);
    assert_eq!(conditions[1].status, "True");
    assert_eq!(conditions[1].reason.as_deref(), Some("Bound"));
    assert!(!status_current(Some(&current), &wanted));
    let mut now = current.clone();
    now.capacity = wanted.capacity.clone();
    now.conditions = wanted.conditions.clone();
    assert!(status_current(Some(&now), &wanted));
    // Pending there: the local capacity is left alone.
    let pending = local_status(None, "c2", Some(&current));
    assert_eq!(pending.capacity, current.capacity);
    assert_eq!(pending.conditions.unwrap()[0].status, "False");
}

#[test]
fn a_twin_waits_for_its_claims_and_never_takes_data_from_here() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"containers": [{"name": "db", "image": "postgres"}],
                 "volumes": [{"name": "cache", "emptyDir": {}},
                             {"name": "pg", "persistentVolumeClaim": {"claimName": "data"}}]},
    }))
    .unwrap();
    assert_eq!(
        claim_names(&pod),
        vec![("pg".to_owned(), "data".to_owned())]
    );
    let ours = Arc::new(remote_claim(&claim(), "c1", "shop-c1", &ClassMapping::new()).unwrap());
    let check = |local: Option<PersistentVolumeClaim>,
                 remote: Option<Arc<PersistentVolumeClaim>>| {
        let local = local.map(Arc::new);
        pod_claims(&pod, |_| local.clone(), |_| remote.clone(), "c1")
    };
    assert!(matches!(check(None, None), Claims::Waiting(_)));
    assert!(matches!(check(Some(claim()), None), Claims::Waiting(_)));
    match check(Some(bound(claim(), "pv-local")), None) {
        Claims::Unsupported(why) => {
            assert!(
                why.contains("pv-local") && why.contains("does not move"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        check(Some(bound(claim(), "offloading-u-1")), None),
        Claims::Waiting(_)
    ));
    assert_eq!(
        check(Some(bound(claim(), "offloading-u-1")), Some(ours.clone())),
        Claims::Ready
    );
    let mut again = bound(claim(), "offloading-u-2");
    again.metadata.uid = Some("u-2".into());
    assert!(matches!(check(Some(again), Some(ours)), Claims::Waiting(_)));
}
