//! Point 4: a cluster deselected from a namespace (its labels change) sends the local pods
//! running there back, with their twins deleted, as the end of a peering does.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};

use crate::support::topology::*;
use crate::support::{eventually, kubectl, unique};

/// Cluster 2's labels as the topology gives them, plus `extra`.
fn cluster_two_labels(extra: &str) -> String {
    let base = r#""region":"eu","provider":"azure""#;
    let labels = if extra.is_empty() {
        format!("{{{base}}}")
    } else {
        format!("{{{base},{extra}}}")
    };
    serde_json::json!({"data": {"clusterLabels": labels}}).to_string()
}

fn label_cluster_two(tb: &testbed::Testbed, extra: &str) {
    let (ok, _, err) = kubectl(
        tb.cluster(2).kubeconfig(),
        &[
            "-n",
            "liqo",
            "patch",
            "configmap",
            "namespace-offloading-identity",
            "--type=merge",
            "-p",
            &cluster_two_labels(extra),
        ],
        None,
    );
    assert!(ok, "{err}");
}

/// Puts cluster 2's labels back however the test ends, for the tests after it.
struct Relabel(&'static testbed::Testbed);

impl Drop for Relabel {
    fn drop(&mut self) {
        label_cluster_two(self.0, "");
    }
}

#[tokio::test]
async fn a_deselected_cluster_sends_its_pods_back_with_their_twins() {
    with_topology(|tb, t| async move {
        kwok_node(tb, 2).await;
        let _relabel = Relabel(tb);
        label_cluster_two(tb, r#""faults":"selected""#);
        let client = tb.cluster(1).client().await.unwrap();
        let node = format!("liqo-{}", t.ids[1]);
        eventually("cluster 2's new label on its node", WAIT, || async {
            let labels = virtual_node(&client, &t.ids[1]).await;
            (labels.get("faults").map(String::as_str) == Some("selected")).then_some(())
        })
        .await;

        let ns = unique("deselect");
        create_namespace(&client, &ns, serde_json::json!({})).await;
        apply_offloading(
            tb,
            &ns,
            "  podOffloadingStrategy: Remote\n  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - {key: faults, operator: In, values: [selected]}\n",
        );
        phase(&client, &ns, "Ready").await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);

        // One `kubectl apply`: a Deployment whose pods run in cluster 2.
        let manifest = format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers: [{{name: app, image: registry.example/app:1}}]
"#
        );
        let (ok, _, err) = kubectl(tb.cluster(1).kubeconfig(), &["apply", "-f", "-"], Some(&manifest));
        assert!(ok, "{err}");
        let local = Api::<Pod>::namespaced(client.clone(), &ns);
        let twins = Api::<Pod>::namespaced(tb.cluster(2).client().await.unwrap(), &remote_ns);
        let offloaded: BTreeSet<String> = eventually("both pods Running in cluster 2", WAIT, || async {
            let pods = local.list(&Default::default()).await.ok()?.items;
            let running: BTreeSet<String> = pods
                .iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .filter_map(|p| p.uid())
                .collect();
            (running.len() == 2).then_some(running)
        })
        .await;
        assert_eq!(twins.list(&Default::default()).await.unwrap().items.len(), 2);

        // Cluster 2 loses the label the namespace selects on.
        label_cluster_two(tb, "");
        phase(&client, &ns, "NoClusterSelected").await;
        eventually("the offloaded pods sent back", WAIT, || async {
            let pods = local.list(&Default::default()).await.ok()?.items;
            let left = pods.iter().filter(|p| {
                p.uid().is_some_and(|u| offloaded.contains(&u))
                    || p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
            });
            (left.count() == 0).then_some(())
        })
        .await;
        eventually("their twins gone from cluster 2", WAIT, || async {
            let left = twins.list(&Default::default()).await.map(|l| l.items.len()).unwrap_or(0);
            (left == 0).then_some(())
        })
        .await;
        // Their owner made them again; with no cluster selected they wait (Remote).
        let replaced = local.list(&Default::default()).await.unwrap().items;
        assert_eq!(replaced.len(), 2, "{:?}", replaced.iter().map(ResourceExt::name_any).collect::<Vec<_>>());
        delete_namespace(&client, &ns).await;
    })
    .await;
}
