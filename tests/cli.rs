//! The user-facing command line (`offload`, `unoffload`, `info`, `list`, and the kubectl
//! plugin names) against the seed's reference topology, as the demo builds it: cluster 1
//! peered with cluster 2 (region=eu) and cluster 3 (region=us).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use namespace_offloading::model::api::NamespaceOffloading;
use serde_json::{Value, json};
use support::topology::*;
use support::unique;
use testbed::Testbed;

/// Runs the binary against cluster 1; its exit code, stdout and stderr.
fn run(tb: &Testbed, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--kubeconfig")
        .arg(tb.cluster(1).kubeconfig())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn info_names_this_cluster_and_each_peer_with_its_labels_and_virtual_node() {
    with_topology(|tb, t| async move {
        let (code, out, err) = run(tb, &["info"]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(&format!("cluster ID:      {}", t.ids[0])),
            "{out}"
        );
        for (n, labels) in [
            (2, "provider=azure,region=eu"),
            (3, "provider=aws,region=us"),
        ] {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("cluster-{n} ")))
                .unwrap_or_else(|| panic!("no line for cluster-{n}:\n{out}"));
            assert!(line.contains(&t.ids[n - 1]), "{line}");
            assert!(line.contains(labels), "{line}");
            assert!(line.contains("True (Connected)"), "{line}");
            assert!(line.contains(&format!("liqo-{}", t.ids[n - 1])), "{line}");
        }
        let (code, out, err) = run(tb, &["info", "-o", "json"]);
        assert_eq!(code, 0, "{err}");
        let info: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(info["clusterID"], t.ids[0].as_str());
        assert_eq!(info["peers"][0]["labels"]["region"], "eu");
        assert_eq!(info["peers"][1]["virtualNodeReady"], "True");
    })
    .await;
}

#[tokio::test]
async fn offload_wait_list_and_unoffload_as_liqoctl_users_do() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("cli");
        create_namespace(&client, &ns, json!({})).await;
        // One term per --selector, ORed: region=eu, or a provider no cluster has.
        let (code, out, err) = run(
            tb,
            &[
                "offload",
                "namespace",
                &ns,
                "--pod-offloading-strategy",
                "Remote",
                "--selector",
                "region=eu,provider!=aws",
                "--selector",
                "provider=none",
                "--wait",
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains(&format!("namespace {ns}: offloading Ready")),
            "{out}"
        );
        assert!(out.contains("cluster cluster-2: Ready"), "{out}");
        assert!(out.contains("cluster cluster-3: NotSelected"), "{out}");
        let nso = Api::<NamespaceOffloading>::namespaced(client.clone(), &ns)
            .get("offloading")
            .await
            .unwrap();
        assert_eq!(nso.spec.cluster_selector.node_selector_terms.len(), 2);
        let remote = format!("{ns}-{}", t.ids[0]);
        assert!(remote_namespace(tb, 2, &remote).await.is_some());
        assert!(remote_namespace(tb, 3, &remote).await.is_none());

        // Offloading again the same way changes nothing; another way is refused.
        let (code, out, _) = run(
            tb,
            &[
                "offload",
                "namespace",
                &ns,
                "--pod-offloading-strategy",
                "Remote",
                "--selector",
                "region=eu,provider!=aws",
                "--selector",
                "provider=none",
            ],
        );
        assert_eq!(code, 0);
        assert!(
            out.contains("already offloaded with this configuration"),
            "{out}"
        );
        let (code, _, err) = run(tb, &["offload", "namespace", &ns]);
        assert_eq!(code, 1);
        assert!(
            err.contains("already offloaded with another configuration"),
            "{err}"
        );
        assert!(
            err.contains(&format!("unoffload namespace {ns} --wait")),
            "{err}"
        );

        let (code, out, err) = run(tb, &["list"]);
        assert_eq!(code, 0, "{err}");
        let line = out
            .lines()
            .find(|l| l.starts_with(&ns))
            .unwrap_or_else(|| panic!("{out}"));
        for cell in [
            "Ready",
            "Remote",
            "DefaultName",
            remote.as_str(),
            "cluster-2=Ready",
            "cluster-3=NotSelected",
        ] {
            assert!(line.contains(cell), "{cell} not in {line}");
        }
        let (_, out, _) = run(tb, &["list", "-o", "json"]);
        let rows: Value = serde_json::from_str(&out).unwrap();
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["namespace"] == ns.as_str())
            .unwrap();
        assert_eq!(row["phase"], "Ready");

        let (code, out, err) = run(tb, &["unoffload", "namespace", &ns, "--wait"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("offloading ended"), "{out}");
        assert!(
            remote_namespace(tb, 2, &remote).await.is_none(),
            "the remote namespace outlived --wait"
        );
        let (code, out, _) = run(tb, &["unoffload", "namespace", &ns]);
        assert_eq!(code, 0);
        assert!(out.contains("is not offloaded"), "{out}");
        delete_namespace(&client, &ns).await;
    })
    .await;
}

