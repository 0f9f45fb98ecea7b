//! One cluster of the test bed: its PKI, kube-apiserver, controller manager and scheduler.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::{
    ClusterConfig, Process, READY_TIMEOUT, TestbedConfig, TestbedError,
    audit::{self, AuditLog},
    pki::{self, ClusterPki},
    process,
};

/// A running cluster. Its processes sit behind a mutex so that a shared test bed can stop
/// and restart them (an unreachable remote cluster) through a shared reference.
pub struct Cluster {
    name: String,
    dir: PathBuf,
    port: u16,
    /// Where kwok serves the kubelet API of its nodes (HTTPS on 127.0.0.1), once started.
    kwok_port: OnceLock<u16>,
    kubeconfig: PathBuf,
    /// How the API server was started, to start it again after [`Cluster::stop_apiserver`].
    apiserver: (PathBuf, Vec<String>, PathBuf, super::Lifetime),
    processes: Mutex<Vec<Process>>,
}

/// What kwok does for its nodes and their pods (testbed/kwok/stages.yaml).
const KWOK_STAGES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kwok/stages.yaml");

/// What kwok's kubelet API answers for its pods: logs, exec, attach and port-forward
/// (testbed/kwok/debugging.yaml). Its paths are relative to [`KWOK_DIR`], where kwok runs.
const KWOK_DEBUGGING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kwok/debugging.yaml");

/// kwok's working directory: the relative paths in [`KWOK_DEBUGGING`] resolve here.
const KWOK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kwok");

/// What `kubectl logs` prints for every container of a pod on a kwok node: the lines of
/// testbed/kwok/container.log (a CRI log file) without their timestamp, stream and tag.
pub const KWOK_CONTAINER_LOG: &str = "testbed: kwok plays this container's kubelet\n\
     testbed: these lines come from testbed/kwok/container.log\n\
     testbed: the last line of the log\n";

/// The node annotation (value `fake`) that hands a test node to kwok.
pub const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";

impl Cluster {
    pub(super) fn start(
        config: &TestbedConfig,
        c: &ClusterConfig,
        etcd_url: &str,
    ) -> Result<Self, TestbedError> {
        let dir = config.root.join(&c.name);
        let pki_dir = dir.join("pki");
        let pki = ClusterPki::generate(&c.name)?;
        pki.write(&pki_dir)?;
        let port = process::free_port()?;
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &c.name, port, &pki)?;

