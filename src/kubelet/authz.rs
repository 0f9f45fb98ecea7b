//! Who may use the virtual nodes' kubelet API, decided as a kubelet with webhook
//! authentication and authorization decides: the client certificate names the user (CN)
//! and groups (O), or, without one, a bearer token does (a TokenReview asks the local API
//! server whose it is: how metrics-server calls kubelets with its ServiceAccount's token);
//! then a SubjectAccessReview asks whether they may `<verb> nodes/<sub>`,
//! the subresource named by the path as a kubelet names it (`metrics` for `/metrics...`,
//! `stats` for `/stats/...`, `proxy` for the rest: logs, exec, attach, port-forward).
//! One server answers for every virtual node and a request does not say which node it was
//! sent to, so the right is asked for on all nodes, before anything is looked up: a caller
//! without it learns nothing, not even whether a pod exists. kube-apiserver's own kubelet client certificate passes (kubeadm puts it in
//! `system:masters`); anyone else with a certificate from the same CA needs that right,
//! so a certificate alone never opens a remote pod. Answers are kept a while, as the
//! kubelet's authorizer cache keeps them.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};

/// How long an answer is reused: allowed ones longer, as the kubelet does (5 min / 30 s).
const ALLOWED_FOR: Duration = Duration::from_secs(300);
const DENIED_FOR: Duration = Duration::from_secs(30);
/// How long a token's review is reused, as the kubelet's token webhook cache: 2 min when
/// it was accepted, 10 s when refused.
const TOKEN_FOR: Duration = Duration::from_secs(120);
const REFUSED_TOKEN_FOR: Duration = Duration::from_secs(10);
/// Reviews remembered at most: beyond, answers are not kept (callers without a
/// certificate must not grow the manager's memory).
const MAX_CACHED_TOKENS: usize = 4096;
/// Longer tokens are refused unread (service-account JWTs are about 1 KiB).
const MAX_TOKEN_BYTES: usize = 8192;
/// TokenReviews in flight at once: a flood of tokens waits here, not on the API server.
const MAX_REVIEWS: usize = 8;

/// The authenticated client, from its certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Caller {
    pub(crate) user: String,
    pub(crate) groups: Vec<String>,
}

/// The user and groups a client certificate (DER) names, as kube-apiserver reads them.
pub(crate) fn identity(der: &[u8]) -> Option<Caller> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(Caller { user, groups })
}

/// The `nodes` subresource a kubelet checks for a request path (its webhook authorizer's
/// mapping; `/containerLogs` falls under `proxy` there too).
pub(crate) fn subresource(path: &str) -> &'static str {
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else {
        "proxy"
    }
}

/// The verb a kubelet checks for an HTTP method.
pub(crate) fn verb(method: &http::Method) -> &'static str {
    match *method {
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "get",
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthzError {
    #[error(
        "no credentials: present a client certificate signed by the kubelet client CA (naming a user), or a bearer token of this cluster (a ServiceAccount's, as metrics-server sends)"
    )]
    NoIdentity,
    #[error("the bearer token is not valid for this cluster's API server{0}")]
    TokenRejected(String),
    #[error("cannot ask the API server whose bearer token this is: {0}")]
    TokenReview(#[source] kube::Error),
    #[error(
        "user {user} may not {verb} nodes/{subresource} (on all nodes, which the virtual nodes' kubelet API asks for){reason}"
    )]
    Denied {
        user: String,
        verb: &'static str,
        subresource: &'static str,
        reason: String,
    },
    #[error("cannot ask the API server whether {user} may {verb} nodes/{subresource}: {source}")]
    Review {
        user: String,
        verb: &'static str,
        subresource: &'static str,
        #[source]
        source: kube::Error,
    },
}

type Key = (Caller, &'static str, &'static str);

/// A token's review: whose it is, or why it was refused.
type TokenAnswer = Result<Caller, String>;

/// Asks, and remembers, who a token is and whether an identity may use a node's kubelet
/// API.
pub(crate) struct Authorizer {
    client: Client,
    answers: Mutex<HashMap<Key, (bool, String, Instant)>>,
    /// By the token's SHA-256: no credential is kept.
    tokens: Mutex<HashMap<[u8; 32], (TokenAnswer, Instant)>>,
    reviews: tokio::sync::Semaphore,
}

