//! 8: peers are who they say. A peering is bound to the cluster ID it was made with: if its
//! Secret's credentials reach another cluster, nothing is read or written there and the
//! RemoteCluster says why; a kubeconfig whose user runs a program for its credentials is
//! refused, by `peer` and by the controller.

use std::time::Duration;

use k8s_openapi::{
    ByteString,
    api::core::v1::{Node, Secret},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use namespace_offloading::model::api::RemoteCluster;
use serde_json::{Value, json};
use testbed::Testbed;

use crate::support::{
    eventually,
    topology::{
        EVENT, WAIT, apply_offloading, bin, create_namespace, phase, remote_namespace,
        virtual_node, with_topology,
    },
    unique,
};

const SECRET: &str = "remote-cluster-2-kubeconfig";

/// Puts cluster 2's credentials back in its Secret however the test ends.
struct Restore {
    tb: &'static Testbed,
    kubeconfig: Vec<u8>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let patch = json!({"data": {"kubeconfig": ByteString(self.kubeconfig.clone())}});
        let (ok, _, err) = crate::support::kubectl(
            self.tb.cluster(1).kubeconfig(),
            &[
                "-n",
                "liqo",
                "patch",
                "secret",
                SECRET,
                "--type=merge",
                "-p",
                &patch.to_string(),
            ],
            None,
        );
        assert!(
            ok || std::thread::panicking(),
            "cannot restore {SECRET}: {err}"
        );
    }
}

/// Deletes a local namespace (ending its offloading) however the test ends.
struct DeleteNamespace(&'static Testbed, String);

impl Drop for DeleteNamespace {
    fn drop(&mut self) {
        crate::support::kubectl(
            self.0.cluster(1).kubeconfig(),
            &["delete", "namespace", &self.1, "--wait=false"],
            None,
        );
    }
}

/// The RemoteCluster's `Connected` condition once `check` holds for it.
async fn connected(client: &Client, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    let rcs = Api::<RemoteCluster>::all(client.clone());
    eventually(
        &format!("RemoteCluster {name}'s condition"),
        WAIT,
        || async {
            let rc = rcs.get(name).await.ok()?;
            let status = serde_json::to_value(rc.status?).ok()?;
            let condition = status["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Connected")?
                .clone();
            check(&condition).then_some(condition)
        },
    )
    .await
}

async fn node_ready(client: &Client, id: &str) -> Option<bool> {
    let node = Api::<Node>::all(client.clone())
        .get_opt(&format!("liqo-{id}"))
        .await
        .ok()??;
    let ready = node
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some(ready.status == "True")
}

#[tokio::test]
async fn credentials_that_reach_another_cluster_are_used_for_nothing() {
    with_topology(|tb, t| async move {
        let one = tb.cluster(1).client().await.unwrap();
        let (id2, id3) = (&t.ids[1], &t.ids[2]);
        // `peer` bound the peering to the cluster it reached.
        let rc = Api::<RemoteCluster>::all(one.clone())
            .get("cluster-2")
            .await
            .unwrap();
        assert_eq!(rc.spec.cluster_id.as_deref(), Some(id2.as_str()));

        let secrets = Api::<Secret>::namespaced(one.clone(), "liqo");
        let original = secrets.get(SECRET).await.unwrap();
        let kubeconfig = original.data.unwrap()["kubeconfig"].0.clone();
        let restore = Restore { tb, kubeconfig };
        // Cluster 3's credentials in cluster 2's Secret (a paste error, or an edit by
        // someone who may write Secrets in liqo but not peer).
        let three = std::fs::read(tb.cluster(3).kubeconfig()).unwrap();
        secrets
            .patch(
                SECRET,
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"kubeconfig": ByteString(three)}})),
            )
            .await
            .unwrap();
        // The Secret's change reaches the controller at once (it watches Secrets).
        tokio::time::sleep(EVENT).await;

        // A namespace offloaded to cluster 2 now (selected by its ID: the labels the
        // impostor publishes are cluster 3's): nothing lands in cluster 3.
        let ns = unique("impostor");
        create_namespace(&one, &ns, json!({})).await;
        let _delete = DeleteNamespace(tb, ns.clone());
        apply_offloading(
            tb,
            &ns,
            &format!(
                "  podOffloadingStrategy: Remote\n  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - {{key: liqo.io/remote-cluster-id, operator: In, values: [{id2}]}}\n"
            ),
        );
        let remote = format!("{ns}-{}", t.ids[0]);
        for _ in 0..40 {
            assert!(
                remote_namespace(tb, 3, &remote).await.is_none(),
                "{remote} was created in cluster 3 with cluster 2's peering"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let condition = connected(&one, "cluster-2", |c| c["reason"] == "ClusterIDMismatch").await;
        assert_eq!(condition["status"], "False");
        let message = condition["message"].as_str().unwrap();
        for part in [
            format!("reach cluster {id3}"),
            format!("bound to cluster {id2}"),
            format!("liqo/{SECRET}"),
            "unpeer cluster-2".to_owned(),
        ] {
            assert!(message.contains(&part), "{part:?} not in {message}");
        }
        eventually("cluster 2's virtual node to be not ready", WAIT, || async {
            (node_ready(&one, id2).await == Some(false)).then_some(())
        })
        .await;

        // Cluster 3's own peering is untouched.
        assert_eq!(node_ready(&one, id3).await, Some(true));

        // The right credentials back: it recovers, and cluster 2 gets the namespace.
        drop(restore);
        connected(&one, "cluster-2", |c| c["status"] == "True").await;
        virtual_node(&one, id2).await;
        phase(&one, &ns, "Ready").await;
        assert!(remote_namespace(tb, 2, &remote).await.is_some());
        assert!(remote_namespace(tb, 3, &remote).await.is_none());
    })
    .await;
}

