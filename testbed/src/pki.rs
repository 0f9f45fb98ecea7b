//! The certificates and keys of one test cluster: its own CA, the API server's serving
//! certificate, an admin client certificate in `system:masters`, the service-account
//! signing key, and the two ends of the API server's link to kubelets: the client
//! certificate kube-apiserver presents to a kubelet (`kubectl logs`, `exec`, `port-forward`
//! go through it) and kwok's serving certificate for its kubelet API. Each cluster has its
//! own CA, as separate real clusters would; the one CA signs everything.

use std::{fs, path::Path};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::TestbedError;

/// PEM files written by [`ClusterPki::write`], relative to the cluster's `pki/` directory.
pub const CA_CERT: &str = "ca.crt";
pub const SERVING_CERT: &str = "apiserver.crt";
pub const SERVING_KEY: &str = "apiserver.key";
pub const ADMIN_CERT: &str = "admin.crt";
pub const ADMIN_KEY: &str = "admin.key";
pub const SA_KEY: &str = "sa.key";
pub const SA_PUB: &str = "sa.pub";
/// The client certificate kube-apiserver presents to kubelets (`--kubelet-client-certificate`).
/// A kubelet authenticates the API server by it: signed by [`CA_CERT`], CN
/// `kube-apiserver-kubelet-client`, organization `system:masters`, as kubeadm makes it.
pub const KUBELET_CLIENT_CERT: &str = "apiserver-kubelet-client.crt";
pub const KUBELET_CLIENT_KEY: &str = "apiserver-kubelet-client.key";
/// kwok's serving certificate for its kubelet API on 127.0.0.1 (kube-apiserver always
/// speaks HTTPS to a kubelet).
pub const KWOK_CERT: &str = "kwok.crt";
pub const KWOK_KEY: &str = "kwok.key";

/// The client certificate kube-apiserver presents to admission webhooks (through
/// `--admission-control-config-file`): a webhook that requires it knows the API server sent
/// the review. Signed by [`CA_CERT`], CN [`WEBHOOK_CLIENT_CN`].
pub const WEBHOOK_CLIENT_CERT: &str = "apiserver-webhook-client.crt";
pub const WEBHOOK_CLIENT_KEY: &str = "apiserver-webhook-client.key";
/// The common name of [`WEBHOOK_CLIENT_CERT`].
pub const WEBHOOK_CLIENT_CN: &str = "kube-apiserver-webhook-client";

/// A client certificate for a user with no rights at all (CN `testbed-viewer`, no
/// groups): what anyone else holding a certificate from the CA can do.
pub const VIEWER_CERT: &str = "viewer.crt";
pub const VIEWER_KEY: &str = "viewer.key";

/// The common name of [`KUBELET_CLIENT_CERT`].
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// PEM-encoded material for one cluster.
pub struct ClusterPki {
    pub ca_cert: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    pub sa_key: String,
    pub sa_pub: String,
    pub kubelet_client_cert: String,
    pub kubelet_client_key: String,
    pub kwok_cert: String,
    pub kwok_key: String,
    pub viewer_cert: String,
    pub viewer_key: String,
    pub webhook_client_cert: String,
    pub webhook_client_key: String,
}

impl ClusterPki {
    pub fn generate(cluster: &str) -> Result<Self, TestbedError> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = name(&format!("{cluster}-ca"), None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::default();
        serving.distinguished_name = name("kube-apiserver", None);
        serving.subject_alt_names = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::IpAddress([10, 0, 0, 1].into()),
            SanType::DnsName("localhost".try_into()?),
            SanType::DnsName("kubernetes.default.svc".try_into()?),
        ];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::default();
        // system:masters bypasses RBAC: the harness and the person at dev-cluster are admins.
        admin.distinguished_name = name("testbed-admin", Some("system:masters"));
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let kubelet_client_key = KeyPair::generate()?;
        let mut kubelet_client = CertificateParams::default();
        kubelet_client.distinguished_name = name(KUBELET_CLIENT_CN, Some("system:masters"));
        kubelet_client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let kubelet_client_cert = kubelet_client.signed_by(&kubelet_client_key, &issuer)?;

        let kwok_key = KeyPair::generate()?;
        let mut kwok = CertificateParams::default();
        kwok.distinguished_name = name("kwok-kubelet", None);
        kwok.subject_alt_names = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::DnsName("localhost".try_into()?),
        ];
        kwok.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let kwok_cert = kwok.signed_by(&kwok_key, &issuer)?;

        let viewer_key = KeyPair::generate()?;
        let mut viewer = CertificateParams::default();
        viewer.distinguished_name = name("testbed-viewer", None);
        viewer.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let viewer_cert = viewer.signed_by(&viewer_key, &issuer)?;

        let webhook_client_key = KeyPair::generate()?;
        let mut webhook_client = CertificateParams::default();
        webhook_client.distinguished_name = name(WEBHOOK_CLIENT_CN, None);
        webhook_client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let webhook_client_cert = webhook_client.signed_by(&webhook_client_key, &issuer)?;

        let sa = KeyPair::generate()?;
        Ok(Self {
            ca_cert: ca_cert.pem(),
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            sa_key: sa.serialize_pem(),
            sa_pub: sa.public_key_pem(),
            kubelet_client_cert: kubelet_client_cert.pem(),
            kubelet_client_key: kubelet_client_key.serialize_pem(),
            kwok_cert: kwok_cert.pem(),
            kwok_key: kwok_key.serialize_pem(),
            viewer_cert: viewer_cert.pem(),
            viewer_key: viewer_key.serialize_pem(),
            webhook_client_cert: webhook_client_cert.pem(),
            webhook_client_key: webhook_client_key.serialize_pem(),
        })
    }

    pub fn write(&self, dir: &Path) -> Result<(), TestbedError> {
        fs::create_dir_all(dir).map_err(|e| TestbedError::io(dir, e))?;
        for (file, pem) in [
            (CA_CERT, &self.ca_cert),
            (SERVING_CERT, &self.serving_cert),
            (SERVING_KEY, &self.serving_key),
            (ADMIN_CERT, &self.admin_cert),
            (ADMIN_KEY, &self.admin_key),
            (SA_KEY, &self.sa_key),
            (SA_PUB, &self.sa_pub),
            (KUBELET_CLIENT_CERT, &self.kubelet_client_cert),
            (KUBELET_CLIENT_KEY, &self.kubelet_client_key),
            (KWOK_CERT, &self.kwok_cert),
            (KWOK_KEY, &self.kwok_key),
            (VIEWER_CERT, &self.viewer_cert),
            (VIEWER_KEY, &self.viewer_key),
            (WEBHOOK_CLIENT_CERT, &self.webhook_client_cert),
            (WEBHOOK_CLIENT_KEY, &self.webhook_client_key),
        ] {
            let path = dir.join(file);
            fs::write(&path, pem).map_err(|e| TestbedError::io(&path, e))?;
        }
        Ok(())
    }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_distinct_pem_material() {
        let a = ClusterPki::generate("cluster-1").unwrap();
        let b = ClusterPki::generate("cluster-2").unwrap();
        assert!(a.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.admin_key.contains("PRIVATE KEY"));
        assert!(a.sa_pub.contains("PUBLIC KEY"));
        assert_ne!(a.ca_cert, b.ca_cert, "each cluster has its own CA");
    }
}
