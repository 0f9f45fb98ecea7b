//! Keeps each offloaded namespace's ConfigMaps, Secrets, ServiceAccounts, Services,
//! EndpointSlices, Ingresses and NetworkPolicies copied into its remote namespace in every
//! cluster where that namespace is Ready (whether or not pods run there): created, kept in
//! sync, and deleted with the original (or once the reflection policy leaves it home). An
//! Ingress's load-balancer addresses there come back to its status here. Only copies carrying our markers are ever changed or deleted; a name taken
//! there by someone else is left alone and reported (an event on the original, a metric).
//! Reads come from the local shared watches and each peer's watch of our copies.

use std::{collections::BTreeSet, fmt::Debug, sync::Arc, time::Duration};

use k8s_openapi::api::{
    core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount},
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, NetworkPolicy},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::EventType,
        reflector::{ObjectRef, Store},
    },
};
use serde::{Serialize, de::DeserializeOwned};

use crate::plumbing::{backoff, scoped::Coverage};
use crate::{
    context::peers::{Peer, Watched},
    model::{
        api::{NamespaceOffloading, RemoteCluster, remote_cluster::virtual_node_name},
        markers::FIELD_MANAGER,
        reason::{Reason, classify, is_not_found},
        status::READY,
    },
};
use crate::{
    context::remote_call::{RemoteError, remote},
    model::{
        forge::{
            network,
            objects::{self, Destination},
            services,
        },
        reflection_policy::PolicyKind,
        remote_namespace::{Writable, writable},
        translation::AddressMap,
    },
};
use crate::{
    context::{Shared, Stores},
    model::preconditions::only_this,
};

/// Reflection needs nothing beyond what every worker shares.
pub(crate) type Context = Shared;

/// Why reflecting a namespace's objects failed (retried with a backoff).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ObjectsError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("cannot write the load-balancer addresses of Ingress {namespace}/{name}: {source}")]
    IngressStatus {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// A kind copied into remote namespaces.
pub(crate) trait Reflected:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    const API_VERSION: &'static str = "v1";
    /// The policy deciding which objects of this kind cross.
    const POLICY: PolicyKind;
    /// The copy for that cluster, unless the object stays home.
    fn copy(&self, to: &Destination) -> Option<Self>;
    /// Whether the remote copy's content is what `desired` says (metadata compared apart).
    fn same_content(&self, desired: &Self) -> bool;
    /// The peer's watch of our copies of this kind.
    fn remote(peer: &Peer) -> &Watched<Self>;
    /// The local store of this kind, and which namespaces it holds completely.
    fn local(stores: &Stores) -> (&Store<Self>, &Coverage);
    /// Whether the copy cannot be changed into `desired` (what differs is immutable there):
    /// it is deleted, and created anew once gone.
    fn replaced_by(&self, _desired: &Self) -> bool {
        false
    }
    /// Whether the reflection policy lets this object cross.
    fn reflected(&self, ctx: &Context) -> bool {
        ctx.reflection.reflects(Self::POLICY, self.meta())
    }
}

impl Reflected for ConfigMap {
    const KIND: &'static str = "ConfigMap";
    const POLICY: PolicyKind = PolicyKind::ConfigMap;
    fn copy(&self, to: &Destination) -> Option<Self> {
        objects::configmap(self, to.local_cluster_id, to.remote_namespace)
    }
    fn same_content(&self, d: &Self) -> bool {
        self.data == d.data && self.binary_data == d.binary_data && self.immutable == d.immutable
    }
    fn remote(peer: &Peer) -> &Watched<Self> {
        &peer.configmaps
    }
    fn local(stores: &Stores) -> (&Store<Self>, &Coverage) {
        (&stores.configmaps, &stores.covered.configmaps)
    }
    fn replaced_by(&self, _: &Self) -> bool {
        self.immutable == Some(true)
    }
}

impl Reflected for Secret {
    const KIND: &'static str = "Secret";
    const POLICY: PolicyKind = PolicyKind::Secret;
    fn copy(&self, to: &Destination) -> Option<Self> {
        objects::secret(self, to.local_cluster_id, to.remote_namespace)
    }
    fn same_content(&self, d: &Self) -> bool {
        self.data == d.data && self.type_ == d.type_ && self.immutable == d.immutable
    }
    fn remote(peer: &Peer) -> &Watched<Self> {
        &peer.secrets
    }
    fn local(stores: &Stores) -> (&Store<Self>, &Coverage) {
        (&stores.secrets, &stores.covered.secrets)
    }
    fn replaced_by(&self, d: &Self) -> bool {
        // A Secret's type never changes.
        self.immutable == Some(true) || self.type_ != d.type_
    }
}

