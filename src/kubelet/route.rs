//! The kubelet API paths the API server calls for `kubectl logs`, `exec`, `attach` and
//! `port-forward`, and the remote API server's pod subresource each one maps to; and the
//! paths a metrics reader (metrics-server) scrapes, `/metrics/resource` and `/stats/summary`.

/// What the API server asks of a kubelet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Logs,
    Exec,
    Attach,
    PortForward,
}

impl Call {
    /// The pod subresource serving the same thing through an API server.
    fn subresource(self) -> &'static str {
        match self {
            Self::Logs => "log",
            Self::Exec => "exec",
            Self::Attach => "attach",
            Self::PortForward => "portforward",
        }
    }

    /// Static label for metrics and logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Logs => "logs",
            Self::Exec => "exec",
            Self::Attach => "attach",
            Self::PortForward => "portforward",
        }
    }
}

/// A parsed kubelet API call about one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) call: Call,
    pub(crate) namespace: String,
    pub(crate) pod: String,
    pub(crate) container: Option<String>,
}

/// What a metrics reader asks of a kubelet about its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// `/metrics/resource`: Prometheus text, what metrics-server scrapes.
    ResourceMetrics,
    /// `/stats/summary`: the Summary API's JSON.
    Summary,
}

impl Report {
    /// Static label for metrics and logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ResourceMetrics => "resource_metrics",
            Self::Summary => "stats_summary",
        }
    }
}

/// A parsed usage report call: which report, and of which virtual node when the path
/// names one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReportCall {
    pub(crate) report: Report,
    pub(crate) node: Option<String>,
}

/// Parses `/metrics/resource` and `/stats/summary` (the node left to the caller), and
/// their node-qualified forms `/metrics/nodes/{node}/metrics/resource` (as kwok serves
/// its nodes'; `virtual_node::resource_metrics_path`) and `/stats/nodes/{node}/summary`.
/// `None`: not a report path.
pub(crate) fn report(path: &str) -> Option<ReportCall> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (report, node) = match segments.as_slice() {
        ["metrics", "resource"] => (Report::ResourceMetrics, None),
        ["stats", "summary"] => (Report::Summary, None),
        ["metrics", "nodes", node, "metrics", "resource"] => (Report::ResourceMetrics, Some(node)),
        ["stats", "nodes", node, "summary"] => (Report::Summary, Some(node)),
        _ => return None,
    };
    if node.is_some_and(|n| n.is_empty()) {
        return None;
    }
    Some(ReportCall {
        report,
        node: node.map(|n| (*n).to_owned()),
    })
}

/// A path this server does not serve.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0} is not served by this virtual node: only containerLogs, exec, attach and portForward are (it relays them to the pod's twin), and metrics/resource and stats/summary"
)]
pub(crate) struct Unsupported(pub(crate) String);

/// Parses `/containerLogs/{ns}/{pod}/{container}`, `/exec|attach/{ns}/{pod}[/{uid}]/{container}`
/// and `/portForward/{ns}/{pod}[/{uid}]`.
pub(crate) fn parse(path: &str) -> Result<Target, Unsupported> {
    let unsupported = || Unsupported(path.to_owned());
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (call, rest) = match segments.split_first() {
        Some((&"containerLogs", rest)) => (Call::Logs, rest),
        Some((&"exec", rest)) => (Call::Exec, rest),
        Some((&"attach", rest)) => (Call::Attach, rest),
        Some((&"portForward", rest)) => (Call::PortForward, rest),
        _ => return Err(unsupported()),
    };
    if rest.iter().any(|s| s.is_empty()) {
        return Err(unsupported());
    }
    let (namespace, pod, container) = match (call, rest) {
        (Call::Logs, [ns, pod, container]) => (ns, pod, Some(container)),
        (Call::Exec | Call::Attach, [ns, pod, container] | [ns, pod, _, container]) => {
            (ns, pod, Some(container))
        }
        (Call::PortForward, [ns, pod] | [ns, pod, _]) => (ns, pod, None),
        _ => return Err(unsupported()),
    };
    Ok(Target {
        call,
        namespace: (*namespace).to_owned(),
        pod: (*pod).to_owned(),
        container: container.map(|c| (*c).to_owned()),
    })
}

/// The remote API server's path and query for the twin `pod` in `remote_namespace`. The
/// kubelet's stream flags (`input`, `output`, `error`, `tty` = 1) become the API's
/// (`stdin`, `stdout`, `stderr`, `tty` = true); everything else passes as it came.
pub(crate) fn remote_path(target: &Target, remote_namespace: &str, query: Option<&str>) -> String {
    let mut query_out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let (k, v) = match (target.call, k.as_ref()) {
            (_, "container") => continue,
            (Call::Exec | Call::Attach, "input") => ("stdin", truth(&v)),
            (Call::Exec | Call::Attach, "output") => ("stdout", truth(&v)),
            (Call::Exec | Call::Attach, "error") => ("stderr", truth(&v)),
            (Call::Exec | Call::Attach, "tty") => ("tty", truth(&v)),
            (Call::PortForward, "port") => ("ports", v.as_ref()),
            (_, k) => (k, v.as_ref()),
        };
        query_out.append_pair(k, v);
    }
    if let Some(container) = &target.container {
        query_out.append_pair("container", container);
    }
    let query = query_out.finish();
    // Namespace and pod names are DNS labels: nothing to escape.
    let mut path = format!(
        "/api/v1/namespaces/{remote_namespace}/pods/{}/{}",
        target.pod,
        target.call.subresource()
    );
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    path
}

