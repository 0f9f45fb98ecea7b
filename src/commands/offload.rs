//! `offload namespace NAME` and `unoffload namespace NAME`, with liqoctl's flags: create (or
//! delete) the namespace's NamespaceOffloading, and with `--wait` follow it until the
//! controller has done its part.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NodeSelector};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::wait::{await_condition, conditions},
};
use serde_json::json;

use super::cli::{CliError, KubeArgs, Output};
use crate::model::{
    api::{
        NamespaceMappingStrategy, NamespaceOffloading, NamespaceOffloadingSpec, OFFLOADING_NAME,
        OffloadingPhase, PodOffloadingStrategy, offloading::default_cluster_selector,
    },
    labels::validate_dns_label,
    markers::ENABLED_LABEL,
    selector_text,
};

/// The field manager of what the command line writes.
const CLI_FIELD_MANAGER: &str = "namespace-offloading-cli";

#[derive(Debug, clap::Subcommand)]
pub(crate) enum OffloadTarget {
    /// Offload a namespace: its pods may run in the selected remote clusters, where its
    /// twin namespaces are created.
    #[command(alias = "ns")]
    Namespace(OffloadArgs),
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum UnoffloadTarget {
    /// End a namespace's offloading: its remote namespaces are deleted and its pods come
    /// back to this cluster.
    #[command(alias = "ns")]
    Namespace(UnoffloadArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct OffloadArgs {
    /// The namespace to offload.
    pub(crate) name: String,
    /// Where the namespace's pods may run.
    #[arg(long, value_enum, default_value = "LocalAndRemote")]
    pub(crate) pod_offloading_strategy: PodStrategyArg,
    /// How the remote namespaces are named: DefaultName (`<name>-<cluster-id>`),
    /// EnforceSameName (`<name>`) or SelectedName (`--remote-namespace-name`).
    #[arg(long, value_enum, default_value = "DefaultName")]
    pub(crate) namespace_mapping_strategy: MappingArg,
    /// The remote namespaces' name, with `--namespace-mapping-strategy SelectedName`.
    #[arg(long)]
    pub(crate) remote_namespace_name: Option<String>,
    /// Which remote clusters, by their labels: 'region=eu,provider!=aws' (requirements
    /// ANDed); repeat the flag for alternatives (ORed). Default: every remote cluster.
    #[arg(long = "selector", short = 'l', value_name = "QUERY")]
    pub(crate) selectors: Vec<String>,
    /// Wait until the remote namespaces are ready (or the offloading fails).
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long `--wait` waits.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    /// Print the NamespaceOffloading instead of creating it.
    #[arg(short = 'o', long = "output", value_enum)]
    pub(crate) output: Option<Output>,
    #[command(flatten)]
    pub(crate) kube: KubeArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct UnoffloadArgs {
    /// The namespace whose offloading ends.
    pub(crate) name: String,
    /// Wait until the remote namespaces are gone.
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long `--wait` waits.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    #[command(flatten)]
    pub(crate) kube: KubeArgs,
}

/// The strategies as liqoctl spells them on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PodStrategyArg {
    #[value(name = "LocalAndRemote")]
    LocalAndRemote,
    #[value(name = "Local")]
    Local,
    #[value(name = "Remote")]
    Remote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MappingArg {
    #[value(name = "DefaultName")]
    Default,
    #[value(name = "EnforceSameName")]
    EnforceSame,
    #[value(name = "SelectedName")]
    Selected,
}

impl OffloadArgs {
    /// The spec these flags ask for; a bad combination is a usage error.
    pub(crate) fn spec(&self) -> Result<NamespaceOffloadingSpec, CliError> {
        let namespace_mapping_strategy = match self.namespace_mapping_strategy {
            MappingArg::Default => NamespaceMappingStrategy::DefaultName,
            MappingArg::EnforceSame => NamespaceMappingStrategy::EnforceSameName,
            MappingArg::Selected => NamespaceMappingStrategy::SelectedName,
        };
        let remote_namespace_name = match (namespace_mapping_strategy, &self.remote_namespace_name)
        {
            (NamespaceMappingStrategy::SelectedName, Some(name)) => {
                validate_dns_label(name)
                    .map_err(|why| CliError::Usage(format!("--remote-namespace-name: {why}")))?;
                Some(name.clone())
            }
            (NamespaceMappingStrategy::SelectedName, None) => {
                return Err(CliError::Usage(
                    "--namespace-mapping-strategy SelectedName needs --remote-namespace-name NAME"
                        .into(),
                ));
            }
            (_, Some(_)) => {
                return Err(CliError::Usage(
                    "--remote-namespace-name is used only with --namespace-mapping-strategy SelectedName".into(),
                ));
            }
            (_, None) => None,
        };
        let cluster_selector = if self.selectors.is_empty() {
            default_cluster_selector()
        } else {
            let terms = self
                .selectors
                .iter()
                .map(|q| selector_text::parse_term(q))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CliError::Usage(e.to_string()))?;
            NodeSelector {
                node_selector_terms: terms,
            }
        };
        Ok(NamespaceOffloadingSpec {
            namespace_mapping_strategy,
            remote_namespace_name,
            pod_offloading_strategy: match self.pod_offloading_strategy {
                PodStrategyArg::LocalAndRemote => PodOffloadingStrategy::LocalAndRemote,
                PodStrategyArg::Local => PodOffloadingStrategy::Local,
                PodStrategyArg::Remote => PodOffloadingStrategy::Remote,
            },
            cluster_selector,
        })
    }
}

/// The NamespaceOffloading for `namespace` (v1beta1, Liqo 1.x's).
pub(crate) fn manifest(namespace: &str, spec: NamespaceOffloadingSpec) -> NamespaceOffloading {
    let mut nso = NamespaceOffloading::new(OFFLOADING_NAME, spec);
    nso.metadata.namespace = Some(namespace.to_owned());
    nso
}

fn no_such_namespace(name: &str) -> CliError {
    CliError::NotFound(format!(
        "namespace {name} does not exist in this cluster: create it first (kubectl create namespace {name})"
    ))
}

/// The namespace, or `None` when this user may not read namespaces (a tenant of its own
/// namespaces): what comes next then tells whether it exists.
async fn existing_namespace(client: &Client, name: &str) -> Result<Option<Namespace>, CliError> {
    match Api::<Namespace>::all(client.clone()).get_opt(name).await {
        Ok(Some(ns)) => Ok(Some(ns)),
        Ok(None) => Err(no_such_namespace(name)),
        Err(kube::Error::Api(s)) if s.is_forbidden() => Ok(None),
        Err(e) => Err(CliError::api(&format!("read namespace {name}"), e)),
    }
}

pub(crate) async fn offload(args: OffloadArgs) -> Result<(), CliError> {
    let spec = args.spec()?;
    let nso = manifest(&args.name, spec.clone());
    if let Some(output) = args.output {
        print!("{}", output.render(&nso)?);
        return Ok(());
    }
    let client = args.kube.client().await?;
    existing_namespace(&client, &args.name).await?;
    let api = Api::<NamespaceOffloading>::namespaced(client.clone(), &args.name);
    let params = PostParams {
        field_manager: Some(CLI_FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, &nso).await {
        Ok(_) => println!(
            "namespace {} offloaded: pods {}, remote namespaces named {}",
            args.name,
            strategy_words(spec.pod_offloading_strategy),
            naming_words(&spec)
        ),
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let current = api
                .get(OFFLOADING_NAME)
                .await
                .map_err(|e| CliError::api("read the existing NamespaceOffloading", e))?;
            if current.metadata.deletion_timestamp.is_some() {
                return Err(CliError::Failed(format!(
                    "the offloading of namespace {} is ending: wait for it (`unoffload namespace {} --wait`), then offload it again",
                    args.name, args.name
                )));
            }
            if current.spec != spec {
                return Err(CliError::Failed(format!(
                    "namespace {} is already offloaded with another configuration (pods {}, remote namespaces named {}), which cannot change: run `unoffload namespace {} --wait`, then offload it again",
                    args.name,
                    strategy_words(current.spec.pod_offloading_strategy),
                    naming_words(&current.spec),
                    args.name
                )));
            }
            println!(
                "namespace {} is already offloaded with this configuration",
                args.name
            );
        }
        Err(kube::Error::Api(s)) if s.is_not_found() => return Err(no_such_namespace(&args.name)),
        Err(e) => {
            return Err(CliError::api(
                &format!("offload namespace {}", args.name),
                e,
            ));
        }
    }
    if args.wait {
        wait_offloaded(&api, &args.name, args.timeout).await?;
    }
    Ok(())
}

fn strategy_words(strategy: PodOffloadingStrategy) -> &'static str {
    match strategy {
        PodOffloadingStrategy::Local => "stay in this cluster (Local)",
        PodOffloadingStrategy::Remote => "run in the remote clusters only (Remote)",
        PodOffloadingStrategy::LocalAndRemote => {
            "run here or in the remote clusters (LocalAndRemote)"
        }
    }
}

fn naming_words(spec: &NamespaceOffloadingSpec) -> String {
    match spec.namespace_mapping_strategy {
        NamespaceMappingStrategy::DefaultName => "<namespace>-<cluster-id> (DefaultName)".into(),
        NamespaceMappingStrategy::EnforceSameName => "as here (EnforceSameName)".into(),
        NamespaceMappingStrategy::SelectedName => format!(
            "{} (SelectedName)",
            spec.remote_namespace_name.as_deref().unwrap_or_default()
        ),
    }
}

/// Whether the controller has reported on the current spec, and no longer `InProgress`.
fn settled(nso: &NamespaceOffloading) -> bool {
    let Some(status) = &nso.status else {
        return false;
    };
    status.observed_generation >= nso.metadata.generation
        && status
            .offloading_phase
            .is_some_and(|p| p != OffloadingPhase::InProgress)
}

/// Follows the offloading until it settles: Ready is success, any other phase a failure
/// with each cluster's reason.
async fn wait_offloaded(
    api: &Api<NamespaceOffloading>,
    namespace: &str,
    timeout: Duration,
) -> Result<(), CliError> {
    let waited = tokio::time::timeout(
        timeout,
        await_condition(
            api.clone(),
            OFFLOADING_NAME,
            |o: Option<&NamespaceOffloading>| o.is_some_and(settled),
        ),
    )
    .await;
    let nso = match waited {
        Ok(Ok(Some(nso))) => nso,
        Ok(Ok(None)) => {
            return Err(CliError::Failed(format!(
                "the offloading of namespace {namespace} was deleted while waiting"
            )));
        }
        Ok(Err(e)) => {
            return Err(CliError::Failed(format!(
                "cannot follow the offloading of namespace {namespace}: {e}"
            )));
        }
        Err(_) => {
            let phase = api
                .get_opt(OFFLOADING_NAME)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.status)
                .and_then(|s| s.offloading_phase)
                .map_or("not reported yet".to_owned(), |p| format!("{p:?}"));
            return Err(CliError::Timeout(format!(
                "the offloading of namespace {namespace} did not settle within {} (phase: {phase}); it goes on: follow it with `list`, or wait longer with --timeout",
                humantime::format_duration(timeout)
            )));
        }
    };
    // Clusters by their peering's name when this user may read the peerings.
    let peers = super::inspect::remote_clusters(api.clone().into_client())
        .await
        .unwrap_or_default();
    let clusters = super::inspect::cluster_states(&nso, &peers);
    let phase = nso
        .status
        .as_ref()
        .and_then(|s| s.offloading_phase)
        .unwrap_or(OffloadingPhase::InProgress);
    for c in &clusters {
        println!("  cluster {}: {}", c.cluster, c.state);
    }
    if phase == OffloadingPhase::Ready {
        println!("namespace {namespace}: offloading Ready");
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "the offloading of namespace {namespace} is {phase:?}{}",
            match phase {
                OffloadingPhase::NoClusterSelected =>
                    ": no remote cluster matches the selector (see `info` for the clusters' labels)",
                _ => " (the controller keeps trying; the reasons are above)",
            }
        )))
    }
}

