//! Clients for the API servers we talk to: the local one (a kubeconfig file, `$KUBECONFIG`,
//! or the in-cluster account) and each peered cluster (a kubeconfig from a Secret). Every
//! client names itself in the User-Agent, so an API server's audit log tells our requests
//! apart, and a remote cluster's tells which cluster's manager called.

use std::{path::Path, time::Duration};

use http::{HeaderValue, header::USER_AGENT};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig, KubeconfigError},
};

/// Our User-Agent towards the local API server.
pub const LOCAL_USER_AGENT: &str = concat!("namespace-offloading/", env!("CARGO_PKG_VERSION"));
/// How long one call to a remote API server may take: an unreachable cluster costs this
/// much at most, and concurrently with the others.
pub(crate) const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: KubeconfigError,
    },
    #[error("cannot parse the kubeconfig: {0}")]
    Parse(#[source] KubeconfigError),
    #[error("unusable kubeconfig: {0}")]
    Unusable(#[source] KubeconfigError),
    #[error("no kubeconfig: set $KUBECONFIG or --kubeconfig, or run in a cluster ({0})")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot build a client: {0}")]
    Build(#[source] kube::Error),
    #[error(
        "the kubeconfig's user {user:?} gets its credentials from {how}, a program this side would run on the word of the remote cluster's admin: use a token or a client certificate, or allow it for this peering with `namespace-offloading peer --allow-exec-credentials`"
    )]
    ExecCredentials { user: String, how: String },
    #[error(
        "the kubeconfig's {what} names a file ({path}) instead of carrying its data: read here, it would be this host's (the manager's own service-account token at /var/run/secrets/..., say) sent to another cluster; embed the data (`kubectl config view --minify --flatten`)"
    )]
    FileReference { what: String, path: String },
}

/// The User-Agent of our calls to a peered cluster, naming the cluster they come from.
pub fn remote_user_agent(local_cluster_id: &str) -> String {
    format!("{LOCAL_USER_AGENT} peer-of/{local_cluster_id}")
}

/// A client for the local cluster: `path`, or else `$KUBECONFIG`, `~/.kube/config` or the
/// in-cluster service account.
pub(crate) async fn local(path: Option<&Path>) -> Result<Client, ClientError> {
    build(local_config(path).await?, LOCAL_USER_AGENT)
}

/// The local cluster's connection settings, found as [`local`] finds them.
pub(crate) async fn local_config(path: Option<&Path>) -> Result<Config, ClientError> {
    Ok(match path {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|source| ClientError::Read {
                path: path.display().to_string(),
                source,
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(ClientError::Unusable)?
        }
        None => Config::infer().await.map_err(ClientError::Infer)?,
    })
}

/// A client for a peered cluster from its kubeconfig's text, calling itself `user_agent`.
/// Connecting gives up after [`REMOTE_TIMEOUT`], so a cluster that does not answer never
/// holds up the others. A user whose credentials come from a program (an exec plugin or an
/// auth provider) is refused unless `allow_exec`: that program is named by whoever wrote
/// the kubeconfig, the remote cluster's admin, and would run here with our privileges.
pub(crate) async fn remote(
    kubeconfig: &str,
    user_agent: &str,
    allow_exec: bool,
) -> Result<Client, ClientError> {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig).map_err(ClientError::Parse)?;
    credentials_inline(&kubeconfig)?;
    if !allow_exec {
        credentials_without_programs(&kubeconfig)?;
    }
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(ClientError::Unusable)?;
    config.connect_timeout = Some(REMOTE_TIMEOUT);
    build(config, user_agent)
}

/// Refuses a kubeconfig whose user runs a program for its credentials: the user of the
/// current context, or every user when there is no current context to tell which.
pub(crate) fn credentials_without_programs(kubeconfig: &Kubeconfig) -> Result<(), ClientError> {
    let current = kubeconfig.current_context.as_deref().and_then(|name| {
        kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.context.as_ref()?.user.clone())
    });
    let users = kubeconfig
        .auth_infos
        .iter()
        .filter(|u| current.as_ref().is_none_or(|name| &u.name == name));
    for user in users {
        let Some(auth) = &user.auth_info else {
            continue;
        };
        let how = match (&auth.exec, &auth.auth_provider) {
            (Some(exec), _) => format!(
                "an exec plugin ({})",
                exec.command.as_deref().unwrap_or("no command")
            ),
            (None, Some(provider)) => format!("the auth provider {:?}", provider.name),
            (None, None) => continue,
        };
        return Err(ClientError::ExecCredentials {
            user: user.name.clone(),
            how,
        });
    }
    Ok(())
}

