//! A load generator for webhook servers: keep-alive HTTP/1.1 over TLS on a fixed number of
//! connections, either as fast as the server answers (saturation) or at a fixed offered
//! rate, with latency measured from when each request was due (so a stalled server cannot
//! hide its queue: no coordinated omission).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where to send, and what.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub tls: Arc<rustls::ClientConfig>,
    /// Request bodies, sent in turn (each connection starts at its own offset).
    pub bodies: Arc<Vec<Bytes>>,
}

/// A TLS client trusting `ca_pem`, offering HTTP/1.1 only.
pub fn client_tls(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("cannot read the CA: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("cannot trust the CA: {e}"))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> Result<Sender, String> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.addr))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::IpAddress(target.addr.ip().into());
    let tls = TlsConnector::from(target.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {} failed: {e}", target.addr))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request and reads the whole answer; the body on HTTP 200.
async fn send(sender: &mut Sender, target: &Target, body: Bytes) -> Result<Bytes, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let request = http::Request::post(target.path.as_str())
        .header(http::header::HOST, "webhook")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status != http::StatusCode::OK {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    Ok(bytes)
}

/// One request on a fresh connection: the answer, to check before loading a server.
pub async fn probe(target: &Target, body: Bytes) -> Result<serde_json::Value, String> {
    let mut sender = connect(target).await?;
    let bytes = send(&mut sender, target, body).await?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the answer is not JSON: {e}"))
}

/// How a load was offered.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub connections: usize,
    /// Requests per second over all connections; `None`: as fast as answers come.
    pub rate: Option<f64>,
    /// Answers in this first stretch are not counted (connections, caches, CPU frequency).
    pub warmup: Duration,
    pub duration: Duration,
}

/// What a load measured.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    pub requests: u64,
    pub errors: u64,
    /// At a fixed rate: requests due in the window and still unanswered at the drain
    /// deadline (the server could not keep up with the offered rate).
    pub late: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    pub p999_us: u32,
    pub max_us: u32,
}

struct Connection {
    latencies: Vec<u32>,
    errors: u64,
    late: u64,
    /// When the last counted answer arrived.
    last_answer: Option<Instant>,
    first_error: Option<String>,
}

/// How long after the window requests due in it may still be answered (fixed rate only):
/// a server slower than the offered rate has a queue to drain, and its latency is the
/// figure the load exists to measure.
fn drain(duration: Duration) -> Duration {
    duration.max(Duration::from_secs(5))
}

/// Offers `shape` to `target`; fails only when the load could not be offered at all
/// (no connection, or no request answered).
///
/// At saturation, the answers that arrive within the window are counted. At a fixed rate,
/// the requests due within the window are, however late their answers come (up to the
/// drain deadline), so an overloaded server shows its queue instead of showing nothing.
pub async fn run(target: &Target, shape: Shape) -> Result<Measured, String> {
    let mut senders = Vec::with_capacity(shape.connections);
    for _ in 0..shape.connections {
        senders.push(connect(target).await?);
    }
    let started = Instant::now();
    let window = Window {
        measure_from: started + shape.warmup,
        until: started + shape.warmup + shape.duration,
        deadline: started + shape.warmup + shape.duration + drain(shape.duration),
    };
    let mut tasks = Vec::with_capacity(shape.connections);
    for (i, sender) in senders.into_iter().enumerate() {
        let target = target.clone();
        // Each connection offers its share of the rate, evenly staggered.
        let interval = shape
            .rate
            .map(|rate| Duration::from_secs_f64(shape.connections as f64 / rate));
        let offset = interval
            .map(|iv| iv.mul_f64(i as f64 / shape.connections as f64))
            .unwrap_or_default();
        tasks.push(tokio::spawn(drive(
            sender,
            target,
            i,
            started + offset,
            interval,
            window,
        )));
    }
    let mut latencies = Vec::new();
    let (mut errors, mut late) = (0, 0);
    let mut last_answer = window.until;
    let mut first_error = None;
    for task in tasks {
        let c = task.await.map_err(|e| e.to_string())?;
        latencies.extend(c.latencies);
        errors += c.errors;
        late += c.late;
        last_answer = last_answer.max(c.last_answer.unwrap_or(window.until));
        first_error = first_error.or(c.first_error);
    }
    if latencies.is_empty() {
        return Err(format!(
            "no request succeeded: {}",
            first_error.unwrap_or_else(|| if late > 0 {
                format!(
                    "{late} requests were still unanswered {:?} after the window",
                    drain(shape.duration)
                )
            } else {
                "none was sent".into()
            })
        ));
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    // A server that drained a queue after the window answered over a longer time.
    let seconds = (last_answer - window.measure_from).as_secs_f64();
    Ok(Measured {
        requests: latencies.len() as u64,
        errors,
        late,
        seconds,
        per_second: latencies.len() as f64 / seconds,
        p50_us: at(0.50),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: latencies[latencies.len() - 1],
    })
}

#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    until: Instant,
    /// Past this, nothing more is sent or awaited.
    deadline: Instant,
}

impl Window {
    /// Whether a request begun at `start` (its due time at a fixed rate) and answered at
    /// `done` counts.
    fn counts(&self, start: Instant, done: Instant, fixed_rate: bool) -> bool {
        start >= self.measure_from && start < self.until && (fixed_rate || done <= self.until)
    }
}

async fn drive(
    mut sender: Sender,
    target: Target,
    index: usize,
    first_due: Instant,
    interval: Option<Duration>,
    window: Window,
) -> Connection {
    let mut c = Connection {
        latencies: Vec::new(),
        errors: 0,
        late: 0,
        last_answer: None,
        first_error: None,
    };
    let mut due = first_due;
    let mut n = index;
    loop {
        let now = Instant::now();
        // Closed loop at saturation; otherwise wait for the request's turn, and measure
        // from then even when the previous answer made it late.
        let start = match interval {
            Some(iv) => {
                if due >= window.until {
                    break;
                }
                if now >= window.deadline {
                    c.late += unsent(due, iv, window);
                    break;
                }
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                }
                let start = due;
                due += iv;
                start
            }
            None if now >= window.until => break,
            None => now,
        };
        let body = target.bodies[n % target.bodies.len()].clone();
        n += 1;
        let Ok(result) =
            tokio::time::timeout_at(window.deadline.into(), send(&mut sender, &target, body)).await
        else {
            if let Some(iv) = interval {
                c.late += u64::from(start >= window.measure_from) + unsent(due, iv, window);
            }
            break;
        };
        let done = Instant::now();
        let counted = window.counts(start, done, interval.is_some());
        match result {
            Ok(_) if counted => {
                c.latencies
                    .push(u32::try_from((done - start).as_micros()).unwrap_or(u32::MAX));
                c.last_answer = Some(done);
            }
            Ok(_) => {}
            Err(e) => {
                c.errors += u64::from(counted);
                c.first_error.get_or_insert(e);
                // A closed connection is replaced; one that cannot be is the end.
                if sender.is_closed() {
                    match connect(&target).await {
                        Ok(s) => sender = s,
                        Err(_) => break,
                    }
                }
            }
        }
    }
    c
}

