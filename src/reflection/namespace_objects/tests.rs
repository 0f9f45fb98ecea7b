//! The reflection of an offloaded namespace's objects against mocked API servers: the local
//! one (events only) and those of clusters `c2` and `c3` (the copies), with the local
//! stores and the peers' watches of our copies filled by hand.

use std::{collections::BTreeMap, time::Duration};

use http::Method;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::*;
use crate::{
    context::{
        Stores,
        testing::{self, ApiServer, api_server, exchange, expect_event, reason_of, store, watched},
    },
    model::{
        api::{NamespaceOffloadingStatus, RemoteClusterSpec, RemoteNamespaceCondition},
        markers::{
            MANAGED_BY_LABEL, ORIGIN_CLUSTER_LABEL, ORIGIN_NAMESPACE_ANNOTATION, SLICE_MANAGER,
        },
        reason::Problem,
    },
    plumbing::{client::REMOTE_TIMEOUT, metrics::ControllerMetrics, scoped::Coverage},
};

/// `shop`'s remote namespace (DefaultName: `<namespace>-<local cluster ID>`).
const REMOTE_NAMESPACE: &str = "shop-c1";
const CONFIGMAPS: &str = "/api/v1/namespaces/shop-c1/configmaps";
const CONFIGMAP: &str = "/api/v1/namespaces/shop-c1/configmaps/settings";
const SECRETS: &str = "/api/v1/namespaces/shop-c1/secrets";
const SERVICE_ACCOUNTS: &str = "/api/v1/namespaces/shop-c1/serviceaccounts";
const SERVICE_ACCOUNT: &str = "/api/v1/namespaces/shop-c1/serviceaccounts/app";
const SERVICES: &str = "/api/v1/namespaces/shop-c1/services";
const SERVICE: &str = "/api/v1/namespaces/shop-c1/services/web";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/shop-c1/endpointslices";
const SLICE: &str = "/apis/discovery.k8s.io/v1/namespaces/shop-c1/endpointslices/web-x7k2p";

// The local objects of `shop`.

/// ConfigMap `shop/settings`, uid `cm-1`, with a label, an annotation of its own and
/// kubectl's, text and binary data.
fn configmap() -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {
            "name": "settings", "namespace": "shop", "uid": "cm-1", "resourceVersion": "7",
            "creationTimestamp": "2026-11-25T10:00:00Z",
            "labels": {"app": "web"},
            "annotations": {"team": "shop", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "data": {"mode": "fast"},
        "binaryData": {"blob": "AAEC"},
    }))
    .unwrap()
}

/// Secret `shop/db` (Opaque), uid `s-1`.
fn secret() -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "shop", "uid": "s-1", "labels": {"app": "db"}},
        "type": "Opaque",
        "data": {"password": "c2VjcmV0"},
    }))
    .unwrap()
}

/// ServiceAccount `shop/app`, uid `sa-1`, with its token Secret and a pull secret.
fn service_account() -> ServiceAccount {
    serde_json::from_value(json!({
        "metadata": {"name": "app", "namespace": "shop", "uid": "sa-1"},
        "secrets": [{"name": "app-token"}],
        "imagePullSecrets": [{"name": "registry"}],
        "automountServiceAccountToken": false,
    }))
    .unwrap()
}

/// Service `shop/web` (NodePort), uid `svc-1`, with the addresses this cluster allocated.
fn service() -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "svc-1", "labels": {"app": "web"}},
        "spec": {
            "type": "NodePort", "clusterIP": "10.0.0.12", "clusterIPs": ["10.0.0.12"],
            "selector": {"app": "web"}, "sessionAffinity": "None",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}],
        },
        "status": {"loadBalancer": {}},
    }))
    .unwrap()
}

/// Headless Service `shop/db`, uid `svc-2`.
fn headless_service() -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "shop", "uid": "svc-2"},
        "spec": {
            "clusterIP": "None", "clusterIPs": ["None"], "selector": {"app": "db"},
            "ports": [{"port": 5432, "targetPort": 5432, "protocol": "TCP"}],
        },
    }))
    .unwrap()
}

/// `web`'s EndpointSlice: one pod here (`worker-1`), one running in `c2`, one in `c3`.
fn slice() -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web-x7k2p", "namespace": "shop", "uid": "es-1",
            "labels": {
                "kubernetes.io/service-name": "web",
                MANAGED_BY_LABEL: "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.101.0.5"], "conditions": {"ready": true}, "nodeName": "worker-1",
             "targetRef": {"kind": "Pod", "name": "web-a", "namespace": "shop", "uid": "a"}},
            {"addresses": ["10.102.0.9"], "conditions": {"ready": true}, "nodeName": "liqo-c2",
             "targetRef": {"kind": "Pod", "name": "web-b", "namespace": "shop", "uid": "b"}},
            {"addresses": ["10.103.0.4"], "conditions": {"ready": false}, "nodeName": "liqo-c3",
             "targetRef": {"kind": "Pod", "name": "web-c", "namespace": "shop", "uid": "c"}},
        ],
    }))
    .unwrap()
}

/// The peerings: `rc-c2` translates `10.101.0.0/16` to `10.201.0.0/16`, `rc-c3` nothing.
fn remote_clusters() -> Vec<RemoteCluster> {
    let rc = |name: &str, translation: Value| {
        let spec: RemoteClusterSpec = serde_json::from_value(json!({
            "kubeconfigSecret": {"namespace": "namespace-offloading", "name": name},
            "addressTranslation": translation,
        }))
        .unwrap();
        RemoteCluster::new(name, spec)
    };
    vec![
        rc(
            "rc-c2",
            json!([{"from": "10.101.0.0/16", "to": "10.201.0.0/16"}]),
        ),
        rc("rc-c3", json!([])),
    ]
}

/// Local stores holding the peerings and these objects.
fn local(
    configmaps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    service_accounts: Vec<ServiceAccount>,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
) -> Stores {
    Stores {
        remote_clusters: store(remote_clusters()),
        configmaps: store(configmaps),
        secrets: store(secrets),
        service_accounts: store(service_accounts),
        services: store(services),
        endpoint_slices: store(slices),
        ..testing::stores()
    }
}

// Our copies, as the peers' watches hold them.

