//! Webhook certificates: a CA and a serving certificate it signs, generated with rcgen.
//! Used by the `certs` subcommand (manual set-ups) and by the self-managed mode.

pub mod managed;

use std::{net::IpAddr, path::Path, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// The CA's subject; a CA re-created from its stored key must carry the same one.
const CA_COMMON_NAME: &str = "namespace-offloading-webhook-ca";

/// How long a generated CA is valid: long, since replacing it means a new caBundle.
pub(crate) const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a serving certificate is valid; renewed well before (see `managed`).
pub(crate) const SERVING_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid DNS name {0:?} for the serving certificate")]
    DnsName(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A PEM certificate with its PEM private key, and when it expires.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: OffsetDateTime,
}

fn validity(params: &mut CertificateParams, valid_for: Duration) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    // Tolerate clocks a little behind ours.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + valid_for;
    params.not_after
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A new self-signed CA.
pub(crate) fn generate_ca(valid_for: Duration) -> Result<CertPair, CertError> {
    let key = KeyPair::generate()?;
    let mut params = ca_params();
    let not_after = validity(&mut params, valid_for);
    let cert = params.self_signed(&key)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// A serving certificate for `dns_names` and `ips`, signed by `ca`.
pub(crate) fn issue_serving(
    ca: &CertPair,
    dns_names: &[String],
    ips: &[IpAddr],
    valid_for: Duration,
) -> Result<CertPair, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        dns_names
            .first()
            .map_or("namespace-offloading", String::as_str),
    );
    params.distinguished_name = dn;
    for name in dns_names {
        let dns = name
            .clone()
            .try_into()
            .map_err(|_| CertError::DnsName(name.clone()))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let not_after = validity(&mut params, valid_for);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// The DNS names a Service is reached by from the API server.
pub(crate) fn service_dns_names(namespace: &str, service: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_owned(),
    ]
}

/// Writes `ca.crt`, `ca.key`, `tls.crt` and `tls.key` (keys readable by the owner only).
pub(crate) fn write_files(dir: &Path, ca: &CertPair, serving: &CertPair) -> Result<(), CertError> {
    let write = |name: &str, text: &str, private: bool| -> Result<(), CertError> {
        let path = dir.join(name);
        let err = |source| CertError::Write {
            path: path.display().to_string(),
            source,
        };
        std::fs::write(&path, text).map_err(err)?;
        if private {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
        Ok(())
    };
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    write("ca.crt", &ca.cert_pem, false)?;
    write("ca.key", &ca.key_pem, true)?;
    write("tls.crt", &serving.cert_pem, false)?;
    write("tls.key", &serving.key_pem, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plumbing::https::tls::certified_key;

    #[test]
    fn serving_certificate_is_usable_by_rustls() {
        crate::plumbing::crypto::install_crypto_provider();
        let ca = generate_ca(CA_VALIDITY).unwrap();
        let serving = issue_serving(
            &ca,
            &service_dns_names("liqo", "namespace-offloading"),
            &["127.0.0.1".parse().unwrap()],
            SERVING_VALIDITY,
        )
        .unwrap();
        assert!(serving.not_after < ca.not_after);
        certified_key(serving.cert_pem.as_bytes(), serving.key_pem.as_bytes()).unwrap();
        // A key from another pair is refused rather than served.
        let err = certified_key(serving.cert_pem.as_bytes(), ca.key_pem.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn bad_dns_names_are_reported() {
        let ca = generate_ca(CA_VALIDITY).unwrap();
        let err = issue_serving(&ca, &["caf\u{e9}.example".into()], &[], SERVING_VALIDITY);
        assert!(err.is_err());
    }
}
