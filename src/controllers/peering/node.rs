//! The virtual node and its Lease in the local cluster: applied when something changed
//! (not at every heartbeat, so an unchanged node wakes nothing), the Lease renewed at every
//! heartbeat while the remote answers, as a kubelet does.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Node},
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{MicroTime, Time},
    },
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
    runtime::reflector::ObjectRef,
};

use super::context::Context;
use crate::model::{
    api::remote_cluster::virtual_node_name, markers::FIELD_MANAGER, reason::is_not_found,
    virtual_node,
};

/// Brings the virtual node to what it should be and, if the remote answers, renews its
/// Lease. `allocatable` `None` keeps what the node offers now.
pub(crate) async fn apply(
    ctx: &Context,
    cluster_id: &str,
    labels: &BTreeMap<String, String>,
    allocatable: Option<&BTreeMap<String, Quantity>>,
    reachable: bool,
) -> Result<(), kube::Error> {
    let name = virtual_node_name(cluster_id);
    let existing: Option<Arc<Node>> = ctx.stores.nodes.get(&ObjectRef::new(&name));
    let current_allocatable = existing
        .as_ref()
        .and_then(|n| n.status.as_ref()?.allocatable.clone())
        .unwrap_or_default();
    let allocatable = allocatable.unwrap_or(&current_allocatable);
    let now = Time(Timestamp::now());
    let mut node = virtual_node::node(
        cluster_id,
        labels,
        allocatable,
        reachable,
        ctx.kubelet.as_ref(),
        &now,
    );
    virtual_node::keep_taints_of_others(&mut node, existing.as_deref());
    // Keep the condition's times while its status holds.
    if let Some(old) = existing
        .as_ref()
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        && let Some(new) = node.status.as_mut().and_then(|s| s.conditions.as_mut())
    {
        for c in new.iter_mut() {
            if let Some(o) = old
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status)
            {
                c.last_heartbeat_time = o.last_heartbeat_time.clone();
                c.last_transition_time = o.last_transition_time.clone();
            }
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if existing.as_deref().is_none_or(|e| !up_to_date(e, &node)) {
        let nodes = Api::<Node>::all(ctx.client.clone());
        let status = node.status.take();
        let body = serde_json::to_value(&node).map_err(kube::Error::SerdeError)?;
        nodes.patch(&name, &params, &Patch::Apply(body)).await?;
        let status = serde_json::json!({"apiVersion": "v1", "kind": "Node", "status": status});
        nodes
            .patch_status(&name, &params, &Patch::Apply(status))
            .await?;
    }
    if reachable {
        let lease = virtual_node::lease(
            cluster_id,
            &ctx.replica.holder,
            &MicroTime(Timestamp::now()),
        );
        let body = serde_json::to_value(&lease).map_err(kube::Error::SerdeError)?;
        Api::<Lease>::namespaced(ctx.client.clone(), virtual_node::LEASE_NAMESPACE)
            .patch(&name, &params, &Patch::Apply(body))
            .await?;
    }
    Ok(())
}

/// Whether the node already is what `desired` applies. Labels must match exactly: one we
/// applied before and no longer want goes only with an apply (a label someone else added
/// makes every heartbeat apply again, which changes nothing and so wakes nothing).
fn up_to_date(existing: &Node, desired: &Node) -> bool {
    let labels = existing.metadata.labels == desired.metadata.labels;
    // Ours among others' (a node's annotations are many writers').
    let annotations = desired.metadata.annotations.iter().flatten().all(|(k, v)| {
        existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            == Some(v)
    });
    let taints = virtual_node::same_taints(existing, desired);
    let status = match (&existing.status, &desired.status) {
        (Some(e), Some(d)) => {
            e.allocatable == d.allocatable
                && e.conditions == d.conditions
                && (d.addresses.is_none() || e.addresses == d.addresses)
                && (d.daemon_endpoints.is_none() || e.daemon_endpoints == d.daemon_endpoints)
        }
        _ => false,
    };
    labels && annotations && taints && status
}

/// Removes the virtual node and its Lease (already gone is fine).
pub(crate) async fn delete(ctx: &Context, cluster_id: &str) -> Result<(), kube::Error> {
    let name = virtual_node_name(cluster_id);
    for result in [
        Api::<Node>::all(ctx.client.clone())
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
        Api::<Lease>::namespaced(ctx.client.clone(), virtual_node::LEASE_NAMESPACE)
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
    ] {
        match result {
            Err(e) if !is_not_found(&e) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
