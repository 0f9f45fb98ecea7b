//! The offloading controller against the seed's reference topology: three real clusters,
//! each running the manager with its own cluster labels; cluster 1 peered with clusters 2
//! and 3 through `namespace-offloading peer`. Tests change shared peering state, so they
//! take turns (`SERIAL`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use namespace_offloading::model::api::{NamespaceOffloading, RemoteCluster};
use serde_json::{Value, json};
use support::topology::*;
use support::{eventually, http_get, kubectl, unique};
use testbed::Testbed;

#[tokio::test]
async fn default_configuration_by_label_then_label_removal() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("lbl");
        create_namespace(&client, &ns, json!({"liqo.io/enabled": "true"})).await;
        let status = phase(&client, &ns, "Ready").await;
        let remote = format!("{ns}-{}", t.ids[0]);
        assert_eq!(status["remoteNamespaceName"], remote.as_str());
        for n in [2, 3] {
            let c = condition(&status, &t.ids[n - 1], "Ready").unwrap();
            assert_eq!(c["status"], "True", "{status}");
            assert!(condition(&status, &t.ids[n - 1], "OffloadingRequired").is_none());
            let created = remote_namespace(tb, n, &remote)
                .await
                .expect("remote namespace exists");
            assert_eq!(
                created.metadata.annotations.unwrap()["liqo.io/remote-namespace"],
                t.ids[0]
            );
        }
        assert_eq!(status["conditions"][0]["type"], "Ready");
        assert_eq!(status["conditions"][0]["status"], "True");
        let (_, wide, _) = kubectl(
            tb.cluster(1).kubeconfig(),
            &[
                "get",
                "namespaceoffloading",
                "offloading",
                "-n",
                &ns,
                "-o",
                "wide",
            ],
            None,
        );
        for column in ["DefaultName", "LocalAndRemote", "Ready", remote.as_str()] {
            assert!(wide.contains(column), "{column} missing from:\n{wide}");
        }
        let local = Api::<Namespace>::all(client.clone())
            .get(&ns)
            .await
            .unwrap();
        assert_eq!(
            local.metadata.labels.unwrap()["liqo.io/scheduling-enabled"],
            "true"
        );
        let (ok, _, err) = kubectl(
            tb.cluster(1).kubeconfig(),
            &[
                "wait",
                "--for=condition=Ready",
                "nsof/offloading",
                "-n",
                &ns,
                "--timeout=10s",
            ],
            None,
        );
        assert!(ok, "{err}");

        // Termination by removing the label.
        let patch = json!({"metadata": {"labels": {"liqo.io/enabled": null}}});
        Api::<Namespace>::all(client.clone())
            .patch(&ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let nsos = Api::<NamespaceOffloading>::namespaced(client.clone(), &ns);
        eventually(
            "the label-created NamespaceOffloading to be gone",
            WAIT,
            || async {
                nsos.get_opt("offloading")
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            },
        )
        .await;
        for n in [2, 3] {
            gone(tb, n, &remote).await;
        }
        let local = Api::<Namespace>::all(client).get(&ns).await.unwrap();
        assert!(
            !local
                .metadata
                .labels
                .unwrap_or_default()
                .contains_key("liqo.io/scheduling-enabled")
        );
    })
    .await;
}

#[tokio::test]
async fn custom_configuration_selects_only_cluster_2_then_deletion() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("custom");
        create_namespace(&client, &ns, json!({})).await;
        apply_offloading(tb, &ns, "  namespaceMappingStrategy: EnforceSameName\n  podOffloadingStrategy: LocalAndRemote\n  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - key: region\n        operator: In\n        values: [eu]\n      - key: provider\n        operator: In\n        values: [azure]\n");
        let status = phase(&client, &ns, "Ready").await;
        assert_eq!(status["remoteNamespaceName"], ns.as_str());
        assert_eq!(condition(&status, &t.ids[1], "Ready").unwrap()["status"], "True");
        assert_eq!(condition(&status, &t.ids[2], "OffloadingRequired").unwrap()["status"], "False");
        assert!(remote_namespace(tb, 2, &ns).await.is_some());
        assert!(remote_namespace(tb, 3, &ns).await.is_none());

        // Termination by deleting the object: remote namespace and finalizer gone.
        let nsos = Api::<NamespaceOffloading>::namespaced(client.clone(), &ns);
        nsos.delete("offloading", &DeleteParams::default()).await.unwrap();
        gone(tb, 2, &ns).await;
        eventually("the NamespaceOffloading to be gone", WAIT, || async {
            nsos.get_opt("offloading").await.unwrap().is_none().then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_selector_matching_nothing_gives_no_cluster_selected() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("none");
        create_namespace(&client, &ns, json!({})).await;
        apply_offloading(tb, &ns, "  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - key: region\n        operator: In\n        values: [mars]\n");
        let status = phase(&client, &ns, "NoClusterSelected").await;
        for id in &t.ids[1..] {
            assert_eq!(condition(&status, id, "OffloadingRequired").unwrap()["status"], "False");
        }
        assert_eq!(status["conditions"][0]["status"], "False");
        delete_namespace(&client, &ns).await;
    })
    .await;
}

#[tokio::test]
async fn a_conflicting_namespace_is_reported_and_never_touched() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("clash");
        // Someone else's namespace of the same name in cluster 3, with data in it.
        let three = tb.cluster(3).client().await.unwrap();
        create_namespace(&three, &ns, json!({})).await;
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "precious"}, "data": {"k": "v"}}))
                .unwrap();
        Api::<ConfigMap>::namespaced(three.clone(), &ns)
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();

        create_namespace(&client, &ns, json!({})).await;
        apply_offloading(tb, &ns, "  namespaceMappingStrategy: EnforceSameName\n");
        let status = phase(&client, &ns, "SomeFailed").await;
        let c = condition(&status, &t.ids[2], "Ready").unwrap();
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some("AlreadyExists")),
            "{status}"
        );
        assert!(c["message"].as_str().unwrap().contains("left untouched"));
        assert_eq!(
            condition(&status, &t.ids[1], "Ready").unwrap()["status"],
            "True"
        );

        // Termination by deleting the local namespace.
        Api::<Namespace>::all(client.clone())
            .delete(&ns, &DeleteParams::default())
            .await
            .unwrap();
        gone(tb, 1, &ns).await;
        gone(tb, 2, &ns).await;
        let kept = remote_namespace(tb, 3, &ns)
            .await
            .expect("the other namespace is still there");
        assert!(kept.metadata.deletion_timestamp.is_none());
        let data = Api::<ConfigMap>::namespaced(three, &ns)
            .get("precious")
            .await
            .unwrap();
        assert_eq!(data.data.unwrap()["k"], "v");
    })
    .await;
}

/// Takes the validating webhook away (tests here take turns), as if it were down or
/// bypassed, and returns what restores it.
fn remove_validating_webhook(tb: &Testbed) -> String {
    let kc = tb.cluster(1).kubeconfig();
    let (ok, saved, err) = kubectl(
        kc,
        &[
            "get",
            "validatingwebhookconfiguration",
            "namespace-offloading",
            "-o",
            "json",
        ],
        None,
    );
    assert!(ok, "{err}");
    let mut saved: Value = serde_json::from_str(&saved).unwrap();
    for key in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "managedFields",
    ] {
        saved["metadata"].as_object_mut().unwrap().remove(key);
    }
    let (ok, _, err) = kubectl(
        kc,
        &[
            "delete",
            "validatingwebhookconfiguration",
            "namespace-offloading",
        ],
        None,
    );
    assert!(ok, "{err}");
    saved.to_string()
}

fn restore_validating_webhook(tb: &Testbed, saved: &str) {
    let (ok, _, err) = kubectl(
        tb.cluster(1).kubeconfig(),
        &["create", "-f", "-"],
        Some(saved),
    );
    assert!(ok, "restoring the webhook: {err}");
}

fn offloading_manifest(version: &str, namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: offloading.liqo.io/{version}\nkind: NamespaceOffloading\nmetadata:\n  name: offloading\n  namespace: {namespace}\nspec:\n{spec}"
    )
}

