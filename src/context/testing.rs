//! For unit tests: a mocked API server (kube's tower-test pattern, as in kube's
//! `controller-rs` fixtures) that expects one request at a time and answers it as the test
//! says, and the contexts the workers run on, built on such mocks, with stores filled from
//! given objects and no watch running.
//!
//! A test runs the code under test and its script of the API servers side by side with
//! [`exchange`]; each `expect` fails the test when no request comes, or another one; each
//! `nothing_more` fails it when one more comes. Run them on a paused clock
//! (`#[tokio::test(start_paused = true)]`): waits for requests then cost nothing, and a
//! call left unanswered times out at once.

use std::{collections::BTreeMap, future::Future, time::Duration};

use http::{Method, Request, Response, StatusCode, header::CONTENT_TYPE};
use k8s_openapi::api::core::v1::Node;
use kube::{
    Client,
    client::Body,
    runtime::{
        events::{Recorder, Reporter},
        reflector::{self, Lookup, Store},
        watcher,
    },
};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

use crate::{
    context::{
        Replica, Shared, Stores,
        peers::{Peer, Peers, Watched},
    },
    model::{
        api::{NamespaceOffloading, NamespaceOffloadingSpec, OFFLOADING_NAME},
        markers::{REMOTE_CLUSTER_ID_LABEL, TYPE_LABEL, VIRTUAL_NODE},
    },
    plumbing::{metrics::ControllerMetrics, scoped::Coverage, watches::Listed},
};

/// This cluster's ID in tests.
pub(crate) const LOCAL_CLUSTER_ID: &str = "c1";
/// The replica name events are reported as.
pub(crate) const HOLDER: &str = "replica-0";
/// The controller name events are reported by.
pub(crate) const REPORTER: &str = "namespace-offloading";

/// How long a mock waits for a request it expects, or listens for one it does not. Longer
/// than any timeout of the code under test (on a paused clock it costs nothing).
const WAIT: Duration = Duration::from_secs(60);
/// How long a whole exchange may take before the test is declared hung.
const HUNG: Duration = Duration::from_secs(600);

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// A mocked API server: the other end of a [`Client`].
pub(crate) struct ApiServer {
    /// Which one (in failure messages): "local", "c2"...
    name: String,
    handle: ApiHandle,
}

/// A client and the mocked API server behind it.
pub(crate) fn api_server(name: &str) -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let server = ApiServer {
        name: name.to_owned(),
        handle,
    };
    (client, server)
}

/// One request received by an [`ApiServer`], waiting for its answer.
pub(crate) struct Call {
    server: String,
    pub(crate) method: Method,
    pub(crate) path: String,
    /// The query string's pairs.
    pub(crate) query: BTreeMap<String, String>,
    pub(crate) content_type: Option<String>,
    /// The body as JSON (`Null` when empty).
    pub(crate) body: Value,
    respond: SendResponse<Response<Body>>,
}

/// A request that is never answered, for as long as this lives.
pub(crate) struct Unanswered {
    _respond: SendResponse<Response<Body>>,
}

impl ApiServer {
    /// The next request, which must be `method` on `path` (the query aside); fails the
    /// test when none comes.
    pub(crate) async fn expect(&mut self, method: Method, path: &str) -> Call {
        let Some(call) = self.next().await else {
            panic!(
                "API server {}: expected {method} {path}, but no request came",
                self.name
            );
        };
        assert_eq!(
            (&call.method, call.path.as_str()),
            (&method, path),
            "API server {}: expected {method} {path}, got {} {} with body {}",
            self.name,
            call.method,
            call.path,
            call.body
        );
        call
    }

    /// The next request, whatever it is (when the order of several is not decided);
    /// fails the test when none comes.
    pub(crate) async fn any(&mut self) -> Call {
        let Some(call) = self.next().await else {
            panic!(
                "API server {}: expected a request, but none came",
                self.name
            );
        };
        call
    }

    /// Fails the test when one more request comes.
    pub(crate) async fn nothing_more(&mut self) {
        if let Some(call) = self.next().await {
            panic!(
                "API server {}: unexpected request {} {} with body {}",
                self.name, call.method, call.path, call.body
            );
        }
    }