#[tokio::test]
async fn failures_have_their_messages_and_exit_codes() {
    with_topology(|tb, _t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        // 3: the namespace does not exist.
        let (code, _, err) = run(tb, &["offload", "namespace", "no-such-namespace"]);
        assert_eq!(code, 3, "{err}");
        assert!(
            err.contains(
                "namespace no-such-namespace does not exist in this cluster: create it first"
            ),
            "{err}"
        );
        let (code, _, _) = run(tb, &["unoffload", "namespace", "no-such-namespace"]);
        assert_eq!(code, 3);
        // 2: a selector that does not parse (nothing is sent).
        let (code, _, err) = run(
            tb,
            &[
                "offload",
                "namespace",
                "default",
                "--selector",
                "region in (eu",
            ],
        );
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("--selector \"region in (eu\": a '(' is not closed"),
            "{err}"
        );
        // 1: settled, but not Ready.
        let ns = unique("nowhere");
        create_namespace(&client, &ns, json!({})).await;
        let (code, out, err) = run(
            tb,
            &[
                "offload",
                "namespace",
                &ns,
                "--selector",
                "region=mars",
                "--wait",
            ],
        );
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains("is NoClusterSelected: no remote cluster matches the selector"),
            "{err}"
        );
        // 1: refused by the cluster, with its message.
        let other = unique("samename");
        create_namespace(&client, &other, json!({})).await;
        let taken = format!("{ns}-x");
        let (code, _, err) = run(tb, &["unoffload", "namespace", &ns, "--wait"]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = run(
            tb,
            &[
                "offload",
                "namespace",
                &ns,
                "--namespace-mapping-strategy",
                "SelectedName",
                "--remote-namespace-name",
                &taken,
            ],
        );
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = run(
            tb,
            &[
                "offload",
                "namespace",
                &other,
                "--namespace-mapping-strategy",
                "SelectedName",
                "--remote-namespace-name",
                &taken,
            ],
        );
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("the cluster refused to offload namespace {other}")),
            "{err}"
        );
        assert!(
            err.contains(&format!("is already that of namespace {ns}'s offloading")),
            "{err}"
        );
        // 4: --wait runs out of --timeout (the offloading goes on).
        let (code, _, err) = run(
            tb,
            &["unoffload", "namespace", &ns, "--wait", "--timeout", "1ns"],
        );
        assert_eq!(code, 4, "{err}");
        assert!(err.contains("did not end within 1ns"), "{err}");
        for name in [&ns, &other] {
            delete_namespace(&client, name).await;
        }
    })
    .await;
}

#[tokio::test]
async fn as_kubectl_plugins_and_for_a_namespace_offloaded_by_its_label() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let plugins = tempfile::tempdir().unwrap();
        for name in ["kubectl-offload", "kubectl-unoffload", "kubectl-nso"] {
            std::os::unix::fs::symlink(bin(), plugins.path().join(name)).unwrap();
        }
        let path = format!(
            "{}:{}",
            plugins.path().display(),
            std::env::var("PATH").unwrap()
        );
        let kubectl = |args: &[&str]| {
            let out = Command::new("kubectl")
                .args(args)
                .env("PATH", &path)
                .env("KUBECONFIG", tb.cluster(1).kubeconfig())
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (code, out, err) = kubectl(&[
            "offload",
            "namespace",
            "web",
            "--namespace-mapping-strategy",
            "EnforceSameName",
            "-o",
            "json",
        ]);
        assert_eq!(code, 0, "{err}");
        let manifest: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(manifest["apiVersion"], "offloading.liqo.io/v1beta1");
        assert_eq!(
            manifest["spec"]["namespaceMappingStrategy"],
            "EnforceSameName"
        );
        let (code, out, err) = kubectl(&["nso", "info"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&t.ids[0]), "{out}");

        // Offloaded by the quick-offloading label: unoffload takes the label away too, so
        // the offloading is not made again.
        let ns = unique("labelled");
        create_namespace(&client, &ns, json!({"liqo.io/enabled": "true"})).await;
        phase(&client, &ns, "Ready").await;
        let (code, out, err) = kubectl(&["unoffload", "namespace", &ns, "--wait"]);
        assert_eq!(code, 0, "{out}{err}");
        let labels = Api::<Namespace>::all(client.clone())
            .get(&ns)
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap_or_default();
        assert!(!labels.contains_key("liqo.io/enabled"), "{labels:?}");
        let api = Api::<NamespaceOffloading>::namespaced(client.clone(), &ns);
        // Not recreated (the label controller would have done it within a second or two).
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        assert!(api.get_opt("offloading").await.unwrap().is_none());
        for n in [2, 3] {
            gone(tb, n, &format!("{ns}-{}", t.ids[0])).await;
        }
        delete_namespace(&client, &ns).await;
    })
    .await;
}
