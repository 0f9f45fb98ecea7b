//! Floor 5, the manager (`namespace-offloading run`): the webhook server with its watch
//! caches, certificates and webhook registration, and, on the elected replica, every
//! worker (`controllers`), until SIGTERM or Ctrl-C.

pub(crate) mod controllers;
mod gate;

pub use controllers::CONCURRENCY;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};
use rustls::server::ResolvesServerCert;
use tokio::sync::watch;

use futures::FutureExt;

use crate::{
    model::identity::ClusterIdentity,
    plumbing::{
        certs::{
            self,
            managed::{self, ManagedConfig},
        },
        https::{self, tls},
        leader,
        metrics::Metrics,
        watches::LocalWatches,
    },
    webhooks::{
        lookup::Caches,
        registration::{self, Target},
        server::AppState,
    },
};

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// This cluster's ID (DefaultName suffix, ownership of remote namespaces). Default: the
    /// UID of the kube-system namespace, which is stable and needs no set-up.
    #[arg(long, env = "NSO_CLUSTER_ID")]
    pub(crate) cluster_id: Option<String>,
    /// The namespace the manager runs in (holds the self-managed certificate Secret).
    #[arg(long, env = "POD_NAMESPACE", default_value = "liqo")]
    pub(crate) namespace: String,
    /// Kubeconfig to use; default: $KUBECONFIG, ~/.kube/config, or the in-cluster account.
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Address of the HTTPS webhook server.
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub(crate) webhook_listen: SocketAddr,
    /// Address of the plain-HTTP admin server (/live, /ready, /metrics).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub(crate) admin_listen: SocketAddr,
    /// Serving certificate (PEM); re-read when it changes. Without it, certificates are
    /// self-managed in a Secret.
    #[arg(long, requires = "tls_key_file")]
    pub(crate) tls_cert_file: Option<PathBuf>,
    /// Private key of --tls-cert-file (PEM).
    #[arg(long, requires = "tls_cert_file")]
    pub(crate) tls_key_file: Option<PathBuf>,
    /// CA bundle (PEM) to register with the webhooks when certificates come from files.
    #[arg(long, requires = "tls_cert_file")]
    pub(crate) ca_bundle_file: Option<PathBuf>,
    /// Secret holding self-managed certificates.
    #[arg(long, default_value = "namespace-offloading-webhook-tls")]
    pub(crate) cert_secret: String,
    /// Register the webhooks with this base URL (e.g. https://127.0.0.1:9443, for a
    /// manager running outside the cluster).
    #[arg(long, conflicts_with = "webhook_service")]
    pub(crate) webhook_url: Option<String>,
    /// Register the webhooks with this Service, as NAMESPACE/NAME[:PORT] (port 443).
    #[arg(long)]
    pub(crate) webhook_service: Option<String>,
    /// What registering writes: `full` (both configurations, created if missing) or
    /// `ca-bundle` (only the caBundle of the configurations installed with the manager by
    /// manifests/ or the Helm chart, which then stay theirs to upgrade).
    #[arg(long, value_enum, default_value = "full")]
    pub(crate) webhook_registration: RegistrationArg,
    /// Extra DNS names for the self-managed serving certificate.
    #[arg(long)]
    pub(crate) cert_dns_name: Vec<String>,
    /// Extra IP addresses for the self-managed serving certificate.
    #[arg(long)]
    pub(crate) cert_ip: Vec<IpAddr>,
    /// This cluster's labels, published for peers: key=value,key=value.
    #[arg(long, env = "NSO_CLUSTER_LABELS", default_value = "", value_parser = parse_cluster_labels)]
    pub(crate) cluster_labels: std::collections::BTreeMap<String, String>,
    /// Serve the webhooks only: no controllers (no peering, no remote namespaces).
    #[arg(long)]
    pub(crate) webhooks_only: bool,
    /// This replica's name, in events and leases.
    #[arg(long, env = "POD_NAME")]
    pub(crate) instance: Option<String>,
    /// Address of the virtual nodes' kubelet API (logs, exec, port-forward of offloaded
    /// pods), which the API server calls. Port 0 picks a free one.
    #[arg(long, default_value = "0.0.0.0:10250")]
    pub(crate) kubelet_listen: SocketAddr,
    /// The address virtual nodes advertise for it (their InternalIP). Default: the
    /// listening address, or 127.0.0.1 when that is unspecified.
    #[arg(long, env = "POD_IP")]
    pub(crate) kubelet_address: Option<IpAddr>,
    /// CA bundle (PEM) that signs the API server's kubelet client certificate
    /// (--kubelet-client-certificate). Default: the CA the manager trusts for its API
    /// server (the cluster CA, which signs it in kubeadm-made clusters).
    #[arg(long)]
    pub(crate) kubelet_client_ca: Option<PathBuf>,
    /// CA (PEM) of the client certificate the API server presents to admission webhooks
    /// (its AdmissionConfiguration's kubeConfigFile). When set, requests without such a
    /// certificate are refused (403) and cause nothing: only the API server is answered.
    #[arg(long, value_name = "FILE")]
    pub(crate) webhook_client_ca: Option<PathBuf>,
    /// A common name accepted from --webhook-client-ca (repeat for several; default: any
    /// certificate it signed).
    #[arg(
        long = "webhook-client-name",
        value_name = "CN",
        requires = "webhook_client_ca"
    )]
    pub(crate) webhook_client_names: Vec<String>,
    /// A kind's reflection policy, as KIND=TYPE (repeat for several): `DenyList` reflects
    /// every object but those annotated liqo.io/skip-reflection=true, `AllowList` only those
    /// annotated liqo.io/allow-reflection=true. Kinds: configmap, secret, serviceaccount,
    /// service, endpointslice (default: its Service's), ingress, networkpolicy. Default:
    /// DenyList. Pods always cross.
    #[arg(long = "reflection-type", value_name = "KIND=TYPE", value_parser = crate::model::reflection_policy::parse_type)]
    pub(crate) reflection_types: Vec<(
        crate::model::reflection_policy::PolicyKind,
        crate::model::reflection_policy::ReflectionType,
    )>,
    /// Label keys never copied into remote clusters (comma-separated or repeated).
    #[arg(long, value_name = "KEY", value_delimiter = ',')]
    pub(crate) labels_not_reflected: Vec<String>,
    /// Annotation keys never copied into remote clusters (comma-separated or repeated);
    /// replaces the default list (kubectl's last-applied-configuration and cloud
    /// load-balancer annotations: docs/reflection.md), which is then not applied.
    #[arg(long, value_name = "KEY", value_delimiter = ',')]
    pub(crate) annotations_not_reflected: Option<Vec<String>>,
    /// An ingress class's name in the remote clusters, as LOCAL=REMOTE (repeat for several;
    /// `LOCAL=` leaves the class out, for the remote default class). Unmapped classes are
    /// kept.
    #[arg(long = "ingress-class-mapping", value_name = "LOCAL=REMOTE", value_parser = crate::model::reflection_policy::parse_class_pair)]
    pub(crate) ingress_class_mapping: Vec<(String, String)>,
    /// The RuntimeClass by which a pod asks for the virtual nodes whatever its namespace's
    /// strategy (Liqo's `runtimeClassName: liqo`); installed by manifests/ and the chart.
    /// Empty: no such opt-in.
    #[arg(long, default_value = "liqo")]
    pub(crate) runtime_class: String,
    /// Whether offloaded pods reach this cluster's API: `off` (twins carry no credential of
    /// this cluster; the remote cluster mounts its own token) or `token` (a pod whose
    /// account token is mounted gets, in its twin, a token of this cluster bound to the
    /// pod, this cluster's CA and the address of --home-api-server-address; the token is
    /// stored in a Secret in the remote cluster: see docs/security.md).
    #[arg(long, value_enum, default_value = "off")]
    pub(crate) home_api_access: HomeApiAccess,
    /// HOST:PORT at which pods of the remote clusters reach this cluster's API server
    /// (KUBERNETES_SERVICE_HOST/PORT in twins); required with --home-api-access=token.
    #[arg(long, value_name = "HOST:PORT", value_parser = crate::model::forge::home_api::parse_address,
          required_if_eq("home_api_access", "token"))]
    pub(crate) home_api_server_address: Option<(String, u16)>,
    /// CA bundle (PEM) that twins trust for that address. Default: the CA the manager
    /// trusts for its API server.
    #[arg(long, value_name = "FILE")]
    pub(crate) home_api_server_ca: Option<PathBuf>,
    /// How long in-flight requests may take to finish on shutdown.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) shutdown_grace: Duration,
    /// The remote storage class for claims of a local one, LOCAL=REMOTE (repeat for
    /// several). A class not mapped: the remote claim names none, so that cluster's
    /// default class applies.
    #[arg(long, value_name = "LOCAL=REMOTE", value_parser = crate::model::forge::claims::parse_class_mapping)]
    pub(crate) storage_class_mapping: Vec<(String, String)>,
}

