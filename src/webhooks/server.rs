//! The webhook server: AdmissionReviews in, answers out, within the body limit and the
//! API server's timeout. The decisions are `model::admission`'s; the two calls a review
//! may need (a NamespaceOffloading the cache does not hold yet, the namespace label) are
//! made here.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

use crate::{
    model::{
        admission::{self, Lookup, Outcome, Webhook},
        api::{NamespaceOffloading, OFFLOADING_NAME},
        markers::{SCHEDULING_ENABLED_LABEL, WEBHOOK_FIELD_MANAGER},
    },
    plumbing::metrics::Metrics,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// AdmissionReviews carry the object and, on UPDATE, the old one; the API server caps a
/// request at 3 MiB, so 8 MiB leaves room without letting a client exhaust memory.
pub(crate) const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// The API server gives up on a webhook after its `timeoutSeconds` (5 s): so do we.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// What the webhook handlers share.
pub struct AppState {
    pub lookup: Arc<dyn Lookup>,
    pub local_cluster_id: String,
    /// The manager's namespace, which is never offloaded.
    pub own_namespace: String,
    /// The RuntimeClass by which a pod asks for the virtual nodes (empty: none).
    pub runtime_class: String,
    pub metrics: Arc<Metrics>,
    /// For the two calls a review may need (see [`admission::Outcome`]); `None` serves
    /// from the caches alone (a missing NamespaceOffloading counts as absent, and
    /// namespaces are not marked), as the unit tests do.
    pub client: Option<Client>,
}

/// The webhook server's service: each webhook's path answered directly, with the body
/// limit and request timeout applied. No router and no middleware stand between: this is
/// the admission hot path, where a router cost a twelfth of a review (docs/benchmarks.md).
#[derive(Clone)]
pub struct WebhookService(Arc<AppState>);

impl WebhookService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self(state)
    }

    /// Answers one request: a review on a webhook's path, a 405 for another method there,
    /// a 404 anywhere else.
    pub async fn answer<B>(&self, request: http::Request<B>) -> Response
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let Some(webhook) = Webhook::from_path(request.uri().path()) else {
            let message = format!(
                "not found: this server answers admission reviews at {}\n",
                Webhook::ALL.map(Webhook::path).join(", ")
            );
            return (StatusCode::NOT_FOUND, message).into_response();
        };
        if request.method() != Method::POST {
            let message = format!(
                "method {} not allowed: admission reviews are POSTed\n",
                request.method()
            );
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "POST")],
                message,
            )
                .into_response();
        }
        within_limits(webhook, &self.0, request.into_body()).await
    }
}

impl<B> hyper::service::Service<http::Request<B>> for WebhookService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: http::Request<B>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move { Ok(service.answer(request).await) })
    }
}

/// Reads the body (at most [`MAX_BODY_BYTES`]) and answers, all within
/// [`REQUEST_TIMEOUT`], so a client trickling its body holds nothing for long. One timer
/// per request.
async fn within_limits<B>(webhook: Webhook, state: &AppState, body: B) -> Response
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let answered = tokio::time::timeout(REQUEST_TIMEOUT, async move {
        match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(collected) => answer(webhook, state, collected.to_bytes()).await,
            Err(e) if e.is::<LengthLimitError>() => {
                let message = format!("the body is larger than {MAX_BODY_BYTES} bytes\n");
                (StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
            }
            Err(e) => {
                let message = format!("cannot read the body: {e}\n");
                (StatusCode::BAD_REQUEST, message).into_response()
            }
        }
    });
    match answered.await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request timed out\n").into_response(),
    }
}

/// The API server answers these calls well within the webhook's own 5 s: a read of the
/// NamespaceOffloading (up to three, with the pauses below: 3.5 s in all) ...
const API_CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// ... or the one label patch of a NamespaceOffloading's creation, which may wait longer
/// (a thousand namespaces labelled at once keep the API server busy for seconds).
const MARK_TIMEOUT: Duration = Duration::from_secs(3);
/// Pauses before reading a NamespaceOffloading again that a marked namespace lacks.
const ABSENT_RETRIES: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];

