//! Point 1: a peer's watches that fail (its API server restarted) come back on their own,
//! re-list, and what changed meanwhile is reconciled; while they fail, the RemoteCluster
//! says so (condition `WatchesListed`) and so does the metric.

use std::time::Instant;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, api::PostParams};
use namespace_offloading::model::api::RemoteCluster;
use serde_json::{Value, json};

use crate::support::topology::*;
use crate::support::{eventually, http_get, unique};

/// The RemoteCluster of cluster `n`'s `WatchesListed` condition, when it is `status`.
async fn watches(client: &kube::Client, n: usize, status: &str) -> Value {
    let api = Api::<RemoteCluster>::all(client.clone());
    eventually(
        &format!("cluster {n}'s WatchesListed={status}"),
        WAIT,
        || async {
            let rc = api.get_opt(&format!("cluster-{n}")).await.ok()??;
            let status_value = serde_json::to_value(rc.status?).ok()?;
            let condition = status_value["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "WatchesListed")?
                .clone();
            (condition["status"] == status).then_some(condition)
        },
    )
    .await
}

#[tokio::test]
async fn a_peer_watch_that_fails_comes_back_and_catches_up() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("watches");
        offload_remotely_to_eu(tb, &client, &ns).await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        watches(&client, 2, "True").await;
        let admin = t.admin_ports.lock().unwrap()[0];
        let gauge = |value: u8| {
            format!("namespace_offloading_peer_watch_listed{{remote_cluster=\"cluster-2\",kind=\"configmaps\"}} {value}")
        };
        assert!(http_get(admin, "/metrics").unwrap().1.contains(&gauge(1)));

        // Cluster 2's API server goes away: every watch of it fails, and says so.
        tb.cluster(2).stop_apiserver();
        let stopped = Instant::now();
        let failing = watches(&client, 2, "False").await;
        assert_eq!(failing["reason"], "WatchFailing", "{failing}");
        eprintln!("watches reported failing after {:.1} s", stopped.elapsed().as_secs_f32());
        assert!(http_get(admin, "/metrics").unwrap().1.contains(&gauge(0)));
        // Meanwhile, what is to cross changes here.
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "while-away"}, "data": {"k": "v"}}))
        .unwrap();
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();

        // Back: the watches re-list on their own, and the change crosses.
        tb.cluster(2).restart_apiserver().await.unwrap();
        let restarted = Instant::now();
        watches(&client, 2, "True").await;
        eprintln!("watches listed again {:.1} s after the restart", restarted.elapsed().as_secs_f32());
        let copies = Api::<ConfigMap>::namespaced(tb.cluster(2).client().await.unwrap(), &remote_ns);
        eventually("the ConfigMap made meanwhile copied", WAIT, || async {
            copies.get_opt("while-away").await.ok()?
        })
        .await;
        assert!(http_get(admin, "/metrics").unwrap().1.contains(&gauge(1)));
        delete_namespace(&client, &ns).await;
    })
    .await;
}
