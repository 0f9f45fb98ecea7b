//! Points 5 and 6: copies keep what restricts them (a Service's source ranges, traffic
//! policies, load-balancer class, address families, node-port allocation; `immutable`, a
//! Secret's `type`), and twins name only classes their cluster has: a PriorityClass it
//! lacks is dropped and said, one it has is kept with that cluster's priority, a missing
//! RuntimeClass keeps the pod home, with a condition and an event.

use k8s_openapi::api::{
    core::v1::{ConfigMap, Pod, Secret, Service},
    node::v1::RuntimeClass,
    scheduling::v1::PriorityClass,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::topology::*;
use crate::support::{eventually, unique};

#[tokio::test]
async fn copies_keep_what_restricts_them_and_are_put_back() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("restricts");
        offload_remotely_to_eu(tb, &client, &ns).await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        let two = tb.cluster(2).client().await.unwrap();

        // A load balancer open to one range, served only by nodes with its pods, of its
        // own class, without node ports, preferring two families (the test bed has one).
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "guarded"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "guarded"},
                     "ports": [{"name": "https", "port": 443, "targetPort": 8443}],
                     "loadBalancerSourceRanges": ["192.0.2.0/24"],
                     "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                     "loadBalancerClass": "example.com/internal",
                     "allocateLoadBalancerNodePorts": false,
                     "ipFamilyPolicy": "PreferDualStack",
                     "sessionAffinity": "ClientIP",
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}}))
        .unwrap();
        Api::<Service>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &svc)
            .await
            .unwrap();
        let copies = Api::<Service>::namespaced(two.clone(), &remote_ns);
        let copy = eventually("the Service copied to cluster 2", WAIT, || async {
            copies.get_opt("guarded").await.ok()?
        })
        .await;
        let spec = serde_json::to_value(copy.spec.unwrap()).unwrap();
        let restricts = |spec: &Value| {
            spec["loadBalancerSourceRanges"] == json!(["192.0.2.0/24"])
                && spec["externalTrafficPolicy"] == "Local"
                && spec["internalTrafficPolicy"] == "Local"
                && spec["loadBalancerClass"] == "example.com/internal"
                && spec["allocateLoadBalancerNodePorts"] == false
                && spec["ipFamilyPolicy"] == "PreferDualStack"
                && spec["ipFamilies"] == json!(["IPv4"])
                && spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 600
        };
        assert!(restricts(&spec), "the copy lost a restriction: {spec}");
        // The remote allocated its own: no node ports (not asked for), its own health port.
        assert!(spec["ports"][0]["nodePort"].is_null(), "{spec}");

        // Opened up there by hand: put back.
        copies
            .patch(
                "guarded",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"loadBalancerSourceRanges": ["0.0.0.0/0"],
                                              "externalTrafficPolicy": "Cluster",
                                              "internalTrafficPolicy": "Cluster"}})),
            )
            .await
            .unwrap();
        eventually("the copy's restrictions put back", WAIT, || async {
            let copy = copies.get_opt("guarded").await.ok()??;
            restricts(&serde_json::to_value(copy.spec?).ok()?).then_some(())
        })
        .await;

        // Immutable copies, of objects deleted and made again otherwise here (an immutable
        // ConfigMap, a Secret of another type): replaced there, not left stale.
        let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
        let frozen = |v: &str| -> ConfigMap {
            serde_json::from_value(
                json!({"metadata": {"name": "frozen"}, "data": {"v": v}, "immutable": true}),
            )
            .unwrap()
        };
        cms.create(&PostParams::default(), &frozen("1"))
            .await
            .unwrap();
        let opaque: Secret = serde_json::from_value(
            json!({"metadata": {"name": "cert"}, "stringData": {"tls.crt": "a", "tls.key": "b"}}),
        )
        .unwrap();
        secrets
            .create(&PostParams::default(), &opaque)
            .await
            .unwrap();
        let remote_cms = Api::<ConfigMap>::namespaced(two.clone(), &remote_ns);
        let remote_secrets = Api::<Secret>::namespaced(two.clone(), &remote_ns);
        let copy = eventually("the immutable ConfigMap copied", WAIT, || async {
            remote_cms.get_opt("frozen").await.ok()?
        })
        .await;
        assert_eq!(copy.immutable, Some(true));
        eventually("the Secret copied", WAIT, || async {
            remote_secrets.get_opt("cert").await.ok()?
        })
        .await;
        cms.delete("frozen", &DeleteParams::default())
            .await
            .unwrap();
        cms.create(&PostParams::default(), &frozen("2"))
            .await
            .unwrap();
        secrets
            .delete("cert", &DeleteParams::default())
            .await
            .unwrap();
        let tls: Secret = serde_json::from_value(json!({"metadata": {"name": "cert"},
            "type": "kubernetes.io/tls", "stringData": {"tls.crt": "a", "tls.key": "b"}}))
        .unwrap();
        secrets.create(&PostParams::default(), &tls).await.unwrap();
        eventually("the immutable ConfigMap replaced there", WAIT, || async {
            let cm = remote_cms.get_opt("frozen").await.ok()??;
            (cm.data?.get("v")? == "2" && cm.immutable == Some(true)).then_some(())
        })
        .await;
        eventually(
            "the Secret replaced there with its new type",
            WAIT,
            || async {
                let s = remote_secrets.get_opt("cert").await.ok()??;
                (s.type_.as_deref() == Some("kubernetes.io/tls")).then_some(())
            },
        )
        .await;
        delete_namespace(&client, &ns).await;
    })
    .await;
}