impl Reflected for ServiceAccount {
    const KIND: &'static str = "ServiceAccount";
    const POLICY: PolicyKind = PolicyKind::ServiceAccount;
    fn copy(&self, to: &Destination) -> Option<Self> {
        objects::service_account(self, to.local_cluster_id, to.remote_namespace)
    }
    fn same_content(&self, d: &Self) -> bool {
        self.image_pull_secrets == d.image_pull_secrets
            && self.automount_service_account_token == d.automount_service_account_token
    }
    fn remote(peer: &Peer) -> &Watched<Self> {
        &peer.service_accounts
    }
    fn local(stores: &Stores) -> (&Store<Self>, &Coverage) {
        (&stores.service_accounts, &stores.covered.service_accounts)
    }
}

impl Reflected for Service {
    const KIND: &'static str = "Service";
    const POLICY: PolicyKind = PolicyKind::Service;
    fn copy(&self, to: &Destination) -> Option<Self> {
        services::service(self, to)
    }
    fn same_content(&self, d: &Self) -> bool {
        services::same_service(self, d)
    }
    fn remote(peer: &Peer) -> &Watched<Self> {
        &peer.services
    }
    fn local(stores: &Stores) -> (&Store<Self>, &Coverage) {
        (&stores.services, &stores.covered.services)
    }
    fn replaced_by(&self, d: &Self) -> bool {
        services::replaced_by(self, d)
    }
}

impl Reflected for EndpointSlice {
    const KIND: &'static str = "EndpointSlice";
    const API_VERSION: &'static str = "discovery.k8s.io/v1";
    const POLICY: PolicyKind = PolicyKind::EndpointSlice;
    fn copy(&self, to: &Destination) -> Option<Self> {
        services::endpoint_slice(self, to)
    }
    fn same_content(&self, d: &Self) -> bool {
        services::same_slice(self, d)
    }
    fn remote(peer: &Peer) -> &Watched<Self> {
        &peer.endpoint_slices
    }
    fn local(stores: &Stores) -> (&Store<Self>, &Coverage) {
        (&stores.endpoint_slices, &stores.covered.endpoint_slices)
    }
    /// Its own marks, else its Service's.
    fn reflected(&self, ctx: &Context) -> bool {
        let service = self
            .labels()
            .get(services::SERVICE_NAME_LABEL)
            .zip(self.namespace())
            .and_then(|(name, ns)| ctx.stores.services.get(&ObjectRef::new(name).within(&ns)));
        ctx.reflection
            .reflects_slice(self.meta(), service.as_ref().map(|s| s.meta()))
    }
}

impl Reflected for Ingress {
    const KIND: &'static str = "Ingress";
    const API_VERSION: &'static str = "networking.k8s.io/v1";
    const POLICY: PolicyKind = PolicyKind::Ingress;
    fn copy(&self, to: &Destination) -> Option<Self> {
        Some(network::ingress(self, to))
    }
    fn same_content(&self, d: &Self) -> bool {
        network::same_ingress(self, d)
    }
    fn remote(peer: &Peer) -> &Watched<Self> {
        &peer.ingresses
    }
    fn local(stores: &Stores) -> (&Store<Self>, &Coverage) {
        (&stores.ingresses, &stores.covered.ingresses)
    }
}

impl Reflected for NetworkPolicy {
    const KIND: &'static str = "NetworkPolicy";
    const API_VERSION: &'static str = "networking.k8s.io/v1";
    const POLICY: PolicyKind = PolicyKind::NetworkPolicy;
    fn copy(&self, to: &Destination) -> Option<Self> {
        Some(network::network_policy(self, to))
    }
    fn same_content(&self, d: &Self) -> bool {
        network::same_network_policy(self, d)
    }
    fn remote(peer: &Peer) -> &Watched<Self> {
        &peer.network_policies
    }
    fn local(stores: &Stores) -> (&Store<Self>, &Coverage) {
        (&stores.network_policies, &stores.covered.network_policies)
    }
}

