//! The Helm chart (`charts/namespace-offloading`), with the `helm` binary that
//! `scripts/build-helm` builds (its path in `$NSO_HELM`, which `scripts/test` sets):
//! it lints; with default values it renders the objects of `manifests/` (less the Namespace,
//! which `helm install --create-namespace` makes, and with the standard Helm labels on top);
//! each certificate mode renders its pieces; and installed into a test-bed cluster, the
//! manager works under the chart's ServiceAccount and RBAC, and `helm uninstall` removes
//! what it installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{ConfigMap, Namespace, Pod},
};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use namespace_offloading::model::api::NamespaceOffloading;
use serde_json::{Value, json};
use support::{eventually, http_get, kubectl, unique};

/// The labels the chart adds to every object (and to the pods) beyond the manifests' own:
/// the comparison with `manifests/` ignores exactly these, in `metadata.labels` and in the
/// pod template's labels, and checks that they are there.
const HELM_LABELS: [&str; 4] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

const WAIT: Duration = Duration::from_secs(60);

/// The webhook configurations' names are fixed: one release in the cluster at a time.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/namespace-offloading")
}

/// The helm binary: `$NSO_HELM`, as `scripts/test` sets it from `scripts/build-helm`.
fn helm_binary() -> PathBuf {
    match std::env::var_os("NSO_HELM") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "NSO_HELM is not set: these tests need the helm binary that scripts/build-helm builds. \
             Run them with `scripts/test --suite chart`, or \
             `NSO_HELM=$(scripts/build-helm | tail -n 1) cargo test --test chart`"
        ),
    }
}

/// Runs helm (against `kubeconfig` when given) with its own home directories under the
/// target directory; returns (success, stdout, stderr).
fn helm(args: &[&str], kubeconfig: Option<&Path>) -> (bool, String, String) {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    let mut command = Command::new(helm_binary());
    command
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("KUBECACHEDIR", home.join("kube-cache"))
        .env_remove("KUBECONFIG");
    if let Some(kubeconfig) = kubeconfig {
        command.arg("--kubeconfig").arg(kubeconfig);
    }
    let out = command.output().unwrap_or_else(|e| {
        panic!(
            "cannot run helm at {} (NSO_HELM; build it with scripts/build-helm): {e}",
            helm_binary().display()
        )
    });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The objects of a multi-document YAML stream (empty documents left out).
fn documents(text: &str, what: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("{what} is not valid YAML: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of the chart as release `release` in `namespace`, CRDs included.
fn template(release: &str, namespace: &str, set: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
        "--include-crds",
    ];
    for value in set {
        args.extend(["--set", value]);
    }
    let (ok, out, err) = helm(&args, None);
    assert!(ok, "helm {}: {err}", args.join(" "));
    documents(&out, "helm template's output")
}

/// `helm template` that must fail; returns its error.
fn template_fails(set: &[&str]) -> String {
    let chart = chart();
    let mut args = vec!["template", "nso", chart.to_str().unwrap()];
    for value in set {
        args.extend(["--set", value]);
    }
    let (ok, out, err) = helm(&args, None);
    assert!(
        !ok,
        "helm {} should fail, but rendered:\n{out}",
        args.join(" ")
    );
    err
}

/// apiVersion/kind/namespace/name.
fn key(object: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    format!(
        "{}/{}/{}/{}",
        text(&object["apiVersion"]),
        text(&object["kind"]),
        text(&object["metadata"]["namespace"]),
        text(&object["metadata"]["name"]),
    )
}

fn keyed(objects: Vec<Value>) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for object in objects {
        let k = key(&object);
        assert!(map.insert(k.clone(), object).is_none(), "{k} twice");
    }
    map
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "no {kind} {name} among: {:?}",
                objects.iter().map(key).collect::<Vec<_>>()
            )
        })
}

fn count(objects: &[Value], kind: &str) -> usize {
    objects.iter().filter(|o| o["kind"] == kind).count()
}

/// Every difference between two JSON values, one line each, with its path.
fn differences(path: &str, manifests: &Value, chart: &Value, out: &mut Vec<String>) {
    match (manifests, chart) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(vb) => differences(&p, va, vb, out),
                    None => out.push(format!("{p}: only in manifests: {va}")),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    out.push(format!("{path}.{k}: only in the chart: {vb}"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                differences(&format!("{path}[{i}]"), va, vb, out);
            }
            for (i, va) in a.iter().enumerate().skip(b.len()) {
                out.push(format!("{path}[{i}]: only in manifests: {va}"));
            }
            for (i, vb) in b.iter().enumerate().skip(a.len()) {
                out.push(format!("{path}[{i}]: only in the chart: {vb}"));
            }
        }
        (a, b) if a != b => out.push(format!("{path}: manifests {a}, chart {b}")),
        _ => {}
    }
}

