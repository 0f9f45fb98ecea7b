//! The app under chaos: offloaded namespaces, each with a NamespaceOffloading `offloading`
//! and a Deployment `web`, a Service `web` and a ConfigMap `settings`; and what the soak
//! expects of each (its strategy and which remote clusters its selector picks).

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

use serde_json::{Value, json};

use super::{REMOTES, SoakError, cmd};

/// The Deployment of every namespace.
pub const DEPLOYMENT: &str = "web";

/// The namespaces created during the run: `soak-new-1`, `soak-new-2`, ...
const CREATED_PREFIX: &str = "soak-new-";

/// How long an object refused by a restarting webhook is retried.
const APPLY_WITHIN: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Local,
    Remote,
    LocalAndRemote,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Self::Local, Self::Remote, Self::LocalAndRemote];
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Local => "Local",
            Self::Remote => "Remote",
            Self::LocalAndRemote => "LocalAndRemote",
        })
    }
}

/// A NamespaceOffloading's spec as the soak writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offload {
    pub strategy: Strategy,
    /// `region In [..]` when set; every remote cluster otherwise.
    pub region: Option<&'static str>,
}

impl Offload {
    pub const REGIONS: [Option<&'static str>; 3] = [None, Some("eu"), Some("us")];

    /// The remote clusters (2, 3) the selector picks.
    pub fn selected(&self) -> Vec<usize> {
        match self.region {
            None => REMOTES.to_vec(),
            Some("eu") => vec![2],
            Some(_) => vec![3],
        }
    }

    fn manifest(&self, namespace: &str) -> Value {
        let mut spec = json!({"podOffloadingStrategy": self.strategy.to_string()});
        if let Some(region) = self.region {
            spec["clusterSelector"] = json!({"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "region", "operator": "In", "values": [region]}]}]});
        }
        json!({
            "apiVersion": "offloading.liqo.io/v1alpha1",
            "kind": "NamespaceOffloading",
            "metadata": {"name": "offloading", "namespace": namespace},
            "spec": spec,
        })
    }
}

impl fmt::Display for Offload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.region {
            Some(r) => write!(f, "{} region={r}", self.strategy),
            None => write!(f, "{} all clusters", self.strategy),
        }
    }
}

/// What the soak expects: the live namespaces with their spec, and those it deleted.
#[derive(Default)]
pub struct App {
    pub live: BTreeMap<String, Offload>,
    pub deleted: Vec<String>,
    created: usize,
}

impl App {
    /// The namespaces the soak starts with: each strategy, with and without a selector.
    pub fn initial() -> Self {
        let mut app = Self::default();
        for (name, strategy, region) in [
            ("soak-local", Strategy::Local, None),
            ("soak-remote-eu", Strategy::Remote, Some("eu")),
            ("soak-remote", Strategy::Remote, None),
            ("soak-both", Strategy::LocalAndRemote, None),
            ("soak-both-us", Strategy::LocalAndRemote, Some("us")),
        ] {
            app.live
                .insert(name.to_owned(), Offload { strategy, region });
        }
        app
    }

    /// A name never used before in this run (a deleted namespace may still be going).
    pub fn new_name(&mut self) -> String {
        self.created += 1;
        format!("{CREATED_PREFIX}{}", self.created)
    }

    /// Whether the soak created `namespace` during the run (not one of the first ones).
    pub fn created_here(namespace: &str) -> bool {
        namespace.starts_with(CREATED_PREFIX)
    }
}

/// The Deployment, Service and ConfigMap of a namespace.
fn workload(namespace: &str, replicas: u32) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "settings", "namespace": namespace},
         "data": {"greeting": "hello from the soak"}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": DEPLOYMENT, "namespace": namespace},
         "spec": {"selector": {"app": DEPLOYMENT}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": DEPLOYMENT, "namespace": namespace},
         "spec": {
             "replicas": replicas,
             "selector": {"matchLabels": {"app": DEPLOYMENT}},
             "template": {
                 "metadata": {"labels": {"app": DEPLOYMENT}},
                 "spec": {
                     "terminationGracePeriodSeconds": 5,
                     "containers": [{"name": "app", "image": "registry.example/app:1",
                                     "envFrom": [{"configMapRef": {"name": "settings"}}],
                                     "ports": [{"containerPort": 8080}]}],
                 },
             },
         }},
    ]})
}

async fn apply(kubeconfig: &Path, manifest: &Value) -> Result<(), SoakError> {
    let text = manifest.to_string();
    cmd::retry(APPLY_WITHIN, || {
        cmd::kubectl(kubeconfig, &["apply", "-f", "-"], Some(&text))
    })
    .await
    .map(drop)
}

/// Creates the namespace and its NamespaceOffloading (retried while the webhook refuses),
/// then its workload, so that every pod is admitted in an offloaded namespace.
pub async fn create(kubeconfig: &Path, namespace: &str, offload: Offload) -> Result<(), SoakError> {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    apply(kubeconfig, &ns).await?;
    apply(kubeconfig, &offload.manifest(namespace)).await?;
    apply(kubeconfig, &workload(namespace, 2)).await
}

/// Replaces the NamespaceOffloading (its spec is immutable: deleted, waited out, created
/// again), then restarts the Deployment so its pods are placed as the new spec says (pods
/// that already ran are never moved by the product, only reported).
pub async fn reselect(
    kubeconfig: &Path,
    namespace: &str,
    offload: Offload,
) -> Result<(), SoakError> {
    cmd::kubectl(
        kubeconfig,
        &[
            "delete",
            "namespaceoffloading",
            "offloading",
            "-n",
            namespace,
            "--wait=true",
            "--timeout=120s",
        ],
        None,
    )
    .await?;
    apply(kubeconfig, &offload.manifest(namespace)).await?;
    rollout_restart(kubeconfig, namespace).await
}

pub async fn delete(kubeconfig: &Path, namespace: &str) -> Result<(), SoakError> {
    cmd::kubectl(
        kubeconfig,
        &["delete", "namespace", namespace, "--wait=false"],
        None,
    )
    .await
    .map(drop)
}

pub async fn scale(kubeconfig: &Path, namespace: &str, replicas: u32) -> Result<(), SoakError> {
    let replicas = format!("--replicas={replicas}");
    let target = format!("deployment/{DEPLOYMENT}");
    cmd::kubectl(
        kubeconfig,
        &["scale", "-n", namespace, &target, &replicas],
        None,
    )
    .await
    .map(drop)
}

pub async fn rollout_restart(kubeconfig: &Path, namespace: &str) -> Result<(), SoakError> {
    let target = format!("deployment/{DEPLOYMENT}");
    let args = ["rollout", "restart", "-n", namespace, &target];
    cmd::retry(APPLY_WITHIN, || cmd::kubectl(kubeconfig, &args, None))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_picks_clusters_by_region() {
        let offload = |region| Offload {
            strategy: Strategy::Remote,
            region,
        };
        assert_eq!(offload(None).selected(), [2, 3]);
        assert_eq!(offload(Some("eu")).selected(), [2]);
        assert_eq!(offload(Some("us")).selected(), [3]);
        let manifest = offload(Some("eu")).manifest("ns");
        assert_eq!(manifest["spec"]["podOffloadingStrategy"], "Remote");
        assert_eq!(
            manifest["spec"]["clusterSelector"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
                [0],
            "eu"
        );
        assert!(
            offload(None).manifest("ns")["spec"]
                .get("clusterSelector")
                .is_none()
        );
    }
}
