//! Placement holds from the first pod, on a real control plane with a scheduler: a whole
//! application in one `kubectl apply` (Namespace, NamespaceOffloading, Deployment), pods
//! that escaped the webhook (recreated through their owner or reported), and the end of an
//! offloading (no waiting pod goes to a remote cluster any more). One local node and two
//! virtual nodes stand in for the clusters; the manager runs all its controllers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use namespace_offloading::model::api::NamespaceOffloading;
use serde_json::{Value, json};
use support::{create_node, eventually, http_get, kubectl, unique};
use testbed::{Process, Testbed};
use tokio::sync::OnceCell;

const WAIT: Duration = Duration::from_secs(90);
const LOCAL_NODE: &str = "placement-local";
const VIRTUAL_NODES: [&str; 2] = ["placement-vn-eu", "placement-vn-us"];

struct Manager {
    admin_port: u16,
    _process: Mutex<Process>,
}

async fn with_manager<F, Fut>(body: F)
where
    F: FnOnce(&'static Testbed, &'static Manager) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    static MANAGER: OnceCell<Result<Manager, String>> = OnceCell::const_new();
    support::with_testbed("placement", 1, 1, |tb| async move {
        let manager = MANAGER.get_or_init(|| set_up(tb)).await;
        match manager {
            Ok(m) => body(tb, m).await,
            Err(e) => panic!("cannot set up: {e}"),
        }
    })
    .await;
}

async fn set_up(tb: &'static Testbed) -> Result<Manager, String> {
    let one = tb.cluster(1);
    support::install_crds(one.kubeconfig())?;
    let client = one.client().await.map_err(|e| e.to_string())?;
    create_node(&client, LOCAL_NODE, json!({}), false).await;
    create_node(&client, VIRTUAL_NODES[0], json!({"region": "eu"}), true).await;
    create_node(&client, VIRTUAL_NODES[1], json!({"region": "us"}), true).await;
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

#[derive(Clone, Copy, Debug, PartialEq)]
enum Case {
    Remote,
    Local,
    LocalAndRemote,
    /// `liqo.io/enabled: "true"` in the Namespace's own manifest, no NamespaceOffloading.
    Label,
}

/// What every pod of a case must carry and where it may run.
fn expected(case: Case) -> (Value, bool) {
    let vn = json!({"matchExpressions": [{"key": "liqo.io/type", "operator": "In", "values": ["virtual-node"]}]});
    let not_vn = json!({"matchExpressions": [{"key": "liqo.io/type", "operator": "NotIn", "values": ["virtual-node"]}]});
    match case {
        Case::Remote => (json!([vn]), true),
        Case::Local => (json!([not_vn]), false),
        Case::LocalAndRemote | Case::Label => (json!([vn, not_vn]), true),
    }
}

fn deployment(namespace: &str, name: &str, replicas: u32) -> String {
    format!(
        r#"---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: app
        image: registry.invalid/app:1
"#
    )
}

fn bare_pod(namespace: &str, name: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  containers:\n  - name: app\n    image: registry.invalid/app:1\n"
    )
}

/// The whole application as one document list, as a user keeps it in one file: the
/// Namespace, its NamespaceOffloading, a bare Pod created right after it (before anything
/// but our admission can have labelled the namespace), and a Deployment.
fn application(namespace: &str, case: Case) -> String {
    let labels = if case == Case::Label {
        "\n  labels:\n    liqo.io/enabled: \"true\""
    } else {
        ""
    };
    let mut out =
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}{labels}\n");
    let strategy = match case {
        Case::Remote => Some("Remote"),
        Case::Local => Some("Local"),
        Case::LocalAndRemote => Some("LocalAndRemote"),
        Case::Label => None,
    };
    if let Some(strategy) = strategy {
        out += &format!(
            "---\napiVersion: offloading.liqo.io/v1alpha1\nkind: NamespaceOffloading\nmetadata:\n  name: offloading\n  namespace: {namespace}\nspec:\n  podOffloadingStrategy: {strategy}\n"
        );
    }
    out + &bare_pod(namespace, "first") + &deployment(namespace, "web", 3)
}

fn required_terms(pod: &Pod) -> Value {
    let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"]
        .clone()
}

fn tolerates_virtual_nodes(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .unwrap()
        .tolerations
        .iter()
        .flatten()
        .any(|t| t.key.as_deref() == Some("virtual-node.liqo.io/not-allowed"))
}

/// The pods of a namespace once `count` of them exist and are bound (or `None` yet).
async fn bound_pods(client: &Client, namespace: &str, count: usize) -> Option<Vec<Pod>> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .ok()?
        .items;
    let live: Vec<Pod> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    (live.len() == count
        && live
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()))
    .then_some(live)
}

