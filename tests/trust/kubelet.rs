//! Point 3: the virtual nodes' kubelet API authorizes before it looks anything up, and
//! reaches only the twin of the pod named (by the local pod's uid), never a pod that merely
//! bears its name in the remote namespace.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, api::PostParams};
use serde_json::json;
use testbed::{KWOK_CONTAINER_LOG, kubectl::output};

use crate::support::topology::*;
use crate::support::{eventually, unique};

/// The kubelet port the virtual node of cluster `id` advertises.
async fn kubelet_port(client: &kube::Client, id: &str) -> i32 {
    let node = Api::<Node>::all(client.clone())
        .get(&format!("liqo-{id}"))
        .await
        .unwrap();
    node.status
        .unwrap()
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port
}

/// curl with a client certificate: whether it ran, and the body with the status code last.
fn curl(url: &str, cert: (std::path::PathBuf, std::path::PathBuf)) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg("--cert")
        .arg(cert.0)
        .arg("--key")
        .arg(cert.1)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_kubelet_api_asks_first_and_reaches_only_our_twins() {
    with_topology(|tb, t| async move {
        let node2 = kwok_node(tb, 2).await;
        let kc = tb.cluster(1).kubeconfig();
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("kubeletauth");
        offload_remotely_to_eu(tb, &client, &ns).await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);

        // Someone else's pod named `web` in our remote namespace, running in cluster 2.
        let two = tb.cluster(2).client().await.unwrap();
        let theirs = Api::<Pod>::namespaced(two, &remote_ns);
        theirs
            .create(
                &PostParams::default(),
                &bare_pod("web", json!({"nodeName": node2})),
            )
            .await
            .unwrap();
        eventually("their pod Running", WAIT, || async {
            let status = theirs.get_opt("web").await.ok()??.status?;
            (status.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
        // Ours of that name gets no twin (the name is taken there) ...
        let local = Api::<Pod>::namespaced(client.clone(), &ns);
        local
            .create(&PostParams::default(), &bare_pod("web", json!({})))
            .await
            .unwrap();
        eventually("the local pod to report the name taken", WAIT, || async {
            let pod = local.get_opt("web").await.ok()??;
            pod.status?
                .conditions?
                .iter()
                .any(|c| c.reason.as_deref() == Some("NameTaken"))
                .then_some(())
        })
        .await;
        // ... and `kubectl logs` of it must not show theirs.
        let (ok, stdout, stderr) = output(kc, &["logs", "-n", &ns, "web"], None).await;
        assert!(
            !ok && !stdout.contains(KWOK_CONTAINER_LOG.lines().next().unwrap()),
            "another cluster's pod's logs were shown: {stdout}"
        );
        eprintln!("kubectl logs: {stderr}");

        // A caller without nodes/proxy gets the same refusal for a pod that exists and for
        // one that does not: nothing is looked up before it is authorized.
        let port = kubelet_port(&client, &t.ids[1]).await;
        let viewer = tb.cluster(1).viewer_cert();
        for pod in ["web", "no-such-pod"] {
            let url = format!("https://127.0.0.1:{port}/containerLogs/{ns}/{pod}/app");
            let answer = curl(&url, viewer.clone());
            assert!(answer.ends_with("\n403"), "{pod}: {answer}");
            assert!(
                answer.contains("testbed-viewer may not get nodes/proxy"),
                "{pod}: {answer}"
            );
        }
        // The API server's own account (allowed) is told why, for either.
        let admin = tb.cluster(1).admin_cert();
        let url = format!("https://127.0.0.1:{port}/containerLogs/{ns}/web/app");
        let answer = curl(&url, admin.clone());
        assert!(
            answer.ends_with("\n404") && answer.contains("has no twin in cluster"),
            "{answer}"
        );
        let url = format!("https://127.0.0.1:{port}/containerLogs/{ns}/no-such-pod/app");
        let answer = curl(&url, admin);
        assert!(answer.ends_with("\n404"), "{answer}");
        delete_namespace(&client, &ns).await;
    })
    .await;
}
