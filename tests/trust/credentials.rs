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

/// Runs `kubectl` as a process inside the twin would: the server from the twin's
/// `KUBERNETES_SERVICE_HOST`/`PORT`, the CA, token and namespace from its mounted Secret.
fn kubectl_as_the_twin(
    dir: &std::path::Path,
    host: &str,
    port: &str,
    secret: &Secret,
    args: &[&str],
) -> (bool, String, String) {
    let data = secret.data.as_ref().unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    let ca = dir.join("twin-ca.crt");
    std::fs::write(&ca, text("ca.crt")).unwrap();
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "twin",
        "clusters": [{"name": "home", "cluster": {"server": format!("https://{host}:{port}"),
                                                   "certificate-authority": ca}}],
        "users": [{"name": "twin", "user": {"token": text("token")}}],
        "contexts": [{"name": "twin", "context": {"cluster": "home", "user": "twin",
                                                   "namespace": text("namespace")}}],
    });
    let path = dir.join("twin.kubeconfig");
    std::fs::write(&path, kubeconfig.to_string()).unwrap();
    crate::support::kubectl(&path, args, None)
}

#[tokio::test]
async fn with_home_api_access_a_twin_lists_its_home_namespace_with_a_bound_home_token() {
    with_topology(|tb, t| async move {
        kwok_node(tb, 2).await;
        let client = tb.cluster(1).client().await.unwrap();
        let server = tb.cluster(1).server();
        let address = server.trim_start_matches("https://").to_owned();
        let (host, port) = address.rsplit_once(':').unwrap();
        let address_flag = format!("--home-api-server-address={address}");
        restart_manager(tb, t, 1, &["--home-api-access=token", &address_flag]).await;
        let ns = unique("home-api");
        offload_remotely_to_eu(tb, &client, &ns).await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        let two = tb.cluster(2).client().await.unwrap();

        // `reader` may list the pods of its namespace, in cluster 1.
        kubectl(tb, &["create", "serviceaccount", "reader", "-n", &ns]);
        kubectl(tb, &["create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", &ns]);
        kubectl(tb, &["create", "rolebinding", "reader", "--role=pod-reader",
                      &format!("--serviceaccount={ns}:reader"), "-n", &ns]);
        let spec = as_admitted_here(json!({
            "serviceAccountName": "reader",
            "containers": [{"name": "app", "image": "registry.example/kubectl:1", "volumeMounts": []}],
            "volumes": [],
            "terminationGracePeriodSeconds": 5,
        }));
        let local = Api::<Pod>::namespaced(client.clone(), &ns);
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "lister"}, "spec": spec})).unwrap();
        local.create(&PostParams::default(), &pod).await.unwrap();
        // Its account said no: no token of either cluster.
        local
            .create(
                &PostParams::default(),
                &bare_pod("quiet", json!({"serviceAccountName": "reader", "automountServiceAccountToken": false})),
            )
            .await
            .unwrap();

        let remote = Api::<Pod>::namespaced(two.clone(), &remote_ns);
        let twin = eventually("the twin of lister running in cluster 2", WAIT, || running(&remote, "lister")).await;
        let spec = serde_json::to_value(twin.spec.as_ref().unwrap()).unwrap();
        // The home token volume, same name and mounts, now from our Secret; none of cluster 2.
        let volumes = spec["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 1, "{spec}");
        assert_eq!(volumes[0]["name"], "kube-api-access-h0me1");
        assert_eq!(volumes[0]["projected"]["sources"][0]["secret"]["name"], "home-api-lister", "{spec}");
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["mountPath"], "/var/run/secrets/kubernetes.io/serviceaccount");
        let env = &spec["containers"][0]["env"];
        assert_eq!(env, &json!([{"name": "KUBERNETES_SERVICE_HOST", "value": host},
                                {"name": "KUBERNETES_SERVICE_PORT", "value": port}]), "{spec}");

        let secrets = Api::<Secret>::namespaced(two.clone(), &remote_ns);
        let twin_uid = twin.metadata.uid.clone().unwrap();
        let secret = eventually("the home token Secret, owned by the twin", WAIT, || async {
            let s = secrets.get_opt("home-api-lister").await.ok()??;
            s.metadata.owner_references.iter().flatten().any(|o| o.uid == twin_uid).then_some(s)
        })
        .await;
        // An hour, as admission meant it; not the year kube-apiserver stretches 3607 s to.
        let renew_at: k8s_openapi::jiff::Timestamp = secret.metadata.annotations.as_ref().unwrap()
            ["offloading.liqo.io/home-token-renew-at"].parse().unwrap();
        let left = renew_at.duration_since(k8s_openapi::jiff::Timestamp::now()).as_secs();
        assert!((2700..=2880).contains(&left), "renewed in {left} s");
        // What `kubectl get pods` in the twin sees: its home namespace, in cluster 1.
        let dir = tempfile::tempdir().unwrap();
        let (ok, out, err) = kubectl_as_the_twin(dir.path(), host, port, &secret, &["get", "pods", "-o", "name"]);
        assert!(ok, "{err}");
        assert!(out.lines().any(|l| l == "pod/lister"), "{out}");
        let (_, whoami, _) = kubectl_as_the_twin(dir.path(), host, port, &secret,
            &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.extra}"]);
        assert!(whoami.starts_with(&format!("system:serviceaccount:{ns}:reader ")), "{whoami}");
        assert!(whoami.contains("lister"), "bound to the pod: {whoami}");
        // Within its RBAC only.
        let (ok, _, err) = kubectl_as_the_twin(dir.path(), host, port, &secret, &["get", "secrets"]);
        assert!(!ok && err.contains("forbidden"), "{err}");

        // Renewed when due (here: made due by hand, and the pod touched to be looked at).
        let old_token = secret.data.as_ref().unwrap()["token"].clone();
        secrets
            .patch("home-api-lister", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {
                "offloading.liqo.io/home-token-renew-at": "2020-01-01T00:00:00Z"}}})))
            .await
            .unwrap();
        let touches = std::sync::atomic::AtomicU32::new(0);
        let renewed = eventually("the token renewed", WAIT, || async {
            // Touched until the manager's watch has seen the Secret due.
            let n = touches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let touch = json!({"metadata": {"annotations": {"touched": n.to_string()}}});
            local.patch("lister", &PatchParams::default(), &Patch::Merge(touch)).await.ok()?;
            let s = secrets.get_opt("home-api-lister").await.ok()??;
            (s.data.as_ref()?["token"] != old_token).then_some(s)
        })
        .await;
        let renew_at = &renewed.metadata.annotations.as_ref().unwrap()["offloading.liqo.io/home-token-renew-at"];
        assert!(renew_at.as_str() > "2026", "{renew_at}");
        let (ok, out, err) = kubectl_as_the_twin(dir.path(), host, port, &renewed, &["get", "pods", "-o", "name"]);
        assert!(ok && out.contains("pod/lister"), "{err}");

        let quiet = eventually("the twin of quiet", WAIT, || running(&remote, "quiet")).await;
        assert_eq!(quiet.spec.as_ref().unwrap().automount_service_account_token, Some(false));
        assert!(quiet.spec.unwrap().volumes.iter().flatten().all(|v| !v.name.starts_with("kube-api-access-")));
        assert!(secrets.get_opt("home-api-quiet").await.unwrap().is_none());

        // The Secret goes with the pod, and the token dies with it.
        local.delete("lister", &Default::default()).await.unwrap();
        eventually("the home token Secret deleted with the pod", WAIT, || async {
            secrets.get_opt("home-api-lister").await.ok()?.is_none().then_some(())
        })
        .await;
        eventually("the token refused once its pod is gone", WAIT, || async {
            let (ok, _, _) = kubectl_as_the_twin(dir.path(), host, port, &renewed, &["get", "pods"]);
            (!ok).then_some(())
        })
        .await;
        delete_namespace(&client, &ns).await;
        restart_manager(tb, t, 1, &[]).await;
    })
    .await;
}

fn kubectl(tb: &testbed::Testbed, args: &[&str]) {
    let (ok, _, err) = crate::support::kubectl(tb.cluster(1).kubeconfig(), args, None);
    assert!(ok, "kubectl {args:?}: {err}");
}