static POLICY: std::sync::LazyLock<crate::model::reflection_policy::ReflectionPolicy> =
    std::sync::LazyLock::new(Default::default);

fn to_c2(addresses: &AddressMap) -> Destination<'_> {
    Destination {
        local_cluster_id: testing::LOCAL_CLUSTER_ID,
        remote_namespace: REMOTE_NAMESPACE,
        virtual_node: "liqo-c2",
        addresses,
        policy: &POLICY,
    }
}

fn c2_addresses() -> AddressMap {
    AddressMap::new(&remote_clusters()[0].spec.address_translation).unwrap()
}

/// Our up-to-date copy of `object` in `c2`, with the uid `c2` gave it.
fn copy_in_c2<K: Reflected>(object: &K, uid: &str) -> K {
    let addresses = c2_addresses();
    let mut copy = object.copy(&to_c2(&addresses)).unwrap();
    copy.meta_mut().uid = Some(uid.into());
    copy.meta_mut().resource_version = Some("100".into());
    copy
}

/// The Service's copy as `c2`'s API server keeps it: with the addresses it allocated.
fn service_copy_allocated() -> Service {
    let mut copy = copy_in_c2(&service(), "copy-svc");
    let spec = copy.spec.as_mut().unwrap();
    spec.cluster_ip = Some("10.96.4.4".into());
    spec.cluster_ips = Some(vec!["10.96.4.4".into()]);
    spec.ports.as_mut().unwrap()[0].node_port = Some(31999);
    spec.internal_traffic_policy = Some("Cluster".into());
    copy
}

/// Our markers for a copy of a `shop` object.
fn our_labels(mut labels: Value) -> Value {
    labels[ORIGIN_CLUSTER_LABEL] = testing::LOCAL_CLUSTER_ID.into();
    labels
}

fn our_annotations(mut annotations: Value) -> Value {
    annotations[ORIGIN_NAMESPACE_ANNOTATION] = "shop".into();
    annotations
}

// The offloading.

/// `shop`'s offloading, its remote namespace `shop-c1`, Ready (or not) in these clusters.
fn nso(clusters: &[(&str, bool)]) -> NamespaceOffloading {
    let mut nso = testing::offloading("shop");
    let condition = |type_: &str, status: bool| RemoteNamespaceCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        last_transition_time: None,
        reason: None,
        message: None,
    };
    nso.status = Some(NamespaceOffloadingStatus {
        remote_namespace_name: Some(REMOTE_NAMESPACE.into()),
        remote_namespaces_conditions: clusters
            .iter()
            .map(|(id, ready)| {
                (
                    (*id).to_owned(),
                    vec![
                        condition("OffloadingRequired", true),
                        condition(READY, *ready),
                    ],
                )
            })
            .collect::<BTreeMap<_, _>>(),
        ..NamespaceOffloadingStatus::default()
    });
    nso
}

fn ready_in_c2() -> NamespaceOffloading {
    nso(&[("c2", true)])
}

fn ready_in_both() -> NamespaceOffloading {
    nso(&[("c2", true), ("c3", true)])
}

// The world.

struct Servers {
    local: ApiServer,
    c2: ApiServer,
    c3: ApiServer,
}

struct World {
    ctx: Arc<Context>,
    servers: Servers,
    registry: Registry,
}

/// A peer whose watches of our copies have all listed, empty.
fn listed_peer(cluster_id: &str, client: kube::Client) -> Peer {
    let mut peer = testing::peer(cluster_id, client);
    peer.namespaces = watched(
        [crate::model::remote_namespace::desired(
            REMOTE_NAMESPACE,
            testing::LOCAL_CLUSTER_ID,
            "shop",
        )],
        true,
    );
    peer.configmaps = watched([], true);
    peer.secrets = watched([], true);
    peer.service_accounts = watched([], true);
    peer.services = watched([], true);
    peer.endpoint_slices = watched([], true);
    peer.ingresses = watched([], true);
    peer.network_policies = watched([], true);
    peer
}

/// `c2` and `c3` connected, their watches of our copies listed and empty; `edit` fills
/// them (`c2`'s first).
fn world(stores: Stores, edit: impl FnOnce(&mut Peer, &mut Peer)) -> World {
    let (local_client, local) = api_server("local");
    let (c2_client, c2) = api_server("c2");
    let (c3_client, c3) = api_server("c3");
    let mut p2 = listed_peer("c2", c2_client);
    let mut p3 = listed_peer("c3", c3_client);
    edit(&mut p2, &mut p3);
    let mut shared = testing::shared(
        local_client,
        stores,
        testing::peers([("c2", p2), ("c3", p3)]),
    );
    let mut registry = Registry::default();
    shared.metrics = ControllerMetrics::register(&mut registry);
    World {
        ctx: Arc::new(shared),
        servers: Servers { local, c2, c3 },
        registry,
    }
}

impl World {
    /// `reconcile` of `nso`, the API servers playing `script`; then none hears more.
    /// Returns what it returned, how long it took and what the script did.
    async fn reconcile<S>(
        &mut self,
        nso: NamespaceOffloading,
        script: impl AsyncFnOnce(&mut Servers) -> S,
    ) -> (Result<Action, ObjectsError>, Duration, S) {
        let World { ctx, servers, .. } = self;
        let started = tokio::time::Instant::now();
        let ((result, took), out) = exchange(
            async {
                let result = reconcile(Arc::new(nso), ctx.clone()).await;
                (result, started.elapsed())
            },
            async {
                let out = script(servers).await;
                servers.local.nothing_more().await;
                servers.c2.nothing_more().await;
                servers.c3.nothing_more().await;
                out
            },
        )
        .await;
        (result, took, out)
    }

    /// The metrics' text.
    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }

    /// The conflict counter's lines.
    fn conflicts(&self) -> Vec<String> {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with("reflection_conflicts_total{"))
            .map(str::to_owned)
            .collect()
    }
}

fn json_of<K: Serialize>(object: &K) -> Value {
    serde_json::to_value(object).unwrap()
}

