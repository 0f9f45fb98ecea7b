//! TLS set-up shared by the server and the clients.

/// Selects ring as rustls's process-wide crypto provider. Both kube's client and our server
/// build rustls configurations from the process default, which rustls refuses to guess when
/// more than one provider is compiled in. Calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