fn truth(v: &str) -> &'static str {
    if matches!(v, "1" | "true" | "True") {
        "true"
    } else {
        "false"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_api_servers_kubelet_paths_are_understood() {
        let logs = parse("/containerLogs/shop/web-1/app").unwrap();
        assert_eq!(
            logs,
            Target {
                call: Call::Logs,
                namespace: "shop".into(),
                pod: "web-1".into(),
                container: Some("app".into())
            }
        );
        assert_eq!(
            parse("/exec/shop/web-1/uid-1/app")
                .unwrap()
                .container
                .as_deref(),
            Some("app")
        );
        assert_eq!(parse("/attach/shop/web-1/app").unwrap().call, Call::Attach);
        let pf = parse("/portForward/shop/web-1").unwrap();
        assert_eq!((pf.call, pf.container), (Call::PortForward, None));
        for bad in [
            "/pods",
            "/stats/summary",
            "/exec/shop",
            "/containerLogs/shop//app",
            "/run/a/b/c",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn each_call_maps_to_the_twins_subresource_with_the_apis_parameters() {
        let exec = parse("/exec/shop/web-1/app").unwrap();
        assert_eq!(
            remote_path(
                &exec,
                "shop-c1",
                Some("command=sh&command=-c&command=echo+a%26b&input=1&output=1&tty=1")
            ),
            "/api/v1/namespaces/shop-c1/pods/web-1/exec?command=sh&command=-c&command=echo+a%26b&stdin=true&stdout=true&tty=true&container=app"
        );
        let logs = parse("/containerLogs/shop/web-1/app").unwrap();
        assert_eq!(
            remote_path(
                &logs,
                "shop-c1",
                Some("follow=true&sinceSeconds=60&tailLines=5")
            ),
            "/api/v1/namespaces/shop-c1/pods/web-1/log?follow=true&sinceSeconds=60&tailLines=5&container=app"
        );
        let pf = parse("/portForward/shop/web-1").unwrap();
        assert_eq!(
            remote_path(&pf, "shop-c1", Some("port=8080")),
            "/api/v1/namespaces/shop-c1/pods/web-1/portforward?ports=8080"
        );
        assert_eq!(
            remote_path(&pf, "shop-c1", None),
            "/api/v1/namespaces/shop-c1/pods/web-1/portforward"
        );
    }

    #[test]
    fn report_paths_name_their_node_or_leave_it_to_the_caller() {
        assert_eq!(
            report("/metrics/resource"),
            Some(ReportCall {
                report: Report::ResourceMetrics,
                node: None
            })
        );
        assert_eq!(
            report(&crate::model::virtual_node::resource_metrics_path(
                "liqo-c2"
            )),
            Some(ReportCall {
                report: Report::ResourceMetrics,
                node: Some("liqo-c2".into())
            })
        );
        assert_eq!(
            report("/stats/nodes/liqo-c2/summary"),
            Some(ReportCall {
                report: Report::Summary,
                node: Some("liqo-c2".into())
            })
        );
        assert_eq!(report("/stats/summary").unwrap().report, Report::Summary);
        for other in [
            "/metrics",
            "/metrics/cadvisor",
            "/metrics/nodes//metrics/resource",
            "/stats/summary/x",
            "/containerLogs/a/b/c",
        ] {
            assert_eq!(report(other), None, "{other}");
        }
    }

    // Issue 22, point 7: the router takes any path the API server (or anyone past the
    // authorization) sends. `PROPTEST_CASES=100000 cargo test --lib route::tests` runs longer.
    proptest::proptest! {
        #[test]
        fn any_path_is_routed_or_refused(
            path in proptest::prop_oneof![
                ".{0,64}",
                "/(containerLogs|exec|attach|portForward|logs|run)(/[^/]{0,12}){0,5}/?",
            ],
            query in proptest::option::of(".{0,48}"),
        ) {
            if let Ok(target) = parse(&path) {
                // Every segment it names is one segment of the path: nothing is made up.
                for part in [&target.namespace, &target.pod] {
                    proptest::prop_assert!(!part.is_empty() && !part.contains('/'), "{path}: {target:?}");
                }
                let remote = remote_path(&target, "shop-c1", query.as_deref());
                proptest::prop_assert!(remote.starts_with("/api/v1/namespaces/shop-c1/pods/"), "{remote}");
            }
        }
    }
}
