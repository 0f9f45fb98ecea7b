//! `kubectl top` for offloaded pods (issue 24, point 6): the virtual nodes' kubelet API
//! serves `/metrics/resource` and `/stats/summary` from the remote cluster's metrics API,
//! under the local pods' names. The test bed runs no metrics-server: cluster 2's metrics
//! API (`metrics.k8s.io/v1beta1` PodMetrics) is a CustomResourceDefinition of the same
//! group, version, kind and shape, whose objects the test writes as metrics-server would
//! serve them. That the output reads as metrics-server reads it is the unit tests' part
//! (src/kubelet/usage/tests.rs); here it is read as metrics-server reads it: straight from
//! the node's advertised kubelet endpoint, with a client certificate. (Through the API
//! server's node proxy, `kubectl get --raw /api/v1/nodes/<node>/proxy/...`, works where
//! the manager's address is a pod IP; kube-apiserver refuses to proxy to the test bed's
//! loopback address: "address not allowed".)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api,
    api::{DynamicObject, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use support::topology::*;
use support::{eventually, kubectl, unique};

/// cluster 2's stand-in for metrics-server's API: PodMetrics as a CRD of the same shape.
const POD_METRICS_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: pods.metrics.k8s.io
  annotations:
    api-approved.kubernetes.io: "unapproved, testing only"
spec:
  group: metrics.k8s.io
  scope: Namespaced
  names: {plural: pods, singular: podmetrics, kind: PodMetrics, listKind: PodMetricsList}
  versions:
  - name: v1beta1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

fn pod_metrics_api(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "pods");
    Api::namespaced_with(client, ns, &resource)
}

/// A PodMetrics as metrics-server serves it, sampled now.
fn pod_metrics(name: &str, cpu: &str, memory: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "metrics.k8s.io/v1beta1",
        "kind": "PodMetrics",
        "metadata": {"name": name},
        "timestamp": k8s_openapi::jiff::Timestamp::now().to_string(),
        "window": "15.012s",
        "containers": [{"name": "app", "usage": {"cpu": cpu, "memory": memory}}],
    }))
    .unwrap()
}

/// GET `path` on the kubelet API at `port` with a client certificate: (status, body).
fn scrape(port: i32, cert: &(std::path::PathBuf, std::path::PathBuf), path: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "20", "-w", "\n%{http_code}", "--cert"])
        .arg(&cert.0)
        .arg("--key")
        .arg(&cert.1)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.parse().unwrap_or(0), body.to_owned())
}

/// GET `path` on the kubelet API at `port` with a bearer token and no certificate.
fn scrape_with_token(port: i32, token: &str, path: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "20", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.parse().unwrap_or(0), body.to_owned())
}