async fn answer(webhook: Webhook, state: &AppState, body: Bytes) -> Response {
    let started = Instant::now();
    let outcome = admission::review(
        webhook,
        &body,
        state.lookup.as_ref(),
        admission::Site {
            local_cluster_id: &state.local_cluster_id,
            own_namespace: &state.own_namespace,
            runtime_class: &state.runtime_class,
        },
    );
    let answered = match outcome {
        Ok(Outcome::Answered(answer)) => Ok(answer),
        Ok(Outcome::ReadOffloading(pending)) => {
            let mut found = read_offloading(state, pending.namespace()).await;
            // In a marked namespace the NamespaceOffloading is most likely being stored
            // this very moment (marking comes just before): look again, briefly.
            for delay in ABSENT_RETRIES {
                if !(pending.expects_offloading() && matches!(found, Ok(None))) {
                    break;
                }
                tokio::time::sleep(delay).await;
                found = read_offloading(state, pending.namespace()).await;
            }
            Ok(pending.resume(found, state.lookup.as_ref()))
        }
        Ok(Outcome::MarkNamespace(pending)) => {
            Ok(match mark_namespace(state, pending.namespace()).await {
                Ok(()) => pending.marked(),
                Err(e) => pending.failed(&e),
            })
        }
        Err(bad) => Err(bad),
    };
    let seconds = started.elapsed().as_secs_f64();
    match answered {
        Ok((review, verdict)) => {
            state
                .metrics
                .review(webhook.label(), verdict.label(), seconds);
            tracing::debug!(
                webhook = webhook.label(),
                uid = %review.response.uid,
                result = verdict.label(),
                "admission review answered"
            );
            // Encoded here rather than by axum::Json, which grows its buffer from 128 bytes.
            match serde_json::to_vec(&review) {
                Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode the answer: {e}\n"),
                )
                    .into_response(),
            }
        }
        Err(bad) => {
            state.metrics.review(webhook.label(), "invalid", seconds);
            tracing::warn!(webhook = webhook.label(), error = %bad, "malformed admission review");
            (StatusCode::BAD_REQUEST, format!("{bad}\n")).into_response()
        }
    }
}

/// The one read a pod review may need: its namespace's NamespaceOffloading, when the cache
/// does not hold it (yet).
async fn read_offloading(
    state: &AppState,
    namespace: &str,
) -> Result<Option<NamespaceOffloading>, String> {
    let Some(client) = &state.client else {
        return Ok(None);
    };
    let api = Api::<NamespaceOffloading>::namespaced(client.clone(), namespace);
    let found = match tokio::time::timeout(API_CALL_TIMEOUT, api.get_opt(OFFLOADING_NAME)).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {API_CALL_TIMEOUT:?}")),
    };
    let result = match &found {
        Ok(Some(_)) => "found",
        Ok(None) => "absent",
        Err(_) => "error",
    };
    state.metrics.api_call("read-offloading", result);
    tracing::debug!(namespace, result, "NamespaceOffloading read past the cache");
    found
}

