//! Start-up checks of the cluster the manager runs against: a Kubernetes release outside
//! the tested range, or a CRD that is missing or lost what we rely on, is said plainly in
//! the log (with the fix) instead of surfacing later as a watch that never syncs. The
//! manager starts anyway: watches retry, and work once the cause is fixed.

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{WatchEvent, WatchParams},
};

/// The Kubernetes minors this release is tested on (`scripts/test-matrix`).
pub const SUPPORTED_MINORS: std::ops::RangeInclusive<u32> = 33..=37;

/// The CRDs the manager watches.
pub(crate) const CRDS: [&str; 2] = [
    "namespaceoffloadings.offloading.liqo.io",
    "remoteclusters.offloading.liqo.io",
];

/// What is wrong with running against Kubernetes `major.minor` (as `/version` reports them:
/// the minor may carry a `+`).
pub(crate) fn version_problem(major: &str, minor: &str) -> Option<String> {
    let minor_number: Option<u32> = minor.trim_end_matches('+').parse().ok();
    let (first, last) = (SUPPORTED_MINORS.start(), SUPPORTED_MINORS.end());
    match (major, minor_number) {
        ("1", Some(m)) if SUPPORTED_MINORS.contains(&m) => None,
        ("1", Some(m)) if m < *first => Some(format!(
            "Kubernetes 1.{m} is older than the supported 1.{first} to 1.{last}: CRD validation rules, server-side apply of status conditions and admission features this manager uses may be missing; upgrade the cluster"
        )),
        ("1", Some(m)) => Some(format!(
            "Kubernetes 1.{m} is newer than the tested 1.{first} to 1.{last}: it is expected to work, but was not tested"
        )),
        _ => Some(format!(
            "cannot tell the Kubernetes release from /version (major {major:?}, minor {minor:?}); supported: 1.{first} to 1.{last}"
        )),
    }
}

/// Whether the API server streams the initial list of a watch (`sendInitialEvents`, the
/// WatchList feature: on by default from 1.34; 1.33 refuses it, and kube-runtime does not
/// fall back).
pub(crate) fn streams_initial_lists(major: &str, minor: &str) -> bool {
    let minor: Option<u32> = minor.trim_end_matches('+').parse().ok();
    major == "1" && minor.is_some_and(|m| m >= 34)
}

/// Whether the cluster behind `client` streams initial lists: its release should
/// ([`streams_initial_lists`]), and a probe watch that selects nothing really gets its
/// initial-events bookmark (the feature gate can be turned off on any release). `false`
/// when unsure: list+watch always works.
pub(crate) async fn cluster_streams_initial_lists(client: &Client) -> bool {
    let release_has_it = match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await
    {
        Ok(Ok(v)) => streams_initial_lists(&v.major, &v.minor),
        _ => false,
    };
    if !release_has_it {
        return false;
    }
    let api = Api::<Namespace>::all(client.clone());
    let params = WatchParams::streaming_lists()
        .labels("offloading.liqo.io/watch-list-probe=none")
        .timeout(PROBE_TIMEOUT.as_secs() as u32);
    let probe = async {
        let events = api.watch(&params, "").await.ok()?;
        let mut events = std::pin::pin!(events);
        events.next().await
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Some(Ok(WatchEvent::Bookmark(_)))) => true,
        other => {
            tracing::warn!(
                answer = ?other.ok().flatten().map(|e| e.map(|_| "an event other than the initial bookmark")),
                "this API server does not stream initial lists (WatchList feature gate off?): using list+watch"
            );
            false
        }
    }
}

/// Bound on each start-up probe, so a slow API server delays nothing for long.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What is wrong with one of our CRDs as the API server holds it (`None`: not installed).
pub(crate) fn crd_problems(name: &str, crd: Option<&CustomResourceDefinition>) -> Vec<String> {
    let Some(crd) = crd else {
        return vec![format!(
            "CRD {name} is not installed: apply it with `kubectl apply -f manifests/crd.yaml` (or `namespace-offloading crd | kubectl apply -f -`); until then nothing is offloaded"
        )];
    };
    let mut problems = Vec::new();
    // The version this manager reads and writes (NamespaceOffloading: Liqo 1.x's v1beta1).
    let wanted = if name == CRDS[0] {
        "v1beta1"
    } else {
        "v1alpha1"
    };
    let served = crd.spec.versions.iter().find(|v| v.name == wanted);
    let Some(version) = served else {
        return vec![format!(
            "CRD {name} has no version {wanted} (an older manifest, or not this project's CRD): apply manifests/crd.yaml before this manager"
        )];
    };
    if !version.served {
        problems.push(format!(
            "CRD {name} does not serve {wanted}: apply manifests/crd.yaml"
        ));
    }
    if name == CRDS[0] && !conditions_keyed_by_type(version) {
        problems.push(format!(
            "CRD {name} keeps status.conditions as one list (an older manifest): the Ready and PodsConform conditions have two writers and would overwrite each other; apply manifests/crd.yaml before this manager"
        ));
    }
    if name == CRDS[0] {
        // The CEL rule keeping spec immutable even with the webhook down; an API server
        // that drops x-kubernetes-validations leaves only the webhook to enforce it.
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.get("spec"));
        let has_rule = schema
            .and_then(|s| s.x_kubernetes_validations.as_ref())
            .is_some_and(|rules| rules.iter().any(|r| r.rule.contains("oldSelf")));
        if !has_rule {
            problems.push(format!(
                "CRD {name} lacks its CEL rule `self == oldSelf` on spec (an older manifest, or an API server without CRD validation rules): only the webhook keeps spec immutable; apply manifests/crd.yaml"
            ));
        }
    }
    problems
}

