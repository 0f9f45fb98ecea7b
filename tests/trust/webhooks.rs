//! Point 7: the webhooks' side effects only for what they review, and only for the API
//! server; the system namespaces and the manager's own are never offloaded, and their pods
//! never wait on our webhook.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::support::topology::*;
use crate::support::{http_get, kubectl, unique};

const SCHEDULING: &str = "liqo.io/scheduling-enabled";

async fn labelled(client: &kube::Client, ns: &str) -> bool {
    let ns = Api::<Namespace>::all(client.clone()).get(ns).await.unwrap();
    ns.metadata
        .labels
        .unwrap_or_default()
        .get(SCHEDULING)
        .is_some_and(|v| v == "true")
}

fn offloading_manifest(namespace: &str) -> String {
    format!(
        "apiVersion: offloading.liqo.io/v1alpha1\nkind: NamespaceOffloading\nmetadata:\n  name: offloading\n  namespace: {namespace}\nspec: {{}}\n"
    )
}

/// A dry run labels nothing; the system namespaces and the manager's own are refused with
/// a message that says why.
#[tokio::test]
async fn a_dry_run_marks_nothing_and_system_namespaces_are_refused() {
    with_topology(|tb, _| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let kc = tb.cluster(1).kubeconfig();
        let ns = unique("dryrun");
        create_namespace(&client, &ns, json!({})).await;
        let (ok, _, err) = kubectl(
            kc,
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&offloading_manifest(&ns)),
        );
        assert!(ok, "{err}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!labelled(&client, &ns).await, "a dry run marked {ns}");

        for protected in ["kube-system", "kube-public", "kube-node-lease", "liqo"] {
            let (ok, _, err) = kubectl(
                kc,
                &["apply", "-f", "-"],
                Some(&offloading_manifest(protected)),
            );
            assert!(!ok, "{protected} was offloaded");
            assert!(err.contains("cannot be offloaded"), "{protected}: {err}");
            assert!(
                !labelled(&client, protected).await,
                "{protected} was marked"
            );
        }
        Api::<Namespace>::all(client.clone())
            .delete(&ns, &Default::default())
            .await
            .unwrap();
    })
    .await;
}

/// The pod webhooks leave kube-system and the manager's namespace out even when they
/// carry the label (set by hand, or by an older version): their pods are never reviewed,
/// so they start even while the manager is down.
#[tokio::test]
async fn pods_of_the_system_and_manager_namespaces_never_wait_on_the_webhook() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let namespaces = Api::<Namespace>::all(client.clone());
        let mark = |on: bool| {
            json!({"metadata": {"labels": {SCHEDULING: if on { Some("true") } else { None }}}})
        };
        let port = t.admin_ports.lock().unwrap()[0];
        let reviews = || {
            let (_, metrics) = http_get(port, "/metrics").unwrap();
            metrics
                .lines()
                .filter(|l| l.starts_with("namespace_offloading_admission_reviews_total{") && l.contains("webhook=\"pod"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        for ns in ["kube-system", "liqo"] {
            namespaces
                .patch(ns, &PatchParams::default(), &Patch::Merge(mark(true)))
                .await
                .unwrap();
            let before = reviews();
            let name = unique("sys");
            let created = Api::<Pod>::namespaced(client.clone(), ns)
                .create(&PostParams::default(), &bare_pod(&name, json!({})))
                .await;
            namespaces
                .patch(ns, &PatchParams::default(), &Patch::Merge(mark(false)))
                .await
                .unwrap();
            created.unwrap();
            assert_eq!(reviews(), before, "a pod in {ns} was sent to the webhook");
            Api::<Pod>::namespaced(client.clone(), ns)
                .delete(&name, &Default::default())
                .await
                .unwrap();
        }
    })
    .await;
}

/// What reaches the webhook port without the API server's certificate (a pod, say) is
/// refused and changes nothing: a forged review of a NamespaceOffloading creation does not
/// mark its namespace.
#[tokio::test]
async fn a_review_the_api_server_did_not_send_causes_nothing() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("forged");
        create_namespace(&client, &ns, json!({})).await;
        let port = t.webhook_ports.lock().unwrap()[0];
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "forged-1",
                "kind": {"group": "offloading.liqo.io", "version": "v1alpha1", "kind": "NamespaceOffloading"},
                "resource": {"group": "offloading.liqo.io", "version": "v1alpha1", "resource": "namespaceoffloadings"},
                "name": "offloading", "namespace": ns, "operation": "CREATE",
                "userInfo": {"username": "system:admin"},
                "object": {"apiVersion": "offloading.liqo.io/v1alpha1", "kind": "NamespaceOffloading",
                           "metadata": {"name": "offloading", "namespace": ns}, "spec": {}},
                "dryRun": false,
            },
        });
        let url = format!("https://127.0.0.1:{port}/validate/namespace-offloading");
        let post = |cert: Option<(std::path::PathBuf, std::path::PathBuf)>| {
            let mut cmd = std::process::Command::new("curl");
            cmd.args(["-sSk", "--max-time", "10", "-w", "\n%{http_code}"])
                .args(["-H", "Content-Type: application/json", "--data-binary", "@-"]);
            if let Some((cert, key)) = cert {
                cmd.arg("--cert").arg(cert).arg("--key").arg(key);
            }
            let mut child = cmd
                .arg(&url)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(review.to_string().as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            )
        };
        // No certificate, and a certificate of the cluster's CA that is not the API
        // server's: both refused.
        for cert in [None, Some(tb.cluster(1).viewer_cert())] {
            let answer = post(cert);
            assert!(answer.ends_with("\n403"), "{answer}");
            assert!(answer.contains("admission reviews only"), "{answer}");
        }
        // A refused caller's connection is closed after its answer: it holds no slot. curl
        // reuses a connection kept open for the second transfer (0 new connections).
        for http in ["--http1.1", "--http2"] {
            let out = std::process::Command::new("curl")
                .args(["-sk", http, "-o", "/dev/null", "-o", "/dev/null"])
                .args(["-w", "%{http_code}:%{num_connects} "])
                .arg(format!("https://127.0.0.1:{port}/live"))
                .arg(format!("https://127.0.0.1:{port}/live"))
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(said.trim(), "403:1 403:1", "{http}: a refused connection was kept");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!labelled(&client, &ns).await, "a forged review marked {ns}");
        // The API server's own certificate is answered (and its real creation marks).
        let answer = post(Some(tb.cluster(1).webhook_client_cert()));
        assert!(answer.ends_with("\n200") && answer.contains("forged-1"), "{answer}");
        Api::<Namespace>::all(client.clone())
            .delete(&ns, &Default::default())
            .await
            .unwrap();
    })
    .await;
}
