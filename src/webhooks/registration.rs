//! Our Mutating- and ValidatingWebhookConfiguration, declared here so the committed
//! manifests and the ones `run` registers come from one place.

use k8s_openapi::{
    ByteString,
    api::admissionregistration::v1::{
        MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
        ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

use crate::model::{
    admission::{Webhook, offloading::SYSTEM_NAMESPACES},
    markers::{
        ENABLED_LABEL, FIELD_MANAGER, NAMESPACE_NAME_LABEL, SCHEDULING_ENABLED_LABEL,
        WEBHOOK_CONFIGURATION,
    },
};

/// How the API server reaches the webhook server.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A base URL such as `https://127.0.0.1:9443` (a server outside the cluster).
    Url(String),
    /// A Service in the cluster, on the given port.
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
}

impl Target {
    fn client_config(&self, webhook: Webhook, ca_bundle: Option<&str>) -> WebhookClientConfig {
        let ca_bundle = ca_bundle.map(|pem| ByteString(pem.as_bytes().to_vec()));
        match self {
            Target::Url(base) => WebhookClientConfig {
                url: Some(format!("{}{}", base.trim_end_matches('/'), webhook.path())),
                ca_bundle,
                service: None,
            },
            Target::Service {
                namespace,
                name,
                port,
            } => WebhookClientConfig {
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(webhook.path().into()),
                    port: Some(*port),
                }),
                ca_bundle,
                url: None,
            },
        }
    }
}

fn rule(group: &str, versions: &[&str], resource: &str, operations: &[&str]) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![group.into()]),
        api_versions: Some(versions.iter().map(|v| (*v).to_owned()).collect()),
        resources: Some(vec![resource.into()]),
        operations: Some(operations.iter().map(|o| (*o).to_owned()).collect()),
        scope: Some("Namespaced".into()),
    }
}

fn metadata() -> ObjectMeta {
    ObjectMeta {
        name: Some(WEBHOOK_CONFIGURATION.into()),
        labels: Some(
            [(
                "app.kubernetes.io/name".into(),
                "namespace-offloading".into(),
            )]
            .into(),
        ),
        ..ObjectMeta::default()
    }
}

