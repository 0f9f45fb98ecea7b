//! `peer NAME --kubeconfig FILE` and `unpeer NAME`: create or remove a RemoteCluster and
//! the Secret holding its credentials, after checking that the remote answers.

use std::{collections::BTreeMap, path::Path, time::Duration};

use k8s_openapi::{ByteString, api::core::v1::Secret, apimachinery::pkg::api::resource::Quantity};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams},
};

use crate::model::{
    api::{
        RemoteCluster, RemoteClusterSpec,
        remote_cluster::{AddressTranslation, SecretKeyRef, claimed_elsewhere},
    },
    markers::{ALLOW_EXEC_CREDENTIALS_ANNOTATION, FIELD_MANAGER, UNVERIFIED_IDENTITY_ANNOTATION},
};
use crate::plumbing::client::{self, LOCAL_USER_AGENT};

#[derive(Debug, clap::Args)]
pub(crate) struct PeerArgs {
    /// Name of the RemoteCluster to create.
    pub(crate) name: String,
    /// Kubeconfig for the remote cluster (stored in a Secret, embedded certificates and all).
    #[arg(long)]
    pub(crate) kubeconfig: std::path::PathBuf,
    /// Kubeconfig of the local cluster; default: $KUBECONFIG or ~/.kube/config.
    #[arg(long)]
    pub(crate) local_kubeconfig: Option<std::path::PathBuf>,
    /// Namespace for the credentials Secret (the manager's namespace).
    #[arg(long, default_value = "liqo")]
    pub(crate) namespace: String,
    /// Where the remote publishes its identity.
    #[arg(long, default_value = "liqo")]
    pub(crate) identity_namespace: String,
    /// The remote's cluster ID, when it publishes none.
    #[arg(long)]
    pub(crate) cluster_id: Option<String>,
    /// The remote's cluster labels (key=value,...), overriding what it publishes.
    #[arg(long, value_parser = crate::model::identity::parse_labels)]
    pub(crate) cluster_labels: Option<BTreeMap<String, String>>,
    /// Resources the virtual node offers (cpu=8,memory=16Gi,pods=110); default: the
    /// remote's Ready nodes' total.
    #[arg(long, value_parser = parse_resources)]
    pub(crate) resources: Option<BTreeMap<String, Quantity>>,
    /// How this cluster's endpoint addresses appear there, for networks that NAT between
    /// clusters: FROM=TO, two CIDRs of the same size (repeatable). Default: unchanged.
    #[arg(long = "address-translation", value_name = "FROM=TO", value_parser = parse_translation)]
    pub(crate) address_translation: Vec<AddressTranslation>,
    /// Accept a kubeconfig whose user gets credentials from a program (an exec plugin or an
    /// auth provider): the program, named by the remote's admin, runs here and in the
    /// manager. Recorded on the RemoteCluster; refused without it.
    #[arg(long)]
    pub(crate) allow_exec_credentials: bool,
}

fn parse_translation(text: &str) -> Result<AddressTranslation, String> {
    let (from, to) = text.split_once('=').ok_or_else(|| {
        format!("{text:?} has no '=': use FROM=TO, like 10.244.0.0/16=10.250.0.0/16")
    })?;
    let rule = AddressTranslation {
        from: from.trim().to_owned(),
        to: to.trim().to_owned(),
    };
    crate::model::translation::AddressMap::new(std::slice::from_ref(&rule))
        .map_err(|e| e.to_string())?;
    Ok(rule)
}

fn parse_resources(text: &str) -> Result<BTreeMap<String, Quantity>, String> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("resource {pair:?} has no '=': use name=quantity"))?;
            crate::model::quantity::parse(v).ok_or_else(|| {
                format!("resource {k}: {v:?} is not a quantity (e.g. 8, 500m, 16Gi)")
            })?;
            Ok((k.trim().to_owned(), Quantity(v.trim().to_owned())))
        })
        .collect()
}

pub(crate) fn secret_name(remote_cluster: &str) -> String {
    format!("remote-{remote_cluster}-kubeconfig")
}

async fn client_from(path: Option<&Path>) -> Result<Client, String> {
    crate::plumbing::client::local(path)
        .await
        .map_err(|e| e.to_string())
}