    async fn next(&mut self) -> Option<Call> {
        let (request, respond) = tokio::time::timeout(WAIT, self.handle.next_request())
            .await
            .ok()??;
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "API server {}: a body that is not JSON ({e}): {}",
                    self.name,
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        let query = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Some(Call {
            server: self.name.clone(),
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query,
            content_type: parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
            respond,
        })
    }
}

impl Call {
    /// Answers `code` with `body`.
    pub(crate) fn answer(self, code: u16, body: &Value) {
        let response = Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.respond.send_response(response);
    }

    /// Answers 200 with `body`.
    pub(crate) fn ok(self, body: &Value) {
        self.answer(200, body);
    }

    /// Answers 201 with what was sent (as a create does).
    pub(crate) fn created(self) {
        let body = self.body.clone();
        self.answer(201, &body);
    }

    /// Answers an error: the API's `Status` with this code and reason.
    pub(crate) fn fail(self, code: u16, reason: &str) {
        let message = format!("{reason} (from mocked API server {})", self.server);
        self.answer(code, &status(code, reason, &message));
    }

    /// Never answers, while the returned value lives.
    pub(crate) fn unanswered(self) -> Unanswered {
        Unanswered {
            _respond: self.respond,
        }
    }

    /// A query parameter.
    pub(crate) fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }
}

/// The API's `Status` of a failure.
pub(crate) fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "code": code, "reason": reason, "message": message,
    })
}

/// What the API answers to a delete that is done at once.
pub(crate) fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}

/// The reasons the API gives with these codes.
pub(crate) fn reason_of(code: u16) -> &'static str {
    match code {
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        500 => "InternalError",
        _ => "Unknown",
    }
}

/// Runs the code under test and the API servers' script together; fails the test if they
/// have not both ended within a (paused-clock) while.
pub(crate) async fn exchange<T, S>(
    code: impl Future<Output = T>,
    script: impl Future<Output = S>,
) -> (T, S) {
    tokio::time::timeout(HUNG, async { tokio::join!(code, script) })
        .await
        .unwrap_or_else(|_| panic!("the code under test or the script hung"))
}

/// A store holding `objects`, as a watch that listed them would fill it.
pub(crate) fn store<K>(objects: impl IntoIterator<Item = K>) -> Store<K>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let (store, mut writer) = reflector::store();
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(object));
    }
    store
}

/// A peer's watch that holds `objects`, and has listed once or not.
pub(crate) fn watched<K>(objects: impl IntoIterator<Item = K>, listed: bool) -> Watched<K>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let (tx, now) = Listed::new();
    if listed {
        tx.send(true).unwrap();
    }
    Watched {
        store: store(objects),
        listed: now,
        failure: Default::default(),
    }
}

/// Empty local stores.
pub(crate) fn stores() -> Stores {
    Stores {
        offloadings: store([]),
        nodes: store([]),
        namespaces: store([]),
        pods: store([]),
        remote_clusters: store([]),
        secrets: store([]),
        configmaps: store([]),
        service_accounts: store([]),
        services: store([]),
        endpoint_slices: store([]),
        ingresses: store([]),
        network_policies: store([]),
        claims: store([]),
        covered: crate::context::Covered {
            pods: Coverage::everything(),
            secrets: Coverage::everything(),
            configmaps: Coverage::everything(),
            service_accounts: Coverage::everything(),
            services: Coverage::everything(),
            endpoint_slices: Coverage::everything(),
            ingresses: Coverage::everything(),
            network_policies: Coverage::everything(),
            claims: Coverage::everything(),
        },
    }
}

/// A peer of cluster `cluster_id` (RemoteCluster `rc-<cluster_id>`) reached through
/// `client`, its watches empty and not listed: set the ones a test needs.
pub(crate) fn peer(cluster_id: &str, client: Client) -> Peer {
    Peer::unwatched(&format!("rc-{cluster_id}"), client)
}