fn token_key(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Authorizer {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            answers: Mutex::default(),
            tokens: Mutex::default(),
            reviews: tokio::sync::Semaphore::new(MAX_REVIEWS),
        }
    }

    /// Who a bearer token is, as the local API server says (a TokenReview for the API
    /// server's own audiences, as a kubelet asks); answers are kept [`TOKEN_FOR`].
    pub(crate) async fn authenticate(&self, token: &str) -> Result<Caller, AuthzError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthzError::TokenRejected(format!(
                ": longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let key = token_key(token);
        let cached = self.tokens.lock().ok().and_then(|tokens| {
            tokens
                .get(&key)
                .filter(|(_, until)| *until > Instant::now())
                .map(|(answer, _)| answer.clone())
        });
        let answer = match cached {
            Some(answer) => answer,
            None => {
                // Closed only if the authorizer is gone; then there is nothing to wait for.
                let _turn = self.reviews.acquire().await.ok();
                let review = TokenReview {
                    spec: TokenReviewSpec {
                        token: token.to_owned(),
                        audiences: None,
                    },
                    ..TokenReview::default()
                };
                let status = Api::<TokenReview>::all(self.client.clone())
                    .create(&PostParams::default(), &review)
                    .await
                    .map_err(AuthzError::TokenReview)?
                    .status
                    .unwrap_or_default();
                let answer = match (status.authenticated, status.user) {
                    (Some(true), Some(user)) if user.username.is_some() => Ok(Caller {
                        user: user.username.unwrap_or_default(),
                        groups: user.groups.unwrap_or_default(),
                    }),
                    _ => Err(status.error.map(|e| format!(": {e}")).unwrap_or_default()),
                };
                if let Ok(mut tokens) = self.tokens.lock() {
                    let now = Instant::now();
                    if tokens.len() >= MAX_CACHED_TOKENS {
                        tokens.retain(|_, (_, until)| *until > now);
                    }
                    if tokens.len() < MAX_CACHED_TOKENS {
                        let ttl = if answer.is_ok() {
                            TOKEN_FOR
                        } else {
                            REFUSED_TOKEN_FOR
                        };
                        tokens.insert(key, (answer.clone(), now + ttl));
                    }
                }
                answer
            }
        };
        answer.map_err(AuthzError::TokenRejected)
    }

    pub(crate) async fn check(
        &self,
        who: Option<&Caller>,
        verb: &'static str,
        subresource: &'static str,
    ) -> Result<(), AuthzError> {
        let who = who.ok_or(AuthzError::NoIdentity)?;
        let key = (who.clone(), verb, subresource);
        let cached = self.answers.lock().ok().and_then(|answers| {
            answers
                .get(&key)
                .filter(|(_, _, until)| *until > Instant::now())
                .map(|(allowed, reason, _)| (*allowed, reason.clone()))
        });
        let (allowed, reason) = match cached {
            Some(answer) => answer,
            None => {
                let answer = self.review(who, verb, subresource).await?;
                if let Ok(mut answers) = self.answers.lock() {
                    let now = Instant::now();
                    answers.retain(|_, (_, _, until)| *until > now);
                    let ttl = if answer.0 { ALLOWED_FOR } else { DENIED_FOR };
                    answers.insert(key, (answer.0, answer.1.clone(), now + ttl));
                }
                answer
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(AuthzError::Denied {
                user: who.user.clone(),
                verb,
                subresource,
                reason: if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                },
            })
        }
    }

    async fn review(
        &self,
        who: &Caller,
        verb: &'static str,
        subresource: &'static str,
    ) -> Result<(bool, String), AuthzError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.user.clone()),
                groups: Some(who.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    resource: Some("nodes".into()),
                    subresource: Some(subresource.into()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| AuthzError::Review {
                user: who.user.clone(),
                verb,
                subresource,
                source,
            })?;
        let status = answer.status.unwrap_or_default();
        Ok((status.allowed, status.reason.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rcgen::{CertificateParams, DnType, KeyPair};

    use super::*;

    #[test]
    fn a_bearer_token_is_read_as_kube_apiserver_reads_it() {
        let headers = |value: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
            h
        };
        assert_eq!(bearer(&headers("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&headers("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&http::HeaderMap::new()), None);
    }

    #[test]
    fn the_certificate_names_the_user_and_groups() {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver-kubelet-client");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        assert_eq!(
            identity(cert.der()),
            Some(Caller {
                user: "kube-apiserver-kubelet-client".into(),
                groups: vec!["system:masters".into()],
            })
        );
        assert_eq!(identity(b"not a certificate"), None);
        assert_eq!(verb(&http::Method::POST), "create");
        assert_eq!(verb(&http::Method::GET), "get");
        for (path, sub) in [
            ("/metrics/resource", "metrics"),
            ("/metrics/nodes/liqo-c2/metrics/resource", "metrics"),
            ("/metrics", "metrics"),
            ("/stats/summary", "stats"),
            ("/containerLogs/ns/pod/app", "proxy"),
            ("/metricsx", "proxy"),
            ("/exec/ns/pod/app", "proxy"),
        ] {
            assert_eq!(subresource(path), sub, "{path}");
        }
    }
}