/// The remote API error the reconcile returned: in which cluster, its HTTP code.
fn remote_api_error(result: Result<Action, ObjectsError>) -> (String, u16) {
    match result {
        Err(ObjectsError::Remote(RemoteError::Api {
            cluster_id,
            source: kube::Error::Api(status),
        })) => (cluster_id, status.code),
        other => panic!("expected a remote API error, got {other:?}"),
    }
}

/// A create of `path`, answered as created; returns its body.
async fn expect_create(server: &mut ApiServer, path: &str) -> Value {
    let call = server.expect(Method::POST, path).await;
    let body = call.body.clone();
    call.created();
    body
}

/// A server-side apply of `path` as our field manager, forced; returns its body.
async fn expect_apply(server: &mut ApiServer, path: &str) -> Value {
    let call = server.expect(Method::PATCH, path).await;
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/apply-patch+yaml"),
        "{path}"
    );
    assert_eq!(call.param("fieldManager"), Some(FIELD_MANAGER), "{path}");
    assert_eq!(call.param("force"), Some("true"), "{path}");
    let body = call.body.clone();
    call.ok(&body);
    body
}

// Creating copies.

#[tokio::test(start_paused = true)]
async fn a_configmap_without_a_copy_is_created_in_each_ready_cluster() {
    let mut world = world(
        local(vec![configmap()], vec![], vec![], vec![], vec![]),
        |_, _| {},
    );
    let (result, _, bodies) = world
        .reconcile(ready_in_both(), async |s| {
            // One cluster after the other, in the order of their IDs.
            let c2 = expect_create(&mut s.c2, CONFIGMAPS).await;
            let c3 = expect_create(&mut s.c3, CONFIGMAPS).await;
            [c2, c3]
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    for body in bodies {
        assert_eq!(
            body,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {
                    "name": "settings", "namespace": REMOTE_NAMESPACE,
                    // No uid, resourceVersion nor creation time of this cluster's; kubectl's
                    // annotation left out.
                    "labels": our_labels(json!({"app": "web"})),
                    "annotations": our_annotations(json!({"team": "shop"})),
                },
                "data": {"mode": "fast"},
                "binaryData": {"blob": "AAEC"},
            })
        );
    }
    assert!(world.conflicts().is_empty(), "{:?}", world.conflicts());
}