async fn create<K>(client: &Client, object: Value)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let object: K = serde_json::from_value(object).unwrap();
    Api::<K>::all(client.clone())
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

async fn delete<K>(client: &Client, name: &str)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let _ = Api::<K>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

async fn running(api: &Api<Pod>, name: &str) -> Option<Pod> {
    let pod = api.get_opt(name).await.ok()??;
    (pod.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(pod)
}

#[tokio::test]
async fn twins_name_only_classes_their_cluster_has() {
    with_topology(|tb, t| async move {
        kwok_node(tb, 2).await;
        let client = tb.cluster(1).client().await.unwrap();
        let two = tb.cluster(2).client().await.unwrap();
        let ns = unique("classes");
        let (home_only, both) = (format!("{ns}-home-only"), format!("{ns}-both"));
        let (sandboxed, shared_runtime) = (format!("{ns}-sandboxed"), format!("{ns}-runc"));
        // Cluster 1's classes; cluster 2 has one PriorityClass of the same name with
        // another value and policy, and one RuntimeClass with another overhead.
        create::<PriorityClass>(
            &client,
            json!({"metadata": {"name": home_only}, "value": 1000}),
        )
        .await;
        create::<PriorityClass>(&client, json!({"metadata": {"name": both}, "value": 1000})).await;
        create::<PriorityClass>(
            &two,
            json!({"metadata": {"name": both}, "value": 2000, "preemptionPolicy": "Never"}),
        )
        .await;
        create::<RuntimeClass>(
            &client,
            json!({"metadata": {"name": sandboxed}, "handler": "runsc"}),
        )
        .await;
        for (cluster, cpu) in [(&client, "100m"), (&two, "200m")] {
            create::<RuntimeClass>(
                cluster,
                json!({"metadata": {"name": shared_runtime}, "handler": "runc",
                       "overhead": {"podFixed": {"cpu": cpu}}}),
            )
            .await;
        }
        offload_remotely_to_eu(tb, &client, &ns).await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        let local = Api::<Pod>::namespaced(client.clone(), &ns);
        let remote = Api::<Pod>::namespaced(two.clone(), &remote_ns);
        for (name, extra) in [
            ("home-only", json!({"priorityClassName": home_only})),
            ("both", json!({"priorityClassName": both})),
            ("sandboxed", json!({"runtimeClassName": sandboxed})),
            ("runc", json!({"runtimeClassName": shared_runtime})),
        ] {
            local
                .create(&PostParams::default(), &bare_pod(name, extra))
                .await
                .unwrap();
        }

        // A class cluster 2 lacks: dropped, said, and the twin runs with its default.
        let twin = eventually("the home-only twin running", WAIT, || {
            running(&remote, "home-only")
        })
        .await;
        let spec = twin.spec.unwrap();
        assert_eq!(spec.priority_class_name, None);
        assert_eq!(spec.priority, Some(0));
        let dropped = event(&client, &ns, "PriorityClassDropped", "home-only").await;
        assert!(dropped.note.unwrap_or_default().contains(&home_only));
        // A class both have: kept, with cluster 2's value and policy.
        let twin = eventually("the twin of both running", WAIT, || {
            running(&remote, "both")
        })
        .await;
        let spec = twin.spec.unwrap();
        assert_eq!(spec.priority_class_name.as_deref(), Some(both.as_str()));
        assert_eq!(spec.priority, Some(2000));
        assert_eq!(spec.preemption_policy.as_deref(), Some("Never"));
        let here = local.get("both").await.unwrap().spec.unwrap();
        assert_eq!(
            (here.priority, here.preemption_policy.as_deref()),
            (Some(1000), Some("PreemptLowerPriority"))
        );
        // A RuntimeClass both have: the twin gets cluster 2's overhead.
        let twin = eventually("the runc twin running", WAIT, || running(&remote, "runc")).await;
        let overhead = twin.spec.unwrap().overhead.unwrap();
        assert_eq!(overhead["cpu"].0, "200m");
        // A RuntimeClass cluster 2 lacks: the pod stays without a twin and says why.
        let why = eventually(
            "the sandboxed pod to say why it has no twin",
            WAIT,
            || async {
                let pod = local.get_opt("sandboxed").await.ok()??;
                let c = pod
                    .status?
                    .conditions?
                    .into_iter()
                    .find(|c| c.type_ == "offloading.liqo.io/RemotePod")?;
                (c.reason.as_deref() == Some("Unsupported")).then(|| c.message.unwrap_or_default())
            },
        )
        .await;
        assert!(
            why.contains(&sandboxed) && why.contains("RuntimeClass"),
            "{why}"
        );
        event(&client, &ns, "RemotePodUnsupported", "sandboxed").await;
        assert!(remote.get_opt("sandboxed").await.unwrap().is_none());

        delete_namespace(&client, &ns).await;
        for cluster in [&client, &two] {
            delete::<PriorityClass>(cluster, &home_only).await;
            delete::<PriorityClass>(cluster, &both).await;
            delete::<RuntimeClass>(cluster, &sandboxed).await;
            delete::<RuntimeClass>(cluster, &shared_runtime).await;
        }
    })
    .await;
}
