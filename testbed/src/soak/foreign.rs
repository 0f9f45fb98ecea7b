//! What is not ours must stay as it was: in clusters 2 and 3, a namespace `foreign` with a
//! ConfigMap named as ours are (`settings`), a Secret and a Service; every object there and
//! every namespace of the cluster is recorded at the start (name and resourceVersion). Later
//! checks find the same objects unchanged, nothing new there, and no new namespace that is
//! not one of ours.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use kube::{Api, Client, Resource, ResourceExt, api::ListParams};
use serde_json::json;

use super::{REMOTES, SoakError, call, cmd};
use crate::Testbed;

pub const FOREIGN: &str = "foreign";

/// kind/name → resourceVersion.
pub type Objects = BTreeMap<String, String>;

/// Per remote cluster: the foreign namespace's objects, and the namespaces there at start.
pub struct Snapshot {
    pub objects: BTreeMap<usize, Objects>,
    pub namespaces: BTreeMap<usize, BTreeSet<String>>,
}

/// Creates the foreign objects in clusters 2 and 3 and records them once the cluster's own
/// controllers have added theirs (`default` ServiceAccount, `kube-root-ca.crt`).
pub async fn create(tb: &Testbed, clients: &[Client]) -> Result<Snapshot, SoakError> {
    let manifest = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": FOREIGN}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": FOREIGN},
         "data": {"owner": "someone else"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": FOREIGN},
         "stringData": {"password": "not yours"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": FOREIGN},
         "spec": {"ports": [{"port": 80}]}},
    ]})
    .to_string();
    let mut snapshot = Snapshot {
        objects: BTreeMap::new(),
        namespaces: BTreeMap::new(),
    };
    for n in REMOTES {
        let kubeconfig = tb.cluster(n).kubeconfig();
        cmd::kubectl(kubeconfig, &["create", "-f", "-"], Some(&manifest)).await?;
        let client = &clients[n - 1];
        let objects = cmd::retry(std::time::Duration::from_secs(60), || async {
            let objects = list(client).await?;
            let settled = objects.contains_key("ServiceAccount/default")
                && objects.contains_key("ConfigMap/kube-root-ca.crt");
            if settled {
                Ok(objects)
            } else {
                Err(SoakError::Setup(format!(
                    "cluster-{n}'s controllers have not filled namespace {FOREIGN} yet"
                )))
            }
        })
        .await?;
        snapshot.objects.insert(n, objects);
        snapshot.namespaces.insert(n, namespaces(client).await?);
    }
    Ok(snapshot)
}

/// Every object of the foreign namespace (and the namespace itself).
pub async fn list(client: &Client) -> Result<Objects, SoakError> {
    let mut objects = Objects::new();
    let ns = call(
        "reading namespace foreign",
        Api::<Namespace>::all(client.clone()).get(FOREIGN),
    )
    .await?;
    record(&mut objects, [ns]);
    record(&mut objects, items::<ConfigMap>(client).await?);
    record(&mut objects, items::<Secret>(client).await?);
    record(&mut objects, items::<Service>(client).await?);
    record(&mut objects, items::<ServiceAccount>(client).await?);
    record(&mut objects, items::<Pod>(client).await?);
    Ok(objects)
}

pub async fn namespaces(client: &Client) -> Result<BTreeSet<String>, SoakError> {
    let list = call(
        "listing namespaces",
        Api::<Namespace>::all(client.clone()).list(&ListParams::default()),
    )
    .await?;
    Ok(list.items.iter().map(ResourceExt::name_any).collect())
}

async fn items<K>(client: &Client) -> Result<Vec<K>, SoakError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let what = format!(
        "listing {}s in {FOREIGN}",
        K::kind(&K::DynamicType::default())
    );
    let api = Api::<K>::namespaced(client.clone(), FOREIGN);
    Ok(call(what, api.list(&ListParams::default())).await?.items)
}

fn record<K>(objects: &mut Objects, items: impl IntoIterator<Item = K>)
where
    K: Resource,
    K::DynamicType: Default,
{
    for item in items {
        let kind = K::kind(&K::DynamicType::default()).into_owned();
        objects.insert(
            format!("{kind}/{}", item.name_any()),
            item.resource_version().unwrap_or_default(),
        );
    }
}

/// What differs between two records of the foreign namespace, in words.
pub fn differences(before: &Objects, now: &Objects) -> Vec<String> {
    let mut out = Vec::new();
    for (key, version) in before {
        match now.get(key) {
            None => out.push(format!("{key} is gone")),
            Some(v) if v != version => {
                out.push(format!("{key} changed (resourceVersion {version} -> {v})"));
            }
            Some(_) => {}
        }
    }
    for key in now.keys().filter(|k| !before.contains_key(*k)) {
        out.push(format!("{key} appeared"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_what_changed_went_and_appeared() {
        let before = Objects::from([
            ("ConfigMap/settings".to_owned(), "10".to_owned()),
            ("Secret/creds".to_owned(), "11".to_owned()),
            ("Service/web".to_owned(), "12".to_owned()),
        ]);
        assert!(differences(&before, &before).is_empty());
        let now = Objects::from([
            ("ConfigMap/settings".to_owned(), "20".to_owned()),
            ("Service/web".to_owned(), "12".to_owned()),
            ("Pod/web-1".to_owned(), "21".to_owned()),
        ]);
        assert_eq!(
            differences(&before, &now),
            [
                "ConfigMap/settings changed (resourceVersion 10 -> 20)",
                "Secret/creds is gone",
                "Pod/web-1 appeared",
            ]
        );
    }
}
