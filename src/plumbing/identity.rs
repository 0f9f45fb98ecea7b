//! The cluster identity ConfigMap on the wire: this cluster publishes its own, and reads
//! its peers'. What it holds and how it parses is `model::identity`'s.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

use crate::model::{
    identity::{ClusterIdentity, ReadError},
    markers::{FIELD_MANAGER, IDENTITY_CONFIGMAP},
    reason::{Reason, classify},
};

/// Creates or updates the ConfigMap (server-side apply).
pub(crate) async fn publish(
    identity: &ClusterIdentity,
    client: &Client,
    namespace: &str,
) -> Result<(), kube::Error> {
    let cm =
        serde_json::to_value(identity.to_configmap(namespace)).map_err(kube::Error::SerdeError)?;
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            IDENTITY_CONFIGMAP,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(cm),
        )
        .await?;
    Ok(())
}

/// Reads a cluster's published identity; `None` when it publishes none.
pub(crate) async fn read(
    client: &Client,
    namespace: &str,
) -> Result<Option<ClusterIdentity>, ReadError> {
    match Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(IDENTITY_CONFIGMAP)
        .await
    {
        Ok(Some(cm)) => ClusterIdentity::from_configmap(&cm)
            .map(Some)
            .map_err(|why| ReadError::Invalid(format!("{namespace}/{IDENTITY_CONFIGMAP}: {why}"))),
        Ok(None) => Ok(None),
        Err(e) if classify(&e) == Reason::Forbidden => Err(ReadError::Forbidden(format!(
            "{namespace}/{IDENTITY_CONFIGMAP}: {e}"
        ))),
        Err(e) => Err(ReadError::Unreachable(e.to_string())),
    }
}
