//! Point 2: a remote cluster that refuses one copy (its admission policy here) gets every
//! other object all the same; the refused one is reported on the original, and crosses
//! once the original changes so that the policy lets it.

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::json;

use crate::support::topology::*;
use crate::support::{eventually, kubectl, unique};

/// The label cluster 2's policy refuses ConfigMaps for.
const REFUSE: &str = "faults.example.com/refuse";

fn admission(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "admissionregistration.k8s.io",
        "v1",
        kind,
    ))
}

/// A ValidatingAdmissionPolicy in cluster 2 refusing, in `namespace`, ConfigMaps that
/// carry [`REFUSE`] (as `Invalid`, what a schema or policy error there looks like).
async fn refuse_labelled_configmaps(two: &Client, name: &str, namespace: &str) {
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["configmaps"]}]},
            "validations": [{
                "expression": format!("!has(object.metadata.labels) || !('{REFUSE}' in object.metadata.labels)"),
                "message": "refused by the test's policy",
                "reason": "Invalid",
            }],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": namespace}}},
        },
    });
    for (kind, object) in [
        ("ValidatingAdmissionPolicy", policy),
        ("ValidatingAdmissionPolicyBinding", binding),
    ] {
        let api = Api::<DynamicObject>::all_with(two.clone(), &admission(kind));
        api.create(
            &PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await
        .unwrap();
    }
    // In force once a labelled ConfigMap is refused there (policies compile a moment after).
    let cms = Api::<ConfigMap>::namespaced(two.clone(), namespace);
    let probe: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "probe", "labels": {REFUSE: "true"}}}))
            .unwrap();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually("cluster 2's policy in force", WAIT, || async {
        cms.create(&dry, &probe).await.is_err().then_some(())
    })
    .await;
}

async fn remove_policy(two: &Client, name: &str) {
    for kind in [
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
    ] {
        let _ = Api::<DynamicObject>::all_with(two.clone(), &admission(kind))
            .delete(name, &DeleteParams::default())
            .await;
    }
}

#[tokio::test]
async fn one_object_a_cluster_refuses_holds_up_no_other() {
    with_topology(|tb, t| async move {
        let client = tb.cluster(1).client().await.unwrap();
        let two = tb.cluster(2).client().await.unwrap();
        let ns = unique("refusals");
        offload_remotely_to_eu(tb, &client, &ns).await;
        let remote_ns = format!("{ns}-{}", t.ids[0]);
        let policy = unique("refuse");
        refuse_labelled_configmaps(&two, &policy, &remote_ns).await;

        // One `kubectl apply`: ConfigMaps around the refused one, a Secret, a Service.
        let manifest = format!(
            r#"
apiVersion: v1
kind: List
items:
- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: a-first, namespace: {ns}}}, data: {{k: v}}}}
- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: m-refused, namespace: {ns}, labels: {{{REFUSE}: "true"}}}}, data: {{k: v}}}}
- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: z-last, namespace: {ns}}}, data: {{k: v}}}}
- {{apiVersion: v1, kind: Secret, metadata: {{name: db, namespace: {ns}}}, stringData: {{password: s3cret}}}}
- {{apiVersion: v1, kind: Service, metadata: {{name: web, namespace: {ns}}}, spec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}}}
"#
        );
        let (ok, _, err) = kubectl(tb.cluster(1).kubeconfig(), &["apply", "-f", "-"], Some(&manifest));
        assert!(ok, "{err}");

        let cms = Api::<ConfigMap>::namespaced(two.clone(), &remote_ns);
        let secrets = Api::<Secret>::namespaced(two.clone(), &remote_ns);
        let services = Api::<Service>::namespaced(two.clone(), &remote_ns);
        eventually("every other object copied to cluster 2", WAIT, || async {
            let a = cms.get_opt("a-first").await.ok()?;
            let z = cms.get_opt("z-last").await.ok()?;
            let s = secrets.get_opt("db").await.ok()?;
            let w = services.get_opt("web").await.ok()?;
            (a.is_some() && z.is_some() && s.is_some() && w.is_some()).then_some(())
        })
        .await;
        assert!(cms.get_opt("m-refused").await.unwrap().is_none());
        let refusal = event(&client, &ns, "ReflectionRefused", "m-refused").await;
        let note = refusal.note.unwrap_or_default();
        assert!(
            note.contains(&t.ids[1]) && note.contains("refused by the test's policy"),
            "{note}"
        );

        // Fixed at home: it crosses, without waiting for the backoff.
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .patch(
                "m-refused",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {REFUSE: null}}})),
            )
            .await
            .unwrap();
        eventually("the fixed ConfigMap copied", WAIT, || async {
            cms.get_opt("m-refused").await.ok()?
        })
        .await;

        remove_policy(&two, &policy).await;
        delete_namespace(&client, &ns).await;
    })
    .await;
}
