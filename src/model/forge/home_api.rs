//! The home cluster's API from an offloaded pod (`run --home-api-access=token`), the pure
//! part: which token this cluster's ServiceAccount admission gave the pod, the
//! TokenRequest that asks this cluster for the same (bound to the pod), the remote Secret
//! that carries it with the CA and the home namespace, and the pod as its twin is made
//! from it (that Secret in place of the token volume, the home API server's address in
//! every container).
//!
//! Off by default: then no credential of this cluster goes into a twin (`twin`).

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    ByteString,
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{
            Container, EnvVar, KeyToPath, Pod, ProjectedVolumeSource, Secret, SecretProjection,
            Volume, VolumeProjection,
        },
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
    jiff::{SignedDuration, Timestamp},
};
use kube::api::ObjectMeta;

use crate::model::markers::{ORIGIN_CLUSTER_LABEL, ORIGIN_POD_UID_ANNOTATION};

/// Where twins reach this cluster's API server, and its CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HomeApi {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// PEM.
    pub(crate) ca: String,
}

/// `HOST:PORT` (an IPv6 host in brackets) as `--home-api-server-address` takes it.
pub(crate) fn parse_address(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?}: use HOST:PORT"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty()
        || host.contains(['/', ' '])
        || (host.contains(':') && !text.starts_with('['))
    {
        return Err(format!("{text:?}: use HOST:PORT ([ADDRESS]:PORT for IPv6)"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{text:?}: the port must be 1-65535"))?;
    Ok((host.to_owned(), port))
}

/// The DER certificates as one PEM bundle.
pub(crate) fn pem_bundle(ders: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in ders {
        // ByteString serializes as base64, the PEM body.
        let body = serde_json::to_value(ByteString(der.clone()))
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let mut rest = body.as_str();
        while !rest.is_empty() {
            let (line, tail) = rest.split_at(rest.len().min(64));
            out.push_str(line);
            out.push('\n');
            rest = tail;
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// Prefix of the token volume the ServiceAccount admission plugin injects.
const INJECTED_TOKEN_VOLUME: &str = "kube-api-access-";

/// The token this cluster's ServiceAccount admission mounted for the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenAsked {
    /// The injected volume (`kube-api-access-*`), replaced in the twin under the same name.
    pub(crate) volume: String,
    pub(crate) account: String,
    /// Where in the volume the token is (`token`).
    pub(crate) path: String,
    pub(crate) audience: Option<String>,
    pub(crate) expiration_seconds: Option<i64>,
}

/// The token admission gave the pod, if it gave one: none when the pod or its account
/// said `automountServiceAccountToken: false`.
pub(crate) fn token_asked(pod: &Pod) -> Option<TokenAsked> {
    let spec = pod.spec.as_ref()?;
    if spec.automount_service_account_token == Some(false) {
        return None;
    }
    spec.volumes.iter().flatten().find_map(|v| {
        if !v.name.starts_with(INJECTED_TOKEN_VOLUME) {
            return None;
        }
        let token = v
            .projected
            .as_ref()?
            .sources
            .iter()
            .flatten()
            .find_map(|s| s.service_account_token.as_ref())?;
        Some(TokenAsked {
            volume: v.name.clone(),
            account: spec
                .service_account_name
                .clone()
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| "default".into()),
            path: token.path.clone(),
            audience: token.audience.clone().filter(|a| !a.is_empty()),
            expiration_seconds: token.expiration_seconds,
        })
    })
}

/// The lifetime admission asks for (an hour and 7 s), which kube-apiserver's
/// `--service-account-extend-token-expiration` (on by default) turns into a year for a
/// token bound to a pod: a kubelet's secret to refresh hourly anyway, but one that is
/// stored in another cluster must not live a year.
const EXTENDED_LIFETIME_ASKED: i64 = 3607;

/// The TokenRequest for the pod's account: bound to the pod (the token dies with it), with
/// the audience and lifetime admission asked for (none: the API server's own audience),
/// an hour for the one kube-apiserver would stretch to a year.
pub(crate) fn token_request(pod: &Pod, asked: &TokenAsked) -> TokenRequest {
    let expiration_seconds = asked.expiration_seconds.map(|s| {
        if s == EXTENDED_LIFETIME_ASKED {
            3600
        } else {
            s
        }
    });
    TokenRequest {
        metadata: ObjectMeta::default(),
        spec: Some(TokenRequestSpec {
            audiences: asked.audience.clone().map(|a| vec![a]),
            expiration_seconds,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..TokenRequestSpec::default()
        }),
        status: None,
    }
}

/// When a token is renewed: at 80% of its lifetime, as the kubelet does.
pub(crate) fn renew_at(issued: Timestamp, expires: Timestamp) -> Timestamp {
    let lifetime = expires.duration_since(issued);
    issued.checked_add(lifetime * 4 / 5).unwrap_or(issued)
}

/// Names the pod (`<local namespace>/<pod>`) on the remote Secret holding its home token.
/// Not `offloading.liqo.io/origin-namespace`: the Secret is no copy of a local one, and the
/// reflection of the namespace's Secrets must leave it alone (and call a local Secret of
/// the same name a conflict rather than write over it).
pub(crate) const HOME_API_POD_ANNOTATION: &str = "offloading.liqo.io/home-api-of";
/// When the token in that Secret is renewed (RFC 3339).
pub(crate) const RENEW_AT_ANNOTATION: &str = "offloading.liqo.io/home-token-renew-at";

/// The remote Secret's name: one per pod, the same every time.
pub(crate) fn secret_name(pod_name: &str) -> String {
    const PREFIX: &str = "home-api-";
    let name = format!("{PREFIX}{pod_name}");
    if name.len() <= 253 {
        return name;
    }
    // Too long for a name: cut, with a hash of the whole to keep names apart.
    let hash = pod_name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let keep = 253 - PREFIX.len() - 17;
    let cut: String = pod_name.chars().take(keep).collect();
    format!("{PREFIX}{}-{hash:016x}", cut.trim_end_matches(['-', '.']))
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The remote Secret holding the pod's home token, CA and namespace; owned by the twin
/// (`owner`) once it exists, so that the remote cluster deletes it with the twin.
pub(crate) fn secret(
    pod: &Pod,
    local_cluster_id: &str,
    remote_namespace: &str,
    token: &str,
    renew_at: Timestamp,
    home: &HomeApi,
    owner: Option<&Pod>,
) -> Secret {
    let owner_references = owner.and_then(|twin| {
        Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: twin.metadata.name.clone()?,
            uid: twin.metadata.uid.clone()?,
            ..OwnerReference::default()
        }])
    });
    let data = BTreeMap::from([
        ("token".to_owned(), ByteString(token.as_bytes().to_vec())),
        ("ca.crt".to_owned(), ByteString(home.ca.as_bytes().to_vec())),
        (
            "namespace".to_owned(),
            ByteString(
                pod.metadata
                    .namespace
                    .clone()
                    .unwrap_or_default()
                    .into_bytes(),
            ),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(
                pod.metadata.name.as_deref().unwrap_or_default(),
            )),
            namespace: Some(remote_namespace.into()),
            labels: Some(BTreeMap::from([(
                ORIGIN_CLUSTER_LABEL.into(),
                local_cluster_id.into(),
            )])),
            annotations: Some(BTreeMap::from([
                (HOME_API_POD_ANNOTATION.into(), pod_key(pod)),
                (
                    ORIGIN_POD_UID_ANNOTATION.into(),
                    pod.metadata.uid.clone().unwrap_or_default(),
                ),
                (RENEW_AT_ANNOTATION.into(), renew_at.to_string()),
            ])),
            owner_references,
            ..ObjectMeta::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// Whether a remote Secret is the one we made for a pod of this name (of any uid).
pub(crate) fn ours(secret: &Secret, local_cluster_id: &str, pod: &Pod) -> bool {
    let meta = &secret.metadata;
    meta.labels
        .as_ref()
        .and_then(|l| l.get(ORIGIN_CLUSTER_LABEL))
        .is_some_and(|id| id == local_cluster_id)
        && meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(HOME_API_POD_ANNOTATION))
            .is_some_and(|p| *p == pod_key(pod))
}

/// How long our Secret's token still serves this pod before it is renewed; `None`: renew
/// now (made for an earlier pod of the name, due, or not owned by `twin` yet).
pub(crate) fn still_fresh(
    secret: &Secret,
    pod: &Pod,
    twin: Option<&Pod>,
    now: Timestamp,
) -> Option<Duration> {
    let annotations = secret.metadata.annotations.as_ref()?;
    if annotations.get(ORIGIN_POD_UID_ANNOTATION) != pod.metadata.uid.as_ref() {
        return None;
    }
    if let Some(twin) = twin {
        let owned = secret
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == twin.metadata.uid.as_ref());
        if !owned {
            return None;
        }
    }
    let renew: Timestamp = annotations.get(RENEW_AT_ANNOTATION)?.parse().ok()?;
    let left = renew.duration_since(now);
    (left > SignedDuration::ZERO).then(|| left.unsigned_abs())
}

/// The pod as its twin is to be made from it: the token volume admission injected becomes
/// a projection of our Secret under the same name and paths (every mount stays), and every
/// container is told where the home API server is. Variables a container sets itself are
/// kept. `automountServiceAccountToken: false`, so that the remote cluster's admission adds
/// no token of its own.
/// Whether `twin` mounts the home token Secret of `pod` (made with home access).
pub(crate) fn mounts_home_secret(twin: &Pod, pod: &Pod) -> bool {
    let secret = secret_name(pod.metadata.name.as_deref().unwrap_or_default());
    twin.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .any(|source| source.secret.as_ref().is_some_and(|s| s.name == secret))
}

pub(crate) fn with_home_access(pod: &Pod, asked: &TokenAsked, home: &HomeApi) -> Pod {
    let mut pod = pod.clone();
    let secret = secret_name(pod.metadata.name.as_deref().unwrap_or_default());
    let Some(spec) = pod.spec.as_mut() else {
        return pod;
    };
    for volume in spec.volumes.iter_mut().flatten() {
        if volume.name != asked.volume {
            continue;
        }
        let default_mode = volume.projected.as_ref().and_then(|p| p.default_mode);
        let item = |key: &str, path: &str| KeyToPath {
            key: key.into(),
            path: path.into(),
            ..KeyToPath::default()
        };
        *volume = Volume {
            name: asked.volume.clone(),
            projected: Some(ProjectedVolumeSource {
                default_mode,
                sources: Some(vec![VolumeProjection {
                    secret: Some(SecretProjection {
                        name: secret.clone(),
                        items: Some(vec![
                            item("token", &asked.path),
                            item("ca.crt", "ca.crt"),
                            item("namespace", "namespace"),
                        ]),
                        optional: Some(false),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        };
    }
    spec.automount_service_account_token = Some(false);
    let variables = [
        ("KUBERNETES_SERVICE_HOST", home.host.clone()),
        ("KUBERNETES_SERVICE_PORT", home.port.to_string()),
    ];
    let containers: Vec<&mut Container> = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
        .collect();
    for container in containers {
        let env = container.env.get_or_insert_with(Vec::new);
        for (name, value) in &variables {
            if !env.iter().any(|e| e.name == *name) {
                env.push(EnvVar {
                    name: (*name).into(),
                    value: Some(value.clone()),
                    value_from: None,
                });
            }
        }
    }
    pod
}

#[cfg(test)]
mod tests;
