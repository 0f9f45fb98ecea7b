//! The serving certificate, chosen at each TLS handshake: from files that are re-read when
//! they change (cert-manager, a Secret volume's symlink swap: no restart, no watcher), or
//! swapped in place by the self-managed certificate loop.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::SystemTime,
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {path}: {message}")]
    Certificate { path: PathBuf, message: String },
    #[error("cannot read private key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("the private key does not belong to the certificate ({0})")]
    Mismatch(String),
    #[error("no certificate found in {0}")]
    Empty(PathBuf),
    #[error("the webhook client CA is unusable: {0}")]
    ClientCa(String),
}

/// A rustls server configuration (TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1) around a resolver.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Who may call the webhooks: the API server, known by the client certificate it presents
/// to webhooks (its AdmissionConfiguration's `kubeConfigFile`), signed by a CA and, when
/// names are given, with one of them as its common name.
pub struct Callers {
    roots: Arc<RootCertStore>,
    names: Vec<String>,
}

impl Callers {
    /// The CA certificates in the PEM file at `ca`, and the accepted common names.
    pub fn from_pem_file(ca: &Path, names: Vec<String>) -> Result<Self, TlsError> {
        let unreadable = |message: String| TlsError::Certificate {
            path: ca.to_owned(),
            message,
        };
        let pem = std::fs::read(ca).map_err(|e| unreadable(e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(cert.map_err(|e| unreadable(e.to_string()))?)
                .map_err(|e| unreadable(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(TlsError::Empty(ca.to_owned()));
        }
        Ok(Self {
            roots: Arc::new(roots),
            names,
        })
    }

    /// Whether the connection's verified client certificate is one of the callers'. The
    /// handshake already checked it against the CA; this checks the name.
    pub(crate) fn admits(&self, session: &rustls::ServerConnection) -> bool {
        let Some(leaf) = session.peer_certificates().and_then(|chain| chain.first()) else {
            return false;
        };
        self.names.is_empty() || common_name(leaf).is_some_and(|cn| self.names.contains(&cn))
    }
}

/// The common name of a certificate (DER).
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_owned())
}

/// [`server_config`], asking clients for a certificate from `callers`' CA. One without a
/// certificate (or with one of the CA but another name) still completes the handshake, so
/// that it can be told why it is refused (`https::serve_tls` answers it 403); one whose
/// certificate another CA signed fails the handshake.
pub fn server_config_for(
    resolver: Arc<dyn ResolvesServerCert>,
    callers: Option<&Callers>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let Some(callers) = callers else {
        return Ok(server_config(resolver));
    };
    let verifier = WebPkiClientVerifier::builder(callers.roots.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::ClientCa(e.to_string()))?;
    let mut config = ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_client_cert_verifier(verifier)
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Parses a PEM certificate chain and private key into a key rustls can serve.
pub(crate) fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            path: "<memory>".into(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Empty("<memory>".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        path: "<memory>".into(),
        message: e.to_string(),
    })?;
    build(chain, key)
}

fn build(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    // A rotation writes two files; between the writes they do not match.
    certified
        .keys_match()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(certified)
}

/// `--tls-cert-file` / `--tls-key-file`: checked at every handshake (two `stat`s) and
/// re-read only when either file changed.
#[derive(Debug)]
pub struct FileCerts {
    cert: PathBuf,
    key: PathBuf,
    loaded: RwLock<(Stamp, Arc<CertifiedKey>)>,
}

type Stamp = Option<[(SystemTime, u64); 2]>;

impl FileCerts {
    /// Loads the files once; failing here stops start-up with a clear error.
    pub fn new(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let stamp = stamp(cert, key);
        let loaded = load(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            loaded: RwLock::new((stamp, Arc::new(loaded))),
        })
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let now = stamp(&self.cert, &self.key);
        {
            let loaded = self.loaded.read().ok()?;
            if loaded.0 == now {
                return Some(loaded.1.clone());
            }
        }
        match load(&self.cert, &self.key) {
            Ok(key) => {
                let key = Arc::new(key);
                if let Ok(mut loaded) = self.loaded.write() {
                    *loaded = (now, key.clone());
                }
                tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                Some(key)
            }
            Err(e) => {
                // Keep serving the previous certificate; the next handshake tries again.
                tracing::warn!(error = %e, "cannot reload the serving certificate");
                self.loaded.read().ok().map(|l| l.1.clone())
            }
        }
    }
}

impl ResolvesServerCert for FileCerts {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| {
        fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    Some([one(cert)?, one(key)?])
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate {
            path: cert.to_owned(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Empty(cert.to_owned()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    build(chain, private)
}

/// The self-managed certificate: replaced in place on renewal.
#[derive(Debug)]
pub(crate) struct SharedCert(RwLock<Arc<CertifiedKey>>);

impl SharedCert {
    pub(crate) fn new(key: CertifiedKey) -> Self {
        Self(RwLock::new(Arc::new(key)))
    }

    pub(crate) fn set(&self, key: CertifiedKey) {
        if let Ok(mut current) = self.0.write() {
            *current = Arc::new(key);
        }
    }
}

impl ResolvesServerCert for SharedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| k.clone())
    }
}