#[tokio::test]
async fn two_local_namespaces_mapping_to_one_remote_name_never_share_it() {
    with_topology(|tb, t| async move {
        let kc = tb.cluster(1).kubeconfig();
        let client = tb.cluster(1).client().await.unwrap();
        // `a` with DefaultName and a local namespace literally named `a-<id>` with
        // EnforceSameName both map to `a-<id>` remotely.
        let a = unique("twin");
        create_namespace(&client, &a, json!({"liqo.io/enabled": "true"})).await;
        phase(&client, &a, "Ready").await;
        let shared = format!("{a}-{}", t.ids[0]);
        create_namespace(&client, &shared, json!({})).await;
        // The webhook refuses the second at once, naming the first.
        let same = offloading_manifest("v1alpha1", &shared, "  namespaceMappingStrategy: EnforceSameName\n");
        let (ok, _, err) = kubectl(kc, &["apply", "-f", "-"], Some(&same));
        assert!(!ok);
        assert!(err.contains(&format!("the remote namespace name {shared} is already that of namespace {a}'s offloading in this cluster")), "{err}");

        // Past the webhook (down, or two created at once), the later one is the conflict.
        let saved = remove_validating_webhook(tb);
        let (ok, _, err) = kubectl(kc, &["apply", "-f", "-"], Some(&same));
        restore_validating_webhook(tb, &saved);
        assert!(ok, "{err}");
        let status = phase(&client, &shared, "AllFailed").await;
        for id in &t.ids[1..] {
            let c = condition(&status, id, "Ready").unwrap();
            assert_eq!(c["reason"], "NameClaimed");
            assert!(c["message"].as_str().unwrap().contains(&format!("namespace {a}'s offloading")), "{c}");
        }

        // Ending the second offloading leaves the first one's remote namespaces alone.
        delete_namespace(&client, &shared).await;
        let local = Api::<Namespace>::all(client.clone());
        eventually("the second local namespace to be gone", WAIT, || async {
            local
                .get_opt(&shared)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
        for n in [2, 3] {
            let remote = remote_namespace(tb, n, &shared).await.expect("still there");
            assert!(remote.metadata.deletion_timestamp.is_none());
        }
        phase(&client, &a, "Ready").await;
        delete_namespace(&client, &a).await;
    })
    .await;
}

#[tokio::test]
async fn selected_name_in_v1beta1_and_both_versions_read_back_as_each_other() {
    with_topology(|tb, t| async move {
        let kc = tb.cluster(1).kubeconfig();
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("picked");
        let picked = unique("chosen");
        create_namespace(&client, &ns, json!({})).await;
        let spec = format!("  namespaceMappingStrategy: SelectedName\n  remoteNamespaceName: {picked}\n  podOffloadingStrategy: Remote\n");
        let (ok, _, err) = kubectl(kc, &["apply", "-f", "-"], Some(&offloading_manifest("v1beta1", &ns, &spec)));
        assert!(ok, "{err}");
        let status = phase(&client, &ns, "Ready").await;
        assert_eq!(status["remoteNamespaceName"], picked.as_str());
        assert_eq!(status["observedGeneration"], 1);
        for n in [2, 3] {
            let remote = remote_namespace(tb, n, &picked).await.expect("the selected name in every cluster");
            assert_eq!(remote.metadata.labels.unwrap()["offloading.liqo.io/origin-namespace"], ns.as_str());
        }
        // A pod of the namespace runs there, under that name.
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns);
        pods.create(&PostParams::default(), &bare_pod("web", json!({}))).await.unwrap();
        eventually("the twin in the selected namespace", WAIT, || async {
            for n in [2, 3] {
                let remote = tb.cluster(n).client().await.unwrap();
                let twins = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(remote, &picked);
                if !twins.list(&Default::default()).await.unwrap().items.is_empty() {
                    return Some(());
                }
            }
            None
        })
        .await;

        // Read as v1alpha1, nothing is lost; written back whole as v1alpha1, it is kept.
        let get = |version: &str| {
            let (ok, out, err) = kubectl(kc, &["get", &format!("namespaceoffloadings.{version}.offloading.liqo.io"), "offloading", "-n", &ns, "-o", "json"], None);
            assert!(ok, "{err}");
            serde_json::from_str::<Value>(&out).unwrap()
        };
        let beta = get("v1beta1");
        let alpha = get("v1alpha1");
        assert_eq!(alpha["apiVersion"], "offloading.liqo.io/v1alpha1");
        assert_eq!(beta["apiVersion"], "offloading.liqo.io/v1beta1");
        assert_eq!(alpha["spec"], beta["spec"]);
        assert_eq!(alpha["status"], beta["status"]);
        assert_eq!(alpha["spec"]["remoteNamespaceName"], picked.as_str());
        let mut relabelled = alpha.clone();
        relabelled["metadata"]["labels"] = json!({"team": "shop"});
        let (ok, _, err) = kubectl(kc, &["replace", "-f", "-"], Some(&relabelled.to_string()));
        assert!(ok, "a whole v1alpha1 PUT of a SelectedName object: {err}");
        assert_eq!(get("v1beta1")["spec"], beta["spec"]);
        // The name cannot change.
        let (ok, _, err) = kubectl(kc, &["patch", "namespaceoffloadings.v1beta1.offloading.liqo.io", "offloading", "-n", &ns, "--type=merge", "-p", r#"{"spec":{"remoteNamespaceName":"elsewhere"}}"#], None);
        assert!(!ok);
        assert!(err.contains("spec is immutable"), "{err}");

        // A Liqo 0.10+ v1alpha1 manifest with SelectedName works as written, and reads back
        // as v1beta1 unchanged.
        let old = unique("alpha");
        let old_remote = format!("{old}-picked");
        create_namespace(&client, &old, json!({})).await;
        let alpha_spec = format!("  namespaceMappingStrategy: SelectedName\n  remoteNamespaceName: {old_remote}\n");
        let (ok, _, err) = kubectl(kc, &["apply", "-f", "-"], Some(&offloading_manifest("v1alpha1", &old, &alpha_spec)));
        assert!(ok, "{err}");
        phase(&client, &old, "Ready").await;
        let (_, out, _) = kubectl(kc, &["get", "namespaceoffloadings.v1beta1.offloading.liqo.io", "offloading", "-n", &old, "-o", "json"], None);
        let read: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(read["spec"]["namespaceMappingStrategy"], "SelectedName");
        assert_eq!(read["spec"]["remoteNamespaceName"], old_remote.as_str());
        assert_eq!(read["status"]["remoteNamespaceName"], old_remote.as_str());
        assert!(remote_namespace(tb, 2, &old_remote).await.is_some());

        // A field neither version has is refused by name, not dropped (kubectl's strict
        // field validation).
        let typo = offloading_manifest("v1alpha1", &old, "  namespaceMappingStrategy: SelectedName\n  remoteNamespace: typo\n");
        let (ok, _, err) = kubectl(kc, &["apply", "--dry-run=server", "-f", "-"], Some(&typo));
        assert!(!ok);
        assert!(err.contains("unknown field \"spec.remoteNamespace\""), "{err}");

        // Two namespaces of this cluster asking one name: the webhook refuses the second.
        let other = unique("refused");
        create_namespace(&client, &other, json!({})).await;
        let (ok, _, err) = kubectl(kc, &["apply", "-f", "-"], Some(&offloading_manifest("v1beta1", &other, &spec)));
        assert!(!ok);
        assert!(err.contains(&format!("the remote namespace name {picked} is already that of namespace {ns}'s offloading")), "{err}");

        // The CRD's own rules, in both versions, with the webhook away.
        let saved = remove_validating_webhook(tb);
        let crd_only = [
            (offloading_manifest("v1alpha1", &other, "  namespaceMappingStrategy: SelectedName\n"), "spec.remoteNamespaceName is required with namespaceMappingStrategy SelectedName"),
            (offloading_manifest("v1beta1", &other, "  namespaceMappingStrategy: SelectedName\n"), "spec.remoteNamespaceName is required with namespaceMappingStrategy SelectedName"),
            (offloading_manifest("v1beta1", &other, "  remoteNamespaceName: lonely\n"), "used only with namespaceMappingStrategy SelectedName"),
            (offloading_manifest("v1beta1", &other, "  namespaceMappingStrategy: SelectedName\n  remoteNamespaceName: Not_A_Name\n"), "spec.remoteNamespaceName in body should match"),
        ];
        let mut refusals = Vec::new();
        for (manifest, _) in &crd_only {
            refusals.push(kubectl(kc, &["create", "-f", "-"], Some(manifest)));
        }
        // Past the webhook, the second asking for the same name gets it refused in status.
        let (ok, _, err) = kubectl(kc, &["apply", "-f", "-"], Some(&offloading_manifest("v1beta1", &other, &spec)));
        restore_validating_webhook(tb, &saved);
        for ((_, expected), (ok, _, err)) in crd_only.iter().zip(&refusals) {
            assert!(!ok, "the CRD alone accepted what must carry {expected:?}");
            assert!(err.contains(expected), "{expected:?} not in: {err}");
        }
        assert!(ok, "{err}");
        let status = phase(&client, &other, "AllFailed").await;
        for id in &t.ids[1..] {
            assert_eq!(condition(&status, id, "Ready").unwrap()["reason"], "NameClaimed");
        }
        // The first keeps its remote namespaces.
        phase(&client, &ns, "Ready").await;
        for n in [2, 3] {
            let kept = remote_namespace(tb, n, &picked).await.expect("kept");
            assert_eq!(kept.metadata.labels.unwrap()["offloading.liqo.io/origin-namespace"], ns.as_str());
        }

        for name in [&other, &old, &ns] {
            delete_namespace(&client, name).await;
        }
        for n in [2, 3] {
            gone(tb, n, &picked).await;
            gone(tb, n, &old_remote).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_remote_namespace_deleted_by_hand_is_recreated() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("heal");
        create_namespace(&client, &ns, json!({"liqo.io/enabled": "true"})).await;
        phase(&client, &ns, "Ready").await;
        let remote = format!("{ns}-{}", t.ids[0]);
        let two = Api::<Namespace>::all(tb.cluster(2).client().await.unwrap());
        let before = two.get(&remote).await.unwrap().metadata.uid;
        two.delete(&remote, &DeleteParams::default()).await.unwrap();
        eventually("the remote namespace to be recreated", WAIT, || async {
            let now = two.get_opt(&remote).await.unwrap()?;
            (now.metadata.uid != before && now.metadata.deletion_timestamp.is_none()).then_some(())
        })
        .await;
        phase(&client, &ns, "Ready").await;
        delete_namespace(&client, &ns).await;
    })
    .await;
}

#[tokio::test]
async fn a_new_peering_gets_its_remote_namespace_without_any_action() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        unpeer(tb, 3);
        let nodes = Api::<Node>::all(client.clone());
        let node = format!("liqo-{}", t.ids[2]);
        eventually("cluster 3's virtual node to go", WAIT, || async {
            nodes.get_opt(&node).await.unwrap().is_none().then_some(())
        })
        .await;

        let ns = unique("late");
        create_namespace(&client, &ns, json!({"liqo.io/enabled": "true"})).await;
        let status = phase(&client, &ns, "Ready").await;
        assert!(
            status["remoteNamespacesConditions"]
                .get(&t.ids[2])
                .is_none(),
            "unpeered cluster listed: {status}"
        );
        let remote = format!("{ns}-{}", t.ids[0]);
        assert!(remote_namespace(tb, 3, &remote).await.is_none());

        peer(tb, 3).unwrap();
        virtual_node(&client, &t.ids[2]).await;
        let api = Api::<NamespaceOffloading>::namespaced(client.clone(), &ns);
        eventually("cluster 3 to be Ready in the status", WAIT, || async {
            let status = serde_json::to_value(api.get("offloading").await.unwrap().status?).ok()?;
            (condition(&status, &t.ids[2], "Ready")?["status"] == "True").then_some(())
        })
        .await;
        assert!(remote_namespace(tb, 3, &remote).await.is_some());
        delete_namespace(&client, &ns).await;
        gone(tb, 3, &remote).await;
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_cluster_turns_not_ready_and_recovers_by_itself() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("outage");
        create_namespace(&client, &ns, json!({"liqo.io/enabled": "true"})).await;
        phase(&client, &ns, "Ready").await;
        let api = Api::<NamespaceOffloading>::namespaced(client.clone(), &ns);

        tb.cluster(3).stop_apiserver();
        let reason = eventually(
            "cluster 3 to be reported not ready",
            Duration::from_secs(90),
            || async {
                let status =
                    serde_json::to_value(api.get("offloading").await.unwrap().status?).ok()?;
                let c = condition(&status, &t.ids[2], "Ready")?;
                (c["status"] == "False")
                    .then(|| c["reason"].as_str().unwrap_or_default().to_owned())
            },
        )
        .await;
        assert_eq!(reason, "Unreachable");
        // Cluster 2 is unaffected.
        let status = phase(&client, &ns, "SomeFailed").await;
        assert_eq!(
            condition(&status, &t.ids[1], "Ready").unwrap()["status"],
            "True"
        );

        tb.cluster(3).restart_apiserver().await.unwrap();
        phase(&client, &ns, "Ready").await;
        delete_namespace(&client, &ns).await;
    })
    .await;
}

#[tokio::test]
async fn a_cluster_that_never_answers_does_not_delay_the_others() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let first = unique("frozen");
        create_namespace(&client, &first, json!({"liqo.io/enabled": "true"})).await;
        phase(&client, &first, "Ready").await;

        // Connections are accepted, nothing ever answers: every call can only time out.
        tb.cluster(3).freeze_apiserver();
        let thaw = Thaw(tb, 3);
        let peerings = Api::<RemoteCluster>::all(client.clone());
        eventually(
            "the heartbeat to find cluster 3 unreachable",
            WAIT,
            || async {
                let status = peerings.get("cluster-3").await.unwrap().status?;
                let connected = status.conditions.iter().find(|c| c.type_ == "Connected")?;
                (connected.status == "False" && connected.reason == "Unreachable").then_some(())
            },
        )
        .await;

        // From then on, cluster 3 costs nothing: a new offloading is reported at once.
        let second = unique("frozen");
        let started = Instant::now();
        create_namespace(&client, &second, json!({"liqo.io/enabled": "true"})).await;
        let api = Api::<NamespaceOffloading>::namespaced(client.clone(), &second);
        let message = eventually(
            "cluster 2 Ready and cluster 3 Unreachable",
            EVENT,
            || async {
                let status =
                    serde_json::to_value(api.get_opt("offloading").await.unwrap()?.status?).ok()?;
                let two = condition(&status, &t.ids[1], "Ready")?;
                let three = condition(&status, &t.ids[2], "Ready")?;
                (status["offloadingPhase"] == "SomeFailed"
                    && two["status"] == "True"
                    && three["reason"] == "Unreachable")
                    .then(|| three["message"].as_str().unwrap_or_default().to_owned())
            },
        )
        .await;
        eprintln!(
            "reported after {:.1} s: {message}",
            started.elapsed().as_secs_f32()
        );
        assert!(message.contains("RemoteCluster cluster-3"), "{message}");
        assert!(
            remote_namespace(tb, 2, &format!("{second}-{}", t.ids[0]))
                .await
                .is_some()
        );

        // Answering again, it gets its namespaces without any action.
        drop(thaw);
        phase(&client, &first, "Ready").await;
        phase(&client, &second, "Ready").await;
        delete_namespace(&client, &first).await;
        delete_namespace(&client, &second).await;
    })
    .await;
}