/// Both configurations, with the CA bundle when one is known.
pub(crate) fn configurations(
    target: &Target,
    ca_bundle: Option<&str>,
    own_namespace: &str,
    runtime_class: &str,
) -> (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) {
    // Never the cluster's own namespaces nor ours: their pods must not wait on this
    // webhook (it fails closed), so the manager can always start again.
    let spared = || LabelSelectorRequirement {
        key: NAMESPACE_NAME_LABEL.into(),
        operator: "NotIn".into(),
        values: Some(
            SYSTEM_NAMESPACES
                .iter()
                .map(|n| (*n).to_owned())
                .chain([own_namespace.to_owned()])
                .collect(),
        ),
    };
    let offloading_rule = || {
        vec![rule(
            "offloading.liqo.io",
            // Both served versions, so each review carries the object as the user wrote it
            // (and v1alpha1 gets its own messages for what only v1beta1 has).
            &["v1alpha1", "v1beta1"],
            "namespaceoffloadings",
            &["CREATE", "UPDATE"],
        )]
    };
    let common = |webhook: Webhook| MutatingWebhook {
        client_config: target.client_config(webhook, ca_bundle),
        // Only the review format this server speaks.
        admission_review_versions: vec!["v1".into()],
        // Nothing outside the request changes (the validating webhook says otherwise).
        side_effects: "None".into(),
        // Well under the API server's 10 s default: answers come from memory, or from a
        // few API calls (reads bounded at 1 s each, 3.5 s in all; the label at 3 s).
        timeout_seconds: Some(5),
        // Fail closed: a pod admitted without its constraints could run where the namespace
        // forbids, and a NamespaceOffloading without validation could be one that cannot work.
        failure_policy: Some("Fail".into()),
        match_policy: Some("Equivalent".into()),
        ..MutatingWebhook::default()
    };
    let mutating = MutatingWebhookConfiguration {
        metadata: metadata(),
        webhooks: Some(vec![
            MutatingWebhook {
                name: "pod-enabled-label.offloading.liqo.io".into(),
                rules: Some(vec![rule("", &["v1"], "pods", &["CREATE"])]),
                // Namespaces with the quick-offloading label whose NamespaceOffloading is not
                // admitted yet (a Namespace and a Deployment in one `kubectl apply`): the
                // label stands for the defaults. Disjoint from the selector below, so no pod
                // is reviewed twice; listed first because the API server evaluates the
                // selectors one after the other against its namespace cache, and a
                // scheduling label arriving between the two checks must not let a pod slip
                // past both.
                namespace_selector: Some(LabelSelector {
                    match_labels: Some([(ENABLED_LABEL.into(), "true".into())].into()),
                    match_expressions: Some(vec![
                        LabelSelectorRequirement {
                            key: SCHEDULING_ENABLED_LABEL.into(),
                            operator: "NotIn".into(),
                            values: Some(vec!["true".into()]),
                        },
                        spared(),
                    ]),
                }),
                reinvocation_policy: Some("IfNeeded".into()),
                ..common(Webhook::PodEnabledLabel)
            },
            MutatingWebhook {
                name: "pod.offloading.liqo.io".into(),
                rules: Some(vec![rule("", &["v1"], "pods", &["CREATE"])]),
                // Only namespaces where offloading is active, so every other pod in the
                // cluster never waits on this webhook. The label is set by the validating
                // webhook as the NamespaceOffloading is admitted (before the object is even
                // stored), so the very next pod is covered; the controller keeps it.
                namespace_selector: Some(LabelSelector {
                    match_labels: Some([(SCHEDULING_ENABLED_LABEL.into(), "true".into())].into()),
                    match_expressions: Some(vec![spared()]),
                }),
                // Our merge is idempotent: run again if a later webhook changed the pod, so
                // its affinity cannot undo the strategy.
                reinvocation_policy: Some("IfNeeded".into()),
                ..common(Webhook::Pod)
            },
            MutatingWebhook {
                name: "defaults.namespaceoffloading.offloading.liqo.io".into(),
                rules: Some(offloading_rule()),
                reinvocation_policy: Some("Never".into()),
                ..common(Webhook::OffloadingDefaults)
            },
        ]),
    };
    let m = common(Webhook::OffloadingValidation);
    // Creating the NamespaceOffloading labels its namespace (see the pod webhook); never
    // on a dry run.
    let validation_side_effects = "NoneOnDryRun".to_owned();
    let mut validating_webhooks = vec![ValidatingWebhook {
        name: "validate.namespaceoffloading.offloading.liqo.io".into(),
        rules: Some(offloading_rule()),
        client_config: m.client_config,
        admission_review_versions: m.admission_review_versions.clone(),
        side_effects: validation_side_effects,
        timeout_seconds: m.timeout_seconds,
        failure_policy: m.failure_policy.clone(),
        match_policy: m.match_policy.clone(),
        ..ValidatingWebhook::default()
    }];
    if !runtime_class.is_empty() {
        // A pod naming the offloading RuntimeClass in a namespace neither pod webhook
        // covers (not offloaded) would be sent to a virtual node by the class and wait
        // there forever: it is refused, saying why. Only such pods are sent here (the
        // match condition), so no other pod of the cluster waits on this webhook.
        validating_webhooks.push(ValidatingWebhook {
            name: "pod-opt-in.offloading.liqo.io".into(),
            rules: Some(vec![rule("", &["v1"], "pods", &["CREATE"])]),
            namespace_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![
                    LabelSelectorRequirement {
                        key: SCHEDULING_ENABLED_LABEL.into(),
                        operator: "NotIn".into(),
                        values: Some(vec!["true".into()]),
                    },
                    LabelSelectorRequirement {
                        key: ENABLED_LABEL.into(),
                        operator: "NotIn".into(),
                        values: Some(vec!["true".into()]),
                    },
                    spared(),
                ]),
            }),
            match_conditions: Some(vec![
                k8s_openapi::api::admissionregistration::v1::MatchCondition {
                    name: "names-the-offloading-runtime-class".into(),
                    expression: format!(
                        "has(object.spec.runtimeClassName) && object.spec.runtimeClassName == '{runtime_class}'"
                    ),
                },
            ]),
            client_config: target.client_config(Webhook::PodOptIn, ca_bundle),
            admission_review_versions: m.admission_review_versions,
            side_effects: "None".into(),
            timeout_seconds: m.timeout_seconds,
            failure_policy: m.failure_policy,
            match_policy: m.match_policy,
            ..ValidatingWebhook::default()
        });
    }
    let validating = ValidatingWebhookConfiguration {
        metadata: metadata(),
        webhooks: Some(validating_webhooks),
    };
    (mutating, validating)
}

/// What the manager writes into the webhook configurations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Registration {
    /// Both configurations whole: created if missing, and kept as this release has them
    /// (the test bed, the demo, a manager outside the cluster).
    #[default]
    Full,
    /// Only each webhook's `caBundle`, into configurations someone else installed and owns
    /// (`manifests/`, the Helm chart): an upgrade that changes them meets no field of ours.
    CaBundle,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(
        "the {kind} {WEBHOOK_CONFIGURATION} does not exist: with --webhook-registration ca-bundle the manager only fills in the caBundle of the configurations installed with it (manifests/webhooks.yaml, or the Helm chart); install them, or run with --webhook-registration full"
    )]
    Missing { kind: &'static str },
}