/// The clusters where this offloading's remote namespace is Ready.
fn ready_clusters(nso: &NamespaceOffloading) -> Vec<String> {
    nso.status
        .iter()
        .flat_map(|s| s.remote_namespaces_conditions.iter())
        .filter(|(_, conditions)| {
            conditions
                .iter()
                .any(|c| c.type_ == READY && c.status == "True")
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// This worker's name in metrics and in the backoff's keys.
pub(crate) const WORKER: &str = "namespace-objects";

pub(crate) async fn reconcile(
    nso: Arc<NamespaceOffloading>,
    ctx: Arc<Context>,
) -> Result<Action, ObjectsError> {
    // Ending: the remote namespaces go with everything in them, and the addresses of our
    // Ingress copies leave the local status.
    if nso.metadata.deletion_timestamp.is_some() {
        let namespace = nso.namespace().unwrap_or_default();
        ingress_status_back(&ctx, &namespace, "", &[]).await?;
        return Ok(Action::await_change());
    }
    let _timer = ctx.metrics.reconcile("namespace-objects");
    let namespace = nso.namespace().unwrap_or_default();
    let Some(remote_namespace) = nso
        .status
        .as_ref()
        .and_then(|s| s.remote_namespace_name.clone())
    else {
        return Ok(Action::await_change());
    };
    let mut waiting = Listing::Listed;
    let mut first_error = None;
    let ready = ready_clusters(&nso);
    for cluster_id in &ready {
        let cluster_id = cluster_id.clone();
        let Some(peer) = ctx.peers.get(&cluster_id) else {
            continue;
        };
        if peer.unreachable.is_some() {
            continue;
        }
        // Reported Ready is not enough: the namespace there must also be ours now (the
        // status lags one deleted and created again by someone else).
        let existing = peer
            .namespaces
            .store
            .get(&ObjectRef::new(&remote_namespace));
        let conditions = nso
            .status
            .as_ref()
            .and_then(|s| s.remote_namespaces_conditions.get(&cluster_id))
            .map_or(&[][..], Vec::as_slice);
        match writable(
            existing.as_deref(),
            conditions,
            &ctx.replica.local_cluster_id,
            &namespace,
        ) {
            Writable::Yes => {}
            Writable::NotYet => {
                waiting = waiting.max(Listing::NotYet);
                continue;
            }
            Writable::Never(_) => continue,
        }
        let addresses = match translation(&ctx.stores.remote_clusters, &peer.remote_cluster) {
            Ok(map) => map,
            Err(e) => {
                // The CRD's rule keeps such rules out; an older CRD may not.
                tracing::warn!(%cluster_id, error = %e, "address translation ignored");
                AddressMap::default()
            }
        };
        let virtual_node = virtual_node_name(&cluster_id);
        let to = Destination {
            local_cluster_id: &ctx.replica.local_cluster_id,
            remote_namespace: &remote_namespace,
            virtual_node: &virtual_node,
            addresses: &addresses,
            policy: &ctx.reflection,
        };
        let at = (&peer, cluster_id.as_str(), namespace.as_str(), &to);
        // Every kind in every cluster is tried, whatever failed before it, except in a
        // cluster that does not answer.
        match reflect_kinds(&ctx, at).await {
            Ok(listing) => waiting = waiting.max(listing),
            Err(e) => {
                first_error.get_or_insert(ObjectsError::Remote(e));
            }
        }
    }
    if let Err(e) = ingress_status_back(&ctx, &namespace, &remote_namespace, &ready).await {
        first_error.get_or_insert(e);
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    // A peer whose watches have not listed yet: look again soon; one whose watch of a kind
    // fails (our account there may not read it): now and then, until it lists.
    Ok(match waiting {
        Listing::NotYet => Action::requeue(Duration::from_secs(2)),
        Listing::Failing => Action::requeue(Duration::from_secs(30)),
        Listing::Listed => Action::await_change(),
    })
}

/// Whether the watches a reflection reads have listed, from the best case to the worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Listing {
    Listed,
    /// The peer's watch of a kind fails (a Forbidden there, typically): that kind waits
    /// for it, the others go on, and the RemoteCluster's `WatchesListed` says why.
    Failing,
    NotYet,
}

/// Every kind into one cluster, and whether the watches there have all listed. The first
/// error is returned once every kind was tried (at once, for a cluster that does not answer).
async fn reflect_kinds(ctx: &Context, at: At<'_>) -> Result<Listing, RemoteError> {
    let mut listed = Listing::Listed;
    let mut first_error = None;
    let mut note = |kind: Result<Listing, RemoteError>| match kind {
        Ok(l) => {
            listed = listed.max(l);
            None
        }
        Err(e) if e.cluster_down() => Some(e),
        Err(e) => {
            first_error.get_or_insert(e);
            None
        }
    };
    if let Some(down) = note(reflect::<ConfigMap>(ctx, at).await) {
        return Err(down);
    }
    if let Some(down) = note(reflect::<Secret>(ctx, at).await) {
        return Err(down);
    }
    if let Some(down) = note(reflect::<ServiceAccount>(ctx, at).await) {
        return Err(down);
    }
    if let Some(down) = note(reflect::<Service>(ctx, at).await) {
        return Err(down);
    }
    if let Some(down) = note(reflect::<EndpointSlice>(ctx, at).await) {
        return Err(down);
    }
    if let Some(down) = note(reflect::<Ingress>(ctx, at).await) {
        return Err(down);
    }
    if let Some(down) = note(reflect::<NetworkPolicy>(ctx, at).await) {
        return Err(down);
    }
    first_error.map_or(Ok(listed), Err)
}

/// Brings the load-balancer addresses the remote ingress controllers gave our copies back
/// to each local Ingress's status (those of every cluster, each once), beside what others
/// (a local ingress controller) wrote there; addresses of copies that are gone (the
/// Ingress no longer reflected, the cluster deselected, the offloading ending: no
/// `clusters`) are taken out again.
async fn ingress_status_back(
    ctx: &Context,
    namespace: &str,
    remote_namespace: &str,
    clusters: &[String],
) -> Result<(), ObjectsError> {
    let peers: Vec<_> = clusters.iter().filter_map(|id| ctx.peers.get(id)).collect();
    let api = Api::<Ingress>::namespaced(ctx.client.clone(), namespace);
    let local = ctx
        .stores
        .ingresses
        .state()
        .into_iter()
        .filter(|i| i.meta().namespace.as_deref() == Some(namespace));
    for ingress in local {
        let name = ingress.name_any();
        let copies: Vec<_> = if ingress.reflected(ctx) {
            peers
                .iter()
                .filter_map(|peer| {
                    peer.ingresses
                        .store
                        .get(&ObjectRef::new(&name).within(remote_namespace))
                })
                .filter(|copy| objects::ours(copy.meta(), &ctx.replica.local_cluster_id, namespace))
                .collect()
        } else {
            Vec::new()
        };
        let remote = network::copies_addresses(copies.iter().map(|c| &**c));
        let plan = network::status_plan(&ingress, &remote);
        let failed = |source| ObjectsError::IngressStatus {
            namespace: namespace.to_owned(),
            name: name.clone(),
            source,
        };
        // The record first while addresses are added (so that no address of ours is ever
        // there unrecorded), last once they are taken out.
        let record = |annotation: &Option<String>| {
            serde_json::json!({"metadata": {"annotations": {
                network::LOAD_BALANCER_ANNOTATION: annotation}}})
        };
        let adding = plan.annotation.as_ref().is_some_and(Option::is_some);
        if adding && let Some(annotation) = &plan.annotation {
            ignore_gone(
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(record(annotation)),
                )
                .await,
            )
            .map_err(failed)?;
        }
        if let Some(entries) = &plan.status {
            let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": entries}}});
            ignore_gone(
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await,
            )
            .map_err(failed)?;
        }
        if !adding && let Some(annotation) = &plan.annotation {
            ignore_gone(
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(record(annotation)),
                )
                .await,
            )
            .map_err(failed)?;
        }
    }
    Ok(())
}

/// A write to an object deleted meanwhile has nothing left to do.
fn ignore_gone<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(e) if !is_not_found(&e) => Err(e),
        _ => Ok(()),
    }
}