#[tokio::test]
async fn termination_after_a_restart_waits_for_the_peerings_to_connect() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("restart");
        // The user's own object: a label-created one would be created again by the label.
        create_namespace(&client, &ns, json!({})).await;
        apply_offloading(tb, &ns, "  podOffloadingStrategy: LocalAndRemote\n");
        phase(&client, &ns, "Ready").await;
        let remote = format!("{ns}-{}", t.ids[0]);
        assert!(remote_namespace(tb, 2, &remote).await.is_some());

        // The manager is gone while the offloading is deleted: the finalizer holds it.
        t.managers.lock().unwrap()[0].stop();
        let api = Api::<NamespaceOffloading>::namespaced(client.clone(), &ns);
        api.delete("offloading", &DeleteParams::default())
            .await
            .unwrap();

        // A new manager starts with no connected peer, and cluster 2 does not answer: it
        // must not take that as "no peering" and drop the finalizer, leaving cluster 2's
        // namespace behind, but wait for that peering and delete there too.
        tb.cluster(2).freeze_apiserver();
        let thaw = Thaw(tb, 2);
        let manager = start_manager(tb, 1).await.unwrap();
        t.admin_ports.lock().unwrap()[0] = manager.admin_port;
        t.webhook_ports.lock().unwrap()[0] = manager.webhook_port;
        t.managers.lock().unwrap()[0] = manager.process;
        let reason = eventually("termination to wait for cluster 2", WAIT, || async {
            let status = serde_json::to_value(api.get("offloading").await.unwrap().status?).ok()?;
            let c = condition(&status, &t.ids[1], "Ready")?;
            (status["offloadingPhase"] == "Terminating" && c["reason"] == "Unreachable")
                .then(|| c["message"].as_str().unwrap_or_default().to_owned())
        })
        .await;
        eprintln!("waiting: {reason}");
        gone(tb, 3, &remote).await;
        assert!(api.get_opt("offloading").await.unwrap().is_some());
        drop(thaw);
        eventually("the NamespaceOffloading to be gone", WAIT, || async {
            api.get_opt("offloading")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
        delete_namespace(&client, &ns).await;
    })
    .await;
}

#[tokio::test]
async fn a_second_peering_of_the_same_cluster_is_refused_and_ignored() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let out = std::process::Command::new(bin())
            .args(["peer", "cluster-2-again", "--namespace", "liqo", "--kubeconfig"])
            .arg(tb.cluster(2).kubeconfig())
            .arg("--local-kubeconfig")
            .arg(tb.cluster(1).kubeconfig())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("already peered as RemoteCluster cluster-2"), "{err}");

        // Made by hand anyway, with the same credentials: reported, and it changes nothing.
        let nodes = Api::<Node>::all(client.clone());
        let node = format!("liqo-{}", t.ids[1]);
        let uid = nodes.get(&node).await.unwrap().metadata.uid;
        let manifest = "apiVersion: offloading.liqo.io/v1alpha1\nkind: RemoteCluster\nmetadata:\n  name: cluster-2-again\nspec:\n  kubeconfigSecret:\n    namespace: liqo\n    name: remote-cluster-2-kubeconfig\n";
        let (ok, _, err) = kubectl(tb.cluster(1).kubeconfig(), &["apply", "-f", "-"], Some(manifest));
        assert!(ok, "{err}");
        let rcs = Api::<RemoteCluster>::all(client.clone());
        let connected = |name: &'static str| {
            let rcs = rcs.clone();
            async move {
                let status = rcs.get(name).await.unwrap().status?;
                status.conditions.into_iter().find(|c| c.type_ == "Connected")
            }
        };
        let message = eventually("the duplicate to be reported", WAIT, || async {
            let c = connected("cluster-2-again").await?;
            (c.reason == "DuplicateClusterID").then_some(c.message)
        })
        .await;
        assert!(message.contains("already peered as RemoteCluster cluster-2"), "{message}");
        assert_eq!(connected("cluster-2").await.unwrap().status, "True");

        // Removing the duplicate leaves the original's virtual node alone.
        rcs.delete("cluster-2-again", &DeleteParams::default()).await.unwrap();
        eventually("the duplicate to be gone", WAIT, || async {
            rcs.get_opt("cluster-2-again").await.unwrap().is_none().then_some(())
        })
        .await;
        assert_eq!(nodes.get(&node).await.unwrap().metadata.uid, uid);
        assert_eq!(connected("cluster-2").await.unwrap().status, "True");
    })
    .await;
}

#[tokio::test]
async fn virtual_nodes_carry_each_cluster_labels_and_peering_status() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let two = virtual_node(&client, &t.ids[1]).await;
        assert_eq!(two["region"], "eu");
        assert_eq!(two["provider"], "azure");
        assert_eq!(two["liqo.io/type"], "virtual-node");
        assert_eq!(two["liqo.io/remote-cluster-id"], t.ids[1]);
        let three = virtual_node(&client, &t.ids[2]).await;
        assert_eq!(three["region"], "us");
        let node = Api::<Node>::all(client.clone())
            .get(&format!("liqo-{}", t.ids[1]))
            .await
            .unwrap();
        let taint = &node.spec.unwrap().taints.unwrap()[0];
        assert_eq!(taint.key, "virtual-node.liqo.io/not-allowed");
        assert_eq!(node.status.unwrap().allocatable.unwrap()["cpu"].0, "8");
        let (_, table, _) = kubectl(tb.cluster(1).kubeconfig(), &["get", "remoteclusters"], None);
        assert!(
            table.contains(&t.ids[1]) && table.contains("True"),
            "{table}"
        );
    })
    .await;
}

#[tokio::test]
async fn label_changes_on_a_remote_reach_its_virtual_node() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let two = Api::<ConfigMap>::namespaced(tb.cluster(2).client().await.unwrap(), "liqo");
        let set = |labels: &str| json!({"data": {"clusterLabels": labels}});
        two.patch(
            "namespace-offloading-identity",
            &PatchParams::default(),
            &Patch::Merge(&set(r#"{"region":"eu","provider":"azure","tier":"gold"}"#)),
        )
        .await
        .unwrap();
        let nodes = Api::<Node>::all(client.clone());
        let name = format!("liqo-{}", t.ids[1]);
        // The identity ConfigMap is watched: the change arrives well before the next 10 s
        // heartbeat would bring it (a poll would miss this bound about half the time, twice).
        let started = std::time::Instant::now();
        eventually("the new label on the virtual node", EVENT, || async {
            let labels = nodes.get(&name).await.unwrap().metadata.labels?;
            (labels.get("tier").map(String::as_str) == Some("gold")).then_some(())
        })
        .await;
        eprintln!("label added after {:.1} s", started.elapsed().as_secs_f32());
        two.patch(
            "namespace-offloading-identity",
            &PatchParams::default(),
            &Patch::Merge(&set(r#"{"region":"eu","provider":"azure"}"#)),
        )
        .await
        .unwrap();
        let started = std::time::Instant::now();
        eventually("the label to be removed again", EVENT, || async {
            let labels = nodes.get(&name).await.unwrap().metadata.labels?;
            (!labels.contains_key("tier")).then_some(())
        })
        .await;
        eprintln!(
            "label removed after {:.1} s",
            started.elapsed().as_secs_f32()
        );
    })
    .await;
}

#[tokio::test]
async fn a_label_the_webhook_refuses_is_reported_on_the_namespace() {
    with_topology(|tb, _| async move {
        let client = tb.cluster(1).client().await.unwrap();
        // Over 26 characters: DefaultName would give a remote name over 63.
        let ns = format!("{}-with-a-long-name", unique("label"));
        assert!(ns.len() > 26);
        create_namespace(&client, &ns, json!({"liqo.io/enabled": "true"})).await;
        let note = event(&client, "default", "OffloadingRejected", &ns).await;
        let note = (note.type_, note.note.unwrap_or_default());
        assert_eq!(note.0.as_deref(), Some("Warning"));
        assert!(note.1.contains("at most 26 characters"), "{}", note.1);
        let nso = Api::<NamespaceOffloading>::namespaced(client.clone(), &ns);
        assert!(nso.get_opt("offloading").await.unwrap().is_none());
        delete_namespace(&client, &ns).await;
    })
    .await;
}

#[tokio::test]
async fn the_label_never_touches_a_users_own_configuration() {
    with_topology(|tb, _| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("own");
        create_namespace(&client, &ns, json!({})).await;
        apply_offloading(tb, &ns, "  podOffloadingStrategy: Local\n");
        let namespaces = Api::<Namespace>::all(client.clone());
        let label = |on: bool| json!({"metadata": {"labels": {"liqo.io/enabled": if on { Some("true") } else { None }}}});
        namespaces.patch(&ns, &PatchParams::default(), &Patch::Merge(&label(true))).await.unwrap();
        event(&client, "default", "OffloadingAlreadyConfigured", &ns).await;
        namespaces.patch(&ns, &PatchParams::default(), &Patch::Merge(&label(false))).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let nso = Api::<NamespaceOffloading>::namespaced(client.clone(), &ns).get("offloading").await.unwrap();
        assert!(nso.metadata.deletion_timestamp.is_none(), "the user's object must survive label removal");
        assert!(!nso.metadata.annotations.unwrap_or_default().contains_key("offloading.liqo.io/created-by"));
        assert_eq!(serde_json::to_value(&nso.spec).unwrap()["podOffloadingStrategy"], "Local");
        namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn controller_metrics_report_peerings_and_remote_namespaces() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("metrics");
        create_namespace(&client, &ns, json!({"liqo.io/enabled": "true"})).await;
        phase(&client, &ns, "Ready").await;
        let port = t.admin_ports.lock().unwrap()[0];
        let (status, text) = http_get(port, "/metrics").unwrap();
        assert_eq!(status, 200);
        for expected in [
            "namespace_offloading_peering_connected{remote_cluster=\"cluster-2\"} 1".to_owned(),
            format!(
                "namespace_offloading_remote_namespaces{{cluster_id=\"{}\",state=\"ready\"}}",
                t.ids[1]
            ),
            "namespace_offloading_reconciles_total{controller=\"offloading\"}".to_owned(),
            "namespace_offloading_reconcile_duration_seconds_count{controller=\"peering\"}"
                .to_owned(),
        ] {
            assert!(text.contains(&expected), "{expected} missing from:\n{text}");
        }
        delete_namespace(&client, &ns).await;
    })
    .await;
}

