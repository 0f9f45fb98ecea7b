//! 9: bounded servers. Cluster 1's manager's webhook port and its virtual nodes' kubelet API
//! cut off clients that trickle their request head or body, or say nothing after the TLS
//! handshake, and serve a bounded number of connections, while the real webhook goes on
//! admitting pods. Figures: docs/webhooks.md#robustness.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    core::v1::{Node, Pod},
};
use kube::{Api, Client, api::PostParams};
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::support::{
    eventually,
    topology::{bare_pod, delete_namespace, offload_remotely_to_eu, with_topology},
    unique,
};

/// The servers' limits (src/plumbing/https), as docs/webhooks.md states them.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const WEBHOOK_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const WEBHOOK_MAX_CONNECTIONS: usize = 256;
/// Scheduling and loopback noise on a busy test machine.
const SLACK: Duration = Duration::from_secs(3);

/// Accepts any server certificate: API servers do not check a kubelet's either, and what
/// is tested here is the server's patience, not its name.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client offering HTTP/1.1, with a client certificate if given.
fn connector(client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>) -> TlsConnector {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer));
    let mut config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn tls(connector: &TlsConnector, port: u16) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    connector.connect(name, tcp).await
}

/// Cluster 1's webhook port, from the webhook configuration its manager registered.
async fn webhook_port(client: &Client) -> u16 {
    let config = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get("namespace-offloading")
        .await
        .unwrap();
    let url = config.webhooks.unwrap()[0]
        .client_config
        .url
        .clone()
        .unwrap();
    url.trim_start_matches("https://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The kubelet API port cluster 2's virtual node in cluster 1 advertises.
async fn kubelet_port(client: &Client, id: &str) -> u16 {
    let node = Api::<Node>::all(client.clone())
        .get(&format!("liqo-{id}"))
        .await
        .unwrap();
    node.status
        .unwrap()
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port as u16
}

/// Writes `bytes` one at a time, `pause` apart, until the server closes the connection;
/// returns how long that took and what the server said, or `None` if it was still open
/// after `give_up`.
async fn trickle(
    mut stream: TlsStream<TcpStream>,
    bytes: &[u8],
    pause: Duration,
    give_up: Duration,
) -> Option<(Duration, String)> {
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut next = bytes.iter().cycle();
    while started.elapsed() < give_up {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(pause, stream.read(&mut buf)).await {
            // Closed (an orderly close or a reset).
            Ok(Ok(0) | Err(_)) => {
                return Some((started.elapsed(), String::from_utf8_lossy(&answer).into()));
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if let Some(byte) = next.next()
            && stream.write_all(&[*byte]).await.is_err()
        {
            return Some((started.elapsed(), String::from_utf8_lossy(&answer).into()));
        }
        let _ = stream.flush().await;
    }
    None
}

/// A header that never ends: every byte keeps the connection busy.
const SLOW_HEAD: &[u8] = b"POST /mutate/pod HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[tokio::test]
async fn slow_heads_slow_bodies_and_silent_clients_are_cut_off() {
    with_topology(|tb, t| async move {
        let one = tb.cluster(1).client().await.unwrap();
        let webhook = webhook_port(&one).await;
        let kubelet = kubelet_port(&one, &t.ids[1]).await;
        let anyone = connector(None);
        // Any user with a certificate of the cluster CA gets past the kubelet API's TLS.
        let viewer = connector(Some(tb.cluster(1).viewer_cert()));
        let pause = Duration::from_millis(300);
        let head_limit = HEADER_TIMEOUT + SLACK;
        let first_limit = FIRST_REQUEST_TIMEOUT + SLACK;
        let body_limit = WEBHOOK_REQUEST_TIMEOUT + SLACK;
        let give_up = Duration::from_secs(30);

        // All at once: each waits out its server's timeout.
        let webhook_head = tls(&anyone, webhook).await.unwrap();
        let kubelet_head = tls(&viewer, kubelet).await.unwrap();
        let webhook_silent = tls(&anyone, webhook).await.unwrap();
        let kubelet_silent = tls(&viewer, kubelet).await.unwrap();
        let webhook_preface = tls(&anyone, webhook).await.unwrap();
        // Anyone else's request is refused at once (tests/trust/webhooks.rs); a slow body
        // is the API server's own connection's problem.
        let api_server = connector(Some(tb.cluster(1).webhook_client_cert()));
        let mut webhook_body = tls(&api_server, webhook).await.unwrap();
        webhook_body
            .write_all(b"POST /mutate/pod HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
            .await
            .unwrap();
        let (webhook_head, kubelet_head, webhook_silent, kubelet_silent, webhook_preface, webhook_body) = tokio::join!(
            trickle(webhook_head, SLOW_HEAD, pause, give_up),
            trickle(kubelet_head, b"GET /containerLogs/ns/pod/c HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", pause, give_up),
            trickle(webhook_silent, b"", pause, give_up),
            trickle(kubelet_silent, b"", pause, give_up),
            // The HTTP/2 preface, trickled: hyper waits for all of it to tell the protocol.
            trickle(webhook_preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Duration::from_secs(1), give_up),
            trickle(webhook_body, b"\"a\": 1, ", pause, give_up),
        );
        let mut failures = Vec::new();
        for (what, cut, limit) in [
            ("webhook: a head sent byte by byte", &webhook_head, head_limit),
            ("kubelet API: a head sent byte by byte", &kubelet_head, head_limit),
            ("webhook: nothing after the handshake", &webhook_silent, first_limit),
            ("kubelet API: nothing after the handshake", &kubelet_silent, first_limit),
            ("webhook: the HTTP/2 preface trickled", &webhook_preface, first_limit),
            ("webhook: a body sent byte by byte", &webhook_body, body_limit),
        ] {
            match cut {
                Some((after, _)) if *after <= limit => {
                    eprintln!("{what}: cut off after {after:.1?}");
                }
                Some((after, _)) => failures.push(format!("{what}: cut off after {after:?}, over {limit:?}")),
                None => failures.push(format!("{what}: still served after {give_up:?}")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // The slow body is answered before the connection closes.
        let (_, said) = webhook_body.unwrap();
        assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    })
    .await;
}

/// A pod the pod webhook must mutate (a dry run: nothing stored); whether it was.
async fn admitted(client: &Client, ns: &str) -> bool {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let Ok(pod) = pods
        .create(&params, &bare_pod(&unique("p"), json!({})))
        .await
    else {
        return false;
    };
    pod.spec
        .and_then(|s| s.tolerations)
        .unwrap_or_default()
        .iter()
        .any(|t| t.key.as_deref() == Some("virtual-node.liqo.io/not-allowed"))
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_while_the_webhook_admits_pods() {
    with_topology(|tb, _t| async move {
        let one = tb.cluster(1).client().await.unwrap();
        let ns = unique("flood");
        offload_remotely_to_eu(tb, &one, &ns).await;
        // The API server's own connection to the webhook, open before the flood.
        assert!(admitted(&one, &ns).await, "not admitted before the flood");

        let port = webhook_port(&one).await;
        let anyone = connector(None);
        let extra = 32;
        let mut held = Vec::new();
        let mut refused = 0;
        let started = Instant::now();
        for _ in 0..WEBHOOK_MAX_CONNECTIONS + extra {
            match tls(&anyone, port).await {
                Ok(stream) => held.push(stream),
                Err(_) => refused += 1,
            }
        }
        eprintln!(
            "{} connections held, {refused} refused, in {:.1?}",
            held.len(),
            started.elapsed()
        );
        assert!(held.len() <= WEBHOOK_MAX_CONNECTIONS, "{} held", held.len());
        assert!(refused >= extra, "only {refused} refused");
        // Meanwhile the real webhook admits pods, over the connection it already has.
        assert!(admitted(&one, &ns).await, "not admitted during the flood");

        // The flood is cut off; a newcomer is served again.
        let within = FIRST_REQUEST_TIMEOUT + 2 * SLACK;
        eventually("a new connection to be served", within, || async {
            let mut stream = tls(&anyone, port).await.ok()?;
            stream
                .write_all(b"GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.ok()?;
            answer.starts_with("HTTP/1.1 ").then_some(())
        })
        .await;
        drop(held);
        delete_namespace(&one, &ns).await;
    })
    .await;
}
