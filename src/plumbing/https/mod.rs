//! HTTPS serving (rustls, HTTP/1.1 and HTTP/2, graceful drain) for the webhooks and the
//! kubelet API, and the plain-HTTP admin server (probes, metrics).

pub(crate) mod accept;
pub mod tls;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use std::convert::Infallible;

use axum::{
    Router,
    http::{Request, StatusCode, header},
    response::Response,
    routing::get,
};
use futures::future::Either;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::watch};

use crate::plumbing::metrics::Metrics;

/// HTTP/1.1 connections that send no complete request head within this are closed (idle
/// scanners, slowloris), whether they trickle it or keep the connection idle between requests.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Webhook connections served at once. The API server multiplexes its reviews over a few
/// HTTP/2 connections (one per API server, more only past [`MAX_STREAMS`] each), so this
/// is room for many API servers, and the most a flood of clients can hold.
pub(crate) const WEBHOOK_MAX_CONNECTIONS: usize = 256;
/// Concurrent HTTP/2 streams (requests) per connection: hyper's default, made explicit.
pub(crate) const MAX_STREAMS: u32 = 200;
/// HTTP/2 streams a client may reset before we accept them (rapid reset, CVE-2023-44487).
const MAX_PENDING_RESETS: usize = 20;
/// How much of a refused caller's body is read, and for how long, before the 403.
const REFUSED_BODY_LIMIT: usize = 64 * 1024;
const REFUSED_BODY_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 header block size: a review's headers are a few hundred bytes.
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// `/live` (always 200 while the process serves), `/ready` (200 once the caches synced,
/// 503 before and during shutdown) and `/metrics`.
pub(crate) fn admin_router(ready: Arc<AtomicBool>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route(
            "/ready",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics.encode();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
}

/// A connection's service: the server's own, or the refusal for a caller it does not know.
#[derive(Clone)]
enum ConnectionService<S> {
    Served(S),
    Refused(TowerToHyperService<Router>),
}

impl<S> hyper::service::Service<Request<Incoming>> for ConnectionService<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        S::Future,
        <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Future,
    >;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        match self {
            Self::Served(service) => Either::Left(service.call(request)),
            Self::Refused(refused) => Either::Right(refused.call(request)),
        }
    }
}

/// Serves the webhooks' `service` over TLS until `shutdown` turns true; in-flight requests
/// get `grace` to finish. Bodies are bounded by the service (`webhooks::server`: size, and
/// one deadline for reading and answering).
pub(crate) async fn serve_tls<S>(
    listener: TcpListener,
    service: S,
    tls: Arc<rustls::ServerConfig>,
    callers: Option<Arc<tls::Callers>>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_header_list_size(MAX_HEADER_LIST)
        // A peer that stops answering pings is gone: its connection and slot are freed.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let serving = accept::Serving {
        name: "webhook",
        builder,
        upgrades: false,
        grace,
        max_connections: WEBHOOK_MAX_CONNECTIONS,
    };
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    // Only the API server, when it is known by its certificate: anyone else who reaches
    // the port (a pod, say) is answered nothing but why, and causes nothing.
    let refused = Router::new().fallback(|body: axum::body::Body| async move {
        // Read (a bounded body, briefly) before answering: a client still sending when
        // the answer comes sees a reset stream instead of the reason.
        let _ = tokio::time::timeout(
            REFUSED_BODY_TIMEOUT,
            axum::body::to_bytes(body, REFUSED_BODY_LIMIT),
        )
        .await;
        (
            StatusCode::FORBIDDEN,
            "this server answers the API server's admission reviews only: present the client certificate its AdmissionConfiguration names for webhooks (see --webhook-client-ca)\n",
        )
    });
    accept::serve_tls(listener, tls, serving, stop, move |session| {
        if callers.as_ref().is_some_and(|c| !c.admits(session)) {
            (
                ConnectionService::Refused(TowerToHyperService::new(refused.clone())),
                accept::Lifetime::OneAnswer,
            )
        } else {
            (
                ConnectionService::Served(service.clone()),
                accept::Lifetime::Served,
            )
        }
    })
    .await;
}

/// Serves the admin router on plain HTTP until `shutdown` turns true.
pub(crate) async fn serve_admin(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "admin server failed");
    }
}

/// Binds a TCP listener with a message naming the address on failure.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn admin_routes_report_liveness_readiness_and_metrics() {
        let ready = Arc::new(AtomicBool::new(false));
        let admin = admin_router(ready.clone(), Arc::new(Metrics::new()));
        let get = |path: &'static str| {
            let admin = admin.clone();
            async move {
                admin
                    .oneshot(Request::get(path).body(Body::empty()).unwrap())
                    .await
                    .unwrap()
                    .status()
            }
        };
        assert_eq!(get("/live").await, StatusCode::OK);
        assert_eq!(get("/ready").await, StatusCode::SERVICE_UNAVAILABLE);
        ready.store(true, Ordering::Relaxed);
        assert_eq!(get("/ready").await, StatusCode::OK);
        assert_eq!(get("/metrics").await, StatusCode::OK);
    }
}