/// A kubeconfig for cluster 2's API server whose user runs `sh -c 'touch <ran>'` for its
/// credentials.
fn exec_kubeconfig(tb: &Testbed, ran: &std::path::Path) -> String {
    let ca = std::fs::read(tb.cluster(2).ca_cert()).unwrap();
    let config = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {
            "server": tb.cluster(2).server(),
            "certificate-authority-data": serde_json::to_value(ByteString(ca)).unwrap(),
        }}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "plugin"}}],
        "users": [{"name": "plugin", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "sh",
            "args": ["-c", format!("touch {}; exit 1", ran.display())],
        }}}],
    });
    config.to_string()
}

#[tokio::test]
async fn a_kubeconfig_that_runs_a_program_is_refused_by_peer_and_by_the_controller() {
    with_topology(|tb, _t| async move {
        let one = tb.cluster(1).client().await.unwrap();
        let name = unique("exec-peer");
        let ran = tb.root().join(format!("{name}.ran"));
        let file = tb.root().join(format!("{name}.kubeconfig"));
        std::fs::write(&file, exec_kubeconfig(tb, &ran)).unwrap();

        // `peer` refuses before connecting (connecting would run it here).
        let out = std::process::Command::new(bin())
            .args(["peer", &name, "--namespace", "liqo", "--kubeconfig"])
            .arg(&file)
            .arg("--local-kubeconfig")
            .arg(tb.cluster(1).kubeconfig())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("exec plugin (sh)"), "{stderr}");
        assert!(stderr.contains("--allow-exec-credentials"), "{stderr}");
        assert!(!ran.exists(), "peer ran the plugin");
        let rcs = Api::<RemoteCluster>::all(one.clone());
        assert!(rcs.get_opt(&name).await.unwrap().is_none());

        // A Secret can be edited after peering: the controller refuses it too, and the
        // manager (a local process here) runs nothing.
        let secret_name = format!("remote-{name}-kubeconfig");
        let secrets = Api::<Secret>::namespaced(one.clone(), "liqo");
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": secret_name},
            "stringData": {"kubeconfig": exec_kubeconfig(tb, &ran)},
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let rc: RemoteCluster = serde_json::from_value(json!({
            "apiVersion": "offloading.liqo.io/v1alpha1", "kind": "RemoteCluster",
            "metadata": {"name": name},
            "spec": {"kubeconfigSecret": {"namespace": "liqo", "name": secret_name}},
        }))
        .unwrap();
        rcs.create(&PostParams::default(), &rc).await.unwrap();
        let condition = connected(&one, &name, |c| c["status"] == "False").await;
        let cleanup = async {
            rcs.delete(&name, &DeleteParams::default()).await.unwrap();
            secrets
                .delete(&secret_name, &DeleteParams::default())
                .await
                .unwrap();
        };
        let reason = condition["reason"].clone();
        let message = condition["message"].as_str().unwrap_or_default().to_owned();
        let ran_by_manager = ran.exists();
        cleanup.await;
        assert_eq!(reason, "ExecCredentials", "{condition}");
        assert!(message.contains("--allow-exec-credentials"), "{message}");
        assert!(!ran_by_manager, "the manager ran the plugin");
    })
    .await;
}