/// The peering's address translation.
fn translation(
    remote_clusters: &Store<RemoteCluster>,
    remote_cluster: &str,
) -> Result<AddressMap, crate::model::translation::TranslationError> {
    remote_clusters
        .get(&ObjectRef::new(remote_cluster))
        .map_or(Ok(AddressMap::default()), |rc| {
            AddressMap::new(&rc.spec.address_translation)
        })
}

/// Which peer, cluster, local namespace and destination a reflection is for.
type At<'a> = (&'a Peer, &'a str, &'a str, &'a Destination<'a>);

/// Brings one kind in one cluster's remote namespace to the local namespace's objects;
/// not `Listed` when the peer's watch of that kind, or the local one of that namespace, has
/// not listed yet (nothing is done: every copy would look orphaned). Each
/// object is its own try: one that fails (refused there, say) does not hold up the others,
/// and the first error is returned once all were tried. A cluster that does not answer
/// ends it at once (each next call would wait as long).
async fn reflect<K: Reflected>(ctx: &Context, at: At<'_>) -> Result<Listing, RemoteError> {
    let (local, covered) = K::local(&ctx.stores);
    let (peer, cluster_id, namespace, to) = at;
    let remote_namespace = to.remote_namespace;
    let copies = K::remote(peer);
    if !copies.listed.now() {
        let failing = copies.failure.lock().is_ok_and(|f| f.is_some());
        return Ok(if failing {
            Listing::Failing
        } else {
            Listing::NotYet
        });
    }
    if !covered.covers(namespace) {
        return Ok(Listing::NotYet);
    }
    let mut first_error = None;
    let mut wanted = BTreeSet::new();
    let originals = local
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace));
    for original in originals {
        // Left home by the policy: a copy made before is deleted below, as if its
        // original were gone.
        if !original.reflected(ctx) {
            continue;
        }
        let Some(mut desired) = original.copy(to) else {
            continue;
        };
        ctx.reflection.strip(desired.meta_mut());
        wanted.insert(original.name_any());
        if let Err(e) = reflect_one(ctx, at, &*original, desired).await {
            if e.cluster_down() {
                return Err(e);
            }
            refused(ctx, &*original, cluster_id, &e).await;
            first_error.get_or_insert(e);
        }
    }
    // Copies whose original is gone.
    let api = Api::<K>::namespaced(peer.client.clone(), remote_namespace);
    for copy in copies.store.state() {
        let name = copy.name_any();
        if copy.meta().namespace.as_deref() != Some(remote_namespace)
            || wanted.contains(&name)
            || !objects::ours(copy.meta(), &ctx.replica.local_cluster_id, namespace)
        {
            continue;
        }
        let params = DeleteParams {
            preconditions: only_this(copy.meta()),
            ..DeleteParams::default()
        };
        match remote(cluster_id, api.delete(&name, &params)).await {
            Err(RemoteError::Api { source, .. }) if is_not_found(&source) => {}
            Err(e) if e.cluster_down() => return Err(e),
            Err(e) => {
                first_error.get_or_insert(e);
            }
            Ok(_) => {}
        }
    }
    first_error.map_or(Ok(Listing::Listed), Err)
}