/// Takes the standard Helm labels off an object (checking that each is there), where the
/// chart puts them: its own labels and its pod template's. The CRDs have none: crds/ is a
/// byte copy of manifests/crd.yaml, which Helm installs untemplated.
fn without_helm_labels(mut object: Value, release: &str) -> Value {
    if object["kind"] == "CustomResourceDefinition" {
        return object;
    }
    let k = key(&object);
    let take = |labels: &mut Value, whose: &str| {
        let labels = labels
            .as_object_mut()
            .unwrap_or_else(|| panic!("{k}: {whose} has no labels"));
        for label in HELM_LABELS {
            let value = labels
                .remove(label)
                .unwrap_or_else(|| panic!("{k}: {whose} lacks the label {label}"));
            let expected = match label {
                "helm.sh/chart" => format!("namespace-offloading-{}", chart_version()),
                "app.kubernetes.io/managed-by" => "Helm".into(),
                "app.kubernetes.io/instance" => release.into(),
                _ => env!("CARGO_PKG_VERSION").into(),
            };
            assert_eq!(value, expected, "{k}: {whose}'s {label}");
        }
    };
    take(&mut object["metadata"]["labels"], "metadata");
    if object["kind"] == "Deployment" {
        take(
            &mut object["spec"]["template"]["metadata"]["labels"],
            "the pod template",
        );
    }
    object
}