/// Requests of one connection due from `due` on, every `interval`, within the measured
/// window.
fn unsent(mut due: Instant, interval: Duration, window: Window) -> u64 {
    let mut n = 0;
    while due < window.until {
        n += u64::from(due >= window.measure_from);
        due += interval;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> (Instant, Window) {
        let t0 = Instant::now();
        let w = Window {
            measure_from: t0 + Duration::from_secs(1),
            until: t0 + Duration::from_secs(3),
            deadline: t0 + Duration::from_secs(8),
        };
        (t0, w)
    }

    #[test]
    fn a_late_answer_counts_at_a_fixed_rate_but_not_at_saturation() {
        let (t0, w) = window();
        let due = t0 + Duration::from_millis(2_900);
        let answered = t0 + Duration::from_secs(6);
        assert!(w.counts(due, answered, true));
        assert!(!w.counts(due, answered, false));
        // Due in the warm-up or after the window: never.
        assert!(!w.counts(t0, t0 + Duration::from_millis(1_100), true));
        assert!(!w.counts(w.until, w.until, true));
    }

    #[test]
    fn unsent_requests_are_those_due_within_the_window() {
        let (t0, w) = window();
        // Due every 500 ms from 0.5 s: 1.0, 1.5, 2.0 and 2.5 s fall in [1 s, 3 s).
        assert_eq!(
            unsent(
                t0 + Duration::from_millis(500),
                Duration::from_millis(500),
                w
            ),
            4
        );
        assert_eq!(unsent(w.until, Duration::from_millis(1), w), 0);
    }
}
