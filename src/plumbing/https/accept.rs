//! The TLS accept loop both HTTPS servers share (the webhooks and the virtual nodes'
//! kubelet API): accept, handshake within [`HANDSHAKE_TIMEOUT`], serve each connection with
//! hyper, and on shutdown stop accepting and let open connections finish within a grace.

use std::{sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use rustls::{ServerConfig, ServerConnection};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A TLS handshake that takes longer than this is abandoned.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    M: Fn(&ServerConnection) -> S + Send + Sync + 'static,
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
    } = serving;
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
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let service = service.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    return tracing::debug!(server = name, %peer, error = %e, "TLS handshake failed");
                }
                Err(_) => return tracing::debug!(server = name, %peer, "TLS handshake timed out"),
            };
            let service = service(stream.get_ref().1);
            let io = TokioIo::new(stream);
            let served = if upgrades {
                watcher
                    .watch(
                        builder
                            .serve_connection_with_upgrades(io, service)
                            .into_owned(),
                    )
                    .await
            } else {
                watcher
                    .watch(builder.serve_connection(io, service).into_owned())
                    .await
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
