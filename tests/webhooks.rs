//! The admission webhooks against a real control plane: the API server calls the manager
//! over TLS (self-managed certificates, registered caBundle), applies its patches, and the
//! real scheduler honours the injected affinity. Cluster 2 has the CRD but no webhooks, to
//! show what the CRD alone enforces; cluster 3 checks the deployment manifests and RBAC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    core::v1::{Namespace, Node, Pod, Secret},
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::{Value, json};
use support::{create_node, eventually, http_get, kubectl, unique};
use testbed::{Process, Testbed};
use tokio::sync::OnceCell;

struct Manager {
    admin_port: u16,
    _process: Mutex<Process>,
}

async fn with_webhooks<F, Fut>(body: F)
where
    F: FnOnce(&'static Testbed, &'static Manager) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    static MANAGER: OnceCell<Result<Manager, String>> = OnceCell::const_new();
    support::with_testbed("webhooks", 3, 1, |tb| async move {
        let manager = MANAGER.get_or_init(|| start_manager(tb)).await;
        match manager {
            Ok(m) => body(tb, m).await,
            Err(e) => panic!("cannot start the manager: {e}"),
        }
    })
    .await;
}

async fn start_manager(tb: &'static Testbed) -> Result<Manager, String> {
    for cluster in tb.clusters() {
        support::install_crds(cluster.kubeconfig())?;
    }
    let one = tb.cluster(1);
    kubectl(
        one.kubeconfig(),
        &["create", "namespace", "nso-system"],
        None,
    );
    let manager = support::start_manager(
        tb,
        "manager",
        one.kubeconfig(),
        true,
        &["--namespace=nso-system".into()],
    )
    .await?;
    Ok(Manager {
        admin_port: manager.admin_port,
        _process: Mutex::new(manager.process),
    })
}

async fn namespace(client: &Client, name: &str, offloaded: bool) {
    let labels = if offloaded {
        json!({"liqo.io/scheduling-enabled": "true"})
    } else {
        json!({})
    };
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

fn offloading_yaml(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: offloading.liqo.io/v1alpha1\nkind: NamespaceOffloading\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}"
    )
}

/// `kubectl apply` of a manifest that must be rejected, returning the error text.
fn rejected(kubeconfig: &Path, manifest: &str) -> String {
    let (ok, out, err) = kubectl(kubeconfig, &["apply", "-f", "-"], Some(manifest));
    assert!(!ok, "expected a rejection, but kubectl said: {out}");
    err
}

#[tokio::test]
async fn invalid_namespace_offloadings_are_rejected_with_their_message() {
    with_webhooks(|tb, _| async move {
        let kc = tb.cluster(1).kubeconfig();
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("invalid");
        namespace(&client, &ns, false).await;
        let cases = [
            ("custom", "  podOffloadingStrategy: Local\n", "must be named \"offloading\""),
            (
                "offloading",
                "  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - key: region\n        operator: Near\n        values: [eu]\n",
                "unsupported operator \"Near\"",
            ),
            (
                "offloading",
                "  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - key: cpus\n        operator: Gt\n        values: [many]\n",
                "operator Gt takes exactly one integer value",
            ),
            (
                "offloading",
                "  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - key: -region\n        operator: Exists\n",
                "invalid label key \"-region\"",
            ),
            // Outside the enum: the CRD schema answers before our validating webhook.
            ("offloading", "  podOffloadingStrategy: Anywhere\n", "Unsupported value: \"Anywhere\""),
        ];
        for (name, spec, expected) in cases {
            let err = rejected(kc, &offloading_yaml(&ns, name, spec));
            assert!(err.contains(expected), "{name}/{spec}: expected {expected:?} in {err}");
        }

        // A namespace name too long for DefaultName's `<name>-<cluster-id>` suffix.
        let long = format!("long-{}", "x".repeat(22)); // 27 characters
        namespace(&client, &long, false).await;
        let err = rejected(kc, &offloading_yaml(&long, "offloading", "  podOffloadingStrategy: Local\n"));
        assert!(err.contains("at most 26 characters"), "{err}");
        assert!(err.contains("has 27"), "{err}");
        let same_name = offloading_yaml(&long, "offloading", "  namespaceMappingStrategy: EnforceSameName\n");
        let (ok, _, err) = kubectl(kc, &["apply", "-f", "-"], Some(&same_name));
        assert!(ok, "EnforceSameName keeps the name: {err}");
    })
    .await;
}