/// `--home-api-access`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum HomeApiAccess {
    /// No credential of this cluster in twins.
    Off,
    /// A bound token of this cluster in twins whose pod mounts one.
    Token,
}

fn parse_cluster_labels(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    crate::model::identity::parse_labels(text)
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("cannot connect to Kubernetes: {0}")]
    Client(#[from] crate::plumbing::client::ClientError),
    #[error(
        "cannot read the kube-system namespace for the default cluster ID ({0}); pass --cluster-id"
    )]
    ClusterId(#[source] kube::Error),
    #[error("invalid --cluster-id {0:?}: {1}")]
    InvalidClusterId(String, String),
    #[error("invalid --webhook-service {0:?}: use NAMESPACE/NAME or NAMESPACE/NAME:PORT")]
    Service(String),
    #[error("invalid --webhook-url {0:?}: use https://HOST[:PORT]")]
    Url(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    KubeletTls(#[from] crate::kubelet::server::KubeletTlsError),
    #[error("cannot read --kubelet-client-ca {path}: {message}")]
    KubeletClientCa { path: PathBuf, message: String },
    #[error("cannot read --home-api-server-ca {path}: {message}")]
    HomeApiCa { path: PathBuf, message: String },
    #[error("cannot read --ca-bundle-file {path}: {source}")]
    CaBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Managed(#[from] managed::ManagedError),
    #[error("cannot register the webhook configurations: {0}")]
    Register(#[source] registration::RegisterError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("the metrics registry is unusable")]
    Metrics,
    #[error("leadership lost; exiting so that a restart rejoins the election")]
    LeadershipLost,
}

impl RunArgs {
    /// The reflection flags, together.
    fn reflection_policy(&self) -> crate::model::reflection_policy::ReflectionPolicy {
        use crate::model::reflection_policy::{
            DEFAULT_ANNOTATIONS_NOT_REFLECTED, ReflectionPolicy,
        };
        let annotations = self.annotations_not_reflected.clone().unwrap_or_else(|| {
            DEFAULT_ANNOTATIONS_NOT_REFLECTED
                .iter()
                .map(|a| (*a).to_owned())
                .collect()
        });
        ReflectionPolicy::new(
            self.reflection_types.iter().copied().collect(),
            self.labels_not_reflected.clone(),
            annotations,
        )
        .with_ingress_classes(crate::model::reflection_policy::IngressClassMap::new(
            self.ingress_class_mapping.iter().cloned(),
        ))
        .with_runtime_class(&self.runtime_class)
    }

    fn target(&self) -> Result<Option<Target>, RunError> {
        if let Some(url) = &self.webhook_url {
            if !url.starts_with("https://") {
                return Err(RunError::Url(url.clone()));
            }
            return Ok(Some(Target::Url(url.clone())));
        }
        match &self.webhook_service {
            Some(spec) => crate::webhooks::registration::parse_service(spec)
                .map(Some)
                .map_err(|_| RunError::Service(spec.clone())),
            None => Ok(None),
        }
    }

    /// The names the self-managed serving certificate covers.
    fn cert_names(&self, target: Option<&Target>) -> (Vec<String>, Vec<IpAddr>) {
        let mut dns = self.cert_dns_name.clone();
        let mut ips = self.cert_ip.clone();
        match target {
            Some(Target::Service {
                namespace, name, ..
            }) => dns.extend(certs::service_dns_names(namespace, name)),
            Some(Target::Url(url)) => {
                let host = url
                    .trim_start_matches("https://")
                    .split(['/', ':'])
                    .next()
                    .unwrap_or_default();
                match host.parse::<IpAddr>() {
                    Ok(ip) => ips.push(ip),
                    Err(_) if !host.is_empty() => dns.push(host.to_owned()),
                    Err(_) => {}
                }
            }
            None => dns.extend(certs::service_dns_names(
                &self.namespace,
                "namespace-offloading",
            )),
        }
        if dns.is_empty() {
            dns.push("namespace-offloading".into());
        }
        dns.dedup();
        (dns, ips)
    }
}

/// The local cluster ID: the flag, or the kube-system namespace's UID.
pub(crate) async fn cluster_id(client: &Client, flag: Option<&str>) -> Result<String, RunError> {
    if let Some(id) = flag {
        crate::model::identity::validate_cluster_id(id)
            .map_err(|why| RunError::InvalidClusterId(id.to_owned(), why))?;
        return Ok(id.to_owned());
    }
    let ns = Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await
        .map_err(RunError::ClusterId)?;
    Ok(ns.metadata.uid.unwrap_or_default())
}

pub(crate) async fn run(args: RunArgs) -> Result<(), RunError> {
    let target = args.target()?;
    let client = crate::plumbing::client::local(args.kubeconfig.as_deref()).await?;
    let local_cluster_id = cluster_id(&client, args.cluster_id.as_deref()).await?;
    tracing::info!(cluster_id = %local_cluster_id, "starting");
    crate::plumbing::preflight::check(&client).await;

    let metrics = Arc::new(Metrics::new());
    // Pods are the biggest list we make: where the API server can stream it (1.34 and
    // later), it comes object by object instead of as one response.
    let streaming = !args.webhooks_only
        && crate::plumbing::preflight::cluster_streams_initial_lists(&client).await;
    let watches = LocalWatches::new(&client, streaming);
    let caches = Caches::new(&watches.offloadings, &watches.nodes);
    let identity = ClusterIdentity {
        cluster_id: local_cluster_id.clone(),
        labels: args.cluster_labels.clone(),
    };
    tokio::spawn(keep_identity_published(
        client.clone(),
        identity,
        args.namespace.clone(),
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let lost = Arc::new(AtomicBool::new(false));

    let resolver = certificates(&args, &client, target.as_ref()).await?;
    let callers = match &args.webhook_client_ca {
        Some(ca) => Some(Arc::new(tls::Callers::from_pem_file(
            ca,
            args.webhook_client_names.clone(),
        )?)),
        None => None,
    };
    let tls_config = tls::server_config_for(resolver, callers.as_deref())?;

    let state = Arc::new(AppState {
        lookup: Arc::new(caches.clone()),
        local_cluster_id,
        own_namespace: args.namespace.clone(),
        runtime_class: args.runtime_class.clone(),
        metrics: metrics.clone(),
        client: Some(client.clone()),
    });
    let webhook_listener = https::bind(args.webhook_listen).await?;
    let admin_listener = https::bind(args.admin_listen).await?;
    tracing::info!(
        webhook = %webhook_listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        "listening"
    );
    // The admin port outlives the webhook listener: while in-flight reviews drain, probes
    // still get an answer (/ready 503) rather than a refused connection.
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let admin = tokio::spawn(https::serve_admin(
        admin_listener,
        https::admin_router(ready.clone(), metrics.clone()),
        admin_stop_rx,
    ));
    let election_done = if args.webhooks_only {
        let LocalWatches {
            offloadings, nodes, ..
        } = watches;
        tokio::spawn(offloadings.run());
        tokio::spawn(nodes.run());
        None
    } else {
        let stopping = Stopping {
            requested: stop_rx.clone(),
            request: stop_tx.clone(),
            leadership_lost: lost.clone(),
        };
        let for_peers = ForPeers {
            kubelet: kubelet(&args).await?,
            home_api: home_api(&args).await?,
        };
        Some(start_controllers(
            &args,
            &client,
            &state.local_cluster_id,
            &metrics,
            watches,
            for_peers,
            stopping,
        )?)
    };
    let ready_flag = ready.clone();
    tokio::spawn(async move {
        caches.wait_until_ready().await;
        ready_flag.store(true, Ordering::Relaxed);
        tracing::info!("caches synced; ready");
    });
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        ready.store(false, Ordering::Relaxed);
        let _ = stop_tx.send(true);
        // A second signal aborts without waiting for in-flight requests.
        shutdown_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    https::serve_tls(
        webhook_listener,
        crate::webhooks::server::WebhookService::new(state),
        tls_config,
        callers,
        stop_rx,
        args.shutdown_grace,
    )
    .await;
    let _ = admin_stop.send(true);
    let _ = admin.await;
    // Let the election release the Lease, so a standby takes over without waiting it out.
    if let Some(done) = election_done {
        let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
    }
    if lost.load(Ordering::Relaxed) {
        return Err(RunError::LeadershipLost);
    }
    Ok(())
}

/// Registers the webhook configurations with `ca`, retrying with backoff (1 s doubling to
/// 60 s) until it succeeds; the first failure is an error in the log, the rest warnings.
async fn register_until_done(
    client: &Client,
    target: &Target,
    ca: &str,
    own_namespace: &str,
    runtime_class: &str,
    mode: registration::Registration,
) {
    let mut delay = Duration::from_secs(1);
    let mut failures = 0u32;
    loop {
        match registration::register(client, target, Some(ca), own_namespace, runtime_class, mode)
            .await
        {
            Ok(()) => return,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::error!(error = %e, "cannot register the webhook configurations; retrying");
                } else {
                    tracing::warn!(error = %e, failures, "still cannot register the webhook configurations");
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// `--webhook-registration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RegistrationArg {
    Full,
    CaBundle,
}

impl From<RegistrationArg> for registration::Registration {
    fn from(arg: RegistrationArg) -> Self {
        match arg {
            RegistrationArg::Full => Self::Full,
            RegistrationArg::CaBundle => Self::CaBundle,
        }
    }
}

/// The serving certificates: from files (registering the webhooks with the given CA), or
/// self-managed in a Secret (registering with its CA whenever it changes).
async fn certificates(
    args: &RunArgs,
    client: &Client,
    target: Option<&Target>,
) -> Result<Arc<dyn ResolvesServerCert>, RunError> {
    Ok(match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => {
            let files = Arc::new(tls::FileCerts::new(cert, key)?);
            if let Some(target) = target {
                let bundle = match &args.ca_bundle_file {
                    Some(path) => Some(std::fs::read_to_string(path).map_err(|source| {
                        RunError::CaBundle {
                            path: path.clone(),
                            source,
                        }
                    })?),
                    None => None,
                };
                let mode = args.webhook_registration.into();
                match (mode, bundle) {
                    // Into configurations an installer makes, perhaps after this pod starts:
                    // in the background, until it holds.
                    (registration::Registration::CaBundle, Some(ca)) => {
                        let (client, target) = (client.clone(), target.clone());
                        let own_namespace = args.namespace.clone();
                        let runtime_class = args.runtime_class.clone();
                        tokio::spawn(async move {
                            register_until_done(
                                &client,
                                &target,
                                &ca,
                                &own_namespace,
                                &runtime_class,
                                mode,
                            )
                            .await;
                        });
                    }
                    (_, bundle) => registration::register(
                        client,
                        target,
                        bundle.as_deref(),
                        &args.namespace,
                        &args.runtime_class,
                        mode,
                    )
                    .await
                    .map_err(RunError::Register)?,
                }
            }
            files
        }
        _ => {
            let (dns_names, ips) = args.cert_names(target);
            let config = ManagedConfig {
                namespace: args.namespace.clone(),
                secret: args.cert_secret.clone(),
                dns_names,
                ips,
            };
            let register_client = client.clone();
            let register_target = target.cloned();
            let own_namespace = args.namespace.clone();
            let runtime_class = args.runtime_class.clone();
            let mode = args.webhook_registration.into();
            // The registration in progress: a newer CA (or the hourly re-apply) replaces it.
            let pending: Arc<std::sync::Mutex<Option<tokio::task::AbortHandle>>> = Arc::default();
            let (resolver, _renewal) = managed::start(client.clone(), config, move |ca| {
                let client = register_client.clone();
                let target = register_target.clone();
                let own_namespace = own_namespace.clone();
                let runtime_class = runtime_class.clone();
                let pending = pending.clone();
                async move {
                    let Some(target) = target else { return };
                    // In the background, retried until it holds: the configurations may not
                    // exist yet (an installer creates them after the Deployment), and
                    // without their caBundle every admission fails closed.
                    let task = tokio::spawn(async move {
                        register_until_done(
                            &client,
                            &target,
                            &ca,
                            &own_namespace,
                            &runtime_class,
                            mode,
                        )
                        .await;
                    });
                    if let Ok(mut slot) = pending.lock()
                        && let Some(previous) = slot.replace(task.abort_handle())
                    {
                        previous.abort();
                    }
                }
            })
            .await?;
            resolver
        }
    })
}

/// How the process stops: the flag everyone watches, who may raise it, and whether losing
/// the leadership was the cause.
struct Stopping {
    requested: watch::Receiver<bool>,
    request: Arc<watch::Sender<bool>>,
    leadership_lost: Arc<AtomicBool>,
}

/// What the manager offers the peered clusters' side of offloaded pods.
struct ForPeers {
    /// The virtual nodes' kubelet API.
    kubelet: crate::kubelet::Serving,
    /// This cluster's API server for twins (`--home-api-access=token`).
    home_api: Option<Arc<crate::model::forge::home_api::HomeApi>>,
}

/// Joins the leader election and starts the controllers (they reconcile once this replica
/// leads). The returned task ends when the election does; losing the Lease stops the
/// process, so that only one replica ever reconciles.
fn start_controllers(
    args: &RunArgs,
    client: &Client,
    local_cluster_id: &str,
    metrics: &Metrics,
    watches: LocalWatches,
    ForPeers { kubelet, home_api }: ForPeers,
    stopping: Stopping,
) -> Result<tokio::task::JoinHandle<()>, RunError> {
    let instance = args
        .instance
        .clone()
        .unwrap_or_else(|| format!("namespace-offloading-{}", std::process::id()));
    let mut stop = stopping.requested.clone();
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    }
    .boxed()
    .shared();
    let controller_metrics = metrics
        .with_registry(crate::plumbing::metrics::ControllerMetrics::register)
        .ok_or(RunError::Metrics)?;
    let (leader_tx, leader_rx) = watch::channel(false);
    {
        let (mut leading, metrics) = (leader_rx.clone(), controller_metrics.clone());
        tokio::spawn(async move {
            while leading.changed().await.is_ok() {
                let now = *leading.borrow_and_update();
                metrics.leading(now);
            }
        });
    }
    let election = tokio::spawn(leader::run(
        client.clone(),
        args.namespace.clone(),
        instance.clone(),
        leader_tx,
        stopping.requested.clone(),
    ));
    let me = crate::context::Replica {
        local_cluster_id: local_cluster_id.to_owned(),
        holder: instance,
        own_namespace: args.namespace.clone(),
        home_api,
    };
    tokio::spawn(controllers::run(
        client.clone(),
        me,
        controller_metrics,
        watches,
        leader_rx,
        controllers::Options {
            kubelet: Some(kubelet),
            storage_classes: args.storage_class_mapping.iter().cloned().collect(),
            reflection: args.reflection_policy(),
        },
        shutdown,
    ));
    Ok(tokio::spawn(async move {
        if let Ok(Err(e)) = election.await {
            tracing::error!(error = %e, "leadership lost: stopping so that only one replica reconciles");
            stopping.leadership_lost.store(true, Ordering::Relaxed);
            let _ = stopping.request.send(true);
        }
    }))
}

/// The virtual nodes' kubelet API: bound, with its TLS, and the endpoint nodes advertise.
async fn kubelet(args: &RunArgs) -> Result<crate::kubelet::Serving, RunError> {
    let client_cas = match &args.kubelet_client_ca {
        Some(path) => {
            let unreadable = |message: String| RunError::KubeletClientCa {
                path: path.clone(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
            <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem)
                .map(|c| c.map(|c| c.to_vec()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unreadable(e.to_string()))?
        }
        None => crate::plumbing::client::local_config(args.kubeconfig.as_deref())
            .await?
            .root_cert
            .unwrap_or_default(),
    };
    let listener = https::bind(args.kubelet_listen).await?;
    let bound = listener.local_addr()?;
    let address = args
        .kubelet_address
        .unwrap_or(if bound.ip().is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            bound.ip()
        });
    let tls = crate::kubelet::server::tls_config(address, &client_cas)?;
    tracing::info!(listen = %bound, %address, "virtual nodes' kubelet API");
    Ok(crate::kubelet::Serving {
        listener,
        tls,
        endpoint: crate::model::virtual_node::KubeletEndpoint {
            address,
            port: bound.port(),
        },
    })
}

/// Where twins reach this cluster's API server, with `--home-api-access=token`.
async fn home_api(
    args: &RunArgs,
) -> Result<Option<Arc<crate::model::forge::home_api::HomeApi>>, RunError> {
    let (HomeApiAccess::Token, Some((host, port))) =
        (args.home_api_access, args.home_api_server_address.clone())
    else {
        return Ok(None);
    };
    let ca = match &args.home_api_server_ca {
        Some(path) => std::fs::read_to_string(path).map_err(|e| RunError::HomeApiCa {
            path: path.clone(),
            message: e.to_string(),
        })?,
        None => crate::model::forge::home_api::pem_bundle(
            &crate::plumbing::client::local_config(args.kubeconfig.as_deref())
                .await?
                .root_cert
                .unwrap_or_default(),
        ),
    };
    tracing::warn!(%host, port, "offloaded pods get tokens of this cluster (--home-api-access=token): they are stored in the remote clusters");
    Ok(Some(Arc::new(crate::model::forge::home_api::HomeApi {
        host,
        port,
        ca,
    })))
}

/// Publishes this cluster's identity for peers, retrying until it succeeds (the namespace
/// may be created after the manager starts).
async fn keep_identity_published(client: Client, identity: ClusterIdentity, namespace: String) {
    let mut delay = Duration::from_secs(1);
    loop {
        match crate::plumbing::identity::publish(&identity, &client, &namespace).await {
            Ok(()) => {
                tracing::info!(%namespace, labels = ?identity.labels, "cluster identity published");
                return;
            }
            Err(e) => {
                tracing::warn!(%namespace, error = %e, "cannot publish the cluster identity ConfigMap; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
