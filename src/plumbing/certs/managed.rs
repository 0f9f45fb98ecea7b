//! Self-managed webhook certificates: a CA and serving certificate kept in a Secret (so
//! every replica serves the same one), the CA patched into our webhook configurations as
//! their caBundle, and the serving certificate renewed well before it expires.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{CA_VALIDITY, CertError, CertPair, SERVING_VALIDITY, generate_ca, issue_serving};
use crate::model::markers::{
    APP_NAME, APP_NAME_LABEL, CA_NOT_AFTER_ANNOTATION, SERVING_NAMES_ANNOTATION,
    SERVING_NOT_AFTER_ANNOTATION,
};
use crate::plumbing::https::tls::{SharedCert, TlsError, certified_key};

/// Renew the serving certificate once less than this is left (a third of its life).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the renewal loop looks at the Secret.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot read or write Secret {namespace}/{name}: {source}")]
    Secret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Where the certificates live and which names they must cover.
#[derive(Clone, Debug)]
pub struct ManagedConfig {
    pub namespace: String,
    pub secret: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// The material in use: the CA (for caBundle) and the serving pair.
#[derive(Clone, Debug)]
pub struct Material {
    pub ca: CertPair,
    pub serving: CertPair,
}

impl ManagedConfig {
    fn names(&self) -> String {
        let mut all: Vec<String> = self.dns_names.clone();
        all.extend(self.ips.iter().map(IpAddr::to_string));
        all.join(",")
    }

    /// Reads the Secret; creates or renews what is missing, expiring or for other names.
    /// Replicas racing to create it converge on whichever write won.
    pub async fn ensure(&self, client: &Client) -> Result<Material, ManagedError> {
        let api: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let err = |source| ManagedError::Secret {
            namespace: self.namespace.clone(),
            name: self.secret.clone(),
            source,
        };
        for _ in 0..3 {
            let existing = api.get_opt(&self.secret).await.map_err(err)?;
            let current = existing.as_ref().and_then(|s| self.read(s));
            let now = OffsetDateTime::now_utc();
            let renew_at = now + RENEW_BEFORE;
            let fresh = current.as_ref().filter(|(m, names)| {
                m.serving.not_after > renew_at
                    && m.ca.not_after > renew_at
                    && *names == self.names()
            });
            if let Some((material, _)) = fresh {
                return Ok(material.clone());
            }
            // Keep a still-valid CA so the caBundle does not change on renewal.
            let ca = match current {
                Some((m, _)) if m.ca.not_after > now + SERVING_VALIDITY => m.ca,
                _ => generate_ca(CA_VALIDITY)?,
            };
            let serving = issue_serving(&ca, &self.dns_names, &self.ips, SERVING_VALIDITY)?;
            let material = Material { ca, serving };
            let secret = self.secret_for(&material, existing.as_ref());
            let written = match existing {
                Some(_) => {
                    api.replace(&self.secret, &PostParams::default(), &secret)
                        .await
                }
                None => api.create(&PostParams::default(), &secret).await,
            };
            match written {
                Ok(_) => {
                    tracing::info!(
                        secret = %self.secret,
                        not_after = %material.serving.not_after,
                        "webhook serving certificate issued"
                    );
                    return Ok(material);
                }
                // Another replica wrote first: read what it wrote.
                Err(e)
                    if matches!(
                        crate::model::reason::classify(&e),
                        crate::model::reason::Reason::Conflict
                            | crate::model::reason::Reason::AlreadyExists
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(err(e)),
            }
        }
        Err(err(kube::Error::Service(
            "the Secret kept changing under concurrent writers".into(),
        )))
    }

    fn read(&self, secret: &Secret) -> Option<(Material, String)> {
        let data = secret.data.as_ref()?;
        let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
        let annotations = secret.metadata.annotations.as_ref()?;
        let time = |k: &str| OffsetDateTime::parse(annotations.get(k)?, &Rfc3339).ok();
        let material = Material {
            ca: CertPair {
                cert_pem: text("ca.crt")?,
                key_pem: text("ca.key")?,
                not_after: time(CA_NOT_AFTER_ANNOTATION)?,
            },
            serving: CertPair {
                cert_pem: text("tls.crt")?,
                key_pem: text("tls.key")?,
                not_after: time(SERVING_NOT_AFTER_ANNOTATION)?,
            },
        };
        // Unusable material (hand-edited, truncated) is replaced rather than served.
        certified_key(
            material.serving.cert_pem.as_bytes(),
            material.serving.key_pem.as_bytes(),
        )
        .ok()?;
        Some((
            material,
            annotations
                .get(SERVING_NAMES_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
        ))
    }

    fn secret_for(&self, m: &Material, existing: Option<&Secret>) -> Secret {
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        let format = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        Secret {
            metadata: ObjectMeta {
                name: Some(self.secret.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version: existing.and_then(|s| s.metadata.resource_version.clone()),
                labels: Some(BTreeMap::from([(
                    APP_NAME_LABEL.to_owned(),
                    APP_NAME.to_owned(),
                )])),
                annotations: Some(BTreeMap::from([
                    (
                        SERVING_NOT_AFTER_ANNOTATION.to_owned(),
                        format(m.serving.not_after),
                    ),
                    (CA_NOT_AFTER_ANNOTATION.to_owned(), format(m.ca.not_after)),
                    (SERVING_NAMES_ANNOTATION.to_owned(), self.names()),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(BTreeMap::from([
                ("ca.crt".to_owned(), bytes(&m.ca.cert_pem)),
                ("ca.key".to_owned(), bytes(&m.ca.key_pem)),
                ("tls.crt".to_owned(), bytes(&m.serving.cert_pem)),
                ("tls.key".to_owned(), bytes(&m.serving.key_pem)),
            ])),
            ..Secret::default()
        }
    }
}

/// Starts self-managed certificates: returns the resolver to serve with and the CA, then
/// keeps both current. `on_ca` runs with the CA in use at start and at every check (hourly,
/// changed or not), to patch the webhook configurations' caBundle: one removed by hand, or
/// by an installer that replaced the configurations, comes back.
pub(crate) async fn start<F, Fut>(
    client: Client,
    config: ManagedConfig,
    on_ca: F,
) -> Result<(Arc<SharedCert>, tokio::task::JoinHandle<()>), ManagedError>
where
    F: Fn(String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let material = config.ensure(&client).await?;
    let resolver = Arc::new(SharedCert::new(certified_key(
        material.serving.cert_pem.as_bytes(),
        material.serving.key_pem.as_bytes(),
    )?));
    on_ca(material.ca.cert_pem.clone()).await;
    let shared = resolver.clone();
    let task = tokio::spawn(async move {
        let mut serving = material.serving.cert_pem;
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            match config.ensure(&client).await {
                Ok(m) => {
                    if m.serving.cert_pem != serving {
                        match certified_key(
                            m.serving.cert_pem.as_bytes(),
                            m.serving.key_pem.as_bytes(),
                        ) {
                            Ok(key) => {
                                shared.set(key);
                                serving = m.serving.cert_pem;
                            }
                            Err(e) => tracing::warn!(error = %e, "renewed certificate unusable"),
                        }
                    }
                    on_ca(m.ca.cert_pem).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook certificate renewal failed; retrying")
                }
            }
        }
    });
    Ok((resolver, task))
}
