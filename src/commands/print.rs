//! The subcommands around `run`: printing the CRD and webhook configurations, writing
//! certificates.

use std::{net::IpAddr, path::Path};

use kube::CustomResourceExt;

use crate::{
    plumbing::certs,
    webhooks::registration::{self, Target, parse_service},
};

/// Structured logs to stderr; `RUST_LOG` overrides the default level.
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn,kube_client=warn".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}

fn yaml<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| format!("cannot write YAML: {e}"))
}

/// The CRD manifests, as committed in `manifests/crd.yaml`.
pub(crate) fn crd_yaml() -> Result<String, String> {
    Ok(format!(
        "{}---\n{}",
        yaml(&crate::model::api::offloading::crd()?)?,
        yaml(&crate::model::api::RemoteCluster::crd())?
    ))
}

pub(crate) fn print_crd() -> Result<(), String> {
    print!("{}", crd_yaml()?);
    Ok(())
}

/// Both webhook configurations as a two-document YAML stream, as in
/// `manifests/webhooks.yaml`.
pub(crate) fn webhook_config_yaml(service: &str) -> Result<String, String> {
    let target = parse_service(service)?;
    // The manager runs in its Service's namespace.
    let own_namespace = match &target {
        registration::Target::Service { namespace, .. } => namespace.clone(),
        registration::Target::Url(_) => String::new(),
    };
    let (mutating, validating) = registration::configurations(
        &target,
        None,
        &own_namespace,
        crate::model::reflection_policy::DEFAULT_RUNTIME_CLASS,
    );
    let m = serde_json::to_value(mutating).map_err(|e| e.to_string())?;
    let v = serde_json::to_value(validating).map_err(|e| e.to_string())?;
    Ok(format!("{}---\n{}", yaml(&m)?, yaml(&v)?))
}

pub(crate) fn print_webhook_config(service: &str) -> Result<(), String> {
    print!("{}", webhook_config_yaml(service)?);
    Ok(())
}

pub(crate) fn write_certs(
    out: &Path,
    service: &str,
    dns: &[String],
    ips: &[IpAddr],
) -> Result<(), String> {
    let mut names = match parse_service(service)? {
        Target::Service {
            namespace, name, ..
        } => certs::service_dns_names(&namespace, &name),
        Target::Url(_) => Vec::new(),
    };
    names.extend(dns.iter().cloned());
    let ca = certs::generate_ca(certs::CA_VALIDITY).map_err(|e| e.to_string())?;
    let serving = certs::issue_serving(&ca, &names, ips, certs::SERVING_VALIDITY)
        .map_err(|e| e.to_string())?;
    certs::write_files(out, &ca, &serving).map_err(|e| e.to_string())?;
    eprintln!(
        "wrote ca.crt, ca.key, tls.crt, tls.key to {} (serving certificate for {}{}; valid until {})",
        out.display(),
        names.join(", "),
        ips.iter().map(|ip| format!(", {ip}")).collect::<String>(),
        serving.not_after.date()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_manifests_match_the_generated_ones() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let committed = std::fs::read_to_string(root.join("manifests/crd.yaml")).unwrap();
        assert!(
            committed == crd_yaml().unwrap(),
            "manifests/crd.yaml is stale: run `cargo run -- crd > manifests/crd.yaml`"
        );
        let committed = std::fs::read_to_string(root.join("manifests/webhooks.yaml")).unwrap();
        assert!(
            committed == webhook_config_yaml("liqo/namespace-offloading:443").unwrap(),
            "manifests/webhooks.yaml is stale: run `cargo run -- webhook-config > manifests/webhooks.yaml`"
        );
    }

    #[test]
    fn certs_are_written_for_the_service() {
        let dir = tempfile::tempdir().unwrap();
        write_certs(dir.path(), "liqo/nso", &[], &["127.0.0.1".parse().unwrap()]).unwrap();
        for f in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        crate::plumbing::crypto::install_crypto_provider();
        crate::plumbing::https::tls::FileCerts::new(
            &dir.path().join("tls.crt"),
            &dir.path().join("tls.key"),
        )
        .unwrap();
    }
}