#[tokio::test]
async fn an_invalid_selector_that_bypassed_the_webhook_is_annotated_and_reported() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let saved = remove_validating_webhook(tb);
        let ns = unique("badsel");
        create_namespace(&client, &ns, json!({})).await;
        // As if an earlier, valid configuration had created it: an invalid selector selects
        // nothing, but must not delete what exists.
        let remote = format!("{ns}-{}", t.ids[0]);
        let earlier: Namespace = serde_json::from_value(json!({"metadata": {
            "name": remote,
            "annotations": {"liqo.io/remote-namespace": t.ids[0]},
            "labels": {"offloading.liqo.io/origin-namespace": ns, "offloading.liqo.io/origin-cluster-id": t.ids[0]},
        }}))
        .unwrap();
        let two = Api::<Namespace>::all(tb.cluster(2).client().await.unwrap());
        two.create(&PostParams::default(), &earlier).await.unwrap();
        apply_offloading(tb, &ns, "  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - key: region\n        operator: Near\n        values: [eu]\n");
        restore_validating_webhook(tb, &saved);

        let status = phase(&client, &ns, "NoClusterSelected").await;
        assert_eq!(status["conditions"][0]["status"], "False");
        let api = Api::<NamespaceOffloading>::namespaced(client.clone(), &ns);
        let annotation = eventually("the selector-error annotation", WAIT, || async {
            api.get("offloading").await.unwrap().metadata.annotations?.get("offloading.liqo.io/selector-error").cloned()
        })
        .await;
        assert!(annotation.contains("unsupported operator \"Near\""), "{annotation}");
        let warning = event(&client, &ns, "InvalidClusterSelector", "offloading").await;
        assert_eq!(warning.type_.as_deref(), Some("Warning"));
        let kept = two.get(&remote).await.unwrap();
        assert!(kept.metadata.deletion_timestamp.is_none(), "an invalid selector deleted {remote}");
        // Termination still cleans up what is ours.
        delete_namespace(&client, &ns).await;
        gone(tb, 2, &remote).await;
    })
    .await;
}

/// Prints what a client did at rest, one row per resource.
fn report(title: &str, activity: &testbed::audit::Activity, window: Duration) {
    let per_minute = 60.0 / window.as_secs_f64();
    eprintln!("--- {title}: watches open now, requests per minute at rest");
    for (resource, watches) in &activity.open_watches {
        eprintln!("  watch {resource}: {}", watches.len());
        for uri in watches {
            eprintln!("      {uri}");
        }
    }
    for (request, n) in &activity.requests {
        eprintln!("  {request}: {:.1}/min", *n as f64 * per_minute);
    }
    eprintln!(
        "  total: {} watches, {:.1} requests/min",
        activity.open_watches.values().map(Vec::len).sum::<usize>(),
        activity.request_count() as f64 * per_minute
    );
}

/// Issue 8's measure, from the API servers' audit logs: at rest (an offloaded namespace,
/// two peerings, nothing changing), cluster 1's manager keeps one watch per kind in its own
/// cluster and in each peer, and makes no list or read that a watch already answers.
#[tokio::test]
async fn at_rest_the_manager_keeps_one_watch_per_kind_per_cluster() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("at-rest");
        create_namespace(&client, &ns, json!({"liqo.io/enabled": "true"})).await;
        phase(&client, &ns, "Ready").await;
        // A Service with no pods (an empty EndpointSlice), reflected: at rest, it costs no writes.
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
            "metadata": {"name": "idle"},
            "spec": {"selector": {"app": "idle"}, "ports": [{"port": 80}]}}))
        .unwrap();
        Api::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &svc)
            .await
            .unwrap();
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        eventually(
            "the idle Service and its slice in cluster 2",
            WAIT,
            || async {
                let two = tb.cluster(2).client().await.ok()?;
                let slices = Api::<k8s_openapi::api::discovery::v1::EndpointSlice>::namespaced(
                    two, &remote_ns,
                )
                .list(&kube::api::ListParams::default().labels("kubernetes.io/service-name=idle"))
                .await
                .ok()?;
                (!slices.items.is_empty()).then_some(())
            },
        )
        .await;
        // At rest: what earlier tests deleted has finished going (terminations call the
        // remotes until their namespaces are gone).
        let namespaces = Api::<Namespace>::all(client.clone());
        eventually(
            "no namespace still terminating",
            Duration::from_secs(180),
            || async {
                let all = namespaces.list(&Default::default()).await.ok()?.items;
                all.iter()
                    .all(|n| n.metadata.deletion_timestamp.is_none())
                    .then_some(())
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let window = Duration::from_secs(
            std::env::var("NSO_AT_REST_SECONDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(30),
        );
        let local_ua = std::env::var("NSO_AUDIT_USER_AGENT").unwrap_or_else(|_| {
            namespace_offloading::plumbing::client::LOCAL_USER_AGENT.to_owned()
        });
        let peer_ua = std::env::var("NSO_AUDIT_PEER_USER_AGENT").unwrap_or_else(|_| {
            namespace_offloading::plumbing::client::remote_user_agent(&t.ids[0])
        });
        let logs = [tb.cluster(1).audit_log(), tb.cluster(2).audit_log()];
        let marks = [logs[0].mark(), logs[1].mark()];
        tokio::time::sleep(window).await;
        // The manager of cluster 1 in its own cluster: its user agent, not a peer's.
        let mut local = logs[0].activity(&local_ua, marks[0]);
        let remote = logs[1].activity(&peer_ua, marks[1]);
        local.open_watches.retain(|_, w| !w.is_empty());
        report("cluster 1, its manager", &local, window);
        report("cluster 2, cluster 1's manager as a peer", &remote, window);

        for (cluster, activity) in [("cluster 1", &local), ("cluster 2", &remote)] {
            for (resource, watches) in &activity.open_watches {
                // In a peer, ConfigMaps are watched twice: its identity (by name) and our
                // copies of offloaded namespaces' ConfigMaps (by label).
                let allowed = if cluster == "cluster 2" && resource == "configmaps" {
                    2
                } else {
                    1
                };
                assert_eq!(
                    watches.len(),
                    allowed,
                    "{cluster}: {} watches of {resource}: {watches:?}",
                    watches.len()
                );
            }
            let lists: Vec<_> = activity
                .requests
                .keys()
                .filter(|r| r.starts_with("list "))
                .collect();
            assert!(lists.is_empty(), "{cluster}: lists at rest: {lists:?}");
            let writes: Vec<_> = activity
                .requests
                .keys()
                .filter(|r| r.ends_with(" services") || r.ends_with(" endpointslices"))
                .collect();
            assert!(
                writes.is_empty(),
                "{cluster}: Service or slice requests at rest: {writes:?}"
            );
            let watched_reads: Vec<_> = activity
                .requests
                .keys()
                .filter(|r| {
                    [
                        "get namespaces",
                        "get nodes",
                        "get namespaceoffloadings",
                        "get remoteclusters",
                        "get configmaps",
                        "get pods",
                        "get priorityclasses",
                        "get runtimeclasses",
                    ]
                    .contains(&r.as_str())
                })
                .collect();
            assert!(
                watched_reads.is_empty(),
                "{cluster}: reads of what a watch holds: {watched_reads:?}"
            );
        }
        for kind in [
            "namespaceoffloadings",
            "nodes",
            "namespaces",
            "pods",
            "remoteclusters",
            "services",
            "endpointslices",
            "ingresses",
            "networkpolicies",
            "persistentvolumeclaims",
        ] {
            assert!(
                local.open_watches.contains_key(kind),
                "cluster 1: no watch of {kind}"
            );
        }
        for kind in [
            "namespaces",
            "configmaps",
            "nodes",
            "pods",
            "secrets",
            "serviceaccounts",
            "services",
            "endpointslices",
            "ingresses",
            "networkpolicies",
            // Our claims there (issue 24, point 4).
            "persistentvolumeclaims",
            "events",
            // What a twin may name there (issue 21, point 6).
            "priorityclasses",
            "runtimeclasses",
        ] {
            assert!(
                remote.open_watches.contains_key(kind),
                "cluster 2: no watch of {kind}"
            );
        }
        delete_namespace(&client, &ns).await;
    })
    .await;
}