fn metric(admin_port: u16, series: &str) -> f64 {
    let (_, text) = http_get(admin_port, "/metrics").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn one_apply_places_every_pod_for_each_strategy_and_the_label_path() {
    with_manager(|tb, _| async move {
        let kc = tb.cluster(1).kubeconfig().to_path_buf();
        let client = tb.cluster(1).client().await.unwrap();
        const ROUNDS: usize = 20;
        let cases = [Case::Remote, Case::Local, Case::LocalAndRemote, Case::Label];
        let mut namespaces = Vec::new();
        // Four applications at a time (one per case), twenty rounds: each `kubectl apply`
        // sends its objects back to back, as users do.
        for round in 0..ROUNDS {
            let mut applies = Vec::new();
            for case in cases {
                let ns = unique(&format!("{case:?}").to_lowercase());
                namespaces.push((ns.clone(), case, round));
                let kc = kc.clone();
                applies.push(tokio::task::spawn_blocking(move || {
                    kubectl(&kc, &["apply", "-f", "-"], Some(&application(&ns, case)))
                }));
            }
            for apply in applies {
                let (ok, out, err) = apply.await.unwrap();
                assert!(ok, "kubectl apply failed: {out}{err}");
            }
        }

        let mut broken = Vec::new();
        for (ns, case, round) in &namespaces {
            let pods = eventually(&format!("the 4 pods of {ns} to be scheduled"), WAIT, || {
                bound_pods(&client, ns, 4)
            })
            .await;
            let (terms, tolerated) = expected(*case);
            for pod in &pods {
                let name = pod.metadata.name.clone().unwrap();
                let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
                // Another test may add a virtual node meanwhile: any of them will do.
                let on_virtual = node.starts_with("placement-vn-");
                let placed = match case {
                    Case::Remote => on_virtual,
                    Case::Local => node == LOCAL_NODE,
                    Case::LocalAndRemote | Case::Label => true,
                };
                if required_terms(pod) != terms
                    || tolerates_virtual_nodes(pod) != tolerated
                    || !placed
                {
                    broken.push(format!(
                        "round {round} {case:?} {ns}/{name} on {node}: terms {} toleration {}",
                        required_terms(pod),
                        tolerates_virtual_nodes(pod)
                    ));
                }
            }
        }
        assert!(
            broken.is_empty(),
            "{} of {} pods escaped their strategy:\n{}",
            broken.len(),
            namespaces.len() * 4,
            broken.join("\n")
        );
        // The namespaces were labelled by our admission of the NamespaceOffloading, not
        // later by the controller.
        let namespaces_api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
        for (ns, case, round) in &namespaces {
            if *case == Case::Label {
                continue;
            }
            let managers: Vec<String> = namespaces_api
                .get(ns)
                .await
                .unwrap()
                .metadata
                .managed_fields
                .into_iter()
                .flatten()
                .filter_map(|m| m.manager)
                .collect();
            assert!(
                managers.iter().any(|m| m == "namespace-offloading-webhook"),
                "round {round} {case:?} {ns}: the scheduling label was not set by the webhook (managers {managers:?})"
            );
        }
        // Placed at admission, not repaired afterwards by the placement controller.
        let mut evicted = Vec::new();
        for (ns, case, round) in &namespaces {
            for (reason, note) in namespace_events(&client, ns).await {
                if reason == "EvictedForPlacement" {
                    evicted.push(format!("round {round} {case:?} {ns}: {note}"));
                }
            }
        }
        assert!(
            evicted.is_empty(),
            "pods had to be evicted, the webhook missed them:\n{}",
            evicted.join("\n")
        );
        for (ns, _, _) in &namespaces {
            kubectl(&kc, &["delete", "namespace", ns, "--wait=false"], None);
        }
    })
    .await;
}

/// The events (reason, note) of a namespace, from events.k8s.io, by the object they are about.
async fn events_by_object(client: &Client, namespace: &str) -> Vec<(String, String, String)> {
    use k8s_openapi::api::events::v1::Event;
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            (
                e.regarding.and_then(|r| r.name).unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

async fn namespace_events(client: &Client, namespace: &str) -> Vec<(String, String)> {
    events_by_object(client, namespace)
        .await
        .into_iter()
        .map(|(_, reason, note)| (reason, note))
        .collect()
}

async fn events_about(client: &Client, namespace: &str, name: &str) -> Vec<(String, String)> {
    events_by_object(client, namespace)
        .await
        .into_iter()
        .filter(|(object, _, _)| object == name)
        .map(|(_, reason, note)| (reason, note))
        .collect()
}

fn condition(nso: &NamespaceOffloading, type_: &str) -> Option<(String, String)> {
    let c = nso
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.message.clone()))
}

#[tokio::test]
async fn pods_that_escaped_the_webhook_are_recreated_or_reported() {
    with_manager(|tb, manager| async move {
        let kc = tb.cluster(1).kubeconfig();
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("escaped");
        // Before any offloading: an application of two replicas, one whose pod has started,
        // and a bare pod. The scheduler puts them all on the local node.
        let manifest = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n{}{}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: bare\n  namespace: {ns}\nspec:\n  containers:\n  - name: app\n    image: registry.invalid/app:1\n",
            deployment(&ns, "web", 2),
            deployment(&ns, "started", 1)
        );
        let (ok, _, err) = kubectl(kc, &["apply", "-f", "-"], Some(&manifest));
        assert!(ok, "{err}");
        let pods = eventually("4 pods bound locally", WAIT, || bound_pods(&client, &ns, 4)).await;
        let api = Api::<Pod>::namespaced(client.clone(), &ns);
        let started = pods
            .iter()
            .find(|p| p.metadata.name.as_deref().unwrap().starts_with("started-"))
            .unwrap()
            .metadata
            .name
            .clone()
            .unwrap();
        // No kubelet here: say it started, as a kubelet would.
        api.patch_status(
            &started,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
        let old_web: Vec<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .filter(|n| n.starts_with("web-"))
            .collect();

        let nso = format!(
            "apiVersion: offloading.liqo.io/v1alpha1\nkind: NamespaceOffloading\nmetadata:\n  name: offloading\n  namespace: {ns}\nspec:\n  podOffloadingStrategy: Remote\n"
        );
        let (ok, _, err) = kubectl(kc, &["apply", "-f", "-"], Some(&nso));
        assert!(ok, "{err}");

        // The two web pods had not started and have an owner: recreated, then placed.
        let web = eventually("web's pods to be recreated on virtual nodes", WAIT, || async {
            let pods = bound_pods(&client, &ns, 4).await?;
            let web: Vec<Pod> = pods
                .into_iter()
                .filter(|p| p.metadata.name.as_deref().unwrap().starts_with("web-"))
                .collect();
            let replaced = web.len() == 2
                && web.iter().all(|p| {
                    !old_web.contains(p.metadata.name.as_ref().unwrap())
                        && p.spec.as_ref().unwrap().node_name.as_deref().unwrap().starts_with("placement-vn-")
                });
            replaced.then_some(web)
        })
        .await;
        assert!(web.iter().all(tolerates_virtual_nodes));
        let evicted = events_about(&client, &ns, &old_web[0]).await;
        assert!(
            evicted.iter().any(|(reason, note)| reason == "EvictedForPlacement" && note.contains("is a local node")),
            "{evicted:?}"
        );

        // The bare pod and the started one are left alone and reported, on themselves and
        // on the NamespaceOffloading, in its status and in the metrics.
        for name in ["bare", started.as_str()] {
            assert!(api.get(name).await.unwrap().metadata.deletion_timestamp.is_none());
            let events = eventually(&format!("a Warning event on {name}"), WAIT, || async {
                let e = events_about(&client, &ns, name).await;
                e.iter().any(|(r, _)| r == "BreaksOffloadingStrategy").then_some(e)
            })
            .await;
            assert!(events.iter().any(|(_, n)| n.contains("is a local node")), "{events:?}");
        }
        let nsos = Api::<NamespaceOffloading>::namespaced(client.clone(), &ns);
        let (status, message) = eventually("PodsConform=False", WAIT, || async {
            condition(&nsos.get("offloading").await.ok()?, "PodsConform").filter(|(s, _)| s == "False")
        })
        .await;
        assert_eq!(status, "False");
        assert!(message.starts_with("2 pod(s) break the placement"), "{message}");
        let announced = events_about(&client, &ns, "offloading").await;
        assert!(announced.iter().any(|(r, _)| r == "PodsBreakStrategy"), "{announced:?}");
        let series = format!("namespace_offloading_pods_breaking_strategy{{namespace=\"{ns}\"}}");
        assert_eq!(metric(manager.admin_port, &series), 2.0);

        // Once they are gone, the status says every pod conforms.
        api.delete("bare", &DeleteParams::default().grace_period(0)).await.unwrap();
        kubectl(kc, &["delete", "deployment", "started", "-n", &ns, "--wait=false"], None);
        api.delete(&started, &DeleteParams::default().grace_period(0)).await.ok();
        eventually("PodsConform=True", WAIT, || async {
            condition(&nsos.get("offloading").await.ok()?, "PodsConform").filter(|(s, _)| s == "True")
        })
        .await;
        assert_eq!(metric(manager.admin_port, &series), 0.0);
        kubectl(kc, &["delete", "namespace", &ns, "--wait=false"], None);
    })
    .await;
}

#[tokio::test]
async fn once_the_offloading_ends_no_waiting_pod_goes_remote() {
    with_manager(|tb, _| async move {
        let kc = tb.cluster(1).kubeconfig();
        let client = tb.cluster(1).client().await.unwrap();
        let ns = unique("ending");
        // Remote, selecting a region no cluster has yet: the pods wait, constrained.
        let region = unique("nowhere");
        let manifest = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\napiVersion: offloading.liqo.io/v1alpha1\nkind: NamespaceOffloading\nmetadata:\n  name: offloading\n  namespace: {ns}\n  finalizers: [test.offloading.liqo.io/hold]\nspec:\n  podOffloadingStrategy: Remote\n  clusterSelector:\n    nodeSelectorTerms:\n    - matchExpressions:\n      - {{key: region, operator: In, values: [{region}]}}\n{}",
            deployment(&ns, "web", 2)
        );
        let (ok, _, err) = kubectl(kc, &["apply", "-f", "-"], Some(&manifest));
        assert!(ok, "{err}");
        let api = Api::<Pod>::namespaced(client.clone(), &ns);
        let waiting = eventually("2 pods waiting with remote constraints", WAIT, || async {
            let pods = api.list(&ListParams::default()).await.ok()?.items;
            (pods.len() == 2 && pods.iter().all(tolerates_virtual_nodes)).then_some(pods)
        })
        .await;
        let waiting: Vec<String> = waiting.into_iter().filter_map(|p| p.metadata.name).collect();

        // The end begins; another finalizer keeps the object in Terminating meanwhile.
        let (ok, _, err) = kubectl(
            kc,
            &["delete", "namespaceoffloading", "offloading", "-n", &ns, "--wait=false"],
            None,
        );
        assert!(ok, "{err}");
        let nsos = Api::<NamespaceOffloading>::namespaced(client.clone(), &ns);
        eventually("our finalizer to be gone", WAIT, || async {
            let nso = nsos.get("offloading").await.ok()?;
            (nso.metadata.finalizers.unwrap_or_default().len() == 1).then_some(())
        })
        .await;
        // The waiting pods were sent back: their replacements carry no remote constraints.
        let pods = eventually("the waiting pods to be replaced by local ones", WAIT, || async {
            let pods = bound_pods(&client, &ns, 2).await?;
            pods.iter()
                .all(|p| !waiting.contains(p.metadata.name.as_ref().unwrap()))
                .then_some(pods)
        })
        .await;
        for pod in &pods {
            assert!(!tolerates_virtual_nodes(pod), "{:?}", pod.spec);
            assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some(LOCAL_NODE));
        }

        // While it ends, a new pod that tolerates every taint still stays local, even once a
        // cluster of the selected region appears.
        let late = format!("placement-vn-{region}");
        create_node(&client, &late, json!({"region": region}), true).await;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "late"},
            "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                     "tolerations": [{"operator": "Exists"}]},
        }))
        .unwrap();
        let created = api.create(&PostParams::default(), &pod).await.unwrap();
        assert_eq!(
            required_terms(&created),
            json!([{"matchExpressions": [{"key": "liqo.io/type", "operator": "NotIn", "values": ["virtual-node"]}]}])
        );
        let all = eventually("3 pods bound", WAIT, || bound_pods(&client, &ns, 3)).await;
        let nodes: BTreeMap<String, String> = all
            .iter()
            .map(|p| (p.metadata.name.clone().unwrap(), p.spec.as_ref().unwrap().node_name.clone().unwrap()))
            .collect();
        assert!(nodes.values().all(|n| n == LOCAL_NODE), "{nodes:?}");

        // Once the object is gone, the scheduling label it left goes too (after 30 s).
        nsos.patch(
            "offloading",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
        let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
        eventually("the scheduling label to be cleared", WAIT, || async {
            let labels = namespaces.get(&ns).await.ok()?.metadata.labels.unwrap_or_default();
            (!labels.contains_key("liqo.io/scheduling-enabled")).then_some(())
        })
        .await;
        Api::<Node>::all(client.clone()).delete(&late, &DeleteParams::default()).await.unwrap();
        kubectl(kc, &["delete", "namespace", &ns, "--wait=false"], None);
    })
    .await;
}
