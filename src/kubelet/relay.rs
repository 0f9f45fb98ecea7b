//! Relays one kubelet API call to the twin's cluster: the local pod's virtual node names
//! the cluster, its NamespaceOffloading the remote namespace, and the call goes to that
//! API server's pod subresource as the peering's account. Streams (logs) pass through;
//! upgrades (exec, attach, port-forward: SPDY or WebSocket) are joined byte for byte once
//! both sides switched protocols, so the session runs end to end between the two API
//! servers and nothing here parses it. Errors from the remote side pass through verbatim.

use axum::body::Body;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kube::runtime::reflector::ObjectRef;

use super::{
    authz::{self, Authorizer, AuthzError, Caller},
    report::{ReportError, Reports},
    route::{self, ReportCall, Target, Unsupported},
};
use crate::context::Shared;
use crate::{
    context::peers::cluster_of,
    model::{
        api::OFFLOADING_NAME,
        forge::twin::{TwinOwner, owner},
    },
    plumbing::client::REMOTE_TIMEOUT,
};

/// Headers that negotiate the upgrade, passed on in both directions.
const UPGRADE_HEADERS: [&str; 6] = [
    "upgrade",
    "connection",
    "x-stream-protocol-version",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
];
const SWITCHED_HEADERS: [&str; 5] = [
    "upgrade",
    "connection",
    "x-stream-protocol-version",
    "sec-websocket-accept",
    "sec-websocket-protocol",
];

/// Where the relay looks things up: the manager's shared stores and peer registry.
pub(crate) struct Relay {
    pub(crate) shared: Shared,
    pub(crate) authorizer: Authorizer,
    /// `/metrics/resource` and `/stats/summary` (`report`).
    pub(crate) reports: Reports,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    #[error("pod {0} is not known to this cluster's manager (yet); retry in a moment")]
    NoPod(String),
    #[error("pod {0} is not bound to a virtual node, so it does not run in a remote cluster")]
    NotOffloaded(String),
    #[error("namespace {0} has no NamespaceOffloading, so its pods have no twin to relay to")]
    NoOffloading(String),
    #[error(
        "pod {pod} has no twin in cluster {cluster_id} (not created yet, or the name is taken there by a pod this cluster did not create: see the pod's offloading.liqo.io/RemotePod condition)"
    )]
    NoTwin { pod: String, cluster_id: String },
    #[error("cluster {0} is not connected (see `kubectl get remoteclusters`)")]
    NotConnected(String),
    #[error("cluster {cluster_id}: {source}")]
    Remote {
        cluster_id: String,
        #[source]
        source: kube::Error,
    },
    #[error("cluster {0}: no answer within {REMOTE_TIMEOUT:?}")]
    Timeout(String),
    #[error("cannot build the request to cluster {0}: {1}")]
    Request(String, http::Error),
    #[error(transparent)]
    Authz(#[from] AuthzError),
}

impl RelayError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Unsupported(_) | Self::NoPod(_) | Self::NotOffloaded(_) | Self::NoTwin { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::NoOffloading(_) | Self::NotConnected(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Remote { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Request(..) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Authz(e) => authz_status(e),
        }
    }
}

fn authz_status(e: &AuthzError) -> StatusCode {
    match e {
        AuthzError::Review { .. } | AuthzError::TokenReview(_) => StatusCode::SERVICE_UNAVAILABLE,
        AuthzError::NoIdentity | AuthzError::TokenRejected(_) => StatusCode::UNAUTHORIZED,
        AuthzError::Denied { .. } => StatusCode::FORBIDDEN,
    }
}

/// A resolved call: which cluster, and the request to send there.
struct Resolved {
    cluster_id: String,
    client: kube::Client,
    path: String,
}