/// Brings the copy of one object to `desired`.
async fn reflect_one<K: Reflected>(
    ctx: &Context,
    (peer, cluster_id, namespace, to): At<'_>,
    original: &K,
    desired: K,
) -> Result<(), RemoteError> {
    let remote_namespace = to.remote_namespace;
    let api = Api::<K>::namespaced(peer.client.clone(), remote_namespace);
    let name = original.name_any();
    let existing = K::remote(peer)
        .store
        .get(&ObjectRef::new(&name).within(remote_namespace));
    match existing {
        // Our cluster's label alone (what the watch selects on) is not ownership: a
        // copy is ours only for the namespace its origin annotation names.
        Some(existing)
            if !objects::ours(existing.meta(), &ctx.replica.local_cluster_id, namespace) =>
        {
            conflict(ctx, original, cluster_id, remote_namespace).await;
        }
        Some(existing)
            if objects::same_metadata(existing.meta(), desired.meta())
                && existing.same_content(&desired) => {}
        // Only a content change needs a new object: labels and annotations change in
        // place even on an immutable copy (one the remote's webhooks mark would
        // otherwise be deleted and made anew forever).
        Some(existing) if !existing.same_content(&desired) && existing.replaced_by(&desired) => {
            // Its deletion wakes us, and the copy is then created as it should be.
            let params = DeleteParams {
                preconditions: only_this(existing.meta()),
                ..DeleteParams::default()
            };
            match remote(cluster_id, api.delete(&name, &params)).await {
                Err(RemoteError::Api { source, .. })
                    if is_not_found(&source) || classify(&source) == Reason::Conflict => {}
                other => {
                    other?;
                }
            }
        }
        Some(_) => {
            // Ours: applied over, as our field manager.
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let mut body = serde_json::to_value(&desired).map_err(|e| RemoteError::Api {
                cluster_id: cluster_id.to_owned(),
                source: kube::Error::SerdeError(e),
            })?;
            body["apiVersion"] = K::API_VERSION.into();
            body["kind"] = K::KIND.into();
            remote(cluster_id, api.patch(&name, &params, &Patch::Apply(body))).await?;
        }
        None => match remote(cluster_id, api.create(&PostParams::default(), &desired)).await {
            Ok(_) => {}
            Err(RemoteError::Api { source, .. }) if classify(&source) == Reason::AlreadyExists => {
                let found = remote(cluster_id, api.get_opt(&name)).await?;
                if found.is_some_and(|f| {
                    !objects::ours(f.meta(), &ctx.replica.local_cluster_id, namespace)
                }) {
                    conflict(ctx, original, cluster_id, remote_namespace).await;
                }
            }
            // The namespace there is being deleted or not yet created: the offloading
            // controller is on it, and its status change wakes us. (Any other refusal, a
            // quota or a policy there, is an error: reported, and tried again.)
            Err(RemoteError::Api { source, .. })
                if is_not_found(&source) || namespace_terminating(&source) => {}
            Err(e) => return Err(e),
        },
    }
    Ok(())
}