/// Refuses a kubeconfig that points at files for its credentials or CA (the current
/// context's user and cluster, or all of them when there is no current context): a peer's
/// kubeconfig is data from a Secret, and a path in it would read this host's files.
pub(crate) fn credentials_inline(kubeconfig: &Kubeconfig) -> Result<(), ClientError> {
    let context = kubeconfig.current_context.as_deref().and_then(|name| {
        kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.context.clone())
    });
    let refused = |what: String, path: &Option<String>| match path {
        Some(path) => Err(ClientError::FileReference {
            what,
            path: path.clone(),
        }),
        None => Ok(()),
    };
    for user in &kubeconfig.auth_infos {
        if context
            .as_ref()
            .is_some_and(|c| c.user.as_ref() != Some(&user.name))
        {
            continue;
        }
        let Some(auth) = &user.auth_info else {
            continue;
        };
        let name = &user.name;
        refused(format!("user {name:?} tokenFile"), &auth.token_file)?;
        refused(
            format!("user {name:?} client-certificate"),
            &auth.client_certificate,
        )?;
        refused(format!("user {name:?} client-key"), &auth.client_key)?;
    }
    for cluster in &kubeconfig.clusters {
        if context.as_ref().is_some_and(|c| c.cluster != cluster.name) {
            continue;
        }
        if let Some(c) = &cluster.cluster {
            refused(
                format!("cluster {:?} certificate-authority", cluster.name),
                &c.certificate_authority,
            )?;
        }
    }
    Ok(())
}

fn build(mut config: Config, user_agent: &str) -> Result<Client, ClientError> {
    // A cluster ID is a label value, so the header is always valid; if not, go without.
    if let Ok(value) = HeaderValue::from_str(user_agent) {
        config.headers.push((USER_AGENT, value));
    }
    Client::try_from(config).map_err(ClientError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster: {{server: \"https://127.0.0.1:1\"}}\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\n- name: other\n  context: {{cluster: k, user: plugin}}\nusers:\n- name: u\n  user: {user}\n- name: plugin\n  user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: aws}}}}\n"
        )
    }

    #[tokio::test]
    async fn a_kubeconfig_that_reads_this_hosts_files_is_refused() {
        let token = std::env::temp_dir().join("nso-test-token");
        std::fs::write(&token, "the manager's own token").unwrap();
        for user in [
            format!("{{tokenFile: {}}}", token.display()),
            "{client-certificate: /etc/cert.pem, client-key-data: eA==}".to_owned(),
        ] {
            let err = remote(&kubeconfig(&user), "ua", true).await.err().unwrap();
            assert!(
                matches!(err, ClientError::FileReference { .. }),
                "{user}: {err}"
            );
            assert!(err.to_string().contains("--flatten"), "{err}");
        }
        let ca_file = "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster: {server: \"https://127.0.0.1:1\", certificate-authority: /etc/ca.pem}\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\nusers:\n- name: u\n  user: {token: t}\n";
        let err = remote(ca_file, "ua", false).await.err().unwrap();
        assert!(err.to_string().contains("certificate-authority"), "{err}");
        assert!(remote(&kubeconfig("{token: t}"), "ua", false).await.is_ok());
    }

    #[tokio::test]
    async fn a_user_that_runs_a_program_for_its_credentials_is_refused_unless_allowed() {
        crate::plumbing::crypto::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        // kube starts the plugin as it builds the client, before any request.
        let exec = kubeconfig(&format!(
            "{{exec: {{apiVersion: client.authentication.k8s.io/v1, command: sh, args: [-c, 'touch {}; exit 1']}}}}",
            ran.display()
        ));
        let err = remote(&exec, "ua", false).await.err().unwrap();
        assert!(
            matches!(&err, ClientError::ExecCredentials { user, how } if user == "u" && how.contains("(sh)")),
            "{err}"
        );
        assert!(
            err.to_string().contains("--allow-exec-credentials"),
            "{err}"
        );
        assert!(!ran.exists(), "the refused plugin ran");
        let provider = kubeconfig("{auth-provider: {name: gcp, config: {cmd-path: /bin/false}}}");
        let err = remote(&provider, "ua", false).await.err().unwrap();
        assert!(err.to_string().contains("auth provider \"gcp\""), "{err}");

        // Allowed explicitly, the plugin runs (and fails here).
        let err = remote(&exec, "ua", true).await.err().unwrap();
        assert!(!matches!(err, ClientError::ExecCredentials { .. }), "{err}");
        assert!(ran.exists(), "the allowed plugin did not run");
        if let Err(e) = remote(&provider, "ua", true).await {
            assert!(!matches!(e, ClientError::ExecCredentials { .. }), "{e}");
        }
        // A token user is fine, even next to an exec user the current context does not use.
        remote(&kubeconfig("{token: abc}"), "ua", false)
            .await
            .unwrap();
    }
}
