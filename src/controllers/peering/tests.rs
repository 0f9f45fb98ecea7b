//! The peering's apply against a mocked local API server: a virtual node deleted while its
//! credentials cannot be used.

use http::Method;
use k8s_openapi::api::core::v1::{Pod, Secret};
use serde_json::json;

use super::*;
use crate::context::testing::{self, api_server, exchange, store};

#[tokio::test(start_paused = true)]
async fn a_deleted_node_with_pods_is_put_back_while_the_credentials_cannot_be_used() {
    let rc: RemoteCluster = serde_json::from_value(json!({
        "apiVersion": "offloading.liqo.io/v1alpha1", "kind": "RemoteCluster",
        "metadata": {"name": "rc-c2"},
        "spec": {"kubeconfigSecret": {"namespace": "liqo", "name": "c2-kubeconfig"},
                 "clusterID": "c2"},
        "status": {"clusterID": "c2", "clusterLabels": {"region": "eu"}},
    }))
    .unwrap();
    // The Secret holds no kubeconfig: InvalidKubeconfig, without a call anywhere.
    let secret: Secret = serde_json::from_value(json!({"metadata": {
        "name": "c2-kubeconfig", "namespace": "liqo", "resourceVersion": "1"}}))
    .unwrap();
    let bound: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"nodeName": "liqo-c2", "containers": [{"name": "app", "image": "nginx"}]},
    }))
    .unwrap();
    for (pods, put_back) in [(vec![bound], true), (vec![], false)] {
        let (client, mut local) = api_server("local");
        let mut stores = testing::stores();
        stores.secrets = store([secret.clone()]);
        stores.pods = store(pods);
        let shared = testing::shared(client, stores, testing::peers([]));
        let ctx = Context {
            shared,
            kubelet: None,
        };
        let (applied, ()) = exchange(apply(&rc, &ctx), async {
            if put_back {
                let node = local.expect(Method::PATCH, "/api/v1/nodes/liqo-c2").await;
                let body = node.body.clone();
                assert_eq!(body["metadata"]["labels"]["region"], "eu", "{body}");
                node.ok(&body);
                let status = local
                    .expect(Method::PATCH, "/api/v1/nodes/liqo-c2/status")
                    .await;
                let body = status.body.clone();
                let ready = &body["status"]["conditions"][0];
                assert_eq!(ready["status"], "False", "{body}");
                status.ok(&json!({"metadata": {"name": "liqo-c2"}}));
            }
            // Then the peering's event and its own status.
            loop {
                let call = local.any().await;
                assert!(!call.path.contains("/nodes/"), "{}", call.path);
                let done = call.path.ends_with("/remoteclusters/rc-c2/status");
                call.ok(&serde_json::to_value(&rc).unwrap());
                if done {
                    break;
                }
            }
            local.nothing_more().await;
        })
        .await;
        applied.unwrap();
    }
}