#[tokio::test]
async fn stored_objects_show_the_defaults() {
    with_webhooks(|tb, _| async move {
        let kc = tb.cluster(1).kubeconfig();
        let client = tb.cluster(1).client().await.unwrap();
        for (i, spec) in ["  {}\n", "  clusterSelector:\n    nodeSelectorTerms: []\n"]
            .iter()
            .enumerate()
        {
            let ns = unique(&format!("defaults{i}"));
            namespace(&client, &ns, false).await;
            let (ok, _, err) = kubectl(
                kc,
                &["apply", "-f", "-"],
                Some(&offloading_yaml(&ns, "offloading", spec)),
            );
            assert!(ok, "{err}");
            let (_, out, _) = kubectl(
                kc,
                &["get", "nsof", "offloading", "-n", &ns, "-o", "json"],
                None,
            );
            let stored: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(stored["spec"]["namespaceMappingStrategy"], "DefaultName");
            assert_eq!(stored["spec"]["podOffloadingStrategy"], "LocalAndRemote");
            assert_eq!(
                stored["spec"]["clusterSelector"],
                json!({"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]}]}),
                "spec {spec:?}"
            );
            let (_, table, _) = kubectl(kc, &["get", "nso", "-n", &ns], None);
            assert!(
                table.contains("NAMESPACEMAPPINGSTRATEGY") && table.contains("LocalAndRemote"),
                "{table}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn spec_changes_are_rejected_and_metadata_changes_pass() {
    with_webhooks(|tb, _| async move {
        let kc = tb.cluster(1).kubeconfig();
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("immutable");
        namespace(&client, &ns, false).await;
        let (ok, _, err) = kubectl(
            kc,
            &["apply", "-f", "-"],
            Some(&offloading_yaml(
                &ns,
                "offloading",
                "  podOffloadingStrategy: Local\n",
            )),
        );
        assert!(ok, "{err}");
        let err = rejected(
            kc,
            &offloading_yaml(&ns, "offloading", "  podOffloadingStrategy: Remote\n"),
        );
        assert!(
            err.contains("delete the NamespaceOffloading and create it again"),
            "{err}"
        );
        // Re-applying the same manifest (defaults omitted) and labelling are fine.
        let (ok, _, err) = kubectl(
            kc,
            &["apply", "-f", "-"],
            Some(&offloading_yaml(
                &ns,
                "offloading",
                "  podOffloadingStrategy: Local\n",
            )),
        );
        assert!(ok, "{err}");
        let (ok, _, err) = kubectl(
            kc,
            &["label", "nsof", "offloading", "-n", &ns, "team=web"],
            None,
        );
        assert!(ok, "{err}");
    })
    .await;
}

#[tokio::test]
async fn the_crd_alone_defaults_and_keeps_spec_immutable() {
    with_webhooks(|tb, _| async move {
        // Cluster 2 has no webhooks: what holds here holds with the webhook down.
        let kc = tb.cluster(2).kubeconfig();
        let client = tb.cluster(2).client().await.unwrap();
        let ns = unique("cel");
        namespace(&client, &ns, false).await;
        let (ok, _, err) = kubectl(kc, &["apply", "-f", "-"], Some(&offloading_yaml(&ns, "offloading", "  podOffloadingStrategy: Local\n")));
        assert!(ok, "{err}");
        let (_, out, _) = kubectl(kc, &["get", "nsof", "offloading", "-n", &ns, "-o", "json"], None);
        let stored: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(stored["spec"]["namespaceMappingStrategy"], "DefaultName");
        assert_eq!(stored["spec"]["clusterSelector"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0], "virtual-node");
        let (ok, _, err) = kubectl(
            kc,
            &["patch", "nsof", "offloading", "-n", &ns, "--type=merge", "-p", r#"{"spec":{"podOffloadingStrategy":"Remote"}}"#],
            None,
        );
        assert!(!ok);
        assert!(err.contains("spec is immutable"), "{err}");
    })
    .await;
}

/// Creates the namespace's NamespaceOffloading and waits until the manager's cache has it,
/// seen as a probe pod being mutated.
async fn offload(tb: &Testbed, client: &Client, ns: &str, spec: &str) {
    let kc = tb.cluster(1).kubeconfig();
    namespace(client, ns, true).await;
    let (ok, _, err) = kubectl(
        kc,
        &["apply", "-f", "-"],
        Some(&offloading_yaml(ns, "offloading", spec)),
    );
    assert!(ok, "{err}");
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let mut n = 0;
    eventually(
        "the manager's cache to see the NamespaceOffloading",
        Duration::from_secs(20),
        || {
            n += 1;
            let pods = pods.clone();
            let name = format!("probe-{n}");
            async move {
                let created = pods
                    .create(&PostParams::default(), &pod(&name, json!({})))
                    .await
                    .unwrap();
                let _ = pods
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
                created.spec.unwrap().affinity.is_some().then_some(())
            }
        },
    )
    .await;
}

fn pod(name: &str, extra_spec: Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "app", "image": "registry.invalid/app:1"}]});
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

#[tokio::test]
async fn pods_in_offloaded_namespaces_get_affinity_and_toleration() {
    with_webhooks(|tb, manager| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("offloaded");
        offload(tb, &client, &ns, "  {}\n").await;
        let pods = Api::<Pod>::namespaced(client.clone(), &ns);
        let stored = pods.create(&PostParams::default(), &pod("web", json!({}))).await.unwrap();
        let stored = serde_json::to_value(stored.spec.unwrap()).unwrap();
        assert_eq!(
            stored["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
            json!([
                {"matchExpressions": [{"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]},
                {"matchExpressions": [{"key": "liqo.io/type", "operator": "NotIn", "values": ["virtual-node"]}]},
            ])
        );
        let tolerations = stored["tolerations"].as_array().unwrap();
        assert_eq!(
            tolerations.iter().filter(|t| t["key"] == "virtual-node.liqo.io/not-allowed").count(),
            1,
            "{tolerations:?}"
        );

        // A namespace without the scheduling label is not touched at all.
        let plain = unique("plain");
        namespace(&client, &plain, false).await;
        let stored = Api::<Pod>::namespaced(client.clone(), &plain)
            .create(&PostParams::default(), &pod("web", json!({})))
            .await
            .unwrap();
        assert!(stored.spec.unwrap().affinity.is_none());

        // The API server really called us, and metrics say so.
        let (_, metrics) = http_get(manager.admin_port, "/metrics").unwrap();
        assert!(metrics.contains("namespace_offloading_admission_requests_total{webhook=\"pod\",result=\"patched\"}"), "{metrics}");
    })
    .await;
}

#[tokio::test]
async fn preset_node_name_breaking_the_strategy_is_denied() {
    with_webhooks(|tb, _| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let local = unique("bound-local");
        create_node(&client, &local, json!({}), false).await;
        let ns = unique("remote-only");
        offload(tb, &client, &ns, "  podOffloadingStrategy: Remote\n").await;
        let err = Api::<Pod>::namespaced(client.clone(), &ns)
            .create(
                &PostParams::default(),
                &pod("pinned", json!({"nodeName": local})),
            )
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("must run in a remote cluster"),
            "{message}"
        );
    })
    .await;
}

async fn bound_node(pods: &Api<Pod>, name: &str) -> String {
    eventually(
        &format!("pod {name} to be scheduled"),
        Duration::from_secs(60),
        || async { pods.get(name).await.unwrap().spec.and_then(|s| s.node_name) },
    )
    .await
}

#[tokio::test]
async fn the_scheduler_honours_each_strategy() {
    with_webhooks(|tb, _| async move {
        let client = tb.cluster(1).client().await.unwrap();
        // One local node and two virtual nodes standing for clusters in two regions. The
        // region values are unique so other tests' nodes cannot match.
        let id = unique("r");
        let local = format!("local-{id}");
        let (eu, us) = (format!("vn-eu-{id}"), format!("vn-us-{id}"));
        create_node(&client, &local, json!({}), false).await;
        create_node(&client, &eu, json!({"region": format!("eu-{id}")}), true).await;
        create_node(&client, &us, json!({"region": format!("us-{id}")}), true).await;
        let eu_selector = format!(
            "  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - key: region\n        operator: In\n        values: [eu-{id}]\n"
        );

        let remote = unique("sched-remote");
        offload(tb, &client, &remote, &format!("  podOffloadingStrategy: Remote\n{eu_selector}")).await;
        let pods = Api::<Pod>::namespaced(client.clone(), &remote);
        pods.create(&PostParams::default(), &pod("web", json!({}))).await.unwrap();
        assert_eq!(bound_node(&pods, "web").await, eu, "Remote lands on the selected virtual node");

        // The pod's own affinity asks for a local node: it conflicts with Remote and waits.
        let own = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "liqo.io/type", "operator": "NotIn", "values": ["virtual-node"]}]}]}}}});
        pods.create(&PostParams::default(), &pod("conflicted", own)).await.unwrap();
        let reason = eventually("the conflicting pod to be reported unschedulable", Duration::from_secs(60), || async {
            let status = pods.get("conflicted").await.unwrap().status?;
            status.conditions?.into_iter().find(|c| c.type_ == "PodScheduled" && c.status == "False")?.reason
        })
        .await;
        assert_eq!(reason, "Unschedulable");
        assert!(pods.get("conflicted").await.unwrap().spec.unwrap().node_name.is_none());

        let local_ns = unique("sched-local");
        offload(tb, &client, &local_ns, "  podOffloadingStrategy: Local\n").await;
        let pods = Api::<Pod>::namespaced(client.clone(), &local_ns);
        // Even tolerating every taint, a Local pod never lands on a virtual node.
        pods.create(&PostParams::default(), &pod("web", json!({"tolerations": [{"operator": "Exists"}]})))
            .await
            .unwrap();
        let node = bound_node(&pods, "web").await;
        assert!(!node.starts_with("vn-"), "Local pod landed on virtual node {node}");
    })
    .await;
}

