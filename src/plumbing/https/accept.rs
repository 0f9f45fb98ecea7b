//! The TLS accept loop both HTTPS servers share (the webhooks and the virtual nodes'
//! kubelet API): at most [`Serving::max_connections`] connections at once, each handshaking
//! within [`HANDSHAKE_TIMEOUT`] and sending its first request head within
//! [`FIRST_REQUEST_TIMEOUT`]; served with hyper; on shutdown stop accepting and let open
//! connections finish within a grace.

use std::{sync::Arc, time::Duration};

use futures::future::Either;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use rustls::{ServerConfig, ServerConnection};
use tokio::{
    net::TcpListener,
    sync::{Notify, Semaphore},
};
use tokio_rustls::TlsAcceptor;

/// A TLS handshake that takes longer than this is abandoned.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the handshake, a connection that has not sent a complete request head within this
/// is closed: hyper's HTTP/1.1 header timeout starts only once the protocol is told apart,
/// and HTTP/2 has none, so a client silent after its handshake (or trickling the HTTP/2
/// preface) would otherwise hold its connection for ever.
pub(crate) const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How connections are served.
pub(crate) struct Serving {
    /// In logs: which server.
    pub(crate) name: &'static str,
    pub(crate) builder: auto::Builder<TokioExecutor>,
    /// Whether connections may switch protocols (exec, port-forward).
    pub(crate) upgrades: bool,
    /// How long open connections may go on after shutdown.
    pub(crate) grace: Duration,
    /// Connections served at once; one more is closed as soon as it is accepted, before its
    /// handshake costs anything (a full server answers at once rather than leaving clients
    /// in the backlog).
    pub(crate) max_connections: usize,
}

/// Serves `listener` until `shutdown` resolves; `service` makes each connection's service
/// from its TLS session (the client certificate, if any).
pub(crate) async fn serve_tls<S, B, M>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    serving: Serving,
    shutdown: impl Future<Output = ()>,
    service: M,
) where
    M: Fn(&ServerConnection) -> (S, Lifetime) + Send + Sync + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let Serving {
        name,
        builder,
        upgrades,
        grace,
        max_connections,
    } = serving;
    let slots = Arc::new(Semaphore::new(max_connections));
    let acceptor = TlsAcceptor::from(tls);
    let builder = Arc::new(builder);
    let service = Arc::new(service);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(server = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(server = name, %peer, max_connections, "connection refused: too many open");
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let service = service.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Held for as long as the connection lives.
            let _slot = slot;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    return tracing::debug!(server = name, %peer, error = %e, "TLS handshake failed");
                }
                Err(_) => return tracing::debug!(server = name, %peer, "TLS handshake timed out"),
            };
            let first = Arc::new(Notify::new());
            let (inner, lifetime) = service(stream.get_ref().1);
            let service = FirstRequest {
                inner,
                first: first.clone(),
            };
            let io = TokioIo::new(stream);
            if lifetime == Lifetime::OneAnswer {
                // Its answer goes out, then the connection (and its slot) is gone: once the
                // request is in, no other follows (HTTP/1.1: no keep-alive; HTTP/2: GOAWAY).
                let connection = builder.serve_connection(io, service).into_owned();
                tokio::pin!(connection);
                tokio::select! {
                    _ = &mut connection => return,
                    () = first.notified() => {}
                    () = tokio::time::sleep(FIRST_REQUEST_TIMEOUT) => return,
                }
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(ONE_ANSWER_LINGER, connection).await;
                return tracing::debug!(server = name, %peer, "refused connection closed");
            }
            let connection = if upgrades {
                Either::Left(
                    watcher.watch(
                        builder
                            .serve_connection_with_upgrades(io, service)
                            .into_owned(),
                    ),
                )
            } else {
                Either::Right(watcher.watch(builder.serve_connection(io, service).into_owned()))
            };
            tokio::pin!(connection);
            let served = tokio::select! {
                served = &mut connection => served,
                () = first.notified() => connection.await,
                () = tokio::time::sleep(FIRST_REQUEST_TIMEOUT) => {
                    // Dropping the connection closes it.
                    return tracing::debug!(server = name, %peer, "no request within {FIRST_REQUEST_TIMEOUT:?}: closed");
                }
            };
            if let Err(e) = served {
                tracing::debug!(server = name, %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(server = name, "draining connections");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(server = name, "stopped"),
        _ = tokio::time::sleep(grace) => tracing::warn!(server = name, ?grace, "connections still open after the grace period; closing"),
    }
}

/// How long a connection lives once its first request arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// As long as the client keeps it (within the servers' bounds).
    Served,
    /// Just long enough to answer that request: a refused caller holds no slot.
    OneAnswer,
}

/// How long a [`Lifetime::OneAnswer`] connection may take to read its request and answer.
const ONE_ANSWER_LINGER: Duration = Duration::from_secs(3);

/// A connection's service that tells when its first request arrives (a complete head).
struct FirstRequest<S> {
    inner: S,
    first: Arc<Notify>,
}

impl<S, R> hyper::service::Service<R> for FirstRequest<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: R) -> Self::Future {
        // One atomic store per request: cheap enough for the admission hot path.
        self.first.notify_one();
        self.inner.call(request)
    }
}