/// Issue 9's core: a pod scheduled on cluster 2's virtual node runs there as a twin, its
/// status comes back, deleting it deletes the twin first, a twin deleted by hand is
/// recreated, a pod that cannot run remotely says why, and a name taken there by someone
/// else is reported and left alone.
#[tokio::test]
async fn an_offloaded_pod_runs_in_its_cluster_and_reports_back() {
    use k8s_openapi::api::core::v1::Pod;
    with_topology(|tb, t| async move {
        kwok_node(tb, 2).await;
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("pods");
        offload_remotely_to_eu(tb, &client, &ns).await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        let local = Api::<Pod>::namespaced(client.clone(), &ns);
        let remote = Api::<Pod>::namespaced(tb.cluster(2).client().await.unwrap(), &remote_ns);
        let virtual_node = format!("liqo-{}", t.ids[1]);

        // Runs there, and its status (Running, the twin's IP) is the local pod's.
        local
            .create(&PostParams::default(), &bare_pod("web", json!({})))
            .await
            .unwrap();
        let running = eventually("the local pod Running with the twin's IP", WAIT, || async {
            let pod = local.get_opt("web").await.ok()??;
            let status = pod.status.as_ref()?;
            (status.phase.as_deref() == Some("Running") && status.pod_ip.is_some()).then_some(pod)
        })
        .await;
        assert_eq!(
            running.spec.as_ref().unwrap().node_name.as_deref(),
            Some(virtual_node.as_str())
        );
        let twin = remote.get("web").await.unwrap();
        assert_eq!(
            twin.status.as_ref().unwrap().pod_ip,
            running.status.as_ref().unwrap().pod_ip
        );
        assert_eq!(
            twin.spec.as_ref().unwrap().node_name.as_deref(),
            Some("cluster-2-worker")
        );
        let markers = twin.metadata.annotations.clone().unwrap();
        assert_eq!(
            markers["offloading.liqo.io/origin-pod-uid"],
            running.metadata.uid.clone().unwrap()
        );
        assert_eq!(twin.metadata.labels.clone().unwrap()["app"], "web");
        let (_, wide, _) = kubectl(
            tb.cluster(1).kubeconfig(),
            &["get", "pods", "-n", &ns, "-o", "wide"],
            None,
        );
        assert!(
            wide.contains("Running") && wide.contains(&virtual_node),
            "{wide}"
        );

        // A twin deleted by hand comes back while the local pod lives.
        let first_uid = twin.metadata.uid.clone().unwrap();
        remote
            .delete("web", &DeleteParams::default())
            .await
            .unwrap();
        eventually("the twin recreated", WAIT, || async {
            let twin = remote.get_opt("web").await.ok()??;
            (twin.metadata.uid.as_deref() != Some(first_uid.as_str())
                && twin.metadata.deletion_timestamp.is_none())
            .then_some(())
        })
        .await;

        // Deleting the local pod deletes the twin, then completes: nothing is stuck.
        local.delete("web", &DeleteParams::default()).await.unwrap();
        eventually("the local pod and its twin gone", WAIT, || async {
            let local_gone = local.get_opt("web").await.ok()?.is_none();
            let twin_gone = remote.get_opt("web").await.ok()?.is_none();
            (local_gone && twin_gone).then_some(())
        })
        .await;

        // Storage that lives here: no twin, and the pod says why. (A claim would keep it
        // from being scheduled at all in the test bed, which has no volumes: a host path.)
        let host = json!({"volumes": [{"name": "data", "hostPath": {"path": "/var/lib/data"}}]});
        local
            .create(&PostParams::default(), &bare_pod("stateful", host))
            .await
            .unwrap();
        let why = eventually(
            "the pod to say why it cannot run remotely",
            WAIT,
            || async {
                let pod = local.get_opt("stateful").await.ok()??;
                let c = pod
                    .status?
                    .conditions?
                    .into_iter()
                    .find(|c| c.type_ == "offloading.liqo.io/RemotePod")?;
                (c.reason.as_deref() == Some("Unsupported"))
                    .then_some(c.message.unwrap_or_default())
            },
        )
        .await;
        assert!(
            why.contains("\"data\"") && why.contains("hostPath"),
            "{why}"
        );
        assert!(remote.get_opt("stateful").await.unwrap().is_none());

        // A name taken there by someone else: reported, never touched.
        let stranger = bare_pod("taken", json!({"nodeName": "cluster-2-worker"}));
        remote
            .create(&PostParams::default(), &stranger)
            .await
            .unwrap();
        let stranger_uid = remote.get("taken").await.unwrap().metadata.uid.unwrap();
        local
            .create(&PostParams::default(), &bare_pod("taken", json!({})))
            .await
            .unwrap();
        eventually("the conflict reported on the local pod", WAIT, || async {
            let pod = local.get_opt("taken").await.ok()??;
            let c = pod
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "offloading.liqo.io/RemotePod")?;
            (c.reason.as_deref() == Some("NameTaken")).then_some(())
        })
        .await;
        let still = remote.get("taken").await.unwrap();
        assert_eq!(still.metadata.uid.as_deref(), Some(stranger_uid.as_str()));
        assert!(
            !still
                .metadata
                .annotations
                .unwrap_or_default()
                .contains_key("offloading.liqo.io/origin-pod-uid")
        );

        local
            .delete("stateful", &DeleteParams::default())
            .await
            .ok();
        local.delete("taken", &DeleteParams::default()).await.ok();
        remote
            .delete("taken", &DeleteParams::default().grace_period(0))
            .await
            .ok();

        // A pod that ended keeps its final status: no new twin once its twin is gone.
        let once = bare_pod("once", json!({"restartPolicy": "Never"}));
        local.create(&PostParams::default(), &once).await.unwrap();
        eventually("the once pod Running", WAIT, || async {
            let pod = local.get_opt("once").await.ok()??;
            (pod.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
        // It completes there (kwok's pods run until deleted: the status says so by hand).
        remote
            .patch_status(
                "once",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
            )
            .await
            .unwrap();
        eventually("the local pod Succeeded", WAIT, || async {
            let pod = local.get_opt("once").await.ok()??;
            (pod.status?.phase.as_deref() == Some("Succeeded")).then_some(())
        })
        .await;
        remote
            .delete("once", &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
        eventually("the ended twin gone", WAIT, || async {
            remote.get_opt("once").await.ok()?.is_none().then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            remote.get_opt("once").await.unwrap().is_none(),
            "an ended pod got a new twin"
        );
        let ended = local.get("once").await.unwrap();
        assert_eq!(ended.status.unwrap().phase.as_deref(), Some("Succeeded"));

        // The remote namespace lost (deleted there by hand): created again, and the pod's
        // twin with it.
        local
            .create(&PostParams::default(), &bare_pod("phoenix", json!({})))
            .await
            .unwrap();
        let first = eventually("the phoenix twin", WAIT, || async {
            remote
                .get_opt("phoenix")
                .await
                .ok()?
                .and_then(|t| t.metadata.uid)
        })
        .await;
        let eu_namespaces = Api::<Namespace>::all(tb.cluster(2).client().await.unwrap());
        eu_namespaces
            .delete(&remote_ns, &DeleteParams::default())
            .await
            .unwrap();
        eventually(
            "a new twin in the namespace created again",
            Duration::from_secs(120),
            || async {
                let twin = remote.get_opt("phoenix").await.ok()??;
                let running = twin.status.as_ref()?.phase.as_deref() == Some("Running");
                (twin.metadata.uid.as_ref() != Some(&first) && running).then_some(())
            },
        )
        .await;

        // Ending the offloading: the remote namespace goes with the twins, and the local
        // pods that ran there are deleted (their owners would create them again, locally).
        local
            .create(&PostParams::default(), &bare_pod("last", json!({})))
            .await
            .unwrap();
        eventually("the last pod Running remotely", WAIT, || async {
            let pod = local.get_opt("last").await.ok()??;
            (pod.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
        let (ok, _, err) = kubectl(
            tb.cluster(1).kubeconfig(),
            &[
                "delete",
                "namespaceoffloading",
                "offloading",
                "-n",
                &ns,
                "--wait=false",
            ],
            None,
        );
        assert!(ok, "{err}");
        eventually(
            "the offloaded pod deleted as the offloading ends",
            WAIT,
            || async { local.get_opt("last").await.ok()?.is_none().then_some(()) },
        )
        .await;
        gone(tb, 2, &remote_ns).await;
        delete_namespace(&client, &ns).await;
    })
    .await;
}

/// Issue 9, point 2: what an offloaded pod needs to start is copied into the remote
/// namespace of every cluster where the offloading is Ready (and only there), kept in sync,
/// deleted with the original; a name taken there by someone else is left alone.
#[tokio::test]
async fn configmaps_secrets_and_service_accounts_follow_into_the_remote_namespace() {
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("objects");
        create_namespace(&client, &ns, json!({})).await;
        apply_offloading(
            tb,
            &ns,
            "  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - {key: region, operator: In, values: [eu]}\n",
        );
        phase(&client, &ns, "Ready").await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        let eu = tb.cluster(2).client().await.unwrap();
        let eu_cms = Api::<ConfigMap>::namespaced(eu.clone(), &remote_ns);
        // Someone else's ConfigMap of a name we are about to use.
        let theirs: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "theirs"}, "data": {"owner": "cluster-2"}})).unwrap();
        eu_cms.create(&PostParams::default(), &theirs).await.unwrap();

        let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
        for (name, value) in [("settings", "fast"), ("theirs", "ours")] {
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": name}, "data": {"mode": value}})).unwrap();
            cms.create(&PostParams::default(), &cm).await.unwrap();
        }
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "credentials"}, "stringData": {"password": "s3cret"}})).unwrap();
        Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await.unwrap();
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "web"}})).unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), &ns).create(&PostParams::default(), &sa).await.unwrap();

        let copy = eventually("the ConfigMap copied to cluster 2", WAIT, || async {
            eu_cms.get_opt("settings").await.ok()?
        })
        .await;
        assert_eq!(copy.data.unwrap()["mode"], "fast");
        let eu_secret = eventually("the Secret copied", WAIT, || async {
            Api::<Secret>::namespaced(eu.clone(), &remote_ns).get_opt("credentials").await.ok()?
        })
        .await;
        assert_eq!(eu_secret.data.unwrap()["password"].0, b"s3cret");
        eventually("the ServiceAccount copied", WAIT, || async {
            Api::<ServiceAccount>::namespaced(eu.clone(), &remote_ns).get_opt("web").await.ok()?
        })
        .await;
        // Not selected: cluster 3 gets nothing.
        let us = Api::<ConfigMap>::namespaced(tb.cluster(3).client().await.unwrap(), &remote_ns);
        assert!(us.get_opt("settings").await.unwrap().is_none());

        // Kept in sync, and someone else's is never touched.
        cms.patch("settings", &PatchParams::default(), &Patch::Merge(json!({"data": {"mode": "safe"}})))
            .await
            .unwrap();
        eventually("the change copied", WAIT, || async {
            let cm = eu_cms.get_opt("settings").await.ok()??;
            (cm.data?.get("mode")? == "safe").then_some(())
        })
        .await;
        let still = eu_cms.get("theirs").await.unwrap();
        assert_eq!(still.data.unwrap()["owner"], "cluster-2");
        event(&client, &ns, "ReflectionConflict", "theirs").await;

        // Deleted with the original.
        cms.delete("settings", &DeleteParams::default()).await.unwrap();
        eventually("the copy deleted", WAIT, || async {
            eu_cms.get_opt("settings").await.ok()?.is_none().then_some(())
        })
        .await;
        assert!(eu_cms.get_opt("theirs").await.unwrap().is_some());
        delete_namespace(&client, &ns).await;
    })
    .await;
}

/// Issue 9, points 4 and 5: while its cluster does not answer, an offloaded pod keeps its
/// last status and the virtual node turns NotReady; when the cluster is back, the same twin
/// serves it (never a second one); when the cluster is unpeered, the local pod goes (its
/// owner would create it again) rather than staying bound to a node that is gone.
#[tokio::test]
async fn offloaded_pods_through_an_outage_and_an_unpeering() {
    use k8s_openapi::api::core::v1::Pod;
    with_topology(|tb, t| async move {
        kwok_node(tb, 3).await;
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("faults");
        create_namespace(&client, &ns, json!({})).await;
        apply_offloading(
            tb,
            &ns,
            "  podOffloadingStrategy: Remote\n  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - {key: region, operator: In, values: [us]}\n",
        );
        phase(&client, &ns, "Ready").await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        let local = Api::<Pod>::namespaced(client.clone(), &ns);
        local.create(&PostParams::default(), &bare_pod("web", json!({}))).await.unwrap();
        let running = eventually("the pod Running in cluster 3", WAIT, || async {
            let pod = local.get_opt("web").await.ok()??;
            let status = pod.status.clone()?;
            (status.phase.as_deref() == Some("Running") && status.pod_ip.is_some()).then_some(pod)
        })
        .await;
        let ip = running.status.unwrap().pod_ip;
        let twin_uid = Api::<Pod>::namespaced(tb.cluster(3).client().await.unwrap(), &remote_ns)
            .get("web")
            .await
            .unwrap()
            .metadata
            .uid;

        // The outage: the node turns NotReady, the pod keeps its last status.
        tb.cluster(3).stop_apiserver();
        let nodes = Api::<Node>::all(client.clone());
        let node_name = format!("liqo-{}", t.ids[2]);
        let ready = |node: &Node| {
            node.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .map(|c| c.status.clone())
        };
        eventually("the virtual node NotReady", Duration::from_secs(90), || async {
            let node = nodes.get(&node_name).await.ok()?;
            (ready(&node).as_deref() == Some("False")).then_some(())
        })
        .await;
        let during = local.get("web").await.unwrap().status.unwrap();
        assert_eq!(during.phase.as_deref(), Some("Running"));
        assert_eq!(during.pod_ip, ip);

        // Back: the same twin, no second one, the pod still Running there.
        tb.cluster(3).restart_apiserver().await.unwrap();
        eventually("the virtual node Ready again", Duration::from_secs(90), || async {
            let node = nodes.get(&node_name).await.ok()?;
            (ready(&node).as_deref() == Some("True")).then_some(())
        })
        .await;
        let remote = Api::<Pod>::namespaced(tb.cluster(3).client().await.unwrap(), &remote_ns);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let twins = remote.list(&Default::default()).await.unwrap().items;
        assert_eq!(twins.len(), 1, "{twins:?}");
        assert_eq!(twins[0].metadata.uid, twin_uid);
        assert_eq!(local.get("web").await.unwrap().status.unwrap().phase.as_deref(), Some("Running"));

        // Unpeered: the local pod does not stay bound to a node that is gone.
        unpeer(tb, 3);
        eventually("the pod deleted once its cluster is unpeered", WAIT, || async {
            local.get_opt("web").await.ok()?.is_none().then_some(())
        })
        .await;
        peer(tb, 3).unwrap();
        virtual_node(&client, &t.ids[2]).await;
        delete_namespace(&client, &ns).await;
        gone(tb, 3, &remote_ns).await;
    })
    .await;
}