#[tokio::test]
async fn self_managed_certificates_are_stored_and_registered() {
    with_webhooks(|tb, _| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let secret = Api::<Secret>::namespaced(client.clone(), "nso-system")
            .get("namespace-offloading-webhook-tls")
            .await
            .unwrap();
        let ca = secret.data.unwrap()["ca.crt"].0.clone();
        let config = Api::<MutatingWebhookConfiguration>::all(client)
            .get("namespace-offloading")
            .await
            .unwrap();
        for webhook in config.webhooks.unwrap() {
            assert_eq!(
                webhook.client_config.ca_bundle.unwrap().0,
                ca,
                "{}",
                webhook.name
            );
        }
    })
    .await;
}

#[tokio::test]
async fn file_certificates_serve_and_sigterm_stops_cleanly() {
    with_webhooks(|tb, _| async move {
        // A second manager, on certificates written by `namespace-offloading certs`, not
        // registered (the first one owns the webhook configurations).
        let bin = Path::new(env!("CARGO_BIN_EXE_namespace-offloading"));
        let dir = tb.root().join(unique("file-certs"));
        let out = std::process::Command::new(bin)
            .args(["certs", "--out", dir.to_str().unwrap(), "--ip", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manager = support::start_manager(
            tb,
            "file-manager",
            tb.cluster(1).kubeconfig(),
            false,
            &[
                format!("--tls-cert-file={}", dir.join("tls.crt").display()),
                format!("--tls-key-file={}", dir.join("tls.key").display()),
                "--webhooks-only".into(),
            ],
        )
        .await
        .unwrap();
        let (webhook_port, mut process) = (manager.webhook_port, manager.process);
        // It serves the certificate from the files, signed by their CA.
        let ca_file = dir.join("ca.crt");
        let curl = std::process::Command::new("curl")
            .args([
                "-sS",
                "--cacert",
                ca_file.to_str().unwrap(),
                "-X",
                "POST",
                "--data",
                "{}",
            ])
            .arg(format!("https://127.0.0.1:{webhook_port}/mutate/pod"))
            .output()
            .expect("curl is installed");
        let body = String::from_utf8_lossy(&curl.stdout);
        assert!(
            body.contains("cannot parse the body as an AdmissionReview"),
            "{body} {}",
            String::from_utf8_lossy(&curl.stderr)
        );

        let started = Instant::now();
        std::process::Command::new("kill")
            .args(["-TERM", &process.pid().to_string()])
            .status()
            .unwrap();
        let status = eventually(
            "the manager to exit on SIGTERM",
            Duration::from_secs(15),
            || {
                let exited = process.exited();
                async move { exited }
            },
        )
        .await;
        assert_eq!(status, "exit status: 0");
        assert!(started.elapsed() < Duration::from_secs(12));
    })
    .await;
}

#[tokio::test]
async fn self_managed_certificates_are_renewed_before_expiry_keeping_the_ca() {
    use namespace_offloading::plumbing::certs::managed::ManagedConfig;
    with_webhooks(|tb, _| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let config = ManagedConfig {
            namespace: "nso-system".into(),
            secret: unique("renewal"),
            dns_names: vec!["namespace-offloading.nso-system.svc".into()],
            ips: vec![],
        };
        let first = config.ensure(&client).await.unwrap();
        // A second replica starting later reads the same material.
        let again = config.ensure(&client).await.unwrap();
        assert_eq!(again.serving.cert_pem, first.serving.cert_pem);

        // Pretend the serving certificate has expired: it is re-issued by the same CA.
        let secrets = Api::<Secret>::namespaced(client.clone(), "nso-system");
        let patch = json!({"metadata": {"annotations": {
            "offloading.liqo.io/serving-not-after": "2026-01-01T00:00:00Z"}}});
        secrets
            .patch(
                &config.secret,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
        let renewed = config.ensure(&client).await.unwrap();
        assert_ne!(renewed.serving.cert_pem, first.serving.cert_pem);
        assert_eq!(
            renewed.ca.cert_pem, first.ca.cert_pem,
            "the caBundle stays valid"
        );

        // New names (another Service) also re-issue.
        let renamed = ManagedConfig {
            dns_names: vec!["other.nso-system.svc".into()],
            ..config.clone()
        };
        let reissued = renamed.ensure(&client).await.unwrap();
        assert_ne!(reissued.serving.cert_pem, renewed.serving.cert_pem);
        assert_eq!(reissued.ca.cert_pem, first.ca.cert_pem);
    })
    .await;
}

/// Who holds the leader Lease of the managers of `namespace`.
async fn lease_holder(client: &kube::Client, namespace: &str) -> Option<String> {
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), namespace)
        .get_opt("namespace-offloading-leader")
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

/// Waits until `replica` holds the leader Lease of `namespace`.
async fn until_leading(client: &kube::Client, namespace: &str, replica: &str) {
    eventually(&format!("{replica} to lead"), WAIT_LEADER, || async {
        (lease_holder(client, namespace).await.as_deref() == Some(replica)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    with_webhooks(|tb, _| async move {
        let kc = tb.cluster(1).kubeconfig();
        let ns = unique("election");
        kubectl(kc, &["create", "namespace", &ns], None);
        let flags = [format!("--namespace={ns}")];
        let first = support::start_manager(tb, "replica-a", kc, false, &flags)
            .await
            .unwrap();
        let client = tb.cluster(1).client().await.unwrap();
        let holder = || lease_holder(&client, &ns);
        until_leading(&client, &ns, "replica-a").await;
        let second = support::start_manager(tb, "replica-b", kc, false, &flags)
            .await
            .unwrap();
        // Both serve the webhooks (ready), only the leader reconciles.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let reconciles = |port| {
            http_get(port, "/metrics")
                .unwrap()
                .1
                .contains("namespace_offloading_reconciles_total{")
        };
        assert!(reconciles(first.admin_port), "the leader reconciles");
        assert!(
            !reconciles(second.admin_port),
            "the standby must not reconcile"
        );
        assert_eq!(holder().await.as_deref(), Some("replica-a"));

        // The leader dies without releasing: the standby waits the Lease out, then leads.
        let mut first = first;
        let started = Instant::now();
        first.process.stop();
        eventually("replica-b to take over", WAIT_LEADER, || async {
            (holder().await.as_deref() == Some("replica-b")).then_some(())
        })
        .await;
        eprintln!("takeover after {:.1} s", started.elapsed().as_secs_f32());
        eventually("replica-b to reconcile", WAIT_LEADER, || async {
            reconciles(second.admin_port).then_some(())
        })
        .await;

        // A clean stop releases the Lease at once.
        let mut second = second;
        std::process::Command::new("kill")
            .args(["-TERM", &second.process.pid().to_string()])
            .status()
            .unwrap();
        eventually(
            "the Lease to be released",
            Duration::from_secs(15),
            || async { holder().await.is_none().then_some(()) },
        )
        .await;
        eventually("replica-b to exit", Duration::from_secs(15), || {
            let exited = second.process.exited();
            async move { exited }
        })
        .await;
    })
    .await;
}

/// A leader whose connection to the API server hangs (a partition: a proxy in front of
/// it that stops carrying bytes, no reset) stops leading before its Lease runs out, so
/// that the standby, which takes the Lease only then, never acts beside it.
#[tokio::test]
async fn a_leader_cut_off_from_its_api_server_stops_before_another_leads() {
    with_webhooks(|tb, _| async move {
        let kc = tb.cluster(1).kubeconfig();
        let ns = unique("partition");
        kubectl(kc, &["create", "namespace", &ns], None);
        let server = tb.cluster(1).server();
        let target: std::net::SocketAddr = server.trim_start_matches("https://").parse().unwrap();
        let proxy = testbed::proxy::Proxy::start(target).await.unwrap();
        let through = tb.log_dir().join(format!("{ns}.kubeconfig"));
        let text = std::fs::read_to_string(kc)
            .unwrap()
            .replace(&server, &format!("https://127.0.0.1:{}", proxy.port()));
        std::fs::write(&through, text).unwrap();
        let flags = [format!("--namespace={ns}")];
        let cut_off = support::start_manager(tb, "replica-cut-off", &through, false, &flags)
            .await
            .unwrap();
        let client = tb.cluster(1).client().await.unwrap();
        let holder = || lease_holder(&client, &ns);
        until_leading(&client, &ns, "replica-cut-off").await;
        let standby = support::start_manager(tb, "replica-standby", kc, false, &flags)
            .await
            .unwrap();
        let leads = |port| {
            http_get(port, "/metrics")
                .map(|(_, text)| text.lines().any(|l| l == "namespace_offloading_leader 1"))
                .unwrap_or(false)
        };
        eventually("replica-cut-off's leader gauge", WAIT_LEADER, || async {
            leads(cut_off.admin_port).then_some(())
        })
        .await;
        assert!(!leads(standby.admin_port), "the standby leads too");

        proxy.freeze();
        let frozen = Instant::now();
        let (mut stopped, mut taken) = (None, None);
        while frozen.elapsed() < WAIT_LEADER && (stopped.is_none() || taken.is_none()) {
            // Its admin port is local: it answers while its API connection hangs.
            if stopped.is_none() && !leads(cut_off.admin_port) {
                stopped = Some(frozen.elapsed());
            }
            if taken.is_none() && holder().await.as_deref() == Some("replica-standby") {
                taken = Some(frozen.elapsed());
                assert!(
                    stopped.is_some(),
                    "the standby leads while the cut-off leader still does"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stopped = stopped.expect("the cut-off leader never stopped leading");
        let taken = taken.expect("the standby never took over");
        eprintln!(
            "cut off at 0 s: the leader stopped after {:.1} s, the standby led after {:.1} s",
            stopped.as_secs_f32(),
            taken.as_secs_f32()
        );
        assert!(stopped < taken);
        eventually("the standby to lead", WAIT_LEADER, || async {
            leads(standby.admin_port).then_some(())
        })
        .await;
        proxy.thaw();
    })
    .await;
}

const WAIT_LEADER: Duration = Duration::from_secs(45);

/// Cluster 3's two tests both install into namespace liqo: one at a time.
static CLUSTER_3: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn manifests() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

#[tokio::test]
async fn deployment_manifests_pass_a_server_side_dry_run() {
    with_webhooks(|tb, _| async move {
        let _turn = CLUSTER_3.lock().await;
        let kc = tb.cluster(3).kubeconfig();
        kubectl(kc, &["create", "namespace", "liqo"], None);
        let dir = manifests();
        let (ok, out, err) = kubectl(
            kc,
            &["apply", "--dry-run=server", "-k", dir.to_str().unwrap()],
            None,
        );
        assert!(ok, "{err}");
        for object in [
            "deployment.apps/namespace-offloading",
            "poddisruptionbudget.policy/namespace-offloading",
            "clusterrole.rbac.authorization.k8s.io/namespace-offloading",
            "mutatingwebhookconfiguration.admissionregistration.k8s.io/namespace-offloading",
            "customresourcedefinition.apiextensions.k8s.io/remoteclusters.offloading.liqo.io",
        ] {
            assert!(out.contains(object), "{object} missing from:\n{out}");
        }
    })
    .await;
}

#[tokio::test]
async fn the_manager_works_with_only_its_service_account_permissions() {
    with_webhooks(|tb, _| async move {
        let _turn = CLUSTER_3.lock().await;
        let admin = tb.cluster(3).kubeconfig();
        let dir = manifests();
        for file in ["namespace.yaml", "rbac.yaml"] {
            let (ok, _, err) = kubectl(
                admin,
                &["apply", "-f", dir.join(file).to_str().unwrap()],
                None,
            );
            assert!(ok, "{file}: {err}");
        }
        // Beside cluster 3's own: the manager finds the webhook client CA next to it.
        let sa_kubeconfig = support::service_account_kubeconfig(
            admin,
            "liqo",
            "namespace-offloading",
            &tb.cluster(3).dir().join("serviceaccount.kubeconfig"),
        );

        let manager = support::start_manager(
            tb,
            "rbac-manager",
            &sa_kubeconfig,
            true,
            &[
                "--namespace=liqo".into(),
                "--cluster-labels=region=test".into(),
            ],
        )
        .await
        .unwrap();

        // Peer (an admin's action) with cluster 2, which publishes no identity.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_namespace-offloading"))
            .args([
                "peer",
                "rbac-peer",
                "--namespace",
                "liqo",
                "--cluster-id",
                "rbac-peer-id",
            ])
            .args([
                "--cluster-labels",
                "region=eu",
                "--resources",
                "cpu=4,pods=10",
            ])
            .arg("--kubeconfig")
            .arg(tb.cluster(2).kubeconfig())
            .arg("--local-kubeconfig")
            .arg(admin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let client = tb.cluster(3).client().await.unwrap();
        let nodes = Api::<Node>::all(client.clone());
        eventually("the virtual node", WAIT_LEADER, || async {
            nodes
                .get_opt("liqo-rbac-peer-id")
                .await
                .unwrap()
                .map(|_| ())
        })
        .await;
        let ns = unique("rbac");
        let namespace: Namespace = serde_json::from_value(
            json!({"metadata": {"name": ns, "labels": {"liqo.io/enabled": "true"}}}),
        )
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        let nsos = Api::<namespace_offloading::model::api::NamespaceOffloading>::namespaced(
            client.clone(),
            &ns,
        );
        let remote = eventually("phase Ready", WAIT_LEADER, || async {
            let status = nsos.get_opt("offloading").await.unwrap()?.status?;
            (status.offloading_phase
                == Some(namespace_offloading::model::api::OffloadingPhase::Ready))
            .then_some(status.remote_namespace_name?)
        })
        .await;
        let two = Api::<Namespace>::all(tb.cluster(2).client().await.unwrap());
        assert!(
            two.get_opt(&remote).await.unwrap().is_some(),
            "remote namespace {remote} in cluster 2"
        );
        // The webhooks it registered under its own permissions answer.
        let stored = eventually("a pod to be mutated", WAIT_LEADER, || {
            let pods = Api::<Pod>::namespaced(client.clone(), &ns);
            async move {
                let name = unique("p");
                let created = pods
                    .create(&PostParams::default(), &pod(&name, json!({})))
                    .await
                    .ok()?;
                created.spec?.affinity
            }
        })
        .await;
        assert!(stored.node_affinity.is_some());

        Api::<Namespace>::all(client)
            .delete(&ns, &DeleteParams::default())
            .await
            .unwrap();
        eventually("the remote namespace to go", WAIT_LEADER, || async {
            two.get_opt(&remote).await.unwrap().is_none().then_some(())
        })
        .await;
        let log_path = manager.process.log().to_owned();
        let log = std::fs::read_to_string(&log_path).unwrap();
        // Its webhooks would point at a stopped server (failing closed): take them away.
        drop(manager);
        for kind in [
            "mutatingwebhookconfiguration",
            "validatingwebhookconfiguration",
        ] {
            let (ok, _, err) = kubectl(admin, &["delete", kind, "namespace-offloading"], None);
            assert!(ok, "{err}");
        }
        assert!(
            !log.to_lowercase().contains("forbidden"),
            "permission errors in {}",
            log_path.display()
        );
    })
    .await;
}