fn chart_yaml() -> Value {
    let text = std::fs::read_to_string(chart().join("Chart.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn chart_version() -> String {
    chart_yaml()["version"].as_str().unwrap().to_owned()
}

/// The objects `kubectl apply -k manifests/` applies: the files its kustomization lists.
fn manifests() -> Vec<Value> {
    let dir = root().join("manifests");
    let kustomization: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    let mut objects = Vec::new();
    for file in kustomization["resources"].as_array().unwrap() {
        let file = file.as_str().unwrap();
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        objects.extend(documents(&text, &format!("manifests/{file}")));
    }
    objects
}

fn container(objects: &[Value], deployment: &str) -> Value {
    find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0].clone()
}

fn args(objects: &[Value], deployment: &str) -> Vec<String> {
    container(objects, deployment)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_chart_lints_strictly() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    for values in [
        vec![],
        vec!["webhook.certificates.mode=cert-manager"],
        vec![
            "webhook.certificates.mode=secret",
            "webhook.certificates.secret.name=my-webhook-tls",
        ],
        vec!["metrics.serviceMonitor.enabled=true"],
    ] {
        let mut args = vec!["lint", "--strict", chart];
        for value in &values {
            args.extend(["--set", value]);
        }
        let (ok, out, err) = helm(&args, None);
        assert!(ok, "helm {}:\n{out}{err}", args.join(" "));
        assert!(out.contains("0 chart(s) failed"), "{out}");
        assert!(!out.contains("[WARNING]"), "{out}");
    }
}

#[test]
fn the_chart_crds_are_a_copy_of_manifests_crd_yaml() {
    let generated = std::fs::read(root().join("manifests/crd.yaml")).unwrap();
    let copy = std::fs::read(chart().join("crds/crd.yaml")).unwrap();
    assert!(
        generated == copy,
        "charts/namespace-offloading/crds/crd.yaml differs from manifests/crd.yaml: \
         cp manifests/crd.yaml charts/namespace-offloading/crds/crd.yaml"
    );
    let files: Vec<_> = std::fs::read_dir(chart().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, ["crd.yaml"], "charts/namespace-offloading/crds/");
    assert_eq!(
        chart_yaml()["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml's appVersion is the manager's version (Cargo.toml)"
    );
}

/// The documented install, `helm install namespace-offloading charts/namespace-offloading
/// -n liqo --create-namespace`, renders manifests/ object for object. The one exception is
/// manifests/namespace.yaml: a chart does not own its release namespace (`--create-namespace`
/// makes it, and `helm uninstall` would otherwise delete everything in it), so that Namespace
/// is left out of the comparison, and nothing else is.
#[test]
fn default_values_render_the_manifests() {
    let release = "namespace-offloading";
    let mut expected = keyed(manifests());
    let namespace = expected.remove("v1/Namespace//liqo");
    assert!(
        namespace.is_some(),
        "manifests/ no longer has the Namespace liqo"
    );
    let rendered = keyed(
        template(release, "liqo", &[])
            .into_iter()
            .map(|o| without_helm_labels(o, release))
            .collect(),
    );
    let mut report = Vec::new();
    for (k, want) in &expected {
        match rendered.get(k) {
            None => report.push(format!("{k}: in manifests/, not rendered by the chart")),
            Some(got) => {
                let mut lines = Vec::new();
                differences("", want, got, &mut lines);
                report.extend(lines.into_iter().map(|l| format!("{k}: {l}")));
            }
        }
    }
    for k in rendered.keys() {
        if !expected.contains_key(k) {
            report.push(format!("{k}: rendered by the chart, not in manifests/"));
        }
    }
    assert!(
        report.is_empty(),
        "the chart's default rendering differs from manifests/ ({} differences):\n{}",
        report.len(),
        report.join("\n")
    );
    assert_eq!(rendered.len(), expected.len());
}

#[test]
fn the_release_namespace_and_values_are_respected() {
    let objects = template(
        "nso",
        "offloading-system",
        &[
            "clusterLabels.region=eu",
            "clusterLabels.provider=azure",
            "clusterID=cluster-a",
            "logLevel=debug",
            "replicas=3",
            "image.repository=registry.example/nso",
            "image.tag=1.2.3",
            "image.pullPolicy=Always",
            "extraArgs={--webhooks-only}",
            "podDisruptionBudget.enabled=false",
            "nodeSelector.pool=system",
        ],
    );
    let name = "nso-namespace-offloading";
    for object in &objects {
        let k = key(object);
        let namespaced = object["metadata"]["namespace"].as_str();
        match object["kind"].as_str().unwrap() {
            "ClusterRole" | "ClusterRoleBinding" | "CustomResourceDefinition" => {
                assert_eq!(namespaced, None, "{k}")
            }
            // Named as pods name it (offloading.runtimeClass.name).
            "RuntimeClass" | "StorageClass" => {
                assert_eq!(namespaced, None, "{k}");
                assert_eq!(object["metadata"]["name"], "liqo", "{k}");
            }
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
                // Fixed in the manager (it registers under that name).
                assert_eq!(object["metadata"]["name"], "namespace-offloading", "{k}");
                for webhook in object["webhooks"].as_array().unwrap() {
                    let service = &webhook["clientConfig"]["service"];
                    assert_eq!(service["namespace"], "offloading-system", "{k}");
                    assert_eq!(service["name"], name, "{k}");
                    if let Some(expressions) =
                        webhook["namespaceSelector"]["matchExpressions"].as_array()
                    {
                        let spared = expressions
                            .iter()
                            .find(|e| e["key"] == "kubernetes.io/metadata.name")
                            .unwrap();
                        assert!(
                            spared["values"]
                                .as_array()
                                .unwrap()
                                .contains(&json!("offloading-system")),
                            "{k}: the release namespace is spared"
                        );
                    }
                }
            }
            "Role" | "RoleBinding" if namespaced == Some("kube-node-lease") => {
                assert_eq!(object["metadata"]["name"], format!("{name}-node-leases"))
            }
            _ => {
                assert_eq!(namespaced, Some("offloading-system"), "{k}");
                assert!(
                    object["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .starts_with(name),
                    "{k}"
                );
            }
        }
        if let Some(subjects) = object["subjects"].as_array() {
            assert_eq!(
                subjects[0],
                json!({"kind": "ServiceAccount", "name": name, "namespace": "offloading-system"}),
                "{k}"
            );
        }
    }
    assert_eq!(count(&objects, "PodDisruptionBudget"), 0);
    assert_eq!(count(&objects, "RuntimeClass"), 1);
    assert_eq!(count(&objects, "StorageClass"), 1);
    let config = find(&objects, "ConfigMap", &format!("{name}-config"));
    assert_eq!(
        config["data"],
        json!({"NSO_CLUSTER_LABELS": "provider=azure,region=eu", "NSO_CLUSTER_ID": "cluster-a"})
    );
    let deployment = find(&objects, "Deployment", name);
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], name);
    assert_eq!(pod["nodeSelector"], json!({"pool": "system"}));
    let manager = container(&objects, name);
    assert_eq!(manager["image"], "registry.example/nso:1.2.3");
    assert_eq!(manager["imagePullPolicy"], "Always");
    assert_eq!(
        manager["envFrom"][0]["configMapRef"]["name"],
        format!("{name}-config")
    );
    assert!(
        manager["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "RUST_LOG", "value": "debug"}))
    );
    assert_eq!(
        args(&objects, name),
        [
            "run",
            "--webhook-service=offloading-system/nso-namespace-offloading:443",
            "--webhook-registration=ca-bundle",
            "--webhooks-only"
        ]
    );
}

/// Issue 24, points 1 and 2: Liqo 1.x's `offloading.*` values become the manager's flags
/// (and only values that differ from the manager's defaults do), and the RuntimeClass
/// follows `offloading.runtimeClass`.
#[test]
fn liqo_offloading_values_become_flags_and_the_runtime_class() {
    let name = "nso-namespace-offloading";
    let objects = template(
        "nso",
        "liqo",
        &[
            "offloading.runtimeClass.name=offload",
            "offloading.runtimeClass.handler=none",
            "offloading.reflection.secret.type=AllowList",
            "offloading.reflection.endpointslice.type=DenyList",
            "offloading.reflection.configmap.type=DenyList",
            "offloading.reflection.skip.labels={team,cost-center}",
            "offloading.reflection.skip.annotations={note}",
            "offloading.reflection.ingress.classMapping.nginx=traefik",
        ],
    );
    let class = find(&objects, "RuntimeClass", "offload");
    assert_eq!(class["handler"], "none");
    assert_eq!(
        class["scheduling"]["nodeSelector"],
        json!({"liqo.io/type": "virtual-node"})
    );
    assert_eq!(
        args(&objects, name)[3..],
        [
            "--runtime-class=offload",
            "--reflection-type=endpointslice=DenyList",
            "--reflection-type=secret=AllowList",
            "--labels-not-reflected=team,cost-center",
            "--annotations-not-reflected=note",
            "--ingress-class-mapping=nginx=traefik",
        ]
    );
    // Off.
    let off = template(
        "nso",
        "liqo",
        &[
            "offloading.runtimeClass.enabled=false",
            "storage.enabled=false",
        ],
    );
    assert_eq!(count(&off, "RuntimeClass"), 0);
    assert_eq!(count(&off, "StorageClass"), 0);
    // Liqo's spelling, which decides when given.
    let liqo_off = template("nso", "liqo", &["offloading.runtimeClass.enable=false"]);
    assert_eq!(count(&liqo_off, "RuntimeClass"), 0);
    let renamed = template(
        "nso",
        "liqo",
        &["storage.virtualStorageClassName=offloaded"],
    );
    assert_eq!(
        find(&renamed, "StorageClass", "offloaded")["provisioner"],
        "offloading.liqo.io/remote"
    );
    let refused = template_fails(&["offloading.reflection.secret.type=Sometimes"]);
    assert!(refused.contains("type"), "{refused}");
}

#[test]
fn each_certificate_mode_renders_its_pieces() {
    let (release, namespace, name) = ("nso", "offloading-system", "nso-namespace-offloading");
    let webhook_configurations = |objects: &[Value]| {
        [
            find(
                objects,
                "MutatingWebhookConfiguration",
                "namespace-offloading",
            )
            .clone(),
            find(
                objects,
                "ValidatingWebhookConfiguration",
                "namespace-offloading",
            )
            .clone(),
        ]
    };
    let tls_volume = |objects: &[Value]| {
        let pod = &find(objects, "Deployment", name)["spec"]["template"]["spec"];
        let mounts = &pod["containers"][0]["volumeMounts"];
        (pod["volumes"].clone(), mounts.clone())
    };

    // self-managed (the default): the manager makes the certificate and registers the CA.
    let objects = template(release, namespace, &[]);
    assert_eq!(
        args(&objects, name),
        [
            "run",
            &format!("--webhook-service={namespace}/{name}:443"),
            "--webhook-registration=ca-bundle"
        ]
    );
    assert_eq!(tls_volume(&objects), (Value::Null, Value::Null));
    assert!(
        objects
            .iter()
            .all(|o| o["apiVersion"] != "cert-manager.io/v1")
    );
    for configuration in webhook_configurations(&objects) {
        assert_eq!(configuration["metadata"]["annotations"], Value::Null);
    }

    // cert-manager: a self-signed CA chain, the serving Certificate mounted, the CA injected.
    let objects = template(
        release,
        namespace,
        &["webhook.certificates.mode=cert-manager"],
    );
    assert_eq!(count(&objects, "Issuer"), 2);
    assert_eq!(count(&objects, "Certificate"), 2);
    let ca = find(&objects, "Certificate", &format!("{name}-ca"));
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(
        find(&objects, "Issuer", &format!("{name}-ca"))["spec"]["ca"]["secretName"],
        ca["spec"]["secretName"]
    );
    let serving = find(&objects, "Certificate", &format!("{name}-webhook"));
    assert_eq!(serving["metadata"]["namespace"], namespace);
    assert_eq!(serving["spec"]["issuerRef"]["name"], format!("{name}-ca"));
    assert!(
        serving["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&json!(format!("{name}.{namespace}.svc")))
    );
    let secret = serving["spec"]["secretName"].as_str().unwrap();
    assert_ne!(secret, "namespace-offloading-webhook-tls");
    let (volumes, mounts) = tls_volume(&objects);
    assert_eq!(volumes[0]["secret"]["secretName"], secret);
    assert_eq!(mounts[0]["name"], volumes[0]["name"]);
    assert_eq!(mounts[0]["mountPath"], "/tls");
    assert_eq!(
        args(&objects, name),
        [
            "run",
            "--tls-cert-file=/tls/tls.crt",
            "--tls-key-file=/tls/tls.key"
        ],
        "cert-manager injects the caBundle: the manager registers nothing"
    );
    for configuration in webhook_configurations(&objects) {
        assert_eq!(
            configuration["metadata"]["annotations"],
            json!({"cert-manager.io/inject-ca-from": format!("{namespace}/{name}-webhook")})
        );
    }
    // With an issuer of one's own, no CA chain of the chart's.
    let objects = template(
        release,
        namespace,
        &[
            "webhook.certificates.mode=cert-manager",
            "webhook.certificates.certManager.issuerRef.name=corp-ca",
            "webhook.certificates.certManager.issuerRef.kind=ClusterIssuer",
        ],
    );
    assert_eq!(count(&objects, "Issuer"), 0);
    assert_eq!(count(&objects, "Certificate"), 1);
    assert_eq!(
        find(&objects, "Certificate", &format!("{name}-webhook"))["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer"})
    );

    // secret: a given Secret mounted, the manager registers its ca.crt.
    let objects = template(
        release,
        namespace,
        &[
            "webhook.certificates.mode=secret",
            "webhook.certificates.secret.name=my-webhook-tls",
        ],
    );
    let (volumes, mounts) = tls_volume(&objects);
    assert_eq!(volumes[0]["secret"]["secretName"], "my-webhook-tls");
    assert_eq!(mounts[0]["name"], volumes[0]["name"]);
    assert_eq!(mounts[0]["readOnly"], true);
    assert_eq!(
        args(&objects, name),
        [
            "run",
            "--tls-cert-file=/tls/tls.crt",
            "--tls-key-file=/tls/tls.key",
            "--ca-bundle-file=/tls/ca.crt",
            &format!("--webhook-service={namespace}/{name}:443"),
            "--webhook-registration=ca-bundle",
        ]
    );
    assert!(
        objects
            .iter()
            .all(|o| o["apiVersion"] != "cert-manager.io/v1")
    );
    let err = template_fails(&["webhook.certificates.mode=secret"]);
    assert!(
        err.contains("webhook.certificates.secret.name is required"),
        "{err}"
    );
    let err = template_fails(&[
        "webhook.certificates.mode=secret",
        "webhook.certificates.secret.name=namespace-offloading-webhook-tls",
    ]);
    assert!(err.contains("belongs to the self-managed mode"), "{err}");
    let err = template_fails(&["webhook.certificates.mode=vault"]);
    assert!(err.contains("webhook/certificates/mode"), "{err}");
}

#[test]
fn metrics_service_and_service_monitor_when_enabled() {
    let name = "nso-namespace-offloading";
    let defaults = template("nso", "default", &[]);
    assert_eq!(count(&defaults, "ServiceMonitor"), 0);
    assert_eq!(count(&defaults, "Service"), 1);

    let objects = template("nso", "default", &["metrics.service.enabled=true"]);
    assert_eq!(count(&objects, "ServiceMonitor"), 0);
    find(&objects, "Service", &format!("{name}-metrics"));

    let objects = template(
        "nso",
        "default",
        &[
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.interval=15s",
            "metrics.serviceMonitor.labels.release=prometheus",
        ],
    );
    let service = find(&objects, "Service", &format!("{name}-metrics"));
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "admin");
    let admin = container(&objects, name)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .cloned()
        .unwrap();
    assert_eq!(admin["containerPort"], 8080);
    let monitor = find(&objects, "ServiceMonitor", name);
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    // It selects the metrics Service, and only that one.
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    let selects = |o: &Value| {
        selector
            .iter()
            .all(|(k, v)| o["metadata"]["labels"][k.as_str()] == *v)
    };
    let selected: Vec<_> = objects
        .iter()
        .filter(|o| o["kind"] == "Service" && selects(o))
        .map(key)
        .collect();
    assert_eq!(selected, [key(service)]);
    assert_eq!(
        monitor["spec"]["endpoints"][0],
        json!({"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "15s"})
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"],
        json!({"matchNames": ["default"]})
    );
}

#[test]
fn home_api_access_when_enabled_passes_its_address_and_may_create_tokens() {
    let name = "nso-namespace-offloading";
    let token_rule = |objects: &[Value]| {
        find(objects, "ClusterRole", name)["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resources"] == json!(["serviceaccounts/token"]))
    };
    let defaults = template("nso", "default", &[]);
    assert!(!token_rule(&defaults));
    assert!(
        args(&defaults, name)
            .iter()
            .all(|a| !a.starts_with("--home-api"))
    );

    let objects = template(
        "nso",
        "default",
        &[
            "homeApiAccess.enabled=true",
            "homeApiAccess.serverAddress=api.home.example:6443",
        ],
    );
    assert!(token_rule(&objects));
    let args = args(&objects, name);
    assert!(
        args.contains(&"--home-api-access=token".to_owned()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--home-api-server-address=api.home.example:6443".to_owned()),
        "{args:?}"
    );
    let err = template_fails(&["homeApiAccess.enabled=true"]);
    assert!(err.contains("homeApiAccess.serverAddress"), "{err}");
}

/// `kubectl get KIND/NAME` (in `namespace` when given) succeeds.
fn exists(kubeconfig: &Path, object: &str, namespace: Option<&str>) -> bool {
    let mut args = vec!["get", object, "-o", "name"];
    if let Some(namespace) = namespace {
        args.extend(["-n", namespace]);
    }
    kubectl(kubeconfig, &args, None).0
}

/// `helm install` into a test-bed cluster, the manager run against what it installed under
/// the chart's ServiceAccount (the image cannot run here: no kubelet, no pod network), then
/// `helm uninstall`.
#[tokio::test]
async fn helm_install_runs_the_manager_under_the_chart_rbac_and_uninstall_removes_it() {
    support::with_testbed("chart", 1, 0, |tb| async move {
        let _turn = CLUSTER.lock().await;
        let (release, ns, name) = ("nso", "offloading-system", "nso-namespace-offloading");
        let admin = tb.cluster(1).kubeconfig();
        let chart = chart();
        let (ok, out, err) = helm(
            &[
                "install",
                release,
                chart.to_str().unwrap(),
                "--namespace",
                ns,
                "--create-namespace",
                "--set-string",
                "clusterLabels.region=test,clusterLabels.provider=chart",
                "--set",
                "clusterID=chart-cluster",
            ],
            Some(admin),
        );
        assert!(ok, "helm install: {out}{err}");
        assert!(out.contains("namespace-offloading peer"), "NOTES:\n{out}");

        // What the chart installed ("kind/name", namespace).
        let mut installed: Vec<(String, Option<&str>)> = Vec::new();
        for object in [
            "customresourcedefinition/namespaceoffloadings.offloading.liqo.io",
            "customresourcedefinition/remoteclusters.offloading.liqo.io",
            "mutatingwebhookconfiguration/namespace-offloading",
            "validatingwebhookconfiguration/namespace-offloading",
            &format!("clusterrole/{name}"),
            &format!("clusterrolebinding/{name}"),
        ] {
            installed.push((object.to_owned(), None));
        }
        for kind in [
            "serviceaccount",
            "role",
            "rolebinding",
            "deployment",
            "service",
            "poddisruptionbudget",
        ] {
            installed.push((format!("{kind}/{name}"), Some(ns)));
        }
        installed.push((format!("configmap/{name}-config"), Some(ns)));
        for kind in ["role", "rolebinding"] {
            installed.push((
                format!("{kind}/{name}-node-leases"),
                Some("kube-node-lease"),
            ));
        }
        for (object, namespace) in &installed {
            assert!(exists(admin, object, *namespace), "{object} not installed");
        }
        let (ok, status, err) = helm(&["status", release, "--namespace", ns], Some(admin));
        assert!(ok && status.contains("STATUS: deployed"), "{status}{err}");

        // The manager takes its configuration from the installed ConfigMap (the Deployment's
        // envFrom), and runs with the chart ServiceAccount's token.
        let client = tb.cluster(1).client().await.unwrap();
        let config = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get(&format!("{name}-config"))
            .await
            .unwrap()
            .data
            .unwrap();
        assert_eq!(config["NSO_CLUSTER_LABELS"], "provider=chart,region=test");
        let sa_kubeconfig = support::service_account_kubeconfig(
            admin,
            ns,
            name,
            &tb.cluster(1).dir().join("chart-serviceaccount.kubeconfig"),
        );

        // The installed webhook configurations call the release's Service, which nothing
        // serves in the test bed; the manager registers its own address instead (as
        // support::start_manager has it). Their service reference, the chart's field, goes
        // first: a configuration may not name both.
        for (kind, webhooks) in [
            ("mutatingwebhookconfiguration", 3),
            // With the RuntimeClass opt-in's.
            ("validatingwebhookconfiguration", 2),
        ] {
            let (_, current, _) = kubectl(
                admin,
                &["get", kind, "namespace-offloading", "-o", "json"],
                None,
            );
            let current: Value = serde_json::from_str(&current).unwrap();
            for webhook in current["webhooks"].as_array().unwrap() {
                assert_eq!(webhook["clientConfig"]["service"]["namespace"], ns);
                assert_eq!(webhook["clientConfig"]["service"]["name"], name);
            }
            let patch: Vec<Value> = (0..webhooks)
                .flat_map(|i| {
                    let config = format!("/webhooks/{i}/clientConfig");
                    let url = "https://127.0.0.1:1/";
                    [
                        json!({"op": "remove", "path": format!("{config}/service")}),
                        json!({"op": "add", "path": format!("{config}/url"), "value": url}),
                    ]
                })
                .collect();
            let (ok, _, err) = kubectl(
                admin,
                &[
                    "patch",
                    kind,
                    "namespace-offloading",
                    "--type=json",
                    "-p",
                    &Value::from(patch).to_string(),
                ],
                None,
            );
            assert!(ok, "{kind}: {err}");
        }
        let manager = support::start_manager(
            tb,
            "chart-manager",
            &sa_kubeconfig,
            true,
            &[
                format!("--namespace={ns}"),
                format!("--cluster-labels={}", config["NSO_CLUSTER_LABELS"]),
                format!("--cluster-id={}", config["NSO_CLUSTER_ID"]),
            ],
        )
        .await
        .unwrap();

        // It leads (the Lease in the release namespace) and publishes its identity there.
        eventually("the manager to lead", WAIT, || async {
            let lease = Api::<Lease>::namespaced(client.clone(), ns)
                .get_opt("namespace-offloading-leader")
                .await
                .unwrap()?;
            (lease.spec?.holder_identity.as_deref() == Some("chart-manager")).then_some(())
        })
        .await;
        eventually("the leader gauge", WAIT, || async {
            let (_, metrics) = http_get(manager.admin_port, "/metrics").ok()?;
            metrics
                .lines()
                .any(|l| l == "namespace_offloading_leader 1")
                .then_some(())
        })
        .await;
        let identity = eventually("the identity ConfigMap", WAIT, || async {
            Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt("namespace-offloading-identity")
                .await
                .unwrap()?
                .data
        })
        .await;
        assert_eq!(identity["clusterID"], "chart-cluster");
        let labels: Value = serde_json::from_str(&identity["clusterLabels"]).unwrap();
        assert_eq!(labels, json!({"region": "test", "provider": "chart"}));

        // A namespace labelled for offloading gets its NamespaceOffloading, with a status
        // (no cluster is peered: NoClusterSelected), and its pods are placed.
        let offloaded = unique("chart");
        let namespace: Namespace = serde_json::from_value(
            json!({"metadata": {"name": offloaded, "labels": {"liqo.io/enabled": "true"}}}),
        )
        .unwrap();
        let namespaces = Api::<Namespace>::all(client.clone());
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        let offloadings = Api::<NamespaceOffloading>::namespaced(client.clone(), &offloaded);
        let phase = eventually("the NamespaceOffloading's status", WAIT, || async {
            offloadings
                .get_opt("offloading")
                .await
                .unwrap()?
                .status?
                .offloading_phase
        })
        .await;
        assert_eq!(
            phase,
            namespace_offloading::model::api::OffloadingPhase::NoClusterSelected
        );
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "placed"},
            "spec": {"containers": [{"name": "c", "image": "registry.example/app:1"}]},
        }))
        .unwrap();
        let created = Api::<Pod>::namespaced(client.clone(), &offloaded)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        assert!(
            created.spec.unwrap().affinity.is_some(),
            "the pod webhook placed the pod"
        );
        namespaces
            .delete(&offloaded, &DeleteParams::default())
            .await
            .unwrap();
        eventually("the offloaded namespace to go", WAIT, || async {
            namespaces
                .get_opt(&offloaded)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;

        let log_path = manager.process.log().to_owned();
        drop(manager);
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(
            !log.to_lowercase().contains("forbidden"),
            "permission errors under the chart's RBAC in {}",
            log_path.display()
        );

        // Uninstall: everything the chart installed goes, but the CRDs (Helm never deletes
        // what crds/ installed, so NamespaceOffloadings survive a reinstall).
        let (ok, out, err) = helm(&["uninstall", release, "--namespace", ns], Some(admin));
        assert!(ok, "helm uninstall: {out}{err}");
        for (object, namespace) in &installed {
            let crd = object.starts_with("customresourcedefinition/");
            let what = if crd { "kept" } else { "deleted" };
            eventually(&format!("{object} to be {what}"), WAIT, || async {
                (exists(admin, object, *namespace) == crd).then_some(())
            })
            .await;
        }
        let (ok, _, _) = helm(&["status", release, "--namespace", ns], Some(admin));
        assert!(!ok, "the release is gone");
    })
    .await;
}

