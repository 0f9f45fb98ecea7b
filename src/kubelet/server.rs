//! The HTTPS listener of the virtual nodes' kubelet API: a serving certificate for the
//! advertised address, client certificates checked against the CA that signs the API
//! server's kubelet client certificate (or none, for a caller with a bearer token),
//! HTTP/1.1 with upgrades.

use std::{net::IpAddr, sync::Arc, time::Duration};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::net::TcpListener;

use super::{
    authz::{self, Caller},
    relay::Relay,
};
use crate::plumbing::{
    certs,
    https::{self, accept},
};

/// Long enough for a day's certificate rotation never to matter: the process restarts
/// far more often, and a new certificate comes with it.
const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Connections served at once. Each `kubectl logs -f`, `exec`, `attach` or `port-forward`
/// holds one for as long as it lasts (HTTP/1.1, upgraded), so this is more than the
/// webhooks'. The relay never reads a request body, so a slow body holds nothing but its
/// connection.
pub(crate) const MAX_CONNECTIONS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeletTlsError {
    #[error(
        "no CA to check the API server's kubelet client certificate against: pass --kubelet-client-ca (the CA of the API server's --kubelet-client-certificate)"
    )]
    NoClientCa,
    #[error("the kubelet client CA is unusable: {0}")]
    ClientCa(String),
    #[error("cannot make the kubelet serving certificate: {0}")]
    Serving(String),
}

/// TLS for the kubelet API: serving `address`, requiring a client certificate from
/// `client_cas` (DER).
pub(crate) fn tls_config(
    address: IpAddr,
    client_cas: &[Vec<u8>],
) -> Result<Arc<ServerConfig>, KubeletTlsError> {
    if client_cas.is_empty() {
        return Err(KubeletTlsError::NoClientCa);
    }
    let mut roots = RootCertStore::empty();
    for der in client_cas {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| KubeletTlsError::ClientCa(e.to_string()))?;
    }
    // A certificate, when presented, must be the CA's; without one, a bearer token may say
    // who calls (`authz`), and a caller with neither is refused (401), as by a kubelet.
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|e| KubeletTlsError::ClientCa(e.to_string()))?;
    // API servers do not check kubelet serving certificates unless told to
    // (--kubelet-certificate-authority); ours is signed by a CA made for it.
    let serving = || -> Result<_, certs::CertError> {
        let ca = certs::generate_ca(SERVING_VALIDITY)?;
        let pair = certs::issue_serving(
            &ca,
            &["namespace-offloading-kubelet".to_owned()],
            &[address],
            SERVING_VALIDITY,
        )?;
        Ok((pair, ca))
    };
    let (pair, ca) = serving().map_err(|e| KubeletTlsError::Serving(e.to_string()))?;
    let mut chain = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KubeletTlsError::Serving(e.to_string()))?;
    chain.extend(
        CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| KubeletTlsError::Serving(e.to_string()))?,
    );
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes())
        .map_err(|e| KubeletTlsError::Serving(e.to_string()))?;
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| KubeletTlsError::Serving(e.to_string()))?;
    // Upgrades (exec, attach, port-forward) need HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the kubelet API until `shutdown` resolves; open streams get a moment to end.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    relay: Arc<Relay>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(https::HEADER_READ_TIMEOUT);
    let serving = accept::Serving {
        name: "kubelet",
        builder,
        upgrades: true,
        grace: Duration::from_secs(2),
        max_connections: MAX_CONNECTIONS,
    };
    accept::serve_tls(listener, tls, serving, shutdown, move |session| {
        // Who is calling: the certificate the handshake verified.
        let who: Option<Arc<Caller>> = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| authz::identity(cert))
            .map(Arc::new);
        let relay = relay.clone();
        let service = service_fn(move |request| {
            let (relay, who) = (relay.clone(), who.clone());
            async move {
                Ok::<_, std::convert::Infallible>(relay.handle(request, who.as_deref()).await)
            }
        });
        (service, accept::Lifetime::Served)
    })
    .await;
}