pub(crate) async fn peer(args: PeerArgs) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.kubeconfig)
        .map_err(|e| format!("cannot read {}: {e}", args.kubeconfig.display()))?;
    // Refused before anything connects: connecting would run the program.
    let remote = client::remote(&text, LOCAL_USER_AGENT, args.allow_exec_credentials)
        .await
        .map_err(|e| format!("{}: {e}", args.kubeconfig.display()))?;
    let version = tokio::time::timeout(Duration::from_secs(10), remote.apiserver_version())
        .await
        .map_err(|_| "the remote cluster did not answer within 10 s".to_owned())?
        .map_err(|e| {
            format!(
                "cannot reach the remote cluster with {}: {e}",
                args.kubeconfig.display()
            )
        })?;
    if let Some(problem) =
        crate::plumbing::preflight::version_problem(&version.major, &version.minor)
    {
        eprintln!("warning: the remote cluster: {problem}");
    }
    // Only a ConfigMap that is not there means "publishes none" (and a peering taken on
    // trust); one these credentials cannot read would leave every later check blind.
    let identity = crate::plumbing::identity::read(&remote, &args.identity_namespace)
        .await
        .map_err(|e| {
            format!(
                "cannot read the remote's identity with {}: {e}; the controller checks it at every connection, so these credentials must be able to get it",
                args.kubeconfig.display(),
            )
        })?;
    let published = identity.as_ref().map(|i| i.cluster_id.clone());
    let unverified = published.is_none();
    if let (Some(given), Some(published)) = (&args.cluster_id, &published)
        && given != published
    {
        return Err(format!(
            "the remote publishes cluster ID {published}, not {given}: these credentials reach another cluster than --cluster-id names"
        ));
    }
    // Bound to the credentials from now on: the controller checks, at every connection,
    // that they still reach this cluster.
    let cluster_id = args.cluster_id.clone().or(published).ok_or_else(|| {
        format!(
            "the remote publishes no identity in namespace {}: run the manager there, or pass --cluster-id",
            args.identity_namespace
        )
    })?;

    let local = client_from(args.local_kubeconfig.as_deref()).await?;
    // One peering per cluster: a second would fight the first over its virtual node.
    let existing = Api::<RemoteCluster>::all(local.clone())
        .list(&Default::default())
        .await
        .map_err(|e| format!("cannot list RemoteClusters: {e}"))?;
    if let Some(other) = claimed_elsewhere(&existing.items, &args.name, &cluster_id) {
        return Err(format!(
            "cluster {cluster_id} is already peered as RemoteCluster {}: use that one, or `namespace-offloading unpeer {}` first",
            other.metadata.name.as_deref().unwrap_or_default(),
            other.metadata.name.as_deref().unwrap_or_default()
        ));
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&args.name)),
            namespace: Some(args.namespace.clone()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "kubeconfig".to_owned(),
            ByteString(text.into_bytes()),
        )])),
        ..Secret::default()
    };
    let body = serde_json::to_value(&secret).map_err(|e| e.to_string())?;
    Api::<Secret>::namespaced(local.clone(), &args.namespace)
        .patch(&secret_name(&args.name), &params, &Patch::Apply(body))
        .await
        .map_err(|e| {
            format!(
                "cannot store the credentials Secret in namespace {}: {e}",
                args.namespace
            )
        })?;
    let mut rc = RemoteCluster::new(
        &args.name,
        RemoteClusterSpec {
            kubeconfig_secret: SecretKeyRef {
                namespace: args.namespace.clone(),
                name: secret_name(&args.name),
                key: None,
            },
            cluster_id: Some(cluster_id.clone()),
            cluster_labels: args.cluster_labels.clone(),
            identity_namespace: Some(args.identity_namespace.clone()),
            resources: args.resources.clone(),
            address_translation: args.address_translation.clone(),
        },
    );
    let mut annotations = BTreeMap::new();
    if unverified {
        annotations.insert(UNVERIFIED_IDENTITY_ANNOTATION.to_owned(), "true".to_owned());
        eprintln!(
            "warning: the remote publishes no identity: that these credentials keep reaching cluster {cluster_id} cannot be checked (run the manager there to have it checked at every connection)"
        );
    }
    if args.allow_exec_credentials {
        annotations.insert(
            ALLOW_EXEC_CREDENTIALS_ANNOTATION.to_owned(),
            "true".to_owned(),
        );
        eprintln!(
            "warning: RemoteCluster {} allows credentials from a program: the manager runs it, and it must exist in the manager's image",
            args.name
        );
    }
    if !annotations.is_empty() {
        rc.metadata.annotations = Some(annotations);
    }
    let body = serde_json::to_value(&rc).map_err(|e| e.to_string())?;
    Api::<RemoteCluster>::all(local)
        .patch(&args.name, &params, &Patch::Apply(body))
        .await
        .map_err(|e| format!("cannot create RemoteCluster {}: {e}", args.name))?;
    let labels = args
        .cluster_labels
        .clone()
        .or(identity.map(|i| i.labels))
        .unwrap_or_default();
    eprintln!(
        "peered with {} (Kubernetes {}, cluster ID {cluster_id}, labels {labels:?}); virtual node liqo-{cluster_id} follows",
        args.name, version.git_version
    );
    Ok(())
}

pub(crate) async fn unpeer(
    name: &str,
    namespace: &str,
    local_kubeconfig: Option<&Path>,
) -> Result<(), String> {
    let local = client_from(local_kubeconfig).await?;
    let rc = Api::<RemoteCluster>::all(local.clone());
    match rc.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(e) if crate::model::reason::is_not_found(&e) => {
            return Err(format!("no RemoteCluster {name}"));
        }
        Err(e) => return Err(format!("cannot delete RemoteCluster {name}: {e}")),
    }
    match Api::<Secret>::namespaced(local, namespace)
        .delete(&secret_name(name), &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(e) if crate::model::reason::is_not_found(&e) => {}
        Err(e) => return Err(format!("cannot delete the credentials Secret: {e}")),
    }
    eprintln!(
        "unpeered {name}: its virtual node is removed, and namespaces offloaded there count as gone"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_parse_with_clear_errors() {
        let r = parse_resources("cpu=8,memory=16Gi,pods=110").unwrap();
        assert_eq!(r["memory"].0, "16Gi");
        assert!(parse_resources("cpu").unwrap_err().contains("no '='"));
        assert!(
            parse_resources("cpu=lots")
                .unwrap_err()
                .contains("not a quantity")
        );
    }
}