/// The part of a configuration that [`Registration::CaBundle`] applies: each webhook's name
/// (the key of the list) and its `caBundle`.
/// Only the webhooks named in `installed` get one: the installer decides which exist (a
/// part naming one it lacks would be refused as an incomplete webhook, and every caBundle
/// with it).
pub(crate) fn ca_bundle_only(
    configuration: &serde_json::Value,
    installed: &std::collections::BTreeSet<String>,
) -> serde_json::Value {
    let webhooks: Vec<serde_json::Value> = configuration["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["name"].as_str().is_some_and(|n| installed.contains(n)))
        .map(|w| {
            serde_json::json!({
                "name": w["name"],
                "clientConfig": {"caBundle": w["clientConfig"]["caBundle"]},
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": configuration["apiVersion"],
        "kind": configuration["kind"],
        "metadata": {"name": configuration["metadata"]["name"]},
        "webhooks": webhooks,
    })
}

/// Creates or updates both configurations (server-side apply, our field manager), whole or
/// only their caBundle.
pub(crate) async fn register(
    client: &Client,
    target: &Target,
    ca_bundle: Option<&str>,
    own_namespace: &str,
    runtime_class: &str,
    registration: Registration,
) -> Result<(), RegisterError> {
    let (mutating, validating) = configurations(target, ca_bundle, own_namespace, runtime_class);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut mutating = serde_json::to_value(mutating).map_err(kube::Error::SerdeError)?;
    let mut validating = serde_json::to_value(validating).map_err(kube::Error::SerdeError)?;
    let mutating_api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let validating_api = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    if registration == Registration::CaBundle {
        if ca_bundle.is_none() {
            tracing::info!("no CA to register: the webhook configurations are left as installed");
            return Ok(());
        }
        // Applied to a missing object, the part would be refused as an incomplete one.
        let Some(installed_mutating) = mutating_api.get_opt(WEBHOOK_CONFIGURATION).await? else {
            return Err(RegisterError::Missing {
                kind: "MutatingWebhookConfiguration",
            });
        };
        let Some(installed_validating) = validating_api.get_opt(WEBHOOK_CONFIGURATION).await?
        else {
            return Err(RegisterError::Missing {
                kind: "ValidatingWebhookConfiguration",
            });
        };
        let names = |webhooks: Vec<String>| webhooks.into_iter().collect();
        mutating = ca_bundle_only(
            &mutating,
            &names(
                installed_mutating
                    .webhooks
                    .unwrap_or_default()
                    .into_iter()
                    .map(|w| w.name)
                    .collect(),
            ),
        );
        validating = ca_bundle_only(
            &validating,
            &names(
                installed_validating
                    .webhooks
                    .unwrap_or_default()
                    .into_iter()
                    .map(|w| w.name)
                    .collect(),
            ),
        );
    }
    mutating_api
        .patch(WEBHOOK_CONFIGURATION, &params, &Patch::Apply(mutating))
        .await?;
    validating_api
        .patch(WEBHOOK_CONFIGURATION, &params, &Patch::Apply(validating))
        .await?;
    tracing::info!(?target, ?registration, "webhook configurations registered");
    Ok(())
}

/// Parses NAMESPACE/NAME[:PORT] (port 443 by default).
pub(crate) fn parse_service(spec: &str) -> Result<Target, String> {
    let bad = || format!("invalid service {spec:?}: use NAMESPACE/NAME or NAMESPACE/NAME:PORT");
    let (namespace, rest) = spec.split_once('/').ok_or_else(bad)?;
    let (name, port) = match rest.split_once(':') {
        Some((name, port)) => (name, port.parse().map_err(|_| bad())?),
        None => (rest, 443),
    };
    if namespace.is_empty() || name.is_empty() {
        return Err(bad());
    }
    Ok(Target::Service {
        namespace: namespace.into(),
        name: name.into(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_bundle_part_keeps_only_names_and_ca_bundles() {
        let target = parse_service("liqo/namespace-offloading").unwrap();
        let (mutating, _) =
            configurations(&target, Some("-----BEGIN CERTIFICATE-----"), "liqo", "liqo");
        let full = serde_json::to_value(mutating).unwrap();
        let encoded = full["webhooks"][0]["clientConfig"]["caBundle"].clone();
        assert!(encoded.as_str().is_some_and(|ca| !ca.is_empty()));
        let all = full["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_owned())
            .collect();
        let part = ca_bundle_only(&full, &all);
        assert_eq!(part["kind"], "MutatingWebhookConfiguration");
        assert_eq!(
            part["metadata"],
            serde_json::json!({"name": "namespace-offloading"})
        );
        let webhooks = part["webhooks"].as_array().unwrap();
        assert_eq!(webhooks.len(), full["webhooks"].as_array().unwrap().len());
        for w in webhooks {
            assert_eq!(w.as_object().unwrap().len(), 2, "{w}");
            assert_eq!(w["clientConfig"], serde_json::json!({"caBundle": encoded}));
        }
        // A webhook the installer left out (an older manifest) is not named in the part.
        let older = ["pod.offloading.liqo.io".to_owned()].into();
        let part = ca_bundle_only(&full, &older);
        assert_eq!(part["webhooks"].as_array().unwrap().len(), 1);
        assert_eq!(part["webhooks"][0]["name"], "pod.offloading.liqo.io");
    }

    #[test]
    fn service_specs_are_parsed_with_clear_errors() {
        assert!(matches!(
            parse_service("liqo/nso:8443").unwrap(),
            Target::Service { port: 8443, .. }
        ));
        assert!(matches!(
            parse_service("liqo/nso").unwrap(),
            Target::Service { port: 443, .. }
        ));
        for bad in ["nso", "/nso", "liqo/", "liqo/nso:http"] {
            assert!(
                parse_service(bad).unwrap_err().contains("NAMESPACE/NAME"),
                "{bad}"
            );
        }
    }

    #[test]
    fn pod_webhook_is_scoped_to_offloaded_namespaces_and_fails_closed() {
        let (m, v) = configurations(
            &Target::Url("https://127.0.0.1:9443/".into()),
            Some("PEM"),
            "liqo",
            "liqo",
        );
        let pod = m
            .webhooks
            .as_ref()
            .unwrap()
            .iter()
            .find(|w| w.name == "pod.offloading.liqo.io")
            .unwrap();
        assert_eq!(
            pod.client_config.url.as_deref(),
            Some("https://127.0.0.1:9443/mutate/pod")
        );
        assert_eq!(pod.client_config.ca_bundle.as_ref().unwrap().0, b"PEM");
        assert_eq!(
            pod.namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()[SCHEDULING_ENABLED_LABEL],
            "true"
        );
        assert_eq!(pod.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(pod.timeout_seconds, Some(5));
        assert_eq!(
            pod.rules.as_ref().unwrap()[0].operations.as_ref().unwrap(),
            &["CREATE"]
        );
        let validate = &v.webhooks.as_ref().unwrap()[0];
        assert_eq!(
            validate.rules.as_ref().unwrap()[0]
                .operations
                .as_ref()
                .unwrap(),
            &["CREATE", "UPDATE"]
        );
    }

    #[test]
    fn the_two_pod_webhooks_cover_offloaded_and_labelled_namespaces_without_overlap() {
        let (m, v) = configurations(
            &Target::Url("https://127.0.0.1:9443".into()),
            None,
            "liqo",
            "liqo",
        );
        let webhooks = m.webhooks.unwrap();
        let labelled = webhooks
            .iter()
            .find(|w| w.name == "pod-enabled-label.offloading.liqo.io")
            .unwrap();
        assert_eq!(
            labelled.client_config.url.as_deref(),
            Some("https://127.0.0.1:9443/mutate/pod/enabled-label")
        );
        let selector = labelled.namespace_selector.as_ref().unwrap();
        assert_eq!(
            selector.match_labels.as_ref().unwrap()[ENABLED_LABEL],
            "true"
        );
        let excluded = &selector.match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (excluded.key.as_str(), excluded.operator.as_str()),
            (SCHEDULING_ENABLED_LABEL, "NotIn")
        );
        assert_eq!(labelled.failure_policy.as_deref(), Some("Fail"));
        let validate = &v.webhooks.unwrap()[0];
        assert_eq!(validate.side_effects, "NoneOnDryRun");
        assert!(webhooks.iter().all(|w| w.side_effects == "None"));
    }

    #[test]
    fn service_target_names_the_path() {
        let target = Target::Service {
            namespace: "liqo".into(),
            name: "namespace-offloading".into(),
            port: 443,
        };
        let (_, v) = configurations(&target, None, "liqo", "liqo");
        let service = v.webhooks.unwrap()[0]
            .client_config
            .service
            .clone()
            .unwrap();
        assert_eq!(
            service.path.as_deref(),
            Some("/validate/namespace-offloading")
        );
        assert_eq!(service.port, Some(443));
    }
}
