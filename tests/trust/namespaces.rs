//! Point 1: twins and copies go only into remote namespaces that are ours and Ready.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;

use crate::support::topology::*;
use crate::support::{eventually, kubectl, unique};

/// A namespace of the same name that someone else created in cluster 3 (EnforceSameName):
/// the status says AlreadyExists, and then nothing of ours goes there: a pod bound to
/// cluster 3's virtual node by hand gets no twin but a condition and an event; new pods are
/// not placed on cluster 3 (the webhook says so); ConfigMaps are copied to cluster 2 only.
#[tokio::test]
async fn nothing_is_written_into_a_remote_namespace_that_is_not_ours() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("foreign");
        let three = tb.cluster(3).client().await.unwrap();
        create_namespace(&three, &ns, json!({})).await;

        create_namespace(&client, &ns, json!({})).await;
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"k": "v"}}))
                .unwrap();
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
        apply_offloading(
            tb,
            &ns,
            "  namespaceMappingStrategy: EnforceSameName\n  podOffloadingStrategy: LocalAndRemote\n",
        );
        let status = phase(&client, &ns, "SomeFailed").await;
        let c = condition(&status, &t.ids[2], "Ready").unwrap();
        assert_eq!(c["reason"], "AlreadyExists", "{status}");

        // Bound by hand to cluster 3's virtual node: admitted (the user chose the node),
        // but no twin goes into someone else's namespace.
        let node3 = format!("liqo-{}", t.ids[2]);
        let local = Api::<Pod>::namespaced(client.clone(), &ns);
        local
            .create(
                &PostParams::default(),
                &bare_pod("bound", json!({"nodeName": node3})),
            )
            .await
            .unwrap();
        let why = eventually("the bound pod to say why it has no twin", WAIT, || async {
            let pod = local.get_opt("bound").await.ok()??;
            let c = pod
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "offloading.liqo.io/RemotePod")?;
            (c.reason.as_deref() == Some("NamespaceNotOurs")).then(|| c.message.unwrap_or_default())
        })
        .await;
        assert!(why.contains(&t.ids[2]) && why.contains("not created by offloading"), "{why}");
        event(&client, &ns, "RemotePodNamespaceNotOurs", "bound").await;

        // A new pod is not placed on cluster 3, and the creator is told.
        let (ok, _, warnings) = kubectl(
            tb.cluster(1).kubeconfig(),
            &["-n", &ns, "create", "-f", "-"],
            Some(&serde_json::to_string(&bare_pod("placed", json!({}))).unwrap()),
        );
        assert!(ok, "{warnings}");
        assert!(
            warnings.contains("someone else's") && warnings.contains(&t.ids[2]),
            "{warnings}"
        );
        let placed = local.get("placed").await.unwrap();
        let terms = serde_json::to_value(&placed.spec.unwrap().affinity).unwrap();
        let excluded = json!({"key": "liqo.io/remote-cluster-id", "operator": "NotIn", "values": [t.ids[2]]});
        let terms = terms["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"]
            .as_array()
            .unwrap()
            .clone();
        let remote_terms: Vec<_> = terms
            .iter()
            .filter(|t| {
                t["matchExpressions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["key"] == "liqo.io/type" && r["operator"] == "In")
            })
            .collect();
        assert!(!remote_terms.is_empty(), "{terms:?}");
        for term in remote_terms {
            assert!(
                term["matchExpressions"].as_array().unwrap().contains(&excluded),
                "{term}"
            );
        }

        // Copies: cluster 2 (ours) gets the ConfigMap, cluster 3 (theirs) nothing.
        let two = tb.cluster(2).client().await.unwrap();
        eventually("the ConfigMap copied to cluster 2", WAIT, || async {
            Api::<ConfigMap>::namespaced(two.clone(), &ns)
                .get_opt("settings")
                .await
                .ok()?
        })
        .await;
        let theirs = Api::<ConfigMap>::namespaced(three.clone(), &ns);
        let pods_there = Api::<Pod>::namespaced(three.clone(), &ns);
        assert!(theirs.get_opt("settings").await.unwrap().is_none());
        assert!(pods_there.get_opt("bound").await.unwrap().is_none());
        assert!(pods_there.get_opt("placed").await.unwrap().is_none());

        delete_namespace(&client, &ns).await;
        gone(tb, 1, &ns).await;
        let kept = remote_namespace(tb, 3, &ns).await.expect("theirs stays");
        assert!(kept.metadata.deletion_timestamp.is_none());
        Api::<k8s_openapi::api::core::v1::Namespace>::all(three)
            .delete(&ns, &DeleteParams::default())
            .await
            .unwrap();
    })
    .await;
}