/// Which Secrets named by `pod` are this cluster's service-account tokens: never copied,
/// and left out of its twin (`forge::twin::adapt`). The local watch leaves tokens out, so a
/// name it lacks is asked of the API server, once per twin made.
pub(crate) async fn home_tokens(ctx: &Context, pod: &Pod) -> Result<BTreeSet<String>, kube::Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let token = |s: &Secret| s.type_.as_deref() == Some(objects::TOKEN_SECRET_TYPE);
    let mut tokens = BTreeSet::new();
    for name in crate::model::forge::twin::secret_names(pod) {
        let is_token = match ctx
            .stores
            .secrets
            .get(&ObjectRef::new(&name).within(&namespace))
        {
            Some(secret) => token(&secret),
            None => api.get_opt(&name).await?.is_some_and(|s| token(&s)),
        };
        if is_token {
            tokens.insert(name);
        }
    }
    Ok(tokens)
}

/// Whether a create was refused because the namespace there is being deleted: the
/// NamespaceLifecycle admission's 403 names the cause `NamespaceTerminating` (its message
/// is read only when a proxy in between dropped the details).
fn namespace_terminating(error: &kube::Error) -> bool {
    let kube::Error::Api(s) = error else {
        return false;
    };
    classify(error) == Reason::Forbidden
        && match s.details.as_ref().filter(|d| !d.causes.is_empty()) {
            Some(details) => details
                .causes
                .iter()
                .any(|c| c.reason == "NamespaceTerminating"),
            None => s.message.contains("because it is being terminated"),
        }
}

/// Reports, on the original, that the remote cluster refused its copy (its admission, a
/// quota, our permissions there): that will not pass by itself until something changes,
/// so the user is told what. Other errors (the remote unreachable, a server error) are
/// only retried.
async fn refused<K: Reflected>(ctx: &Context, original: &K, cluster_id: &str, error: &RemoteError) {
    let RemoteError::Api { source, .. } = error else {
        return;
    };
    if !matches!(classify(source), Reason::Invalid | Reason::Forbidden) {
        return;
    }
    let note = format!(
        "cluster {cluster_id} refused the copy of {} {}: {}; the other objects are copied all the same, and this one is tried again",
        K::KIND,
        original.name_any(),
        crate::model::reason::message(source),
    );
    crate::context::writes::record_event(
        &ctx.recorder,
        original,
        EventType::Warning,
        "ReflectionRefused",
        &note,
        "Reflecting",
    )
    .await;
}

/// Reports, on the original, that its name is taken there by an object we did not make.
async fn conflict<K: Reflected>(
    ctx: &Context,
    original: &K,
    cluster_id: &str,
    remote_namespace: &str,
) {
    let kind = K::KIND;
    let name = original.name_any();
    let note = format!(
        "{kind} {name} exists in namespace {remote_namespace} of cluster {cluster_id} and was not made here: it is left alone, so pods there that use it see that one; rename or delete it there"
    );
    tracing::warn!(namespace = original.namespace().unwrap_or_default(), %cluster_id, kind, name, "reflection conflict");
    ctx.metrics.reflection_conflict(kind, cluster_id);
    crate::context::writes::record_event(
        &ctx.recorder,
        original,
        EventType::Warning,
        "ReflectionConflict",
        &note,
        "Reflecting",
    )
    .await;
}

pub(crate) fn error_policy(
    nso: Arc<NamespaceOffloading>,
    error: &ObjectsError,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.error(WORKER, "kubernetes");
    tracing::warn!(namespace = nso.namespace().unwrap_or_default(), %error, "reflecting namespace objects failed");
    Action::requeue(ctx.backoff.failed(&backoff::key(WORKER, &*nso)))
}

#[cfg(test)]
mod tests;
