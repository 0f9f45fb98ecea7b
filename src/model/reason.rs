//! Why a cluster is not where it should be: the `reason` of a RemoteCluster's `Connected`
//! condition and of a NamespaceOffloading's per-cluster `Ready` condition (documented in
//! docs/controller.md), and API errors classified once into those reasons.

use std::fmt;

/// A condition reason for a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// The peering's credentials Secret does not exist.
    SecretNotFound,
    /// The peering's credentials Secret cannot be read (elsewhere than the manager's
    /// namespace, or not yet listed).
    SecretUnreadable,
    /// The Secret holds no usable kubeconfig.
    InvalidKubeconfig,
    /// Another RemoteCluster already stands for this cluster.
    DuplicateClusterId,
    /// The remote publishes no identity and the RemoteCluster names no cluster ID.
    NoClusterId,
    /// The remote's identity ConfigMap is malformed.
    InvalidIdentity,
    /// The credentials reach a cluster other than the one the peering is bound to.
    ClusterIdMismatch,
    /// The kubeconfig's user runs a program for its credentials, and the peering does not
    /// allow it.
    ExecCredentials,
    /// The credentials reach a cluster that publishes no readable identity, so it cannot
    /// be told from the one the peering is bound to.
    IdentityUnverified,
    /// The remote API server does not answer (or not in time).
    Unreachable,
    /// The credentials may not do this there.
    Forbidden,
    /// A write lost to a concurrent one; retried.
    Conflict,
    /// The remote API server refused the object as invalid.
    Invalid,
    /// The remote API server failed (5xx).
    ServerError,
    /// No RemoteCluster gives credentials for a cluster a virtual node stands for.
    NoCredentials,
    /// A peering has not connected yet; termination waits for it.
    NotConnected,
    /// The remote namespace exists and is not ours.
    AlreadyExists,
    /// The remote namespace is being deleted.
    Terminating,
    /// Another namespace of this cluster, offloaded first, has the same remote name.
    NameClaimed,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::SecretNotFound => "SecretNotFound",
            Self::SecretUnreadable => "SecretUnreadable",
            Self::InvalidKubeconfig => "InvalidKubeconfig",
            Self::DuplicateClusterId => "DuplicateClusterID",
            Self::NoClusterId => "NoClusterID",
            Self::InvalidIdentity => "InvalidIdentity",
            Self::ClusterIdMismatch => "ClusterIDMismatch",
            Self::ExecCredentials => "ExecCredentials",
            Self::IdentityUnverified => "IdentityUnverified",
            Self::Unreachable => "Unreachable",
            Self::Forbidden => "Forbidden",
            Self::Conflict => "Conflict",
            Self::Invalid => "Invalid",
            Self::ServerError => "ServerError",
            Self::NoCredentials => "NoCredentials",
            Self::NotConnected => "NotConnected",
            Self::AlreadyExists => "AlreadyExists",
            Self::Terminating => "Terminating",
            Self::NameClaimed => "NameClaimed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure as a condition reports it: the reason, and a message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) reason: Reason,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// What kind of failure an API call met, decided once from kube's error.
pub(crate) fn classify(error: &kube::Error) -> Reason {
    match error {
        kube::Error::Api(s) if s.is_forbidden() || s.code == 401 => Reason::Forbidden,
        kube::Error::Api(s) if s.is_already_exists() => Reason::AlreadyExists,
        kube::Error::Api(s) if s.is_conflict() => Reason::Conflict,
        kube::Error::Api(s) if s.is_invalid() || s.code == 400 => Reason::Invalid,
        kube::Error::Api(s) if s.code >= 500 => Reason::ServerError,
        // Any other answer is still an answer: the server is there, the request was wrong.
        kube::Error::Api(_) => Reason::Invalid,
        // No answer: connection, TLS, timeouts, a body that is not the API's.
        _ => Reason::Unreachable,
    }
}

/// What the API server said (its message alone), or else what went wrong.
pub(crate) fn message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Whether the API server answered 404.
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.is_not_found())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn status(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(
            serde_json::from_value(serde_json::json!({
                "status": "Failure", "code": code, "reason": reason, "message": "m",
            }))
            .unwrap(),
        )
    }

    #[test]
    fn api_errors_are_classified_by_their_status() {
        assert_eq!(classify(&status(403, "Forbidden")), Reason::Forbidden);
        assert_eq!(
            classify(&status(409, "AlreadyExists")),
            Reason::AlreadyExists
        );
        assert_eq!(classify(&status(409, "Conflict")), Reason::Conflict);
        assert_eq!(classify(&status(422, "Invalid")), Reason::Invalid);
        assert_eq!(classify(&status(500, "InternalError")), Reason::ServerError);
        assert_eq!(
            classify(&status(503, "ServiceUnavailable")),
            Reason::ServerError
        );
        let unanswered = kube::Error::Service("connection refused".into());
        assert_eq!(classify(&unanswered), Reason::Unreachable);
        assert!(is_not_found(&status(404, "NotFound")));
        assert!(!is_not_found(&status(409, "Conflict")));
    }
}