#[tokio::test(start_paused = true)]
async fn a_secret_and_a_service_account_are_copied_without_what_the_cluster_issues() {
    let mut world = world(
        local(
            vec![],
            vec![secret()],
            vec![service_account()],
            vec![],
            vec![],
        ),
        |_, _| {},
    );
    let (result, _, (secret, account)) = world
        .reconcile(ready_in_c2(), async |s| {
            let secret = expect_create(&mut s.c2, SECRETS).await;
            let account = expect_create(&mut s.c2, SERVICE_ACCOUNTS).await;
            (secret, account)
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(
        secret,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": "db", "namespace": REMOTE_NAMESPACE,
                "labels": our_labels(json!({"app": "db"})),
                "annotations": our_annotations(json!({})),
            },
            "type": "Opaque",
            "data": {"password": "c2VjcmV0"},
        })
    );
    // The token Secrets of this cluster's are left out: `c2` issues its own.
    assert_eq!(
        account,
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {
                "name": "app", "namespace": REMOTE_NAMESPACE,
                "labels": our_labels(json!({})),
                "annotations": our_annotations(json!({})),
            },
            "imagePullSecrets": [{"name": "registry"}],
            "automountServiceAccountToken": false,
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_service_copy_leaves_addresses_and_node_ports_to_the_remote() {
    let mut world = world(
        local(
            vec![],
            vec![],
            vec![],
            vec![service(), headless_service()],
            vec![],
        ),
        |_, _| {},
    );
    let (result, _, mut bodies) = world
        .reconcile(ready_in_c2(), async |s| {
            // The store's order is not decided: two creates, in either order.
            let mut bodies = Vec::new();
            for _ in 0..2 {
                let call = s.c2.any().await;
                assert_eq!(
                    (&call.method, call.path.as_str()),
                    (&Method::POST, SERVICES)
                );
                bodies.push(call.body.clone());
                call.created();
            }
            bodies
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    bodies.sort_by_key(|b| b["metadata"]["name"].as_str().unwrap().to_owned());
    let [db, web] = &bodies[..] else {
        panic!("{bodies:?}")
    };
    assert_eq!(
        *web,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": "web", "namespace": REMOTE_NAMESPACE,
                "labels": our_labels(json!({"app": "web"})),
                "annotations": our_annotations(json!({})),
            },
            // No clusterIP(s), no nodePort, no status: c2 allocates its own.
            "spec": {
                "type": "NodePort", "selector": {"app": "web"}, "sessionAffinity": "None",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        })
    );
    // Headless stays headless.
    assert_eq!(db["metadata"]["namespace"], REMOTE_NAMESPACE);
    assert_eq!(
        db["spec"],
        json!({
            "type": "ClusterIP", "clusterIP": "None", "selector": {"app": "db"},
            "ports": [{"port": 5432, "targetPort": 5432, "protocol": "TCP"}],
        })
    );
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_slice_is_copied_per_cluster_without_its_pods_and_with_its_translation() {
    let mut world = world(
        local(vec![], vec![], vec![], vec![], vec![slice()]),
        |_, _| {},
    );
    let (result, _, (c2, c3)) = world
        .reconcile(ready_in_both(), async |s| {
            let c2 = expect_create(&mut s.c2, SLICES).await;
            let c3 = expect_create(&mut s.c3, SLICES).await;
            (c2, c3)
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    for body in [&c2, &c3] {
        assert_eq!(body["apiVersion"], "discovery.k8s.io/v1");
        assert_eq!(body["kind"], "EndpointSlice");
        assert_eq!(
            body["metadata"],
            json!({
                "name": "web-x7k2p", "namespace": REMOTE_NAMESPACE,
                // Our managed-by keeps the remote endpoint controllers off it.
                "labels": our_labels(json!({
                    "kubernetes.io/service-name": "web", MANAGED_BY_LABEL: SLICE_MANAGER,
                })),
                "annotations": our_annotations(json!({})),
            })
        );
        assert_eq!(body["addressType"], "IPv4");
        assert_eq!(
            body["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
    }
    // In c2: web-b (running there) left to c2's own controller; web-a's address translated
    // by rc-c2's rule; no local node or pod named.
    assert_eq!(
        c2["endpoints"],
        json!([
            {"addresses": ["10.201.0.5"], "conditions": {"ready": true}},
            {"addresses": ["10.103.0.4"], "conditions": {"ready": false}},
        ])
    );
    // In c3: web-c left out, no translation.
    assert_eq!(
        c3["endpoints"],
        json!([
            {"addresses": ["10.101.0.5"], "conditions": {"ready": true}},
            {"addresses": ["10.102.0.9"], "conditions": {"ready": true}},
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn cluster_specific_objects_and_other_namespaces_objects_are_never_reflected() {
    let root_ca: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "kube-root-ca.crt", "namespace": "shop", "uid": "ca"},
        "data": {"ca.crt": "PEM"},
    }))
    .unwrap();
    let token: Secret = serde_json::from_value(json!({
        "metadata": {"name": "app-token", "namespace": "shop", "uid": "t"},
        "type": "kubernetes.io/service-account-token", "data": {"token": "dG9rZW4="},
    }))
    .unwrap();
    let default: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": "default", "namespace": "shop", "uid": "d"},
    }))
    .unwrap();
    let mut no_service = slice();
    no_service.metadata.name = Some("loose".into());
    no_service.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    let mut reflected_here = slice();
    reflected_here.metadata.name = Some("web-from-c9".into());
    reflected_here
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(MANAGED_BY_LABEL.into(), SLICE_MANAGER.into());
    let mut elsewhere = configmap();
    elsewhere.metadata.namespace = Some("other".into());
    let mut elsewhere_service = service();
    elsewhere_service.metadata.namespace = Some("other".into());
    let mut world = world(
        local(
            vec![root_ca, elsewhere],
            vec![token],
            vec![default],
            vec![elsewhere_service],
            vec![no_service, reflected_here],
        ),
        |_, _| {},
    );
    let (result, _, ()) = world.reconcile(ready_in_both(), async |_| {}).await;
    assert_eq!(result.unwrap(), Action::await_change());
}

// Keeping copies in sync.

#[tokio::test(start_paused = true)]
async fn up_to_date_copies_are_left_alone() {
    let mut world = world(
        local(
            vec![configmap()],
            vec![secret()],
            vec![service_account()],
            vec![service()],
            vec![slice()],
        ),
        |c2, _| {
            c2.configmaps = watched([copy_in_c2(&configmap(), "copy-cm")], true);
            c2.secrets = watched([copy_in_c2(&secret(), "copy-s")], true);
            c2.service_accounts = watched([copy_in_c2(&service_account(), "copy-sa")], true);
            // What c2's API server allocated and defaulted is no difference.
            c2.services = watched([service_copy_allocated()], true);
            c2.endpoint_slices = watched([copy_in_c2(&slice(), "copy-es")], true);
        },
    );
    let (result, _, ()) = world.reconcile(ready_in_c2(), async |_| {}).await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_drifted_configmap_is_applied_over_as_our_field_manager() {
    let mut stale = copy_in_c2(&configmap(), "copy-cm");
    stale.data = Some([("mode".to_string(), "slow".to_string())].into());
    let mut world = world(
        local(vec![configmap()], vec![], vec![], vec![], vec![]),
        |c2, _| c2.configmaps = watched([stale], true),
    );
    let (result, _, body) = world
        .reconcile(ready_in_c2(), async |s| {
            // Applied over (not created, not replaced with a PUT).
            expect_apply(&mut s.c2, CONFIGMAP).await
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(
        body,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": "settings", "namespace": REMOTE_NAMESPACE,
                "labels": our_labels(json!({"app": "web"})),
                "annotations": our_annotations(json!({"team": "shop"})),
            },
            "data": {"mode": "fast"},
            "binaryData": {"blob": "AAEC"},
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_copy_whose_labels_drifted_is_applied_over() {
    let mut stale = copy_in_c2(&service_account(), "copy-sa");
    stale
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "old".into());
    let mut world = world(
        local(vec![], vec![], vec![service_account()], vec![], vec![]),
        |c2, _| c2.service_accounts = watched([stale], true),
    );
    let (result, _, body) = world
        .reconcile(ready_in_c2(), async |s| {
            expect_apply(&mut s.c2, SERVICE_ACCOUNT).await
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(body["kind"], "ServiceAccount");
    assert_eq!(body["metadata"]["labels"], our_labels(json!({})));
    assert_eq!(body["imagePullSecrets"], json!([{"name": "registry"}]));
}

#[tokio::test(start_paused = true)]
async fn a_drifted_service_and_slice_are_applied_over_with_their_api_version() {
    let mut stale_service = service_copy_allocated();
    stale_service.spec.as_mut().unwrap().selector =
        Some([("app".to_string(), "old".to_string())].into());
    let mut stale_slice = copy_in_c2(&slice(), "copy-es");
    stale_slice.endpoints.as_mut().unwrap().pop();
    let mut world = world(
        local(vec![], vec![], vec![], vec![service()], vec![slice()]),
        |c2, _| {
            c2.services = watched([stale_service], true);
            c2.endpoint_slices = watched([stale_slice], true);
        },
    );
    let (result, _, (service, slice)) = world
        .reconcile(ready_in_c2(), async |s| {
            let service = expect_apply(&mut s.c2, SERVICE).await;
            let slice = expect_apply(&mut s.c2, SLICE).await;
            (service, slice)
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(
        (&service["apiVersion"], &service["kind"]),
        (&json!("v1"), &json!("Service"))
    );
    assert_eq!(service["spec"]["selector"], json!({"app": "web"}));
    // Still nothing of what the API servers allocate.
    assert!(service["spec"]["clusterIP"].is_null(), "{service}");
    assert!(
        service["spec"]["ports"][0]["nodePort"].is_null(),
        "{service}"
    );
    assert_eq!(
        (&slice["apiVersion"], &slice["kind"]),
        (&json!("discovery.k8s.io/v1"), &json!("EndpointSlice"))
    );
    assert_eq!(
        slice["endpoints"],
        json!([
            {"addresses": ["10.201.0.5"], "conditions": {"ready": true}},
            {"addresses": ["10.103.0.4"], "conditions": {"ready": false}},
        ])
    );
}

// Names taken by someone else.

/// The note of the conflict event for `kind` `name` in `c2`.
fn conflict_note(kind: &str, name: &str) -> String {
    format!(
        "{kind} {name} exists in namespace shop-c1 of cluster c2 and was not made here: it is left alone, so pods there that use it see that one; rename or delete it there"
    )
}

/// Objects named `settings` there that are not our copy of `shop/settings`: unmarked,
/// another cluster's, and a copy of another local namespace's.
fn foreign_configmaps() -> Vec<(&'static str, ConfigMap)> {
    let mut unmarked = copy_in_c2(&configmap(), "theirs");
    unmarked.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    unmarked.metadata.annotations = None;
    let mut other_cluster = copy_in_c2(&configmap(), "theirs");
    other_cluster
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(ORIGIN_CLUSTER_LABEL.into(), "c9".into());
    let mut other_namespace = copy_in_c2(&configmap(), "theirs");
    other_namespace
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ORIGIN_NAMESPACE_ANNOTATION.into(), "other".into());
    vec![
        ("unmarked", unmarked),
        ("another cluster's", other_cluster),
        ("another namespace's", other_namespace),
    ]
}

#[tokio::test(start_paused = true)]
async fn a_configmap_of_that_name_not_ours_is_left_alone_and_reported() {
    for (which, foreign) in foreign_configmaps() {
        // Not in the watch of our copies: the create is what finds it.
        let mut world = world(
            local(vec![configmap()], vec![], vec![], vec![], vec![]),
            |_, _| {},
        );
        let (result, _, event) = world
            .reconcile(ready_in_c2(), async |s| {
                s.c2.expect(Method::POST, CONFIGMAPS)
                    .await
                    .fail(409, "AlreadyExists");
                s.c2.expect(Method::GET, CONFIGMAP)
                    .await
                    .ok(&json_of(&foreign));
                // Neither applied over nor deleted: nothing more to c2 (checked after).
                expect_event(&mut s.local, "shop", "ConfigMap", "settings").await
            })
            .await;
        assert_eq!(result.unwrap(), Action::await_change(), "{which}");
        assert_eq!(event["type"], "Warning", "{which}");
        assert_eq!(event["reason"], "ReflectionConflict", "{which}");
        assert_eq!(event["action"], "Reflecting", "{which}");
        assert_eq!(event["regarding"]["uid"], "cm-1", "{which}");
        assert_eq!(
            event["note"],
            conflict_note("ConfigMap", "settings"),
            "{which}"
        );
        assert_eq!(
            world.conflicts(),
            ["reflection_conflicts_total{kind=\"ConfigMap\",cluster_id=\"c2\"} 1"],
            "{which}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_service_name_taken_in_one_cluster_does_not_keep_it_from_the_others() {
    let mut foreign = service_copy_allocated();
    foreign.metadata.labels = None;
    foreign.metadata.annotations = None;
    let mut world = world(
        local(vec![], vec![], vec![], vec![service()], vec![]),
        |_, _| {},
    );
    let (result, _, (event, c3)) = world
        .reconcile(ready_in_both(), async |s| {
            s.c2.expect(Method::POST, SERVICES)
                .await
                .fail(409, "AlreadyExists");
            s.c2.expect(Method::GET, SERVICE)
                .await
                .ok(&json_of(&foreign));
            let event = expect_event(&mut s.local, "shop", "Service", "web").await;
            let c3 = expect_create(&mut s.c3, SERVICES).await;
            (event, c3)
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(event["reason"], "ReflectionConflict");
    assert_eq!(event["regarding"]["uid"], "svc-1");
    assert_eq!(event["note"], conflict_note("Service", "web"));
    assert_eq!(c3["metadata"]["name"], "web");
    assert_eq!(
        world.conflicts(),
        ["reflection_conflicts_total{kind=\"Service\",cluster_id=\"c2\"} 1"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_create_conflict_with_our_own_unseen_copy_or_one_gone_again_is_no_conflict() {
    let ours = json_of(&copy_in_c2(&configmap(), "copy-cm"));
    for found in [Some(ours), None] {
        let mut world = world(
            local(vec![configmap()], vec![], vec![], vec![], vec![]),
            |_, _| {},
        );
        let (result, _, ()) = world
            .reconcile(ready_in_c2(), async |s| {
                s.c2.expect(Method::POST, CONFIGMAPS)
                    .await
                    .fail(409, "AlreadyExists");
                let get = s.c2.expect(Method::GET, CONFIGMAP).await;
                match &found {
                    Some(copy) => get.ok(copy),
                    None => get.fail(404, "NotFound"),
                }
                // Neither an event nor a write: the watch brings the copy in.
            })
            .await;
        assert_eq!(result.unwrap(), Action::await_change(), "{found:?}");
        assert!(world.conflicts().is_empty(), "{:?}", world.conflicts());
    }
}

/// Carrying our cluster label, it is in the watch of our copies; but its origin annotation
/// names another namespace, so it is not ours: neither applied over nor deleted, reported.
#[tokio::test(start_paused = true)]
async fn a_watched_object_of_another_namespaces_origin_is_not_applied_over() {
    let (_, other_namespace) = foreign_configmaps().pop().unwrap();
    let mut world = world(
        local(vec![configmap()], vec![], vec![], vec![], vec![]),
        |c2, _| c2.configmaps = watched([other_namespace], true),
    );
    let (result, _, event) = world
        .reconcile(ready_in_c2(), async |s| {
            expect_event(&mut s.local, "shop", "ConfigMap", "settings").await
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(event["reason"], "ReflectionConflict");
}

// Where copies go.

#[tokio::test(start_paused = true)]
async fn only_clusters_whose_remote_namespace_is_ready_get_copies() {
    let mut world = world(
        local(vec![configmap()], vec![], vec![], vec![], vec![]),
        |_, _| {},
    );
    let (result, _, body) = world
        .reconcile(nso(&[("c2", false), ("c3", true)]), async |s| {
            expect_create(&mut s.c3, CONFIGMAPS).await
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(body["metadata"]["namespace"], REMOTE_NAMESPACE);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_or_unconnected_cluster_is_not_contacted() {
    let mut world = world(
        local(vec![configmap()], vec![], vec![], vec![service()], vec![]),
        |c2, _| {
            c2.unreachable = Some(Problem::new(Reason::Unreachable, "connection refused"));
        },
    );
    // c3's peering is not connected (no peer).
    assert_eq!(world.ctx.peers.remove_remote_cluster("rc-c3"), ["c3"]);
    // And c4 was never peered at all.
    let nso = nso(&[("c2", true), ("c3", true), ("c4", true)]);
    let (result, _, ()) = world.reconcile(nso, async |_| {}).await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_kind_whose_copies_watch_has_not_listed_waits_and_the_others_go_on() {
    let mut world = world(
        local(vec![configmap()], vec![], vec![], vec![service()], vec![]),
        // Listed or not, it must not be read: were it read, settings would be a drift.
        |c2, _| {
            let mut stale = copy_in_c2(&configmap(), "copy-cm");
            stale.data = None;
            c2.configmaps = watched([stale], false);
        },
    );
    let (result, _, body) = world
        .reconcile(ready_in_c2(), async |s| {
            expect_create(&mut s.c2, SERVICES).await
        })
        .await;
    // Looked at again soon.
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(2)));
    assert_eq!(body["metadata"]["name"], "web");
}

#[tokio::test(start_paused = true)]
async fn a_kind_our_account_may_not_watch_there_is_looked_at_now_and_then_only() {
    // A peering made before NetworkPolicies were reflected: its account may not list them.
    let mut world = world(
        local(vec![], vec![], vec![], vec![service()], vec![]),
        |c2, _| {
            c2.network_policies = watched([], false);
            if let Ok(mut failure) = c2.network_policies.failure.lock() {
                *failure = Some("networkpolicies is forbidden".into());
            }
        },
    );
    let (result, _, body) = world
        .reconcile(ready_in_c2(), async |s| {
            expect_create(&mut s.c2, SERVICES).await
        })
        .await;
    // The other kinds go on; this one is looked at again in a while, not every 2 s.
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
    assert_eq!(body["metadata"]["name"], "web");
}

#[tokio::test(start_paused = true)]
async fn without_a_remote_namespace_or_while_ending_nothing_is_sent() {
    let stores = || {
        local(
            vec![configmap()],
            vec![secret()],
            vec![service_account()],
            vec![service()],
            vec![slice()],
        )
    };
    let mut unnamed = ready_in_both();
    unnamed.status.as_mut().unwrap().remote_namespace_name = None;
    let mut ending = ready_in_both();
    ending.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    for nso in [unnamed, ending, testing::offloading("shop")] {
        let mut world = world(stores(), |_, _| {});
        let (result, _, ()) = world.reconcile(nso, async |_| {}).await;
        assert_eq!(result.unwrap(), Action::await_change());
    }
}

// Deleting copies.

#[tokio::test(start_paused = true)]
async fn copies_whose_original_is_gone_are_deleted_with_a_uid_precondition() {
    let mut world = world(testing::stores(), |c2, _| {
        c2.configmaps = watched([copy_in_c2(&configmap(), "copy-cm")], true);
        c2.services = watched([service_copy_allocated()], true);
        c2.endpoint_slices = watched([copy_in_c2(&slice(), "copy-es")], true);
    });
    let (result, _, bodies) = world
        .reconcile(ready_in_c2(), async |s| {
            let mut bodies = Vec::new();
            for path in [CONFIGMAP, SERVICE, SLICE] {
                let call = s.c2.expect(Method::DELETE, path).await;
                bodies.push(call.body.clone());
                call.ok(&testing::success());
            }
            bodies
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(
        bodies,
        [
            json!({"preconditions": {"uid": "copy-cm"}}),
            json!({"preconditions": {"uid": "copy-svc"}}),
            json!({"preconditions": {"uid": "copy-es"}}),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_copy_already_gone_is_deleted_all_the_same() {
    let mut world = world(testing::stores(), |c2, _| {
        c2.configmaps = watched([copy_in_c2(&configmap(), "copy-cm")], true);
        c2.services = watched([service_copy_allocated()], true);
    });
    let (result, _, ()) = world
        .reconcile(ready_in_c2(), async |s| {
            s.c2.expect(Method::DELETE, CONFIGMAP)
                .await
                .fail(404, "NotFound");
            // And on to the next.
            s.c2.expect(Method::DELETE, SERVICE)
                .await
                .ok(&testing::success());
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_copy_whose_original_stopped_being_reflected_is_deleted() {
    // The Secret became a token Secret here: it no longer goes there.
    let mut token = secret();
    token.type_ = Some(objects::TOKEN_SECRET_TYPE.into());
    let mut world = world(
        local(vec![], vec![token], vec![], vec![], vec![]),
        |c2, _| {
            c2.secrets = watched([copy_in_c2(&secret(), "copy-s")], true);
        },
    );
    let (result, _, body) = world
        .reconcile(ready_in_c2(), async |s| {
            let call =
                s.c2.expect(Method::DELETE, "/api/v1/namespaces/shop-c1/secrets/db")
                    .await;
            let body = call.body.clone();
            call.ok(&testing::success());
            body
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(body, json!({"preconditions": {"uid": "copy-s"}}));
}

#[tokio::test(start_paused = true)]
async fn objects_not_ours_or_in_other_namespaces_are_never_deleted() {
    // In the watch (they carry our cluster label), but a copy of another namespace's, one
    // in another remote namespace, and one without our namespace annotation.
    let (_, other_namespace) = foreign_configmaps().pop().unwrap();
    let mut in_other_remote_namespace = copy_in_c2(&service(), "copy-other");
    in_other_remote_namespace.metadata.namespace = Some("other-c1".into());
    in_other_remote_namespace
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ORIGIN_NAMESPACE_ANNOTATION.into(), "other".into());
    let mut unannotated = copy_in_c2(&secret(), "theirs");
    unannotated.metadata.annotations = None;
    let mut world = world(testing::stores(), |c2, _| {
        c2.configmaps = watched([other_namespace], true);
        c2.services = watched([in_other_remote_namespace], true);
        c2.secrets = watched([unannotated], true);
    });
    let (result, _, ()) = world.reconcile(ready_in_c2(), async |_| {}).await;
    assert_eq!(result.unwrap(), Action::await_change());
}

// Failures.

#[tokio::test(start_paused = true)]
async fn a_create_without_namespace_there_is_skipped_and_the_rest_goes_on() {
    // As the NamespaceLifecycle admission answers: the cause in its details.
    let mut terminating = testing::status(
        403,
        "Forbidden",
        "configmaps \"settings\" is forbidden: unable to create new content in namespace shop-c1 because it is being terminated",
    );
    terminating["details"] = json!({"name": "settings", "kind": "configmaps", "causes": [
        {"reason": "NamespaceTerminating", "message": "namespace shop-c1 is being terminated", "field": "metadata.namespace"}]});
    for (code, answer) in [
        (403, terminating),
        (
            404,
            testing::status(404, "NotFound", "namespaces \"shop-c1\" not found"),
        ),
    ] {
        let mut world = world(
            local(vec![configmap()], vec![], vec![], vec![service()], vec![]),
            |_, _| {},
        );
        let (result, _, ()) = world
            .reconcile(ready_in_both(), async |s| {
                s.c2.expect(Method::POST, CONFIGMAPS)
                    .await
                    .answer(code, &answer);
                expect_create(&mut s.c2, SERVICES).await;
                expect_create(&mut s.c3, CONFIGMAPS).await;
                expect_create(&mut s.c3, SERVICES).await;
            })
            .await;
        // The namespace's status change wakes the reconcile: no error, no retry.
        assert_eq!(result.unwrap(), Action::await_change(), "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_copy_refused_there_is_reported_and_every_other_object_still_goes() {
    let quota = testing::status(
        403,
        "Forbidden",
        "configmaps \"settings\" is forbidden: exceeded quota: objects, requested: count/configmaps=1, used: count/configmaps=1, limited: count/configmaps=1",
    );
    let invalid = testing::status(
        422,
        "Invalid",
        "ConfigMap \"settings\" is invalid: denied by policy",
    );
    for (code, answer) in [(403, quota), (422, invalid)] {
        let mut world = world(
            local(
                vec![configmap()],
                vec![secret()],
                vec![],
                vec![service()],
                vec![],
            ),
            |_, _| {},
        );
        let (result, _, ()) = world
            .reconcile(ready_in_both(), async |s| {
                s.c2.expect(Method::POST, CONFIGMAPS)
                    .await
                    .answer(code, &answer);
                // Said on the original, with cluster and cause.
                let event = expect_event(&mut s.local, "shop", "ConfigMap", "settings").await;
                assert_eq!(event["type"], "Warning");
                assert_eq!(event["reason"], "ReflectionRefused");
                let note = event["note"].as_str().unwrap();
                assert!(
                    note.starts_with("cluster c2 refused the copy of ConfigMap settings: "),
                    "{note}"
                );
                assert!(note.contains(answer["message"].as_str().unwrap()), "{note}");
                // The rest goes on: the Secret and the Service there, everything in c3.
                expect_create(&mut s.c2, SECRETS).await;
                expect_create(&mut s.c2, SERVICES).await;
                expect_create(&mut s.c3, CONFIGMAPS).await;
                expect_create(&mut s.c3, SECRETS).await;
                expect_create(&mut s.c3, SERVICES).await;
            })
            .await;
        // Then the error, for the backoff.
        assert_eq!(remote_api_error(result), ("c2".to_owned(), code));
    }
}

#[tokio::test(start_paused = true)]
async fn a_create_failing_otherwise_is_retried_once_the_rest_went_on() {
    for (code, reason) in [(409, "Conflict"), (500, "InternalError")] {
        let mut world = world(
            local(vec![configmap()], vec![], vec![], vec![service()], vec![]),
            |_, _| {},
        );
        let (result, _, ()) = world
            .reconcile(ready_in_both(), async |s| {
                s.c2.expect(Method::POST, CONFIGMAPS)
                    .await
                    .fail(code, reason);
                // No event: such errors pass by themselves.
                expect_create(&mut s.c2, SERVICES).await;
                expect_create(&mut s.c3, CONFIGMAPS).await;
                expect_create(&mut s.c3, SERVICES).await;
            })
            .await;
        assert_eq!(remote_api_error(result), ("c2".to_owned(), code));
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_apply_is_returned_once_the_rest_went_on() {
    for code in [403, 409, 500] {
        let mut stale = copy_in_c2(&configmap(), "copy-cm");
        stale.data = None;
        let mut world = world(
            local(vec![configmap()], vec![], vec![], vec![service()], vec![]),
            |c2, _| c2.configmaps = watched([stale], true),
        );
        let (result, _, ()) = world
            .reconcile(ready_in_both(), async |s| {
                s.c2.expect(Method::PATCH, CONFIGMAP)
                    .await
                    .fail(code, reason_of(code));
                if code == 403 {
                    let event = expect_event(&mut s.local, "shop", "ConfigMap", "settings").await;
                    assert_eq!(event["reason"], "ReflectionRefused");
                }
                expect_create(&mut s.c2, SERVICES).await;
                expect_create(&mut s.c3, CONFIGMAPS).await;
                expect_create(&mut s.c3, SERVICES).await;
            })
            .await;
        assert_eq!(remote_api_error(result), ("c2".to_owned(), code));
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_delete_is_returned_once_the_rest_went_on() {
    // 409: the uid precondition failed (recreated by someone else in between).
    for code in [409, 500] {
        let mut world = world(testing::stores(), |c2, _| {
            c2.configmaps = watched([copy_in_c2(&configmap(), "copy-cm")], true);
            c2.services = watched([service_copy_allocated()], true);
        });
        let (result, _, ()) = world
            .reconcile(ready_in_c2(), async |s| {
                s.c2.expect(Method::DELETE, CONFIGMAP)
                    .await
                    .fail(code, reason_of(code));
                s.c2.expect(Method::DELETE, SERVICE)
                    .await
                    .ok(&testing::success());
            })
            .await;
        assert_eq!(remote_api_error(result), ("c2".to_owned(), code));
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_lookup_after_a_create_conflict_ends_the_reconcile() {
    let mut world = world(
        local(vec![configmap()], vec![], vec![], vec![], vec![]),
        |_, _| {},
    );
    let (result, _, ()) = world
        .reconcile(ready_in_c2(), async |s| {
            s.c2.expect(Method::POST, CONFIGMAPS)
                .await
                .fail(409, "AlreadyExists");
            s.c2.expect(Method::GET, CONFIGMAP)
                .await
                .fail(500, "InternalError");
        })
        .await;
    assert_eq!(remote_api_error(result), ("c2".to_owned(), 500));
    assert!(world.conflicts().is_empty(), "{:?}", world.conflicts());
}

#[tokio::test(start_paused = true)]
async fn a_remote_that_does_not_answer_is_given_up_after_the_remote_timeout() {
    let mut world = world(
        local(vec![configmap()], vec![], vec![], vec![service()], vec![]),
        |_, _| {},
    );
    let (result, took, _unanswered) = world
        .reconcile(ready_in_both(), async |s| {
            let unanswered = s.c2.expect(Method::POST, CONFIGMAPS).await.unanswered();
            // Nothing more is sent to c2 (each call would wait as long); c3 gets its copies.
            expect_create(&mut s.c3, CONFIGMAPS).await;
            expect_create(&mut s.c3, SERVICES).await;
            unanswered
        })
        .await;
    match result {
        Err(ObjectsError::Remote(RemoteError::Timeout(cluster_id))) => assert_eq!(cluster_id, "c2"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        took >= REMOTE_TIMEOUT && took < REMOTE_TIMEOUT + Duration::from_secs(1),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_reconcile_is_counted_and_retried_later_each_time() {
    let world = world(testing::stores(), |_, _| {});
    let error = ObjectsError::Remote(RemoteError::Timeout("c2".into()));
    let key = "namespace-objects/shop/offloading";
    let mut actions = Vec::new();
    for _ in 0..12 {
        actions.push(error_policy(
            Arc::new(ready_in_c2()),
            &error,
            world.ctx.clone(),
        ));
    }
    // Each failure counts towards the next delay (plumbing::backoff: doubled up to the cap,
    // with jitter), not the same 5 s every time.
    assert_eq!(world.ctx.backoff.failures(key), 12);
    assert!(actions.windows(2).any(|w| w[0] != w[1]), "{actions:?}");
    let text = world.metrics();
    assert!(
        text.contains(
            "reconcile_errors_total{controller=\"namespace-objects\",reason=\"kubernetes\"} 12"
        ),
        "{text}"
    );
}

/// Reported Ready, but the namespace there is not (or no longer) ours: someone deleted
/// ours and created their own of that name, or it is another cluster's. Nothing is written.
#[tokio::test(start_paused = true)]
async fn a_ready_cluster_whose_namespace_is_not_ours_gets_nothing() {
    let stores = local(vec![configmap()], vec![], vec![], vec![], vec![]);
    let mut w = world(stores, |p2, p3| {
        p2.namespaces = watched([], true);
        p3.namespaces = watched(
            [crate::model::remote_namespace::desired(
                REMOTE_NAMESPACE,
                "another-cluster",
                "shop",
            )],
            true,
        );
    });
    let (result, _, ()) = w.reconcile(ready_in_both(), async |_| {}).await;
    // c2's may only be not seen yet: looked at again soon.
    assert!(result.is_ok(), "{result:?}");
}

/// An immutable copy whose original was made again with other data, and a Secret's copy
/// of another type, cannot be applied over (the API server refuses): each is deleted (uid
/// precondition), to be created anew once its watch says it is gone.
#[tokio::test(start_paused = true)]
async fn a_copy_that_cannot_change_in_place_is_deleted_to_be_made_anew() {
    let mut frozen = configmap();
    frozen.immutable = Some(true);
    let mut stale = copy_in_c2(&frozen, "copy-cm");
    stale.data = Some([("mode".to_string(), "slow".to_string())].into());
    let mut retyped = copy_in_c2(&secret(), "copy-s");
    retyped.type_ = Some("kubernetes.io/basic-auth".into());
    let mut world = world(
        local(vec![frozen], vec![secret()], vec![], vec![], vec![]),
        |c2, _| {
            c2.configmaps = watched([stale], true);
            c2.secrets = watched([retyped], true);
        },
    );
    let (result, _, bodies) = world
        .reconcile(ready_in_c2(), async |s| {
            let mut bodies = Vec::new();
            for path in [CONFIGMAP, "/api/v1/namespaces/shop-c1/secrets/db"] {
                let call = s.c2.expect(Method::DELETE, path).await;
                bodies.push(call.body.clone());
                call.ok(&testing::success());
            }
            bodies
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(
        bodies,
        [
            json!({"preconditions": {"uid": "copy-cm"}}),
            json!({"preconditions": {"uid": "copy-s"}}),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_immutable_copy_whose_labels_differ_is_applied_over_not_made_anew() {
    let mut frozen = configmap();
    frozen.immutable = Some(true);
    // Marked there by a webhook of that cluster: same content, other labels.
    let mut marked = copy_in_c2(&frozen, "copy-cm");
    marked
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("policy.example.com/scanned".into(), "true".into());
    let mut world = world(
        local(vec![frozen], vec![], vec![], vec![], vec![]),
        |c2, _| c2.configmaps = watched([marked], true),
    );
    let (result, _, ()) = world
        .reconcile(ready_in_c2(), async |s| {
            let call = s.c2.expect(Method::PATCH, CONFIGMAP).await;
            let body = call.body.clone();
            assert_eq!(body["immutable"], true, "{body}");
            call.ok(&body);
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test(start_paused = true)]
async fn a_namespace_whose_local_objects_are_not_listed_yet_loses_no_copy() {
    // The local ConfigMap watch has not listed "shop" yet (it just entered the scope): its
    // copies in c2 have no original in the store, and must not be taken for orphans.
    let mut stores = testing::stores();
    stores.covered.configmaps = Coverage::scoped();
    let mut world = world(stores, |c2, _| {
        c2.configmaps = watched([copy_in_c2(&configmap(), "copy-cm")], true);
    });
    let (result, _, ()) = world.reconcile(ready_in_c2(), async |_| {}).await;
    // Looked at again soon (and at once when the namespace is listed).
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(2)));
}
