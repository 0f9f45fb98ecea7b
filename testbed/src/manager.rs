//! `namespace-offloading run` as the tests and benchmarks start it: on free loopback ports,
//! its log in the test bed's log directory, waited for until `/ready` answers 200. The
//! caller names the binary (a test's `CARGO_BIN_EXE_...`, a benchmark's release build).

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    time::{Duration, Instant},
};

use crate::{Lifetime, Process, process::free_port};

/// How long a manager may take to list its watches and report ready.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// A running manager; dropping it stops the process.
pub struct Manager {
    pub process: Process,
    pub webhook_port: u16,
    pub admin_port: u16,
}

/// Starts `binary run` against `kubeconfig` (registering its webhooks at its own address
/// when `register`), with `extra` flags, its output in `log_dir/<name>.log`, and waits
/// until it is ready.
pub async fn start(
    binary: &Path,
    log_dir: &Path,
    name: &str,
    kubeconfig: &Path,
    register: bool,
    extra: &[String],
) -> Result<Manager, String> {
    let webhook_port = free_port().map_err(|e| e.to_string())?;
    let admin_port = free_port().map_err(|e| e.to_string())?;
    let mut args = vec![
        "run".to_owned(),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--webhook-listen=127.0.0.1:{webhook_port}"),
        format!("--admin-listen=127.0.0.1:{admin_port}"),
        // The virtual nodes' kubelet API, on a free port (several managers share a host).
        "--kubelet-listen=127.0.0.1:0".to_owned(),
        format!("--instance={name}"),
    ];
    if register {
        args.push(format!("--webhook-url=https://127.0.0.1:{webhook_port}"));
        // The test bed's API servers present their webhook client certificate (see
        // cluster.rs): answer only them, as a hardened installation does.
        if let Some(dir) = kubeconfig.parent() {
            args.push(format!(
                "--webhook-client-ca={}",
                dir.join("pki").join(crate::pki::CA_CERT).display()
            ));
            args.push(format!(
                "--webhook-client-name={}",
                crate::pki::WEBHOOK_CLIENT_CN
            ));
        }
    }
    args.extend(extra.iter().cloned());
    let mut process = Process::spawn(
        name,
        binary,
        &args,
        &log_dir.join(format!("{name}.log")),
        Lifetime::Attached,
    )
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    while started.elapsed() < READY_WITHIN {
        if let Some(status) = process.exited() {
            return Err(format!(
                "{name} exited ({status}); see {}",
                process.log().display()
            ));
        }
        if status(admin_port, "/ready") == Some(200) {
            return Ok(Manager {
                process,
                webhook_port,
                admin_port,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "{name} did not become ready within {READY_WITHIN:?}; see {}",
        process.log().display()
    ))
}

/// The status code of a plain-HTTP GET on loopback, if anything answered.
pub fn status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