#[tokio::test]
async fn an_offloaded_pods_usage_is_served_by_its_virtual_nodes_kubelet_api() {
    with_topology(|tb, t| async move {
        let worker = kwok_node(tb, 2).await;
        let (ok, _, err) = kubectl(
            tb.cluster(2).kubeconfig(),
            &["apply", "-f", "-"],
            Some(POD_METRICS_CRD),
        );
        assert!(ok, "{err}");
        let (ok, _, err) = kubectl(
            tb.cluster(2).kubeconfig(),
            &[
                "wait",
                "--for=condition=Established",
                "crd/pods.metrics.k8s.io",
                "--timeout=30s",
            ],
            None,
        );
        assert!(ok, "{err}");

        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("top");
        offload_remotely_to_eu(tb, &client, &ns).await;
        let pods = Api::<Pod>::namespaced(client.clone(), &ns);
        pods.create(&PostParams::default(), &bare_pod("web", json!({})))
            .await
            .unwrap();
        eventually("the pod Running in cluster 2", WAIT, || async {
            let status = pods.get_opt("web").await.ok()??.status?;
            (status.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
        let node = format!("liqo-{}", t.ids[1]);
        let remote_ns = format!("{ns}-{}", t.ids[0]);

        // The node tells metrics-server (0.7+) where its usage is, and where it listens.
        let virtual_node = Api::<Node>::all(client.clone()).get(&node).await.unwrap();
        let path = format!("/metrics/nodes/{node}/metrics/resource");
        assert_eq!(
            virtual_node
                .metadata
                .annotations
                .unwrap_or_default()
                .get("metrics.k8s.io/resource-metrics-path"),
            Some(&path)
        );
        let port = virtual_node
            .status
            .unwrap()
            .daemon_endpoints
            .unwrap()
            .kubelet_endpoint
            .unwrap()
            .port;
        let admin = tb.cluster(1).admin_cert();

        // Someone else's pod named `taken` in our remote namespace, and then ours of that
        // name: it gets no twin there, and theirs is never reported as ours.
        let remote = tb.cluster(2).client().await.unwrap();
        Api::<Pod>::namespaced(remote.clone(), &remote_ns)
            .create(
                &PostParams::default(),
                &bare_pod("taken", json!({"nodeName": worker})),
            )
            .await
            .unwrap();
        pods.create(&PostParams::default(), &bare_pod("taken", json!({})))
            .await
            .unwrap();
        eventually("our `taken` to report the name taken", WAIT, || async {
            let pod = pods.get_opt("taken").await.ok()??;
            pod.status?
                .conditions?
                .iter()
                .any(|c| c.reason.as_deref() == Some("NameTaken"))
                .then_some(())
        })
        .await;

        // The twin's usage in cluster 2, and pods there that are not our twins.
        let metrics = pod_metrics_api(remote.clone(), &remote_ns);
        for (name, cpu, memory) in [
            ("web", "250m", "64Mi"),
            ("stranger", "2", "1Gi"),
            ("taken", "3", "2Gi"),
        ] {
            metrics
                .create(&PostParams::default(), &pod_metrics(name, cpu, memory))
                .await
                .unwrap();
        }

        let (code, text) = scrape(port, &admin, &path);
        assert_eq!(code, 200, "{text}");
        let series = format!("{{container=\"app\",namespace=\"{ns}\",pod=\"web\"}}");
        for expected in [
            format!("container_memory_working_set_bytes{series} 67108864 "),
            format!("container_cpu_usage_seconds_total{series} "),
            format!("container_start_time_seconds{series} "),
            format!("pod_memory_working_set_bytes{{namespace=\"{ns}\",pod=\"web\"}} 67108864 "),
            "node_memory_working_set_bytes 67108864 ".to_owned(),
            "node_cpu_usage_seconds_total ".to_owned(),
            "\nscrape_error 0\n".to_owned(),
        ] {
            assert!(text.contains(&expected), "{expected} missing from:\n{text}");
        }
        assert!(
            !text.contains("stranger") && !text.contains("pod=\"taken\""),
            "{text}"
        );

        // The Summary API, the same figures.
        let summary_path = format!("/stats/nodes/{node}/summary");
        let (code, summary) = scrape(port, &admin, &summary_path);
        assert_eq!(code, 200, "{summary}");
        let summary: Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(summary["node"]["nodeName"], node.as_str());
        assert_eq!(summary["node"]["memory"]["workingSetBytes"], 67_108_864);
        assert_eq!(summary["node"]["cpu"]["usageNanoCores"], 250_000_000);
        assert_eq!(summary["pods"][0]["podRef"]["name"], "web");
        assert_eq!(summary["pods"][0]["podRef"]["namespace"], ns.as_str());

        // Two virtual nodes share the listener: a path that names none is answered with
        // how to name one.
        let (code, answer) = scrape(port, &admin, "/metrics/resource");
        assert_eq!(code, 400, "{answer}");
        assert!(
            answer.contains("metrics.k8s.io/resource-metrics-path"),
            "{answer}"
        );

        // As a kubelet authorizes: nodes/metrics for /metrics, nodes/stats for /stats.
        let kc = tb.cluster(1).kubeconfig();
        for args in [
            &[
                "create",
                "clusterrole",
                "top-metrics-reader",
                "--verb=get",
                "--resource=nodes/metrics",
            ][..],
            &[
                "create",
                "clusterrolebinding",
                "top-metrics-reader",
                "--clusterrole=top-metrics-reader",
                "--user=testbed-viewer",
            ][..],
        ] {
            let (ok, _, err) = kubectl(kc, args, None);
            assert!(ok || err.contains("AlreadyExists"), "{err}");
        }
        let viewer = tb.cluster(1).viewer_cert();
        let (code, answer) = scrape(port, &viewer, &path);
        assert!(code == 200 && answer.contains(&series), "{code} {answer}");
        // As metrics-server calls a kubelet: no certificate, its ServiceAccount's token.
        for args in [
            &["create", "serviceaccount", "metrics-server", "-n", &ns][..],
            &[
                "create",
                "clusterrolebinding",
                "top-metrics-scraper",
                "--clusterrole=top-metrics-reader",
                &format!("--serviceaccount={ns}:metrics-server"),
            ][..],
        ] {
            let (ok, _, err) = kubectl(kc, args, None);
            assert!(ok || err.contains("AlreadyExists"), "{err}");
        }
        let (ok, token, err) = kubectl(
            kc,
            &[
                "create",
                "token",
                "metrics-server",
                "-n",
                &ns,
                "--duration=10m",
            ],
            None,
        );
        assert!(ok, "{err}");
        let (code, answer) = scrape_with_token(port, token.trim(), &path);
        assert!(code == 200 && answer.contains(&series), "{code} {answer}");
        let (code, answer) = scrape_with_token(port, token.trim(), &summary_path);
        assert_eq!(code, 403, "{answer}");
        assert!(
            answer.contains(&format!(
                "system:serviceaccount:{ns}:metrics-server may not get nodes/stats"
            )),
            "{answer}"
        );
        let (code, answer) = scrape_with_token(port, "not-a-token", &path);
        assert_eq!(code, 401, "{answer}");
        assert!(answer.contains("bearer token is not valid"), "{answer}");
        let (code, answer) = scrape(port, &viewer, &summary_path);
        assert_eq!(code, 403, "{answer}");
        assert!(
            answer.contains("testbed-viewer may not get nodes/stats"),
            "{answer}"
        );

        // A cluster that does not answer: scrape_error 1 and why, never a guess; once it
        // answers again the counters go on from where they were (metrics-server would
        // drop a point whose counter went down).
        let counter = |text: &str| -> f64 {
            let prefix = format!("container_cpu_usage_seconds_total{series} ");
            let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap();
            line[prefix.len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let before = counter(&text);
        tb.cluster(2).freeze_apiserver();
        let thaw = Thaw(tb, 2);
        let frozen = eventually("cluster 2 reported not answering", WAIT, || async {
            let (code, text) = scrape(port, &admin, &path);
            (code == 200 && text.contains("\nscrape_error 1\n")).then_some(text)
        })
        .await;
        assert!(
            frozen.contains(&format!("# error: cluster {}", t.ids[1])) && !frozen.contains(&series),
            "{frozen}"
        );
        drop(thaw);
        let back = eventually("cluster 2's usage back", WAIT, || async {
            let (code, text) = scrape(port, &admin, &path);
            (code == 200 && text.contains("\nscrape_error 0\n") && text.contains(&series))
                .then_some(text)
        })
        .await;
        assert!(counter(&back) >= before, "{before} then:\n{back}");

        // A cluster whose metrics API is gone: the same, saying so.
        let (ok, _, err) = kubectl(
            tb.cluster(2).kubeconfig(),
            &["delete", "crd", "pods.metrics.k8s.io", "--wait=true"],
            None,
        );
        assert!(ok, "{err}");
        let text = eventually("the metrics API gone from cluster 2", WAIT, || async {
            let (code, text) = scrape(port, &admin, &path);
            (code == 200 && text.contains("\nscrape_error 1\n")).then_some(text)
        })
        .await;
        assert!(text.contains("serves no metrics API"), "{text}");
        assert!(!text.contains(&series), "{text}");
        let (code, answer) = scrape(port, &admin, &summary_path);
        assert_eq!(
            code, 502,
            "the summary has no error field: it fails instead: {answer}"
        );
        assert!(answer.contains("serves no metrics API"), "{answer}");

        kubectl(
            kc,
            &[
                "delete",
                "clusterrolebinding,clusterrole",
                "top-metrics-reader",
                "top-metrics-scraper",
            ],
            None,
        );
        delete_namespace(&client, &ns).await;
    })
    .await;
}