pub(crate) async fn unoffload(args: UnoffloadArgs) -> Result<(), CliError> {
    let client = args.kube.client().await?;
    let namespace = existing_namespace(&client, &args.name).await?;
    // The quick-offloading label would have the offloading made again: it goes first.
    let labelled = namespace.is_some_and(|ns| ns.labels().contains_key(ENABLED_LABEL));
    if labelled {
        let patch = json!({"metadata": {"labels": {ENABLED_LABEL: null}}});
        Api::<Namespace>::all(client.clone())
            .patch(
                &args.name,
                &PatchParams {
                    field_manager: Some(CLI_FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| CliError::api(&format!("remove the {ENABLED_LABEL} label"), e))?;
    }
    let api = Api::<NamespaceOffloading>::namespaced(client.clone(), &args.name);
    let uid = match api.delete(OFFLOADING_NAME, &DeleteParams::default()).await {
        Ok(either) => either.left().and_then(|n| n.uid()),
        Err(kube::Error::Api(s)) if s.is_not_found() => {
            if !labelled {
                println!("namespace {} is not offloaded", args.name);
                return Ok(());
            }
            None
        }
        Err(e) => {
            return Err(CliError::api(
                &format!("end the offloading of namespace {}", args.name),
                e,
            ));
        }
    };
    println!(
        "namespace {}: offloading ending (its remote namespaces are deleted, its pods come back)",
        args.name
    );
    if !args.wait {
        return Ok(());
    }
    let gone = async {
        match &uid {
            Some(uid) => await_condition(api.clone(), OFFLOADING_NAME, conditions::is_deleted(uid))
                .await
                .map(|_| ()),
            // Deleted by the label's controller: wait until no offloading is left.
            None => await_condition(
                api.clone(),
                OFFLOADING_NAME,
                |o: Option<&NamespaceOffloading>| o.is_none(),
            )
            .await
            .map(|_| ()),
        }
    };
    match tokio::time::timeout(args.timeout, gone).await {
        Ok(Ok(())) => {
            println!("namespace {}: offloading ended", args.name);
            Ok(())
        }
        Ok(Err(e)) => Err(CliError::Failed(format!(
            "cannot follow the end of the offloading of namespace {}: {e}",
            args.name
        ))),
        Err(_) => Err(CliError::Timeout(format!(
            "the offloading of namespace {} did not end within {} (a remote cluster that does not answer holds it up: see `list`); it goes on",
            args.name,
            humantime::format_duration(args.timeout)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        target: OffloadTarget,
    }

    fn spec(args: &[&str]) -> Result<NamespaceOffloadingSpec, CliError> {
        let cli = Cli::try_parse_from(["offload"].iter().chain(args)).unwrap();
        let OffloadTarget::Namespace(args) = cli.target;
        args.spec()
    }

    #[test]
    fn flags_make_liqos_spec_and_selectors_are_ored() {
        let s = spec(&["namespace", "web"]).unwrap();
        assert_eq!(s, NamespaceOffloadingSpec::label_default());
        let s = spec(&[
            "namespace",
            "web",
            "--pod-offloading-strategy",
            "Remote",
            "--namespace-mapping-strategy",
            "SelectedName",
            "--remote-namespace-name",
            "shop",
            "--selector",
            "region=eu,provider!=aws",
            "--selector",
            "region=us",
        ])
        .unwrap();
        assert_eq!(s.pod_offloading_strategy, PodOffloadingStrategy::Remote);
        assert_eq!(s.remote_namespace_name.as_deref(), Some("shop"));
        assert_eq!(s.cluster_selector.node_selector_terms.len(), 2);
        let first = s.cluster_selector.node_selector_terms[0]
            .match_expressions
            .clone()
            .unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[1].operator, "NotIn");
        let yaml = Output::Yaml.render(&manifest("web", s)).unwrap();
        assert!(
            yaml.contains("apiVersion: offloading.liqo.io/v1beta1"),
            "{yaml}"
        );
        assert!(yaml.contains("remoteNamespaceName: shop"), "{yaml}");
    }

    #[test]
    fn bad_combinations_are_usage_errors() {
        for (args, why) in [
            (
                vec!["--namespace-mapping-strategy", "SelectedName"],
                "needs --remote-namespace-name",
            ),
            (
                vec!["--remote-namespace-name", "shop"],
                "used only with --namespace-mapping-strategy SelectedName",
            ),
            (
                vec![
                    "--namespace-mapping-strategy",
                    "SelectedName",
                    "--remote-namespace-name",
                    "Shop!",
                ],
                "--remote-namespace-name: \"Shop!\" is not a valid namespace name",
            ),
            (vec!["--selector", "region in (eu"], "a '(' is not closed"),
        ] {
            let mut all = vec!["namespace", "web"];
            all.extend(args);
            match spec(&all) {
                Err(CliError::Usage(m)) => assert!(m.contains(why), "{m}"),
                other => panic!("{all:?}: {other:?}"),
            }
        }
    }

    fn nso(
        generation: i64,
        observed: Option<i64>,
        phase: Option<OffloadingPhase>,
    ) -> NamespaceOffloading {
        let mut n = manifest("web", NamespaceOffloadingSpec::label_default());
        n.metadata.generation = Some(generation);
        n.status = Some(crate::model::api::NamespaceOffloadingStatus {
            observed_generation: observed,
            offloading_phase: phase,
            ..Default::default()
        });
        n
    }

    #[test]
    fn waiting_ends_once_the_current_generation_is_reported_past_in_progress() {
        assert!(!settled(&nso(1, None, Some(OffloadingPhase::Ready))));
        assert!(!settled(&nso(2, Some(1), Some(OffloadingPhase::Ready))));
        assert!(!settled(&nso(
            1,
            Some(1),
            Some(OffloadingPhase::InProgress)
        )));
        assert!(settled(&nso(1, Some(1), Some(OffloadingPhase::Ready))));
        assert!(settled(&nso(1, Some(1), Some(OffloadingPhase::AllFailed))));
    }
}
