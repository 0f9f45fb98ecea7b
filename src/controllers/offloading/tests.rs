//! The offloading controller's apply against a mocked local API server: what it does for a
//! namespace that may never be offloaded.

use std::collections::BTreeMap;

use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::{
    context::{
        Stores,
        testing::{self, api_server, exchange, expect_event, store},
    },
    model::virtual_node,
};

#[tokio::test(start_paused = true)]
async fn a_system_namespace_past_the_webhook_selects_no_cluster_and_keeps_its_pods_home() {
    for namespace in ["kube-system", "liqo"] {
        // Marked by an offloading made before the webhook refused it (or with it bypassed).
        let marked: Namespace = serde_json::from_value(json!({"metadata": {
            "name": namespace, "labels": {SCHEDULING_ENABLED_LABEL: "true"}}}))
        .unwrap();
        let c2 = virtual_node::node(
            "c2",
            &BTreeMap::new(),
            &BTreeMap::new(),
            true,
            None,
            &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        );
        let stores = Stores {
            namespaces: store([marked]),
            nodes: store([c2]),
            ..testing::stores()
        };
        let (client, mut local) = api_server("local");
        let ctx = Context::for_tests(testing::shared(client, stores, testing::peers([])));
        // Its selector (none: every cluster) would pick c2.
        let nso = testing::offloading(namespace);
        let (applied, ()) = exchange(apply(&nso, &ctx), async {
            let call = local
                .expect(Method::PATCH, &format!("/api/v1/namespaces/{namespace}"))
                .await;
            assert_eq!(
                call.body,
                json!({"metadata": {"labels": {SCHEDULING_ENABLED_LABEL: null}}})
            );
            call.ok(&json!({"metadata": {"name": namespace}}));
            let event = expect_event(&mut local, namespace, "NamespaceOffloading", "offloading").await;
            assert_eq!(event["type"], "Warning");
            assert_eq!(event["reason"], "OffloadingRefused");
            assert!(
                event["note"].as_str().unwrap().contains("cannot be offloaded"),
                "{event}"
            );
            let call = local
                .expect(
                    Method::PATCH,
                    &format!("/apis/offloading.liqo.io/v1beta1/namespaces/{namespace}/namespaceoffloadings/offloading/status"),
                )
                .await;
            let status = call.body["status"].clone();
            assert_eq!(status["offloadingPhase"], "NoClusterSelected", "{status}");
            let c2: &Value = &status["remoteNamespacesConditions"]["c2"];
            assert!(
                !c2.to_string().contains("\"Ready\",\"status\":\"True\""),
                "{c2}"
            );
            let mut answer = serde_json::to_value(&nso).unwrap();
            answer["status"] = status;
            call.ok(&answer);
            // The phase's event.
            expect_event(&mut local, namespace, "NamespaceOffloading", "offloading").await;
            local.nothing_more().await;
        })
        .await;
        applied.unwrap();
    }
}