        let p = |f: &str| pki_dir.join(f).display().to_string();
        // The API server authenticates to admission webhooks with its own client
        // certificate, as a hardened cluster does: webhooks can tell its reviews from
        // anyone else's requests.
        let webhook_kubeconfig = dir.join("webhook-client.kubeconfig");
        let admission_config = dir.join("admission.yaml");
        write_admission_config(
            &admission_config,
            &webhook_kubeconfig,
            &pki_dir.join(pki::WEBHOOK_CLIENT_CERT),
            &pki_dir.join(pki::WEBHOOK_CLIENT_KEY),
        )?;
        let audit_policy = dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, audit::POLICY)
            .map_err(|e| TestbedError::io(&audit_policy, e))?;
        let args = vec![
            format!("--etcd-servers={etcd_url}"),
            // One etcd, one key prefix per cluster: isolated clusters at a third of the cost.
            format!("--etcd-prefix=/{}", c.name),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            "--advertise-address=127.0.0.1".into(),
            // No kubernetes Service endpoints to maintain on loopback.
            "--endpoint-reconciler-type=none".into(),
            format!("--tls-cert-file={}", p(pki::SERVING_CERT)),
            format!("--tls-private-key-file={}", p(pki::SERVING_KEY)),
            format!("--client-ca-file={}", p(pki::CA_CERT)),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer=https://127.0.0.1:{port}"),
            format!("--service-account-key-file={}", p(pki::SA_PUB)),
            format!("--service-account-signing-key-file={}", p(pki::SA_KEY)),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            // The API server's side of `kubectl logs`, `exec`, `attach` and `port-forward`:
            // it calls the node's kubelet (kwok, or a virtual kubelet) over HTTPS with this
            // client certificate, at the node's InternalIP (127.0.0.1: the Hostname address,
            // tried first by default, is the node's name and resolves nowhere). Kubelets'
            // serving certificates are not checked (no --kubelet-certificate-authority), so a
            // virtual kubelet may serve a self-signed one.
            format!(
                "--kubelet-client-certificate={}",
                p(pki::KUBELET_CLIENT_CERT)
            ),
            format!("--kubelet-client-key={}", p(pki::KUBELET_CLIENT_KEY)),
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--allow-privileged=true".into(),
            // Both webhook plugins are on by default. ServiceAccount admission would wait
            // for a token controller the test bed does not run; TaintNodesByCondition
            // would taint every new Node not-ready until a node lifecycle controller
            // (which needs kubelet heartbeats) lifts it, so no test pod could schedule.
            if c.service_accounts {
                "--disable-admission-plugins=TaintNodesByCondition".into()
            } else {
                "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition".into()
            },
            "--profiling=false".into(),
            format!(
                "--admission-control-config-file={}",
                admission_config.display()
            ),
            format!("--cert-dir={}", pki_dir.display()),
            // Who asked for what: tests count a client's watches and requests from it.
            format!("--audit-policy-file={}", audit_policy.display()),
            format!("--audit-log-path={}", dir.join(audit::LOG).display()),
            "--audit-log-maxsize=500".into(),
        ];
        let log = config
            .root
            .join(format!("logs/{}-kube-apiserver.log", c.name));
        let binary = c.binaries(config).join("kube-apiserver");
        let apiserver = Process::spawn(
            &format!("{} kube-apiserver", c.name),
            &binary,
            &args,
            &log,
            config.lifetime,
        )?;
        Ok(Self {
            name: c.name.clone(),
            dir,
            port,
            kwok_port: OnceLock::new(),
            kubeconfig,
            apiserver: (binary, args, log, config.lifetime),
            processes: Mutex::new(vec![apiserver]),
        })
    }

    /// Starts the controller manager (and scheduler) once the API server answers.
    pub(super) fn start_controllers(
        &self,
        config: &TestbedConfig,
        c: &ClusterConfig,
    ) -> Result<(), TestbedError> {
        let binaries = c.binaries(config);
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig.display());
        // namespace and garbagecollector finish namespace deletion; the workload
        // controllers let a demo use Deployments; the volume controllers bind claims to
        // volumes (there is no provisioner: tests make their volumes) and let a claim or
        // volume in use go only once unused. No node lifecycle controller: the test bed's
        // Node objects have no kubelet behind them.
        let mut controllers = "--controllers=namespace,garbagecollector,deployment,replicaset,endpointslice,persistentvolume-binder,pvc-protection,pv-protection"
            .to_owned();
        let mut args = vec![kubeconfig.clone(), "--leader-elect=false".into()];
        if c.service_accounts {
            // Every namespace's `default` account and `kube-root-ca.crt`, which
            // ServiceAccount admission and the token volume it injects refer to.
            controllers.push_str(",serviceaccount,root-ca-cert-publisher");
            args.push(format!(
                "--root-ca-file={}",
                self.dir.join("pki").join(pki::CA_CERT).display()
            ));
        }
        args.extend([
            controllers,
            // No health port: several clusters would fight over the default one.
            "--secure-port=0".into(),
            "--profiling=false".into(),
        ]);
        let mut started = vec![Process::spawn(
            &format!("{} kube-controller-manager", self.name),
            &binaries.join("kube-controller-manager"),
            &args,
            &config
                .root
                .join(format!("logs/{}-kube-controller-manager.log", self.name)),
            config.lifetime,
        )?];
        if c.scheduler {
            started.push(Process::spawn(
                &format!("{} kube-scheduler", self.name),
                &binaries.join("kube-scheduler"),
                &[
                    kubeconfig,
                    "--leader-elect=false".into(),
                    "--secure-port=0".into(),
                    "--profiling=false".into(),
                ],
                &config
                    .root
                    .join(format!("logs/{}-kube-scheduler.log", self.name)),
                config.lifetime,
            )?);
        }
        // kwok plays the kubelet of the test nodes that ask for it (annotation
        // kwok.x-k8s.io/node=fake): their pods run, with IPs, and deletions complete. Never
        // our virtual nodes, whose pods run in another cluster. It also serves those nodes'
        // kubelet API (HTTPS, certificate from the cluster CA) on kwok_port, which its node
        // stage writes into each node's status.daemonEndpoints, so kubectl logs, exec and
        // port-forward reach it through the API server.
        let kwok = binaries.join("kwok");
        if kwok.exists() {
            let index = self
                .name
                .rsplit('-')
                .next()
                .and_then(|n| n.parse::<u8>().ok())
                .unwrap_or(1);
            let pki_dir = self.dir.join("pki");
            let p = |f: &str| pki_dir.join(f).display().to_string();
            // Chosen just before kwok binds it, so that nothing else takes it meanwhile.
            let kwok_port = process::free_port()?;
            let _ = self.kwok_port.set(kwok_port);
            started.push(Process::spawn_in(
                &format!("{} kwok", self.name),
                &kwok,
                &[
                    format!("--kubeconfig={}", self.kubeconfig.display()),
                    format!("--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake"),
                    // Pod IPs distinct per cluster, as real clusters' pod CIDRs are.
                    format!("--cidr=10.{}.0.0/16", 100 + u16::from(index)),
                    "--node-ip=127.0.0.1".into(),
                    format!("--server-address=127.0.0.1:{kwok_port}"),
                    format!("--node-port={kwok_port}"),
                    format!("--tls-cert-file={}", p(pki::KWOK_CERT)),
                    format!("--tls-private-key-file={}", p(pki::KWOK_KEY)),
                    format!("--config={KWOK_STAGES}"),
                    format!("--config={KWOK_DEBUGGING}"),
                ],
                &config.root.join(format!("logs/{}-kwok.log", self.name)),
                config.lifetime,
                Path::new(KWOK_DIR),
            )?);
        }
        self.lock().extend(started);
        Ok(())
    }

    /// Polls `/readyz` with the admin client until the API server is ready.
    pub(super) async fn wait_ready(&self) -> Result<(), TestbedError> {
        let began = Instant::now();
        let deadline = began + READY_TIMEOUT;
        let mut last_error = String::from("not polled yet");
        while Instant::now() < deadline {
            if let Some(status) = self.lock().first_mut().and_then(Process::exited) {
                last_error = format!("kube-apiserver exited ({status})");
                break;
            }
            match self.readyz().await {
                Ok(()) => {
                    tracing::info!(
                        cluster = %self.name,
                        seconds = began.elapsed().as_secs_f32(),
                        "kube-apiserver ready"
                    );
                    return Ok(());
                }
                Err(e) => last_error = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let log = self
            .lock()
            .first()
            .map(|p| p.log().to_owned())
            .unwrap_or_default();
        Err(TestbedError::NotReady {
            component: format!("{} kube-apiserver", self.name),
            timeout: READY_TIMEOUT,
            last_error,
            tail: process::tail(&log, 30),
            log: log.display().to_string(),
        })
    }

    async fn readyz(&self) -> Result<(), String> {
        let client = self.client().await.map_err(|e| e.to_string())?;
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let body = client
            .request_text(request)
            .await
            .map_err(|e| e.to_string())?;
        if body.trim() == "ok" {
            Ok(())
        } else {
            Err(body)
        }
    }

    /// Stops the API server (the cluster becomes unreachable; its data stays in etcd).
    pub fn stop_apiserver(&self) {
        if let Some(apiserver) = self.lock().first_mut() {
            apiserver.stop();
        }
    }

    /// Freezes the API server (SIGSTOP): it still accepts connections but never answers,
    /// like a cluster behind a dead link. Killing a frozen server still works.
    pub fn freeze_apiserver(&self) {
        if let Some(apiserver) = self.lock().first() {
            apiserver.signal("STOP");
        }
    }

    /// Lets a frozen API server go on (SIGCONT).
    pub fn thaw_apiserver(&self) {
        if let Some(apiserver) = self.lock().first() {
            apiserver.signal("CONT");
        }
    }

    /// Starts the API server again on the same port and waits until it is ready.
    pub async fn restart_apiserver(&self) -> Result<(), TestbedError> {
        let (binary, args, log, lifetime) = &self.apiserver;
        let apiserver = Process::spawn(
            &format!("{} kube-apiserver", self.name),
            binary,
            args,
            log,
            *lifetime,
        )?;
        if let Some(slot) = self.lock().first_mut() {
            *slot = apiserver;
        }
        self.wait_ready().await
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig with the admin credentials embedded, usable by kubectl as it is.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's audit log: every request, at the Metadata level.
    pub fn audit_log(&self) -> AuditLog {
        AuditLog::new(self.dir.join(audit::LOG))
    }

    /// The cluster's own directory (PKI under `pki/`, kubeconfig).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster CA's certificate (PEM, `<dir>/pki/ca.crt`): it signs the API server's
    /// serving certificate and every client certificate the API server accepts.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("pki").join(pki::CA_CERT)
    }

    /// The CA (PEM file) that signs the client certificate kube-apiserver presents to
    /// kubelets (`<dir>/pki/apiserver-kubelet-client.crt`, CN
    /// `kube-apiserver-kubelet-client`, organization `system:masters`). A kubelet, such as
    /// a virtual kubelet, authenticates the API server by verifying the client certificate
    /// of each request against it, as a real kubelet does with `--client-ca-file`. Today
    /// this is the cluster CA, [`Cluster::ca_cert`]; ask for it by this name.
    pub fn kubelet_client_ca(&self) -> PathBuf {
        self.ca_cert()
    }

    /// The client certificate and key (PEM files) kube-apiserver presents to kubelets.
    pub fn kubelet_client_cert(&self) -> (PathBuf, PathBuf) {
        let pki = self.dir.join("pki");
        (
            pki.join(pki::KUBELET_CLIENT_CERT),
            pki.join(pki::KUBELET_CLIENT_KEY),
        )
    }

    /// The client certificate (PEM files: certificate, key) the API server presents to
    /// admission webhooks, CN [`pki::WEBHOOK_CLIENT_CN`].
    pub fn webhook_client_cert(&self) -> (PathBuf, PathBuf) {
        let pki = self.dir.join("pki");
        (
            pki.join(pki::WEBHOOK_CLIENT_CERT),
            pki.join(pki::WEBHOOK_CLIENT_KEY),
        )
    }

    /// A client certificate (PEM files: certificate, key) signed by the cluster CA for
    /// `testbed-viewer`, a user with no rights: what anyone else with a certificate can do.
    pub fn viewer_cert(&self) -> (PathBuf, PathBuf) {
        let pki = self.dir.join("pki");
        (pki.join(pki::VIEWER_CERT), pki.join(pki::VIEWER_KEY))
    }

    /// The admin client certificate (PEM files: certificate, key), in `system:masters`.
    pub fn admin_cert(&self) -> (PathBuf, PathBuf) {
        let pki = self.dir.join("pki");
        (pki.join(pki::ADMIN_CERT), pki.join(pki::ADMIN_KEY))
    }

    /// The port of kwok's kubelet API on 127.0.0.1 (HTTPS), the one every kwok node
    /// advertises in `status.daemonEndpoints.kubeletEndpoint.Port`; `None` when the
    /// binaries have no kwok.
    pub fn kwok_port(&self) -> Option<u16> {
        self.kwok_port.get().copied()
    }

    /// A new admin client. Build one per test: a client is tied to the Tokio runtime it
    /// was created on, and each `#[tokio::test]` has its own.
    pub async fn client(&self) -> Result<kube::Client, TestbedError> {
        let err = |message: String| TestbedError::Client {
            cluster: self.name.clone(),
            message,
        };
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).map_err(|e| err(e.to_string()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| err(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| err(e.to_string()))
    }

    pub(super) fn pids(&self) -> Vec<u32> {
        self.lock().iter().map(Process::pid).collect()
    }

    pub(super) fn release(self) {
        if let Ok(processes) = self.processes.into_inner() {
            processes.into_iter().for_each(|p| {
                p.release();
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Process>> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.processes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn write_kubeconfig(
    path: &Path,
    name: &str,
    port: u16,
    pki: &ClusterPki,
) -> Result<(), TestbedError> {
    // JSON is YAML, so kubectl and kube-rs read this without a YAML serializer here.
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {
            "server": format!("https://127.0.0.1:{port}"),
            "certificate-authority-data": STANDARD.encode(&pki.ca_cert),
        }}],
        "users": [{"name": format!("{name}-admin"), "user": {
            "client-certificate-data": STANDARD.encode(&pki.admin_cert),
            "client-key-data": STANDARD.encode(&pki.admin_key),
        }}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": format!("{name}-admin")}}],
        "current-context": name,
    });
    let text = serde_json::to_string_pretty(&kubeconfig).unwrap_or_default();
    std::fs::write(path, text).map_err(|e| TestbedError::io(path, e))
}

/// The API server's admission configuration: both webhook plugins present `cert`/`key` to
/// every webhook (the kubeconfig's user `*`).
fn write_admission_config(
    path: &Path,
    kubeconfig: &Path,
    cert: &Path,
    key: &Path,
) -> Result<(), TestbedError> {
    let users = format!(
        "apiVersion: v1\nkind: Config\nusers:\n- name: '*'\n  user:\n    client-certificate: {}\n    client-key: {}\n",
        cert.display(),
        key.display()
    );
    std::fs::write(kubeconfig, users).map_err(|e| TestbedError::io(kubeconfig, e))?;
    let plugin = |name: &str| {
        format!(
            "- name: {name}\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {}\n",
            kubeconfig.display()
        )
    };
    let config = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n{}{}",
        plugin("ValidatingAdmissionWebhook"),
        plugin("MutatingAdmissionWebhook")
    );
    std::fs::write(path, config).map_err(|e| TestbedError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `KWOK_CONTAINER_LOG` is what kubectl prints of testbed/kwok/container.log.
    #[test]
    fn kwok_container_log_matches_its_file() {
        let file =
            std::fs::read_to_string(Path::new(KWOK_DIR).join("container.log")).unwrap_or_default();
        let mut printed = String::new();
        for line in file.lines() {
            // CRI log format: <RFC 3339 time> <stream> <F: full line> <content>.
            let fields: Vec<&str> = line.splitn(4, ' ').collect();
            assert!(
                matches!(fields.as_slice(), [_, "stdout", "F", _]),
                "not a full stdout CRI line: {line:?}"
            );
            printed.push_str(fields[3]);
            printed.push('\n');
        }
        assert_eq!(printed, KWOK_CONTAINER_LOG);
    }
}