/// Issue 9, point 3: without declared resources, cluster 2's virtual node offers what its
/// Ready nodes have left once its own pods (not our twins) take their requests.
#[tokio::test]
async fn the_virtual_node_offers_what_the_remote_has_left() {
    use k8s_openapi::api::core::v1::Pod;
    with_topology(|tb, t| async move {
        let worker = kwok_node(tb, 2).await;
        let client = tb.cluster(1).client().await.unwrap();
        let rcs = Api::<RemoteCluster>::all(client.clone());
        let nodes = Api::<Node>::all(client.clone());
        let name = format!("liqo-{}", t.ids[1]);
        let offered = |nodes: Api<Node>, name: String| async move {
            let node = nodes.get(&name).await.ok()?;
            let a = node.status?.allocatable?;
            Some((a.get("cpu")?.0.clone(), a.get("pods")?.0.clone()))
        };
        rcs.patch(
            "cluster-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": null}})),
        )
        .await
        .unwrap();
        let eu = tb.cluster(2).client().await.unwrap();
        let running_there = Api::<Pod>::all(eu.clone())
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(worker.as_str())
                    && !p.metadata.labels.clone().unwrap_or_default().contains_key("offloading.liqo.io/origin-cluster-id")
            })
            .count();
        let pods_left = (500 - running_there).to_string();
        eventually("the remote's own total on the virtual node", WAIT, || async {
            let (cpu, pods) = offered(nodes.clone(), name.clone()).await?;
            (cpu == "32" && pods == pods_left).then_some(())
        })
        .await;
        // A pod of cluster 2's own, asking for 2 CPUs: the virtual node offers that much less.
        let ns = unique("own");
        let own_ns: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(eu.clone()).create(&PostParams::default(), &own_ns).await.unwrap();
        let own = bare_pod(
            "own",
            json!({"nodeName": worker, "containers": [{"name": "app", "image": "x", "resources": {"requests": {"cpu": "2"}}}]}),
        );
        Api::<Pod>::namespaced(eu.clone(), &ns).create(&PostParams::default(), &own).await.unwrap();
        eventually("2 CPUs less on the virtual node", WAIT, || async {
            let (cpu, _) = offered(nodes.clone(), name.clone()).await?;
            (cpu == "30").then_some(())
        })
        .await;
        // Declared resources again, as the other tests expect.
        rcs.patch(
            "cluster-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"cpu": "8", "memory": "16Gi", "pods": "110"}}})),
        )
        .await
        .unwrap();
        eventually("the declared resources back", WAIT, || async {
            let (cpu, _) = offered(nodes.clone(), name.clone()).await?;
            (cpu == "8").then_some(())
        })
        .await;
        Api::<Namespace>::all(eu).delete(&ns, &DeleteParams::default()).await.unwrap();
    })
    .await;
}

/// The slices in `namespace` of cluster `n` for Service `service` written by `manager`
/// (`endpointslice.kubernetes.io/managed-by`), as their endpoints' addresses.
async fn slice_addresses(
    tb: &Testbed,
    n: usize,
    namespace: &str,
    service: &str,
    manager: &str,
) -> Vec<String> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let client = tb.cluster(n).client().await.unwrap();
    let selector = format!(
        "kubernetes.io/service-name={service},endpointslice.kubernetes.io/managed-by={manager}"
    );
    let slices = Api::<EndpointSlice>::namespaced(client, namespace)
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .unwrap();
    let mut addresses: Vec<String> = slices
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .flat_map(|e| e.addresses.clone())
        .collect();
    addresses.sort();
    addresses
}

/// Issue 13, points 1, 2 and 4, with a whole app in one `kubectl apply`: its Services
/// reach every selected cluster (cluster 3 runs none of its pods), each cluster's
/// endpoints cover the pods of every cluster without duplicating those that run there,
/// cluster 3's peering translates cluster 1's addresses, a Service name taken remotely
/// is left alone and reported, deletion follows, and a twin's event shows on its pod.
#[tokio::test]
async fn services_and_endpoints_reach_every_selected_cluster() {
    use k8s_openapi::api::core::v1::{Pod, Service};
    const OURS: &str = "namespace-offloading.liqo.io";
    const THEIRS: &str = "endpointslice-controller.k8s.io";
    with_topology(|tb, t| async move {
        kwok_node(tb, 1).await;
        let worker = kwok_node(tb, 2).await;
        // The twin keeps the pod's nodeSelector (region=eu): cluster 2's node matches it.
        Api::<Node>::all(tb.cluster(2).client().await.unwrap())
            .patch(&worker, &PatchParams::default(),
                   &Patch::Merge(json!({"metadata": {"labels": {"region": "eu"}}})))
            .await
            .unwrap();
        let kc = tb.cluster(1).kubeconfig();
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("services");
        create_namespace(&client, &ns, json!({})).await;
        apply_offloading(tb, &ns, "  podOffloadingStrategy: LocalAndRemote\n");
        let status = phase(&client, &ns, "Ready").await;
        assert!(condition(&status, &t.ids[2], "Ready").is_some(), "cluster 3 selected: {status}");
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        // Someone else's Service in cluster 3, of a name the app uses.
        let us = tb.cluster(3).client().await.unwrap();
        let theirs: Service = serde_json::from_value(json!({
            "metadata": {"name": "taken", "labels": {"owner": "cluster-3"}},
            "spec": {"ports": [{"port": 1234}]}})).unwrap();
        Api::<Service>::namespaced(us.clone(), &remote_ns).create(&PostParams::default(), &theirs).await.unwrap();
        // Cluster 1's pods (kwok's 10.101.0.0/16) appear in cluster 3 as 10.201.0.0/16.
        let rcs = Api::<RemoteCluster>::all(client.clone());
        let translate = |rules: Value| json!({"spec": {"addressTranslation": rules}});
        rcs.patch("cluster-3", &PatchParams::default(),
                  &Patch::Merge(translate(json!([{"from": "10.101.0.0/16", "to": "10.201.0.0/16"}]))))
            .await
            .unwrap();

        let app = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
             "spec": {"type": "NodePort", "selector": {"app": "web"},
                      "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "taken", "namespace": ns},
             "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-local", "namespace": ns, "labels": {"app": "web"}},
             "spec": {"nodeSelector": {"kubernetes.io/hostname": "cluster-1-worker"},
                      "containers": [{"name": "app", "image": "registry.example/web:1"}]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-eu", "namespace": ns, "labels": {"app": "web"}},
             "spec": {"nodeSelector": {"region": "eu"},
                      "containers": [{"name": "app", "image": "registry.example/web:1"}]}},
        ]});
        let (ok, _, err) = kubectl(kc, &["apply", "-f", "-"], Some(&app.to_string()));
        assert!(ok, "{err}");

        // The Service in both remote clusters, node port and cluster IP theirs to pick.
        for n in [2, 3] {
            let svcs = Api::<Service>::namespaced(tb.cluster(n).client().await.unwrap(), &remote_ns);
            let copy = eventually(&format!("Service web in cluster {n}"), WAIT, || async {
                svcs.get_opt("web").await.ok()?
            })
            .await;
            let spec = copy.spec.unwrap();
            assert_eq!(spec.type_.as_deref(), Some("NodePort"));
            assert_eq!(spec.selector.unwrap()["app"], "web");
            let port = &spec.ports.unwrap()[0];
            assert_eq!((port.port, port.node_port.is_some()), (80, true));
        }
        // Cluster 3's own "taken" is untouched; the conflict is on the local Service.
        event(&client, &ns, "ReflectionConflict", "taken").await;
        let still = Api::<Service>::namespaced(us.clone(), &remote_ns).get("taken").await.unwrap();
        assert_eq!(still.spec.unwrap().ports.unwrap()[0].port, 1234);
        assert_eq!(still.metadata.labels.unwrap()["owner"], "cluster-3");
        let (_, metrics) = http_get(t.admin_ports.lock().unwrap()[0], "/metrics").unwrap();
        let counter = format!(
            "namespace_offloading_reflection_conflicts_total{{kind=\"Service\",cluster_id=\"{}\"}}",
            t.ids[2]
        );
        assert!(metrics.contains(&counter), "{counter} missing from:\n{metrics}");

        // Endpoints: each pod once in every cluster.
        let pods = Api::<Pod>::namespaced(client.clone(), &ns);
        let mut ips = Vec::new();
        for name in ["web-local", "web-eu"] {
            let ip = eventually(&format!("{name} Running with an IP"), WAIT, || async {
                let status = pods.get_opt(name).await.ok()??.status?;
                (status.phase.as_deref() == Some("Running")).then_some(status.pod_ip?)
            })
            .await;
            ips.push(ip);
        }
        let (local_ip, eu_ip) = (ips[0].clone(), ips[1].clone());
        assert!(local_ip.starts_with("10.101.") && eu_ip.starts_with("10.102."), "{ips:?}");
        let mut both = vec![local_ip.clone(), eu_ip.clone()];
        both.sort();
        eventually("cluster 1's endpoints cover both pods", WAIT, || async {
            (slice_addresses(tb, 1, &ns, "web", THEIRS).await == both).then_some(())
        })
        .await;
        eventually("cluster 2: the local pod reflected, its own twin by its controller", WAIT, || async {
            let reflected = slice_addresses(tb, 2, &remote_ns, "web", OURS).await;
            let own = slice_addresses(tb, 2, &remote_ns, "web", THEIRS).await;
            (reflected == [local_ip.clone()] && own == [eu_ip.clone()]).then_some(())
        })
        .await;
        let translated = local_ip.replacen("10.101.", "10.201.", 1);
        let mut in_us = vec![translated, eu_ip.clone()];
        in_us.sort();
        eventually("cluster 3: both pods, cluster 1's translated", WAIT, || async {
            (slice_addresses(tb, 3, &remote_ns, "web", OURS).await == in_us).then_some(())
        })
        .await;

        // A twin's event shows on the local pod.
        let eu = tb.cluster(2).client().await.unwrap();
        let twin = Api::<Pod>::namespaced(eu.clone(), &remote_ns).get("web-eu").await.unwrap();
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let remote_event: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
            "metadata": {"name": "web-eu.oom", "namespace": remote_ns},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "name": "web-eu",
                               "namespace": remote_ns, "uid": twin.metadata.uid},
            "reason": "OOMKilling", "type": "Warning", "count": 1,
            "message": "Memory cgroup out of memory: killed process 42 (web)",
            "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "kubelet"},
        }))
        .unwrap();
        Api::<k8s_openapi::api::core::v1::Event>::namespaced(eu.clone(), &remote_ns)
            .create(&PostParams::default(), &remote_event)
            .await
            .unwrap();
        let reflected = event(&client, &ns, "OOMKilling", "web-eu").await;
        let note = reflected.note.unwrap_or_default();
        assert!(note.contains("killed process 42") && note.contains(&t.ids[1]), "{note}");
        let (ok, described, err) = kubectl(kc, &["describe", "pod", "web-eu", "-n", &ns], None);
        assert!(ok && described.contains("OOMKilling"), "{described}{err}");

        // Deleted with the original, endpoints too.
        let (ok, _, err) = kubectl(kc, &["delete", "service", "web", "-n", &ns], None);
        assert!(ok, "{err}");
        for n in [2, 3] {
            let svcs = Api::<Service>::namespaced(tb.cluster(n).client().await.unwrap(), &remote_ns);
            eventually(&format!("Service web gone from cluster {n}"), WAIT, || async {
                let svc = svcs.get_opt("web").await.ok()?;
                let slices = slice_addresses(tb, n, &remote_ns, "web", OURS).await;
                (svc.is_none() && slices.is_empty()).then_some(())
            })
            .await;
        }
        assert!(Api::<Service>::namespaced(us, &remote_ns).get_opt("taken").await.unwrap().is_some());
        rcs.patch("cluster-3", &PatchParams::default(), &Patch::Merge(translate(Value::Null)))
            .await
            .unwrap();
        delete_namespace(&client, &ns).await;
    })
    .await;
}