impl Relay {
    /// Answers one call; errors become a plain-text answer the API server shows the user.
    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        who: Option<&Caller>,
    ) -> Response<Body> {
        // Without a certificate, a bearer token may say who is calling (metrics-server's
        // way); with neither, the authorizer refuses (401).
        let from_token;
        let who = match (who, authz::bearer(request.headers())) {
            (Some(who), _) => Some(who),
            (None, Some(token)) => match self.authorizer.authenticate(token).await {
                Ok(caller) => {
                    from_token = caller;
                    Some(&from_token)
                }
                Err(e) => {
                    let call = match route::report(request.uri().path()) {
                        Some(report) => report.report.name(),
                        None => route::parse(request.uri().path())
                            .as_ref()
                            .map_or("unsupported", |t| t.call.name()),
                    };
                    let response = failure(&e, authz_status(&e));
                    self.shared
                        .metrics
                        .kubelet_call(call, response.status().as_u16());
                    return response;
                }
            },
            (None, None) => None,
        };
        if let Some(report) = route::report(request.uri().path()) {
            let response = self
                .report(&request, &report, who)
                .await
                .unwrap_or_else(|e| failure(&e, e.status()));
            self.shared
                .metrics
                .kubelet_call(report.report.name(), response.status().as_u16());
            return response;
        }
        let target = route::parse(request.uri().path());
        let call = target.as_ref().map_or("unsupported", |t| t.call.name());
        let response = match self.relay(request, target, who).await {
            Ok(response) => response,
            Err(e) => failure(&e, e.status()),
        };
        self.shared
            .metrics
            .kubelet_call(call, response.status().as_u16());
        response
    }

    /// A usage report of a virtual node, for whoever may read `nodes/metrics` or
    /// `nodes/stats` (as a kubelet's webhook authorization asks).
    async fn report(
        &self,
        request: &Request<Incoming>,
        report: &ReportCall,
        who: Option<&Caller>,
    ) -> Result<Response<Body>, ReportFailure> {
        let path = request.uri().path();
        self.authorizer
            .check(who, authz::verb(request.method()), authz::subresource(path))
            .await?;
        Ok(self
            .reports
            .serve(&self.shared, report, request.method(), path)
            .await?)
    }

    fn resolve(&self, target: &Target, query: Option<&str>) -> Result<Resolved, RelayError> {
        let key = format!("{}/{}", target.namespace, target.pod);
        let pod = self
            .shared
            .stores
            .pods
            .get(&ObjectRef::new(&target.pod).within(&target.namespace))
            .ok_or_else(|| RelayError::NoPod(key.clone()))?;
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let cluster_id = cluster_of(&self.shared.stores.nodes, &node)
            .ok_or_else(|| RelayError::NotOffloaded(key.clone()))?;
        let offloading = self
            .shared
            .stores
            .offloadings
            .get(&ObjectRef::new(OFFLOADING_NAME).within(&target.namespace))
            .ok_or_else(|| RelayError::NoOffloading(target.namespace.clone()))?;
        let remote_namespace = offloading
            .spec
            .remote_name(&target.namespace, &self.shared.replica.local_cluster_id);
        let peer = self
            .shared
            .peers
            .get(&cluster_id)
            .ok_or_else(|| RelayError::NotConnected(cluster_id.clone()))?;
        // Our twin of this very pod (its uid), never whatever bears the name there.
        let ours = peer
            .pods
            .store
            .get(&ObjectRef::new(&target.pod).within(&remote_namespace))
            .is_some_and(|twin| {
                owner(&twin, &pod, &self.shared.replica.local_cluster_id) == TwinOwner::This
            });
        if !ours {
            return Err(RelayError::NoTwin {
                pod: key,
                cluster_id,
            });
        }
        Ok(Resolved {
            path: route::remote_path(target, &remote_namespace, query),
            cluster_id,
            client: peer.client,
        })
    }

    async fn relay(
        &self,
        mut request: Request<Incoming>,
        target: Result<Target, Unsupported>,
        who: Option<&Caller>,
    ) -> Result<Response<Body>, RelayError> {
        // First: who may not learns nothing, not even whether the pod exists.
        self.authorizer
            .check(
                who,
                authz::verb(request.method()),
                authz::subresource(request.uri().path()),
            )
            .await?;
        let target = target?;
        let to = self.resolve(&target, request.uri().query())?;
        let upgrading = request.headers().contains_key(header::UPGRADE);
        let mut outgoing = Request::builder()
            .method(request.method().clone())
            .uri(&to.path);
        if upgrading && let Some(headers) = outgoing.headers_mut() {
            copy_headers(request.headers(), headers, &UPGRADE_HEADERS);
        }
        let outgoing = outgoing
            .body(kube::client::Body::empty())
            .map_err(|e| RelayError::Request(to.cluster_id.clone(), e))?;
        tracing::debug!(call = target.call.name(), cluster_id = %to.cluster_id, path = %to.path, "relaying kubelet call");
        let response = tokio::time::timeout(REMOTE_TIMEOUT, to.client.send(outgoing))
            .await
            .map_err(|_| RelayError::Timeout(to.cluster_id.clone()))?
            .map_err(|source| RelayError::Remote {
                cluster_id: to.cluster_id.clone(),
                source,
            })?;
        if upgrading && response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let mut switched = Response::new(Body::empty());
            *switched.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            copy_headers(
                response.headers(),
                switched.headers_mut(),
                &SWITCHED_HEADERS,
            );
            let here = hyper::upgrade::on(&mut request);
            let there = hyper::upgrade::on(response);
            let cluster_id = to.cluster_id;
            tokio::spawn(async move {
                match futures::future::try_join(here, there).await {
                    Ok((here, there)) => {
                        let (mut here, mut there) = (TokioIo::new(here), TokioIo::new(there));
                        match tokio::io::copy_bidirectional(&mut here, &mut there).await {
                            Ok((up, down)) => {
                                tracing::debug!(%cluster_id, up, down, "stream relayed")
                            }
                            Err(e) => tracing::debug!(%cluster_id, error = %e, "stream ended"),
                        }
                    }
                    Err(e) => tracing::debug!(%cluster_id, error = %e, "upgrade failed"),
                }
            });
            return Ok(switched);
        }
        // A stream (logs), or the remote's refusal: passed on as it came.
        let (parts, body) = response.into_parts();
        let mut answer = Response::new(Body::new(body));
        *answer.status_mut() = parts.status;
        copy_headers(
            &parts.headers,
            answer.headers_mut(),
            &["content-type", "content-length"],
        );
        Ok(answer)
    }
}

/// Why a usage report was not served.
#[derive(Debug, thiserror::Error)]
enum ReportFailure {
    #[error(transparent)]
    Authz(#[from] AuthzError),
    #[error(transparent)]
    Report(#[from] ReportError),
}

impl ReportFailure {
    fn status(&self) -> StatusCode {
        match self {
            Self::Authz(e) => authz_status(e),
            Self::Report(e) => e.status(),
        }
    }
}

/// A plain-text answer the API server shows the user.
fn failure(e: &dyn std::fmt::Display, status: StatusCode) -> Response<Body> {
    tracing::debug!(error = %e, "kubelet call not served");
    let mut response = Response::new(Body::from(format!("{e}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, names: &[&'static str]) {
    for name in names {
        let name = HeaderName::from_static(name);
        for value in from.get_all(&name) {
            to.append(name.clone(), value.clone());
        }
    }
}
