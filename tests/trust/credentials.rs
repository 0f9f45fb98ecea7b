//! Point 2: no credential of cluster 1 reaches a twin. Its token volume
//! (`kube-api-access-*`), its token Secrets (as volumes, projected sources or variables)
//! stay home; the twin runs as the remote account of the same name, and the remote
//! cluster's ServiceAccount admission mounts that cluster's own token, or none when the
//! pod or its account says `automountServiceAccountToken: false`.
//!
//! In the topology clusters 2 and 3 run ServiceAccount admission (and the serviceaccount
//! controller), as real clusters do, and cluster 1 does not (testbed/src/cluster.rs): the
//! local pods below carry the volume cluster 1's admission would have injected, and the
//! twin must carry cluster 2's own instead.

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::topology::*;
use crate::support::{eventually, unique};

/// The volume and mounts cluster 1's ServiceAccount admission adds to a pod whose
/// account lets it mount a token.
fn as_admitted_here(mut spec: Value) -> Value {
    let mount = json!({"name": "kube-api-access-h0me1", "readOnly": true,
                       "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"});
    let volume = json!({"name": "kube-api-access-h0me1", "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}});
    spec["volumes"].as_array_mut().unwrap().push(volume);
    spec["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(mount);
    spec
}

async fn running(api: &Api<Pod>, name: &str) -> Option<Pod> {
    let pod = api.get_opt(name).await.ok()??;
    (pod.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(pod)
}

#[tokio::test]
async fn a_twin_carries_no_home_token_and_mounts_the_remotes_own_way() {
    with_topology(|tb, t| async move {
        kwok_node(tb, 2).await;
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("credentials");
        offload_remotely_to_eu(tb, &client, &ns).await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        let two = tb.cluster(2).client().await.unwrap();

        // Accounts: `web` mounts tokens (and lists a legacy token Secret), `quiet` does not.
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
        for account in [
            json!({"metadata": {"name": "web"}, "secrets": [{"name": "web-token"}]}),
            json!({"metadata": {"name": "quiet"}, "automountServiceAccountToken": false}),
        ] {
            accounts
                .create(&PostParams::default(), &serde_json::from_value(account).unwrap())
                .await
                .unwrap();
        }
        // A token Secret of cluster 1 (no token controller fills it here: it holds a
        // stand-in), and an ordinary Secret, which is copied.
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
        for secret in [
            json!({"metadata": {"name": "web-token",
                                "annotations": {"kubernetes.io/service-account.name": "web"}},
                   "type": "kubernetes.io/service-account-token",
                   "stringData": {"token": "home-credential"}}),
            json!({"metadata": {"name": "db"}, "stringData": {"password": "s3cret"}}),
        ] {
            secrets
                .create(&PostParams::default(), &serde_json::from_value(secret).unwrap())
                .await
                .unwrap();
        }

        // A pod of `web` as cluster 1 admitted it, using the token Secret three ways and
        // the ordinary one twice.
        let spec = as_admitted_here(json!({
            "serviceAccountName": "web",
            "containers": [{"name": "app", "image": "registry.example/app:1",
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "web-token", "key": "token"}}},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
                "envFrom": [{"secretRef": {"name": "web-token"}}],
                "volumeMounts": [{"name": "legacy-token", "mountPath": "/var/run/legacy"},
                                 {"name": "db", "mountPath": "/var/run/db"}]}],
            "volumes": [{"name": "legacy-token", "secret": {"secretName": "web-token"}},
                        {"name": "db", "secret": {"secretName": "db"}}],
            "terminationGracePeriodSeconds": 5,
        }));
        let local = Api::<Pod>::namespaced(client.clone(), &ns);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "labels": {"app": "web"}}, "spec": spec}))
        .unwrap();
        local.create(&PostParams::default(), &pod).await.unwrap();
        // `quiet`'s pod: its account said no, so cluster 1 mounted nothing; and one that
        // says no itself.
        local
            .create(
                &PostParams::default(),
                &bare_pod("quiet", json!({"serviceAccountName": "quiet"})),
            )
            .await
            .unwrap();
        local
            .create(
                &PostParams::default(),
                &bare_pod(
                    "refuses",
                    json!({"serviceAccountName": "web", "automountServiceAccountToken": false}),
                ),
            )
            .await
            .unwrap();

        let remote = Api::<Pod>::namespaced(two.clone(), &remote_ns);
        let twin = eventually("the twin of web running in cluster 2", WAIT, || running(&remote, "web")).await;
        let spec = serde_json::to_value(twin.spec.as_ref().unwrap()).unwrap();
        let text = spec.to_string();
        assert!(!text.contains("kube-api-access-h0me1"), "the home token volume went along: {spec}");
        assert!(!text.contains("web-token"), "the home token Secret went along: {spec}");
        // What is not a credential of cluster 1 goes along.
        assert!(text.contains("\"secretName\":\"db\""), "{spec}");
        assert_eq!(spec["serviceAccountName"], "web");
        // Mounted here, so the remote's admission decides there, with its account `web`.
        assert_ne!(spec["automountServiceAccountToken"], false, "{spec}");
        let mounts = |spec: &Value| -> Vec<String> {
            spec["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["name"].as_str())
                .filter(|n| n.starts_with("kube-api-access-"))
                .map(str::to_owned)
                .collect()
        };
        // Does cluster 2 inject tokens itself? A pod of its own says.
        let probe = bare_pod("probe", json!({"serviceAccountName": "web", "nodeName": "cluster-2-worker"}));
        let probe = remote.create(&PostParams::default(), &probe).await.unwrap();
        let injects = !mounts(&serde_json::to_value(probe.spec.unwrap()).unwrap()).is_empty();
        assert!(injects, "cluster 2 runs ServiceAccount admission in the topology");
        assert_eq!(mounts(&spec).len(), 1, "the remote's own token: {spec}");
        event(&client, &ns, "HomeTokenDropped", "web").await;

        // Said no: nothing mounted there either, whatever the remote's account says.
        for name in ["quiet", "refuses"] {
            let twin = eventually(&format!("the twin of {name}"), WAIT, || running(&remote, name)).await;
            let spec = twin.spec.unwrap();
            assert_eq!(spec.automount_service_account_token, Some(false), "{name}");
            assert!(spec.volumes.iter().flatten().all(|v| !v.name.starts_with("kube-api-access-")));
        }

        // The accounts there: no token Secret of cluster 1, their word on mounting kept;
        // the token Secret itself never copied, the ordinary one copied.
        let copies = Api::<ServiceAccount>::namespaced(two.clone(), &remote_ns);
        let web = eventually("web's account copied", WAIT, || async { copies.get_opt("web").await.ok()? }).await;
        assert!(web.secrets.unwrap_or_default().iter().all(|s| s.name.as_deref() != Some("web-token")));
        let quiet = eventually("quiet's account copied", WAIT, || async { copies.get_opt("quiet").await.ok()? }).await;
        assert_eq!(quiet.automount_service_account_token, Some(false));
        let remote_secrets = Api::<Secret>::namespaced(two.clone(), &remote_ns);
        eventually("db copied", WAIT, || async { remote_secrets.get_opt("db").await.ok()? }).await;
        assert!(remote_secrets.get_opt("web-token").await.unwrap().is_none());
        // A copy whose word on mounting is changed there is put back.
        copies
            .patch("quiet", &PatchParams::default(), &Patch::Merge(json!({"automountServiceAccountToken": true})))
            .await
            .unwrap();
        eventually("quiet's account put back", WAIT, || async {
            let sa = copies.get_opt("quiet").await.ok()??;
            (sa.automount_service_account_token == Some(false)).then_some(())
        })
        .await;
        assert!(remote_secrets.get_opt("web-token").await.unwrap().is_none());
        delete_namespace(&client, &ns).await;
    })
    .await;
}