/// Issue 13, point 3: `kubectl logs`, `logs -f`, `exec` and `port-forward` of a pod that
/// runs in cluster 2, through cluster 1's API server: it calls the virtual node's kubelet
/// API (our manager), which relays each call to cluster 2's API server, which calls kwok.
/// Errors from the remote side reach the user as they are.
#[tokio::test]
async fn kubectl_logs_exec_and_port_forward_reach_an_offloaded_pod() {
    use k8s_openapi::api::core::v1::Pod;
    use testbed::{
        KWOK_CONTAINER_LOG,
        kubectl::{Streaming, output, port_forward, run},
    };
    with_topology(|tb, t| async move {
        kwok_node(tb, 2).await;
        let kc = tb.cluster(1).kubeconfig();
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("kubelet");
        offload_remotely_to_eu(tb, &client, &ns).await;
        let pods = Api::<Pod>::namespaced(client.clone(), &ns);
        pods.create(&PostParams::default(), &bare_pod("web", json!({})))
            .await
            .unwrap();
        eventually("the pod Running in cluster 2", WAIT, || async {
            let status = pods.get_opt("web").await.ok()??.status?;
            (status.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;

        let logs = run(kc, &["logs", "-n", &ns, "web"], None).await;
        assert_eq!(logs, KWOK_CONTAINER_LOG);
        let last = KWOK_CONTAINER_LOG.lines().last().unwrap();
        let tail = run(
            kc,
            &["logs", "-n", &ns, "web", "--tail=1", "--since=87600h"],
            None,
        )
        .await;
        assert_eq!(tail.trim_end(), last);
        let mut follow = Streaming::spawn(kc, &["logs", "-f", "--tail=1", "-n", &ns, "web"]);
        follow.line(|l| l == last).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            follow.still_running(),
            "logs -f ended: {}",
            follow.stderr().await
        );
        follow.stop().await;

        let hi = run(kc, &["exec", "-n", &ns, "web", "--", "echo", "hi"], None).await;
        assert_eq!(hi, "hi\n");
        let echoed = run(
            kc,
            &["exec", "-i", "-n", &ns, "web", "--", "head", "-n", "1"],
            Some("through two API servers\n"),
        )
        .await;
        assert_eq!(echoed, "through two API servers\n");
        // The remote side's error, as it came.
        let (ok, _, err) = output(
            kc,
            &["exec", "-n", &ns, "web", "--", "no-such-command"],
            None,
        )
        .await;
        assert!(!ok && err.contains("no-such-command"), "{err}");

        let (forward, port) = port_forward(kc, &ns, "web", 8080).await;
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        conn.write_all(b"ping through port-forward\n")
            .await
            .unwrap();
        let mut back = vec![0; 26];
        tokio::time::timeout(WAIT, conn.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, b"ping through port-forward\n");
        drop(conn);
        forward.stop().await;

        // Straight to the virtual node's kubelet API: a certificate from the cluster CA is
        // not enough, the caller needs nodes/proxy (as with a kubelet's webhook authz).
        let node = pods
            .get("web")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .unwrap();
        let status = Api::<Node>::all(client.clone())
            .get(&node)
            .await
            .unwrap()
            .status
            .unwrap();
        let port = status
            .daemon_endpoints
            .unwrap()
            .kubelet_endpoint
            .unwrap()
            .port;
        let url = format!("https://127.0.0.1:{port}/containerLogs/{ns}/web/app");
        let curl = |cert: Option<(std::path::PathBuf, std::path::PathBuf)>| {
            let mut cmd = std::process::Command::new("curl");
            cmd.args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"]);
            if let Some((cert, key)) = cert {
                cmd.arg("--cert").arg(cert).arg("--key").arg(key);
            }
            let out = cmd.arg(&url).output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        let (ok, answer) = curl(Some(tb.cluster(1).viewer_cert()));
        assert!(ok && answer.ends_with("\n403"), "{answer}");
        assert!(
            answer.contains("testbed-viewer may not get nodes/proxy"),
            "{answer}"
        );
        // No certificate and no token: refused before anything is looked up, as by a kubelet.
        let (ok, answer) = curl(None);
        assert!(ok && answer.ends_with("\n401"), "{answer}");
        assert!(answer.contains("no credentials"), "{answer}");
        let (ok, answer) = curl(Some(tb.cluster(1).admin_cert()));
        assert!(
            ok && answer == format!("{KWOK_CONTAINER_LOG}\n200"),
            "{answer}"
        );
        let (_, metrics) = http_get(t.admin_ports.lock().unwrap()[0], "/metrics").unwrap();
        for counted in [
            "namespace_offloading_kubelet_calls_total{call=\"logs\",code=\"200\"}",
            "namespace_offloading_kubelet_calls_total{call=\"logs\",code=\"403\"}",
            "namespace_offloading_kubelet_calls_total{call=\"exec\",code=\"101\"}",
            "namespace_offloading_kubelet_calls_total{call=\"portforward\",code=\"101\"}",
        ] {
            assert!(
                metrics.contains(counted),
                "{counted} missing from:\n{metrics}"
            );
        }

        delete_namespace(&client, &ns).await;
    })
    .await;
}

/// Issue 24, points 2 and 3: the reflection policy decides, per kind, what crosses
/// (`AllowList`: only the annotated; `DenyList`: all but the annotated), listed labels never
/// cross; Ingresses cross with their class mapped and their load-balancer addresses come
/// back; NetworkPolicies cross verbatim.
#[tokio::test]
async fn reflection_policy_ingresses_and_network_policies() {
    use k8s_openapi::api::{
        core::v1::Secret,
        networking::v1::{Ingress, NetworkPolicy},
    };
    with_topology(|tb, t| async move {
        restart_manager(
            tb,
            t,
            1,
            &[
                "--reflection-type=configmap=AllowList",
                "--labels-not-reflected=team",
                "--ingress-class-mapping=nginx=remote-nginx",
            ],
        )
        .await;
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("policy");
        create_namespace(&client, &ns, json!({})).await;
        apply_offloading(
            tb,
            &ns,
            "  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - {key: region, operator: In, values: [eu]}\n",
        );
        phase(&client, &ns, "Ready").await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        let eu = tb.cluster(2).client().await.unwrap();

        let objects = format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: plain, namespace: {ns}}}
data: {{mode: fast}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: allowed
  namespace: {ns}
  annotations: {{liqo.io/allow-reflection: "true"}}
data: {{mode: fast}}
---
apiVersion: v1
kind: Secret
metadata:
  name: skipped
  namespace: {ns}
  annotations: {{liqo.io/skip-reflection: "true"}}
stringData: {{password: stays-home}}
---
apiVersion: v1
kind: Secret
metadata:
  name: kept
  namespace: {ns}
  labels: {{team: payments, app: shop}}
stringData: {{password: crosses}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: {ns}}}
spec:
  ingressClassName: nginx
  rules:
  - host: shop.example
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: db-from-web, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{app: db}}}}
  policyTypes: [Ingress]
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: web}}}}}}]
    ports: [{{port: 5432, protocol: TCP}}]
"#
        );
        kubectl(tb.cluster(1).kubeconfig(), &["apply", "-f", "-"], Some(&objects));

        let eu_cms = Api::<ConfigMap>::namespaced(eu.clone(), &remote_ns);
        let eu_secrets = Api::<Secret>::namespaced(eu.clone(), &remote_ns);
        let eu_ingresses = Api::<Ingress>::namespaced(eu.clone(), &remote_ns);
        let eu_policies = Api::<NetworkPolicy>::namespaced(eu.clone(), &remote_ns);
        eventually("the allowed ConfigMap copied", WAIT, || async {
            eu_cms.get_opt("allowed").await.ok()?
        })
        .await;
        let kept = eventually("the plain Secret copied", WAIT, || async {
            eu_secrets.get_opt("kept").await.ok()?
        })
        .await;
        let labels = kept.metadata.labels.unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("shop"));
        assert!(!labels.contains_key("team"), "a listed label crossed: {labels:?}");
        let copy = eventually("the Ingress copied", WAIT, || async {
            eu_ingresses.get_opt("web").await.ok()?
        })
        .await;
        let spec = copy.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("remote-nginx"));
        assert_eq!(spec.rules.unwrap()[0].host.as_deref(), Some("shop.example"));
        let policy = eventually("the NetworkPolicy copied", WAIT, || async {
            eu_policies.get_opt("db-from-web").await.ok()?
        })
        .await;
        let local_policy = Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
            .get("db-from-web")
            .await
            .unwrap();
        assert_eq!(policy.spec, local_policy.spec);
        // Every kind was reflected once by now: what the policy leaves home is not there.
        assert!(eu_cms.get_opt("plain").await.unwrap().is_none());
        assert!(eu_secrets.get_opt("skipped").await.unwrap().is_none());

        // A local ingress controller's address, and the remote one's: both are listed.
        let local_ingresses = Api::<Ingress>::namespaced(client.clone(), &ns);
        local_ingresses
            .patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}})),
            )
            .await
            .unwrap();
        eu_ingresses
            .patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}})),
            )
            .await
            .unwrap();
        let addresses = || async {
            let status = local_ingresses.get("web").await.ok()?.status?;
            let entries = status.load_balancer?.ingress?;
            Some(entries.into_iter().filter_map(|e| e.ip).collect::<Vec<_>>())
        };
        eventually("the address back on the local Ingress", WAIT, || async {
            let ips = addresses().await?;
            (ips == ["192.0.2.1", "203.0.113.10"]).then_some(())
        })
        .await;
        // No longer reflected: its copy goes, and so does its address here (not the other).
        local_ingresses
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"liqo.io/skip-reflection": "true"}}})),
            )
            .await
            .unwrap();
        eventually("only the local controller's address left", WAIT, || async {
            let ips = addresses().await?;
            (ips == ["192.0.2.1"] && eu_ingresses.get_opt("web").await.ok()?.is_none()).then_some(())
        })
        .await;

        // No longer allowed: the copy goes; marked to skip: the same.
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .patch(
                "allowed",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"liqo.io/allow-reflection": "false"}}})),
            )
            .await
            .unwrap();
        Api::<Secret>::namespaced(client.clone(), &ns)
            .patch(
                "kept",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"liqo.io/skip-reflection": "true"}}})),
            )
            .await
            .unwrap();
        eventually("copies no longer reflected deleted", WAIT, || async {
            (eu_cms.get_opt("allowed").await.ok()?.is_none()
                && eu_secrets.get_opt("kept").await.ok()?.is_none())
            .then_some(())
        })
        .await;

        delete_namespace(&client, &ns).await;
        restart_manager(tb, t, 1, &[]).await;
    })
    .await;
}

/// Issue 24, point 1: in a namespace offloaded with `Local`, the pods of a Deployment
/// naming the `liqo` RuntimeClass (installed with the manager) go to the selected
/// cluster's virtual node and run there as twins with that cluster's default runtime,
/// while the namespace's other pods stay local.
#[tokio::test]
async fn a_pod_opted_in_by_runtime_class_runs_remotely_in_a_local_namespace() {
    use k8s_openapi::api::core::v1::Pod;
    with_topology(|tb, t| async move {
        let local_node = kwok_node(tb, 1).await;
        kwok_node(tb, 2).await;
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("opt-in");
        create_namespace(&client, &ns, json!({})).await;
        apply_offloading(
            tb,
            &ns,
            "  podOffloadingStrategy: Local\n  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - {key: region, operator: In, values: [eu]}\n",
        );
        phase(&client, &ns, "Ready").await;
        let app = format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: batch, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: batch}}}}
  template:
    metadata: {{labels: {{app: batch}}}}
    spec:
      runtimeClassName: liqo
      containers: [{{name: work, image: busybox}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: stays, namespace: {ns}}}
spec:
  containers: [{{name: web, image: nginx}}]
