//! The API server's audit log, read back: which client opened which watches and made how
//! many requests. Tests use it to hold the manager to one watch per kind per cluster.

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
};

use serde::Deserialize;

/// Every request at the Metadata level (no bodies); the RequestReceived stage adds nothing
/// for counting.
pub const POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
";
/// The log's file name, in the cluster's directory.
pub const LOG: &str = "audit.log";

/// One audit event (the fields counted here).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: String,
    pub verb: String,
    #[serde(default)]
    pub user_agent: String,
    #[serde(default, rename = "requestURI")]
    pub request_uri: String,
    #[serde(default)]
    pub object_ref: Option<ObjectRef>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub subresource: String,
}

impl Record {
    /// `resource` or `resource/subresource`.
    pub fn resource(&self) -> String {
        match &self.object_ref {
            Some(o) if !o.subresource.is_empty() => format!("{}/{}", o.resource, o.subresource),
            Some(o) => o.resource.clone(),
            None => self.request_uri.clone(),
        }
    }
}

/// A cluster's audit log. A mark taken with [`AuditLog::mark`] starts a window.
pub struct AuditLog {
    path: PathBuf,
}

/// A place in the log.
#[derive(Clone, Copy, Debug)]
pub struct Mark(usize);

/// What one client did.
#[derive(Debug, Default)]
pub struct Activity {
    /// Watches open now, by resource (each watch once, however long it has been open).
    pub open_watches: BTreeMap<String, Vec<String>>,
    /// Requests completed since the mark, other than watches, by "verb resource".
    pub requests: BTreeMap<String, usize>,
}

impl Activity {
    pub fn request_count(&self) -> usize {
        self.requests.values().sum()
    }
}

impl AuditLog {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn records(&self) -> Vec<Record> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Where the log ends now.
    pub fn mark(&self) -> Mark {
        Mark(self.records().len())
    }

    /// The requests (not watches) completed between two marks by clients whose user agent
    /// starts with `user_agent`, by "verb resource".
    pub fn requests_between(
        &self,
        user_agent: &str,
        from: Mark,
        to: Mark,
    ) -> BTreeMap<String, usize> {
        let mut requests = BTreeMap::new();
        for r in self.records().iter().take(to.0).skip(from.0) {
            if r.user_agent.starts_with(user_agent)
                && r.verb != "watch"
                && r.stage == "ResponseComplete"
            {
                *requests
                    .entry(format!("{} {}", r.verb, r.resource()))
                    .or_default() += 1;
            }
        }
        requests
    }

    /// What clients whose user agent starts with `user_agent` (an empty one: clients that
    /// send none) did: the watches open now, and the requests completed since `since`.
    pub fn activity(&self, user_agent: &str, since: Mark) -> Activity {
        let records = self.records();
        let ours = |r: &&Record| {
            if user_agent.is_empty() {
                r.user_agent.is_empty()
            } else {
                r.user_agent.starts_with(user_agent)
            }
        };
        let finished: HashSet<&str> = records
            .iter()
            .filter(|r| r.stage == "ResponseComplete" || r.stage == "Panic")
            .map(|r| r.audit_id.as_str())
            .collect();
        let mut activity = Activity::default();
        for r in records.iter().filter(ours) {
            if r.verb == "watch"
                && r.stage == "ResponseStarted"
                && !finished.contains(r.audit_id.as_str())
            {
                activity
                    .open_watches
                    .entry(r.resource())
                    .or_default()
                    .push(r.request_uri.clone());
            }
        }
        for r in records.iter().skip(since.0).filter(ours) {
            if r.verb != "watch" && r.stage == "ResponseComplete" {
                *activity
                    .requests
                    .entry(format!("{} {}", r.verb, r.resource()))
                    .or_default() += 1;
            }
        }
        activity
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn open_watches_and_requests_since_a_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG);
        let line = |id: &str, stage: &str, verb: &str, ua: &str, resource: &str| {
            format!(
                r#"{{"auditID":"{id}","stage":"{stage}","verb":"{verb}","userAgent":"{ua}","requestURI":"/api/v1/{resource}","objectRef":{{"resource":"{resource}"}}}}"#
            )
        };
        let before = [
            line("1", "ResponseStarted", "watch", "us/1", "pods"),
            line("2", "ResponseStarted", "watch", "us/1", "nodes"),
            line("2", "ResponseComplete", "watch", "us/1", "nodes"),
            line("3", "ResponseComplete", "get", "us/1", "leases"),
        ];
        std::fs::write(&path, before.join("\n") + "\n").unwrap();
        let log = AuditLog::new(path.clone());
        let mark = log.mark();
        let after = [
            line("4", "ResponseComplete", "get", "us/1", "leases"),
            line("5", "ResponseComplete", "list", "them/2", "pods"),
            line("6", "ResponseStarted", "watch", "them/2", "pods"),
            "not json".to_owned(),
        ];
        let mut all = before.to_vec();
        all.extend(after);
        std::fs::write(&path, all.join("\n") + "\n").unwrap();
        let us = log.activity("us/", mark);
        assert_eq!(us.open_watches.keys().collect::<Vec<_>>(), ["pods"]);
        assert_eq!(us.requests, BTreeMap::from([("get leases".to_owned(), 1)]));
        assert_eq!(us.request_count(), 1);
    }
}