fn conditions_keyed_by_type(
    version: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionVersion,
) -> bool {
    version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| s.properties.as_ref())
        .and_then(|p| p.get("status"))
        .and_then(|s| s.properties.as_ref())
        .and_then(|p| p.get("conditions"))
        .is_some_and(|c| c.x_kubernetes_list_type.as_deref() == Some("map"))
}

/// Runs every check and logs what it finds; never fails the start.
pub(crate) async fn check(client: &Client) {
    match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(v)) => match version_problem(&v.major, &v.minor) {
            Some(problem) => tracing::warn!(version = %v.git_version, "{problem}"),
            None => tracing::info!(version = %v.git_version, "Kubernetes release supported"),
        },
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the Kubernetes release (/version)"),
        Err(_) => tracing::warn!("the Kubernetes release (/version) did not come within 5 s"),
    }
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for name in CRDS {
        match tokio::time::timeout(PROBE_TIMEOUT, api.get_opt(name)).await {
            Ok(Ok(crd)) => {
                for problem in crd_problems(name, crd.as_ref()) {
                    tracing::error!(crd = name, "{problem}");
                }
            }
            // Reading CRDs is a convenience (RBAC in manifests/ allows exactly these two).
            Ok(Err(e)) => {
                tracing::debug!(crd = name, error = %e, "cannot read the CRD to check it")
            }
            Err(_) => tracing::debug!(crd = name, "the CRD did not come within 5 s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;
    use crate::model::api::RemoteCluster;

    #[test]
    fn versions_outside_the_tested_range_are_named_with_the_range() {
        assert_eq!(version_problem("1", "37"), None);
        assert_eq!(version_problem("1", "33+"), None);
        let old = version_problem("1", "30").unwrap();
        assert!(
            old.contains("1.30 is older than the supported 1.33 to 1.37"),
            "{old}"
        );
        let new = version_problem("1", "38").unwrap();
        assert!(new.contains("not tested"), "{new}");
        assert!(version_problem("", "").unwrap().contains("cannot tell"));
    }

    #[test]
    fn initial_lists_are_streamed_from_1_34_on() {
        assert!(!streams_initial_lists("1", "33"));
        assert!(streams_initial_lists("1", "34"));
        assert!(streams_initial_lists("1", "37+"));
        assert!(!streams_initial_lists("", ""));
    }

    #[test]
    fn our_own_crds_pass_and_a_missing_or_stripped_one_is_named_with_the_fix() {
        let nso = crate::model::api::offloading::crd().unwrap();
        assert!(crd_problems(CRDS[0], Some(&nso)).is_empty());
        // The CRD of the release before v1beta1: named, with the fix.
        let mut v1alpha1_only = nso.clone();
        v1alpha1_only.spec.versions.retain(|v| v.name == "v1alpha1");
        let problems = crd_problems(CRDS[0], Some(&v1alpha1_only));
        assert!(
            problems[0].contains("has no version v1beta1"),
            "{problems:?}"
        );
        assert!(crd_problems(CRDS[1], Some(&RemoteCluster::crd())).is_empty());

        let missing = crd_problems(CRDS[0], None);
        assert!(
            missing[0].contains("kubectl apply -f manifests/crd.yaml"),
            "{missing:?}"
        );

        let mut stripped = nso.clone();
        for v in &mut stripped.spec.versions {
            if let Some(spec) = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
                .and_then(|s| s.properties.as_mut())
                .and_then(|p| p.get_mut("spec"))
            {
                spec.x_kubernetes_validations = None;
            }
        }
        let problems = crd_problems(CRDS[0], Some(&stripped));
        assert!(problems[0].contains("self == oldSelf"), "{problems:?}");

        let mut old = nso.clone();
        for v in &mut old.spec.versions {
            if let Some(c) = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
                .and_then(|s| s.properties.as_mut())
                .and_then(|p| p.get_mut("status"))
                .and_then(|s| s.properties.as_mut())
                .and_then(|p| p.get_mut("conditions"))
            {
                c.x_kubernetes_list_type = None;
            }
        }
        let problems = crd_problems(CRDS[0], Some(&old));
        assert!(
            problems[0].contains("apply manifests/crd.yaml before"),
            "{problems:?}"
        );
    }
}