"#
        );
        let (ok, _, err) = kubectl(tb.cluster(1).kubeconfig(), &["apply", "-f", "-"], Some(&app));
        assert!(ok, "{err}");
        let virtual_node = format!("liqo-{}", t.ids[1]);
        // Says where things stand if the pods never get there.
        let kc = tb.cluster(1).kubeconfig().to_owned();
        let ns_ = ns.clone();
        let dump = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(45)).await;
            let (_, out, _) = kubectl(&kc, &["get", "pods,rs,events", "-n", &ns_, "-o", "wide"], None);
            eprintln!("after 45 s:\n{out}");
            let (_, out, _) = kubectl(&kc, &["get", "pods", "-n", &ns_, "-o", "yaml"], None);
            eprintln!("{out}");
        });
        let local = Api::<Pod>::namespaced(client.clone(), &ns);
        let opted: Vec<Pod> = eventually("both opted-in pods Running remotely", WAIT, || async {
            let pods = local
                .list(&kube::api::ListParams::default().labels("app=batch"))
                .await
                .ok()?;
            (pods.items.len() == 2
                && pods.items.iter().all(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&virtual_node)
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                }))
            .then_some(pods.items)
        })
        .await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        let remote = Api::<Pod>::namespaced(tb.cluster(2).client().await.unwrap(), &remote_ns);
        for pod in &opted {
            let name = pod.metadata.name.clone().unwrap();
            let twin = remote.get(&name).await.unwrap().spec.unwrap();
            // The opt-in means nothing there: the remote's default runtime, any node.
            assert_eq!(twin.runtime_class_name, None, "{name}");
            let selector = twin.node_selector.unwrap_or_default();
            assert!(!selector.contains_key("liqo.io/type"), "{name}: {selector:?}");
        }
        // The strategy keeps the rest here.
        let stays = eventually("the plain pod scheduled", WAIT, || async {
            let pod = local.get_opt("stays").await.ok()??;
            pod.spec?.node_name
        })
        .await;
        assert_eq!(stays, local_node);
        dump.abort();
        delete_namespace(&client, &ns).await;

        // In a namespace that is not offloaded, the class would send the pod to a virtual
        // node where nothing runs it: refused, saying why.
        let plain = unique("not-offloaded");
        create_namespace(&client, &plain, json!({})).await;
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "lost", "namespace": plain},
            "spec": {"runtimeClassName": "liqo", "containers": [{"name": "a", "image": "busybox"}]}})
        .to_string();
        let (ok, _, err) = kubectl(tb.cluster(1).kubeconfig(), &["apply", "-f", "-"], Some(&pod));
        assert!(!ok, "a pod opting in outside an offloaded namespace was admitted");
        assert!(
            err.contains(&format!("namespace \"{plain}\" is not offloaded")),
            "{err}"
        );
        delete_namespace(&client, &plain).await;
    })
    .await;
}

/// Issue 24, point 4: a claim of our storage class used by an offloaded pod is created in
/// the pod's cluster before its twin, binds there, and its status comes back; a claim bound
/// to a volume here keeps its pod home (Unsupported); deleting the pod keeps the remote
/// claim, deleting the local claim deletes it.
#[tokio::test]
async fn an_offloaded_pods_claim_is_provisioned_in_its_cluster_before_its_twin() {
    use futures::StreamExt;
    use k8s_openapi::api::{
        core::v1::{PersistentVolume, PersistentVolumeClaim, Pod},
        storage::v1::StorageClass,
    };
    use kube::runtime::watcher;
    with_topology(|tb, t| async move {
        kwok_node(tb, 2).await;
        let client = tb.cluster(1).client().await.unwrap();
        let remote_client = tb.cluster(2).client().await.unwrap();
        let ns = unique("claims");
        offload_remotely_to_eu(tb, &client, &ns).await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        let virtual_node = format!("liqo-{}", t.ids[1]);
        // Our storage class, installed with the manager (manifests/storageclass.yaml):
        // provisioned by the manager, once the scheduler picked a node.
        let class = Api::<StorageClass>::all(client.clone())
            .get("liqo")
            .await
            .unwrap();
        assert_eq!(class.provisioner, "offloading.liqo.io/remote");
        assert_eq!(
            class.volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer")
        );
        // Cluster 2 has no provisioner: a volume of 2Gi waits there for our claim.
        let remote_pv_name = format!("{ns}-data");
        let remote_pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": remote_pv_name},
            "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "",
                     "hostPath": {"path": format!("/tmp/{ns}")},
                     "claimRef": {"namespace": remote_ns, "name": "data"}},
        }))
        .unwrap();
        let remote_pvs = Api::<PersistentVolume>::all(remote_client.clone());
        remote_pvs
            .create(&PostParams::default(), &remote_pv)
            .await
            .unwrap();
        let local_claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
        let remote_claims =
            Api::<PersistentVolumeClaim>::namespaced(remote_client.clone(), &remote_ns);
        let local_pods = Api::<Pod>::namespaced(client.clone(), &ns);
        let remote_pods = Api::<Pod>::namespaced(remote_client.clone(), &remote_ns);

        // Whether the claim existed there when the twin first appeared.
        let order = {
            let (remote_pods, remote_claims) = (remote_pods.clone(), remote_claims.clone());
            tokio::spawn(async move {
                let config = watcher::Config::default().fields("metadata.name=db");
                let mut twins = std::pin::pin!(watcher(remote_pods, config));
                while let Some(event) = twins.next().await {
                    if let Ok(watcher::Event::Apply(_) | watcher::Event::InitApply(_)) = event {
                        return remote_claims.get_opt("data").await.unwrap().is_some();
                    }
                }
                false
            })
        };

        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "labels": {"app": "db"}},
            "spec": {"storageClassName": "liqo", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap();
        local_claims
            .create(&PostParams::default(), &claim)
            .await
            .unwrap();
        let with_claim = json!({
            "volumes": [{"name": "pg", "persistentVolumeClaim": {"claimName": "data"}},
                        {"name": "scratch", "emptyDir": {}}],
            "containers": [{"name": "app", "image": "registry.example/app:1",
                            "volumeMounts": [{"name": "pg", "mountPath": "/data"},
                                             {"name": "scratch", "mountPath": "/tmp"}]}],
        });
        local_pods
            .create(&PostParams::default(), &bare_pod("db", with_claim))
            .await
            .unwrap();
        let running = eventually("the pod Running in cluster 2", WAIT, || async {
            let pod = local_pods.get_opt("db").await.ok()??;
            (pod.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(pod)
        })
        .await;
        assert_eq!(
            running.spec.unwrap().node_name.as_deref(),
            Some(virtual_node.as_str())
        );
        assert!(
            tokio::time::timeout(WAIT, order).await.unwrap().unwrap(),
            "the twin appeared before its claim"
        );
        let twin = remote_pods.get("db").await.unwrap();
        let volumes = twin.spec.unwrap().volumes.unwrap();
        let pg = volumes.iter().find(|v| v.name == "pg").unwrap();
        assert_eq!(
            pg.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data"
        );
        assert!(
            volumes
                .iter()
                .any(|v| v.name == "scratch" && v.empty_dir.is_some())
        );

        // Bound there to the volume made for it; the local claim says so.
        let remote_claim = eventually("the remote claim Bound", WAIT, || async {
            let c = remote_claims.get_opt("data").await.ok()??;
            (c.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(c)
        })
        .await;
        assert_eq!(
            remote_claim.spec.as_ref().unwrap().volume_name.as_deref(),
            Some(remote_pv_name.as_str())
        );
        let labels = remote_claim.metadata.labels.clone().unwrap();
        assert_eq!(labels["offloading.liqo.io/origin-cluster-id"], t.ids[0]);
        assert_eq!(labels["app"], "db");
        let local = eventually("the local claim mirroring cluster 2's", WAIT, || async {
            let c = local_claims.get_opt("data").await.ok()??;
            let status = c.status.as_ref()?;
            let capacity = status.capacity.as_ref()?.get("storage")?;
            let remote_bound = status
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "offloading.liqo.io/RemoteClaim" && c.status == "True");
            (status.phase.as_deref() == Some("Bound") && capacity.0 == "2Gi" && remote_bound)
                .then_some(c)
        })
        .await;
        let placeholder = format!("offloading-{}", local.metadata.uid.clone().unwrap());
        assert_eq!(
            local.spec.as_ref().unwrap().volume_name.as_deref(),
            Some(placeholder.as_str())
        );
        let local_pvs = Api::<PersistentVolume>::all(client.clone());
        assert!(local_pvs.get_opt(&placeholder).await.unwrap().is_some());

        // A claim bound to a volume of this cluster: its data lives here, the pod stays.
        let home_pv_name = format!("{ns}-home");
        let home_pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": home_pv_name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "local-disk",
                     "hostPath": {"path": format!("/tmp/{ns}-home")},
                     "claimRef": {"namespace": ns, "name": "home"}},
        }))
        .unwrap();
        local_pvs
            .create(&PostParams::default(), &home_pv)
            .await
            .unwrap();
        let home: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "home"},
            "spec": {"storageClassName": "local-disk", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap();
        local_claims
            .create(&PostParams::default(), &home)
            .await
            .unwrap();
        eventually("the home claim bound here", WAIT, || async {
            let c = local_claims.get_opt("home").await.ok()??;
            (c.status?.phase.as_deref() == Some("Bound")).then_some(())
        })
        .await;
        let at_home =
            json!({"volumes": [{"name": "files", "persistentVolumeClaim": {"claimName": "home"}}]});
        local_pods
            .create(&PostParams::default(), &bare_pod("stays", at_home))
            .await
            .unwrap();
        let why = eventually("the pod to say why it stays", WAIT, || async {
            let pod = local_pods.get_opt("stays").await.ok()??;
            let c = pod
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "offloading.liqo.io/RemotePod")?;
            (c.reason.as_deref() == Some("Unsupported")).then_some(c.message.unwrap_or_default())
        })
        .await;
        assert!(
            why.contains(&home_pv_name) && why.contains("does not move"),
            "{why}"
        );
        assert!(remote_pods.get_opt("stays").await.unwrap().is_none());
        assert!(remote_claims.get_opt("home").await.unwrap().is_none());

        // Deleting the pod keeps the data: the remote claim stays.
        local_pods
            .delete("db", &DeleteParams::default())
            .await
            .unwrap();
        eventually("the pod and its twin gone", WAIT, || async {
            let gone = local_pods.get_opt("db").await.ok()?.is_none()
                && remote_pods.get_opt("db").await.ok()?.is_none();
            gone.then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let kept = remote_claims
            .get_opt("data")
            .await
            .unwrap()
            .expect("the remote claim kept");
        assert_eq!(kept.metadata.uid, remote_claim.metadata.uid);
        assert!(kept.metadata.deletion_timestamp.is_none());

        // Deleting the local claim deletes the remote one, and the placeholder volume.
        local_claims
            .delete("data", &DeleteParams::default())
            .await
            .unwrap();
        eventually(
            "the remote claim and the placeholder gone",
            WAIT,
            || async {
                let gone = remote_claims.get_opt("data").await.ok()?.is_none()
                    && local_pvs.get_opt(&placeholder).await.ok()?.is_none();
                gone.then_some(())
            },
        )
        .await;

        local_pods
            .delete("stays", &DeleteParams::default())
            .await
            .unwrap();
        delete_namespace(&client, &ns).await;
        let _ = remote_pvs
            .delete(&remote_pv_name, &DeleteParams::default())
            .await;
        let _ = local_pvs
            .delete(&home_pv_name, &DeleteParams::default())
            .await;
    })
    .await;
}
