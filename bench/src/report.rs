//! The report: `target/bench/report.json` (every figure, with the machine and the date)
//! and a readable table of the same figures.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One line of the table: a measured figure beside its baseline and the target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Line {
    pub benchmark: String,
    pub ours: String,
    pub baseline: String,
    /// The comparison the target is about, e.g. "0.93x throughput".
    pub ratio: String,
    pub target: String,
    pub met: Option<bool>,
}

impl Line {
    pub fn new(benchmark: &str, ours: String, baseline: String) -> Self {
        Self {
            benchmark: benchmark.to_owned(),
            ours,
            baseline,
            ratio: String::new(),
            target: String::new(),
            met: None,
        }
    }

    /// `ratio` against the target `limit`: met when at least (`at_least`) or at most it.
    pub fn against(mut self, ratio: f64, what: &str, at_least: bool, limit: f64) -> Self {
        self.ratio = format!("{ratio:.2}x {what}");
        self.target = format!("{} {limit}x", if at_least { ">=" } else { "<=" });
        self.met = Some(if at_least {
            ratio >= limit
        } else {
            ratio <= limit
        });
        self
    }

    pub fn target(mut self, target: &str, met: bool) -> Self {
        self.target = target.to_owned();
        self.met = Some(met);
        self
    }
}

/// A part of the report: its table lines and its raw figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    pub lines: Vec<Line>,
    pub figures: Value,
}

/// The machine the figures come from.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
        })
        .map(|kib| (kib / 1024.0 / 1024.0).round())
        .unwrap_or_default();
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    serde_json::json!({"cpu": cpu, "cores": cores, "memory_gib": memory_gib, "date": date})
}

/// The table of every section, in Markdown (readable in a terminal too).
pub fn table(sections: &[Section]) -> String {
    let mut out = String::from(
        "| benchmark | ours | baseline | ratio | target | met |\n|---|---|---|---|---|---|\n",
    );
    for line in sections.iter().flat_map(|s| &s.lines) {
        let met = match line.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {met} |\n",
            line.benchmark, line.ours, line.baseline, line.ratio, line.target
        ));
    }
    out
}

/// Merges `section` into the report at `path` (sections of other runs are kept, so the
/// parts can run one at a time) and returns the whole report.
pub fn write(path: &Path, section: Section, quick: bool) -> Result<Vec<Section>, String> {
    let mut sections: Vec<Section> = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| {
            v.get("sections")
                .cloned()
                .map(serde_json::from_value::<Vec<Section>>)
        })
        .and_then(Result::ok)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.name != section.name)
        .collect();
    sections.push(section);
    sections.sort_by_key(|s| order(&s.name));
    let report = serde_json::json!({
        "machine": machine(),
        "quick": quick,
        "sections": sections,
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    // The same figures as a picture, beside it.
    let m = &report["machine"];
    let machine = format!(
        "{} ({} cores, {} GiB), {}",
        m["cpu"].as_str().unwrap_or_default(),
        m["cores"],
        m["memory_gib"],
        m["date"].as_str().unwrap_or_default()
    );
    let picture = path.with_extension("svg");
    std::fs::write(&picture, crate::chart::svg(&sections, &machine, quick))
        .map_err(|e| format!("cannot write {}: {e}", picture.display()))?;
    Ok(sections)
}

fn order(name: &str) -> usize {
    ["admission", "mutation", "offloading-scale", "pods"]
        .iter()
        .position(|n| *n == name)
        .unwrap_or(usize::MAX)
}
