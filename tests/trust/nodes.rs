//! Point 4: deleting a virtual node is not unpeering.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use serde_json::json;

use crate::support::topology::*;
use crate::support::{eventually, kubectl, unique};

/// `kubectl delete node <virtual node>` (by hand, or a cluster autoscaler's doing): the
/// node comes back, the local pod is never deleted and its twin runs on, the same one.
/// (That the end of a peering does send pods back is in tests/controller.rs,
/// `offloaded_pods_through_an_outage_and_an_unpeering`.)
#[tokio::test]
async fn a_deleted_virtual_node_comes_back_and_its_pods_stay() {
    with_topology(|tb, t| async move {
        kwok_node(tb, 2).await;
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("nodedel");
        offload_remotely_to_eu(tb, &client, &ns).await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        let local = Api::<Pod>::namespaced(client.clone(), &ns);
        local
            .create(&PostParams::default(), &bare_pod("web", json!({})))
            .await
            .unwrap();
        let running = eventually("the pod Running in cluster 2", WAIT, || async {
            let pod = local.get_opt("web").await.ok()??;
            (pod.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(pod)
        })
        .await;
        let twins = Api::<Pod>::namespaced(tb.cluster(2).client().await.unwrap(), &remote_ns);
        let twin_uid = twins.get("web").await.unwrap().metadata.uid;

        let node = format!("liqo-{}", t.ids[1]);
        let (ok, _, err) = kubectl(
            tb.cluster(1).kubeconfig(),
            &["delete", "node", &node, "--wait=false"],
            None,
        );
        assert!(ok, "{err}");
        let deleted = Instant::now();
        virtual_node(&client, &t.ids[1]).await;
        eprintln!(
            "virtual node back in {:.1} s",
            deleted.elapsed().as_secs_f32()
        );

        // Well past the moment the pod would have been sent back, and past a reconnection.
        let until = Instant::now() + Duration::from_secs(12);
        while Instant::now() < until {
            let pod = local.get_opt("web").await.unwrap();
            let pod = pod.expect("the local pod was deleted with its virtual node");
            assert_eq!(pod.metadata.uid, running.metadata.uid);
            assert!(
                pod.metadata.deletion_timestamp.is_none(),
                "the local pod is being deleted"
            );
            let twin = twins
                .get_opt("web")
                .await
                .unwrap()
                .expect("the twin is gone");
            assert_eq!(twin.metadata.uid, twin_uid, "another twin replaced it");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        delete_namespace(&client, &ns).await;
    })
    .await;
}
