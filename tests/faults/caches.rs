//! Point 5: caches that fit. Pods and what is reflected (Secrets, ConfigMaps, ...) are kept
//! by the manager only for offloaded namespaces: objects elsewhere cost it nothing; a namespace
//! offloaded later has what it already held listed and copied; one no longer offloaded is
//! dropped from the cache.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use namespace_offloading::model::api::NamespaceOffloading;
use serde_json::json;

use crate::support::topology::*;
use crate::support::{eventually, http_get, unique};

const OBJECTS: usize = 30;
const PODS: usize = 5;

/// Cluster 1's manager's `cached_objects` of `kind`, once published.
fn cached(admin: u16, kind: &str) -> Option<usize> {
    let (_, text) = http_get(admin, "/metrics").ok()?;
    let prefix = format!("namespace_offloading_cached_objects{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The gauges are published every 5 s: a value seen twice apart is settled.
async fn settled(admin: u16, kind: &str) -> usize {
    eventually(&format!("cached {kind} to settle"), WAIT, || async {
        let first = cached(admin, kind)?;
        tokio::time::sleep(Duration::from_secs(6)).await;
        (cached(admin, kind)? == first).then_some(first)
    })
    .await
}

#[tokio::test]
async fn objects_of_namespaces_not_offloaded_are_not_cached_until_offloaded() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let admin = t.admin_ports.lock().unwrap()[0];
        // Earlier tests' namespaces still leaving would leave the cache during this test, and
        // the counts below are totals: they go first.
        let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
        eventually(
            "earlier tests' namespaces gone",
            Duration::from_secs(180),
            || async {
                let all = namespaces.list(&ListParams::default()).await.ok()?;
                all.items
                    .iter()
                    .all(|n| n.metadata.deletion_timestamp.is_none())
                    .then_some(())
            },
        )
        .await;
        let ns = unique("caches");
        create_namespace(&client, &ns, json!({})).await;
        let configmaps = settled(admin, "configmaps").await;
        let secrets = settled(admin, "secrets").await;
        let pods = settled(admin, "pods").await;

        // Not offloaded: created, and never cached.
        let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
        let scs = Api::<Secret>::namespaced(client.clone(), &ns);
        for i in 0..OBJECTS {
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": format!("cm-{i}")}, "data": {"k": "x".repeat(4096)}}))
            .unwrap();
            cms.create(&PostParams::default(), &cm).await.unwrap();
            let s: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("s-{i}")}, "stringData": {"k": "x".repeat(4096)}}))
            .unwrap();
            scs.create(&PostParams::default(), &s).await.unwrap();
        }
        let local_pods = Api::<Pod>::namespaced(client.clone(), &ns);
        for i in 0..PODS {
            let pod = bare_pod(&format!("pod-{i}"), json!({}));
            local_pods.create(&PostParams::default(), &pod).await.unwrap();
        }
        // (Other tests' namespaces may still be leaving: the counts can only shrink.)
        let now = settled(admin, "configmaps").await;
        assert!(now <= configmaps, "ConfigMaps not offloaded cached: {configmaps} -> {now}");
        let now = settled(admin, "secrets").await;
        assert!(now <= secrets, "Secrets not offloaded cached: {secrets} -> {now}");
        let now = settled(admin, "pods").await;
        assert!(now <= pods, "pods not offloaded cached: {pods} -> {now}");

        // Offloaded now: what it held is listed, and copied.
        apply_offloading(
            tb,
            &ns,
            "  podOffloadingStrategy: Remote\n  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - {key: region, operator: In, values: [eu]}\n",
        );
        phase(&client, &ns, "Ready").await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        let two = tb.cluster(2).client().await.unwrap();
        let copies = Api::<ConfigMap>::namespaced(two.clone(), &remote_ns);
        let secret_copies = Api::<Secret>::namespaced(two, &remote_ns);
        eventually("every ConfigMap and Secret copied to cluster 2", WAIT, || async {
            let cms = copies.list(&ListParams::default()).await.ok()?;
            let scs = secret_copies.list(&ListParams::default()).await.ok()?;
            let named = |names: Vec<Option<String>>, prefix: &str| {
                names
                    .iter()
                    .flatten()
                    .filter(|n| n.starts_with(prefix))
                    .count()
            };
            let cm_names = cms.items.into_iter().map(|o| o.metadata.name).collect();
            let s_names = scs.items.into_iter().map(|o| o.metadata.name).collect();
            (named(cm_names, "cm-") == OBJECTS && named(s_names, "s-") == OBJECTS).then_some(())
        })
        .await;
        eventually("the namespace's objects cached", WAIT, || async {
            (cached(admin, "configmaps")? >= configmaps + OBJECTS
                && cached(admin, "secrets")? >= secrets + OBJECTS
                && cached(admin, "pods")? >= pods + PODS)
                .then_some(())
        })
        .await;

        // No longer offloaded: dropped from the cache.
        Api::<NamespaceOffloading>::namespaced(client.clone(), &ns)
            .delete("offloading", &DeleteParams::default())
            .await
            .unwrap();
        gone(tb, 2, &remote_ns).await;
        eventually("the namespace's objects dropped from the cache", WAIT, || async {
            (cached(admin, "configmaps")? <= configmaps
                && cached(admin, "secrets")? <= secrets
                && cached(admin, "pods")? <= pods)
                .then_some(())
        })
        .await;
        delete_namespace(&client, &ns).await;
    })
    .await;
}