/// Labels the namespace of a NamespaceOffloading being created, so that the pod webhook
/// covers its pods from the first one, before the controller has even seen the object.
async fn mark_namespace(state: &AppState, namespace: &str) -> Result<(), String> {
    let Some(client) = &state.client else {
        return Ok(());
    };
    let patch = serde_json::json!({"metadata": {"labels": {SCHEDULING_ENABLED_LABEL: "true"}}});
    let params = PatchParams {
        field_manager: Some(WEBHOOK_FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let api = Api::<Namespace>::all(client.clone());
    let marked = match tokio::time::timeout(
        MARK_TIMEOUT,
        api.patch(namespace, &params, &Patch::Merge(&patch)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {MARK_TIMEOUT:?}")),
    };
    state.metrics.api_call(
        "mark-namespace",
        if marked.is_ok() { "ok" } else { "error" },
    );
    marked
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::{Router, body::Body};
    use http::Request;
    use hyper_util::service::TowerToHyperService;
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    use serde_json::json;

    use tokio::{net::TcpListener, sync::watch};

    use super::*;
    use crate::{
        model::{admission::NodeInfo, api::NamespaceOffloading},
        plumbing::{
            certs::{self, CA_VALIDITY, SERVING_VALIDITY},
            https::{serve_tls, tls},
        },
    };

    struct NoCaches;
    impl Lookup for NoCaches {
        fn offloading(&self, _: &str) -> Option<Arc<NamespaceOffloading>> {
            None
        }
        fn node(&self, _: &str) -> Option<NodeInfo> {
            None
        }
        fn offloadings(&self) -> Vec<Arc<NamespaceOffloading>> {
            Vec::new()
        }
    }

    fn service() -> (WebhookService, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let state = Arc::new(AppState {
            lookup: Arc::new(NoCaches),
            local_cluster_id: "id".into(),
            own_namespace: "liqo".into(),
            runtime_class: "liqo".into(),
            metrics: metrics.clone(),
            client: None,
        });
        (WebhookService::new(state), metrics)
    }

    async fn send(service: &WebhookService, request: Request<Body>) -> (StatusCode, String) {
        let response = service.answer(request).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn post(service: &WebhookService, path: &str, body: Vec<u8>) -> (StatusCode, String) {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        send(service, request).await
    }

    fn review(uid: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "offloading.liqo.io", "version": "v1alpha1", "kind": "NamespaceOffloading"},
                "resource": {"group": "offloading.liqo.io", "version": "v1alpha1", "resource": "namespaceoffloadings"},
                "name": "offloading", "namespace": "ns", "operation": "CREATE", "userInfo": {},
                "object": {"apiVersion": "offloading.liqo.io/v1alpha1", "kind": "NamespaceOffloading",
                           "metadata": {"name": "offloading", "namespace": "ns"}, "spec": {}},
            },
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn routes_answer_reviews_and_count_them() {
        let (service, metrics) = service();
        let (status, body) = post(&service, "/mutate/namespace-offloading", review("abc")).await;
        assert_eq!(status, StatusCode::OK);
        let out: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["response"]["uid"], "abc");
        assert_eq!(out["response"]["allowed"], true);
        let (status, _) = post(&service, "/validate/namespace-offloading", review("def")).await;
        assert_eq!(status, StatusCode::OK);
        let text = metrics.encode();
        assert!(
            text.contains("webhook=\"namespace-offloading-defaults\",result=\"patched\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("webhook=\"namespace-offloading-validation\",result=\"allowed\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn malformed_and_oversized_bodies_are_rejected() {
        let (service, metrics) = service();
        let (status, body) = post(&service, "/mutate/pod", b"{not json".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body.contains("cannot parse the body as an AdmissionReview"),
            "{body}"
        );
        let (status, body) = post(&service, "/mutate/pod", vec![b' '; MAX_BODY_BYTES + 1]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert!(
            metrics
                .encode()
                .contains("webhook=\"pod\",result=\"invalid\"} 1")
        );
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_refused_with_what_is_served() {
        let (service, metrics) = service();
        let (status, body) = post(&service, "/nowhere", review("x")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("/mutate/pod, "), "{body}");
        // A prefix of a webhook's path is not that webhook.
        let (status, _) = post(&service, "/mutate/pod/", review("x")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let get = Request::get("/validate/namespace-offloading")
            .body(Body::empty())
            .unwrap();
        let response = service.answer(get).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "POST");
        // Nothing was reviewed.
        assert!(
            !metrics.encode().contains("result=\""),
            "{}",
            metrics.encode()
        );
    }

    fn write_pair(dir: &Path) -> String {
        let ca = certs::generate_ca(CA_VALIDITY).unwrap();
        let serving =
            certs::issue_serving(&ca, &["localhost".into()], &[], SERVING_VALIDITY).unwrap();
        certs::write_files(dir, &ca, &serving).unwrap();
        ca.cert_pem
    }

    type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

    /// A TLS connection to the test server, trusting `roots`.
    async fn tls_connect(port: u16, roots: &[String]) -> TlsStream {
        tls_connect_with(port, roots, rustls::DEFAULT_VERSIONS, &[]).await
    }

    /// A TLS connection offering only `versions` and the ALPN protocols `alpn`.
    async fn tls_connect_with(
        port: u16,
        roots: &[String],
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> TlsStream {
        let mut store = rustls::RootCertStore::empty();
        for pem in roots {
            store
                .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
                .unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(store)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// The leaf certificate the server presents to a new connection.
    async fn served_certificate(port: u16, roots: &[String]) -> Vec<u8> {
        let tls = tls_connect(port, roots).await;
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    fn leaf_der(dir: &Path) -> Vec<u8> {
        CertificateDer::from_pem_file(dir.join("tls.crt"))
            .unwrap()
            .to_vec()
    }

    async fn start<S>(
        service: S,
        resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    ) -> (u16, watch::Sender<bool>, tokio::task::JoinHandle<()>)
    where
        S: hyper::service::Service<
                Request<hyper::body::Incoming>,
                Response = Response,
                Error = Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        crate::plumbing::crypto::install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(serve_tls(
            listener,
            service,
            tls::server_config(resolver),
            None,
            stop_rx,
            Duration::from_secs(5),
        ));
        (port, stop, task)
    }

    #[tokio::test]
    async fn replaced_certificate_files_are_served_to_new_connections() {
        crate::plumbing::crypto::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let first_ca = write_pair(dir.path());
        let first = leaf_der(dir.path());
        let files =
            tls::FileCerts::new(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
        let (port, stop, task) = start(service().0, Arc::new(files)).await;
        assert_eq!(
            served_certificate(port, std::slice::from_ref(&first_ca)).await,
            first
        );

        // Rotate as cert-manager would: a new key and certificate (here from a new CA).
        // The files' modification times (nanosecond resolution) tell the server to re-read.
        std::thread::sleep(Duration::from_millis(20));
        let second_ca = write_pair(dir.path());
        let second = leaf_der(dir.path());
        assert_ne!(first, second);
        assert_eq!(
            served_certificate(port, &[first_ca, second_ca]).await,
            second
        );
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    /// POSTs a review over an established connection, with HTTP/2 or HTTP/1.1.
    async fn post_review(tls: TlsStream, http2: bool, uid: &str) -> (http::Version, String) {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let request = Request::post("https://localhost/mutate/namespace-offloading")
            .header("content-type", "application/json")
            .body(Body::from(review(uid)))
            .unwrap();
        let response = if http2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        };
        assert_eq!(response.status(), StatusCode::OK);
        let version = response.version();
        let body = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
            .await
            .unwrap();
        (version, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn http2_and_http1_are_served_over_tls_1_3_and_1_2() {
        use rustls::{ProtocolVersion, version};
        crate::plumbing::crypto::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = write_pair(dir.path());
        let files =
            tls::FileCerts::new(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
        let (port, stop, task) = start(service().0, Arc::new(files)).await;
        let roots = std::slice::from_ref(&ca);

        // The API server offers h2 first: ALPN must pick it and the review be answered over it.
        let tls = tls_connect_with(port, roots, &[&version::TLS13], &[b"h2", b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(ProtocolVersion::TLSv1_3)
        );
        let (version, body) = post_review(tls, true, "over-h2").await;
        assert_eq!(version, http::Version::HTTP_2);
        assert!(body.contains(r#""uid":"over-h2""#), "{body}");

        // An older client: TLS 1.2 and HTTP/1.1 only.
        let tls = tls_connect_with(port, roots, &[&version::TLS12], &[b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(ProtocolVersion::TLSv1_2)
        );
        let (version, body) = post_review(tls, false, "over-h1").await;
        assert_eq!(version, http::Version::HTTP_11);
        assert!(body.contains(r#""uid":"over-h1""#), "{body}");

        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_ones() {
        crate::plumbing::crypto::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = write_pair(dir.path());
        let files =
            tls::FileCerts::new(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
        let slow = Router::new().route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "done"
            }),
        );
        let (port, stop, task) = start(TowerToHyperService::new(slow), Arc::new(files)).await;

        let mut tls = tls_connect(port, std::slice::from_ref(&ca)).await;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(true).unwrap();
        let mut response = String::new();
        tls.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("done"), "{response}");
        task.await.unwrap();
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        );
    }
}