/// The fields of a webhook configuration the manager's field manager owns.
fn owned_by_manager(admin: &Path, kind: &str) -> Vec<String> {
    let (ok, out, err) = kubectl(
        admin,
        &[
            "get",
            kind,
            "namespace-offloading",
            "--show-managed-fields",
            "-o",
            "json",
        ],
        None,
    );
    assert!(ok, "{err}");
    let object: Value = serde_json::from_str(&out).unwrap();
    let mut owned = Vec::new();
    for entry in object["metadata"]["managedFields"].as_array().unwrap() {
        if entry["manager"] == "namespace-offloading" {
            leaves("", &entry["fieldsV1"], &mut owned);
        }
    }
    owned
}

fn leaves(path: &str, fields: &Value, out: &mut Vec<String>) {
    match fields.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, value) in map {
                if key != "." {
                    leaves(&format!("{path}/{key}"), value, out);
                }
            }
        }
        _ => out.push(path.to_owned()),
    }
}

#[tokio::test]
async fn helm_upgrade_meets_no_conflict_with_the_ca_bundle_the_manager_wrote() {
    support::with_testbed("chart", 1, 0, |tb| async move {
        let _turn = CLUSTER.lock().await;
        let (release, ns) = ("up", "nso-upgrade");
        let admin = tb.cluster(1).kubeconfig();
        let chart = chart();
        // The manager as the chart runs it (self-managed certificates), serving nothing the
        // API server calls: only its registration matters here. It starts before the
        // webhook configurations exist (Helm creates them after the Deployment) and writes
        // its CA once they do.
        let (ok, _, err) = kubectl(admin, &["create", "namespace", ns], None);
        assert!(ok, "{err}");
        // The CRDs first, as an upgrade finds them (the manager is ready only once its
        // watches list); Helm leaves CRDs that exist alone.
        support::install_crds(admin).unwrap();
        let manager = support::start_manager(
            tb,
            "upgrade-manager",
            admin,
            false,
            &[
                format!("--namespace={ns}"),
                format!("--webhook-service={ns}/{release}-namespace-offloading:443"),
                "--webhook-registration=ca-bundle".into(),
                "--webhooks-only".into(),
            ],
        )
        .await
        .unwrap();
        let (ok, out, err) = helm(
            &[
                "install",
                release,
                chart.to_str().unwrap(),
                "--namespace",
                ns,
            ],
            Some(admin),
        );
        assert!(ok, "helm install: {out}{err}");
        for kind in [
            "mutatingwebhookconfiguration",
            "validatingwebhookconfiguration",
        ] {
            eventually(&format!("the caBundle in the {kind}"), WAIT, || async {
                let (_, out, _) = kubectl(
                    admin,
                    &[
                        "get",
                        kind,
                        "namespace-offloading",
                        "-o",
                        "jsonpath={.webhooks[*].clientConfig.caBundle}",
                    ],
                    None,
                );
                (!out.trim().is_empty()).then_some(())
            })
            .await;
            let owned = owned_by_manager(admin, kind);
            assert!(!owned.is_empty());
            // Each webhook's caBundle, and its name (the key of the list, which every
            // applier of an item shares).
            assert!(
                owned
                    .iter()
                    .all(|f| f.ends_with("/f:clientConfig/f:caBundle") || f.ends_with("/f:name")),
                "the manager owns more than the caBundle of {kind}: {owned:?}"
            );
        }
        // An upgrade that changes what the chart owns in them (here, the Service they call)
        // goes through without --force-conflicts, and the CA stays.
        let (ok, out, err) = helm(
            &[
                "upgrade",
                release,
                chart.to_str().unwrap(),
                "--namespace",
                ns,
                "--set",
                "fullnameOverride=up-renamed",
            ],
            Some(admin),
        );
        assert!(ok, "helm upgrade: {out}{err}");
        let (_, out, _) = kubectl(
            admin,
            &[
                "get",
                "mutatingwebhookconfiguration",
                "namespace-offloading",
                "-o",
                "json",
            ],
            None,
        );
        let mutating: Value = serde_json::from_str(&out).unwrap();
        for webhook in mutating["webhooks"].as_array().unwrap() {
            assert_eq!(webhook["clientConfig"]["service"]["name"], "up-renamed");
            assert!(
                webhook["clientConfig"]["caBundle"]
                    .as_str()
                    .is_some_and(|ca| !ca.is_empty())
            );
        }
        drop(manager);
        let (ok, out, err) = helm(&["uninstall", release, "--namespace", ns], Some(admin));
        assert!(ok, "helm uninstall: {out}{err}");
    })
    .await;
}