/// The registry of peered clusters, holding `peers` (by cluster ID).
pub(crate) fn peers(peers: impl IntoIterator<Item = (&'static str, Peer)>) -> Peers {
    let (registry, _changes) = Peers::new(LOCAL_CLUSTER_ID);
    for (cluster_id, peer) in peers {
        registry.insert_unwatched(cluster_id, peer);
    }
    registry
}

/// What the workers share, on the local `client`, this cluster being [`LOCAL_CLUSTER_ID`].
/// Its recorder publishes through `client` too.
pub(crate) fn shared(client: Client, stores: Stores, peers: Peers) -> Shared {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: REPORTER.into(),
            instance: Some(HOLDER.into()),
        },
    );
    Shared {
        client,
        replica: Replica {
            local_cluster_id: LOCAL_CLUSTER_ID.into(),
            holder: HOLDER.into(),
            own_namespace: "liqo".into(),
            home_api: None,
        },
        recorder,
        peers,
        metrics: ControllerMetrics::register(&mut prometheus_client::registry::Registry::default()),
        stores,
        backoff: std::sync::Arc::default(),
        reflection: std::sync::Arc::default(),
    }
}

/// The virtual node standing for `cluster_id` (`liqo-<cluster_id>`).
pub(crate) fn virtual_node(cluster_id: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("liqo-{cluster_id}"),
            "labels": {TYPE_LABEL: VIRTUAL_NODE, REMOTE_CLUSTER_ID_LABEL: cluster_id},
        },
    }))
    .unwrap()
}

/// The NamespaceOffloading of `namespace`, with the defaults (every cluster, DefaultName,
/// LocalAndRemote), generation 1 and no status yet.
pub(crate) fn offloading(namespace: &str) -> NamespaceOffloading {
    let mut nso =
        NamespaceOffloading::new(OFFLOADING_NAME, NamespaceOffloadingSpec::label_default());
    nso.metadata.namespace = Some(namespace.into());
    nso.metadata.uid = Some(format!("nso-{namespace}"));
    nso.metadata.generation = Some(1);
    nso
}

/// The event the recorder publishes next through `server`, about an object of `kind` named
/// `name` in `namespace`; answered as created. Returns its body.
pub(crate) async fn expect_event(
    server: &mut ApiServer,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Value {
    let call = server
        .expect(
            Method::POST,
            &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
        )
        .await;
    let event = call.body.clone();
    assert_eq!(event["regarding"]["kind"], kind, "{event}");
    assert_eq!(event["regarding"]["name"], name, "{event}");
    assert_eq!(event["regarding"]["namespace"], namespace, "{event}");
    assert_eq!(event["reportingController"], REPORTER, "{event}");
    assert_eq!(event["reportingInstance"], HOLDER, "{event}");
    call.created();
    event
}

/// The mock fails a test that sends what it does not expect, or not what it expects.
mod tests {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::Api;

    use super::*;

    async fn get(client: Client, name: &str) {
        let _ = Api::<Namespace>::all(client).get(name).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_expected_request_is_answered_as_told() {
        let (client, mut server) = api_server("local");
        let (got, ()) = exchange(Api::<Namespace>::all(client).get("a"), async {
            server
                .expect(Method::GET, "/api/v1/namespaces/a")
                .await
                .ok(&json!({"metadata": {"name": "a", "uid": "u-a"}}));
            server.nothing_more().await;
        })
        .await;
        assert_eq!(got.unwrap().metadata.uid.as_deref(), Some("u-a"));
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "unexpected request GET /api/v1/namespaces/a")]
    async fn a_request_not_expected_fails_the_test() {
        let (client, mut server) = api_server("local");
        exchange(get(client, "a"), server.nothing_more()).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "expected GET /api/v1/namespaces/a, but no request came")]
    async fn a_request_that_does_not_come_fails_the_test() {
        let (_client, mut server) = api_server("local");
        exchange(async {}, async {
            server.expect(Method::GET, "/api/v1/namespaces/a").await;
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "expected DELETE /api/v1/namespaces/a, got GET /api/v1/namespaces/a")]
    async fn another_request_than_the_one_expected_fails_the_test() {
        let (client, mut server) = api_server("local");
        exchange(get(client, "a"), async {
            server.expect(Method::DELETE, "/api/v1/namespaces/a").await;
        })
        .await;
    }
}
