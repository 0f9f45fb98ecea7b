//! The mutation and validation timings that `cargo bench --bench admission` leaves in
//! criterion's directory, as a report section.

use std::path::Path;

use serde_json::{Map, Value};

use crate::report::{Line, Section};

/// The benchmarks of `benches/admission.rs`, by criterion id, with what each measures.
pub const BENCHMARKS: &[(&str, &str)] = &[
    ("pod/Local", "pod review, Local, no affinity of its own"),
    (
        "pod/LocalAndRemote",
        "pod review, LocalAndRemote, no affinity of its own",
    ),
    ("pod/Remote", "pod review, Remote, no affinity of its own"),
    ("pod/Local+own", "pod review, Local, with its own affinity"),
    (
        "pod/LocalAndRemote+own",
        "pod review, LocalAndRemote, with its own affinity",
    ),
    (
        "pod/Remote+own",
        "pod review, Remote, with its own affinity",
    ),
    (
        "pod/worst-case",
        "pod review, worst case: 128 own terms x 2 imposed = 256",
    ),
    ("offloading/validation", "NamespaceOffloading validation"),
    ("offloading/defaults", "NamespaceOffloading defaults"),
    (
        "server/service-Remote+own",
        "pod review, Remote, with its own affinity, through the webhook server's service",
    ),
    (
        "baseline/parse-and-allow",
        "the admission baseline's work: parse the review, allow",
    ),
];

/// Mean time per review of each benchmark, from `criterion/<group>/<id>/new/estimates.json`.
pub fn section(criterion: &Path) -> Result<Section, String> {
    let mut lines = Vec::new();
    let mut figures = Map::new();
    for &(id, what) in BENCHMARKS {
        let path = criterion.join(id).join("new/estimates.json");
        let text = std::fs::read(&path).map_err(|e| {
            format!(
                "cannot read {} (run cargo bench --bench admission first): {e}",
                path.display()
            )
        })?;
        let estimates: Value = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
        let mean_ns = estimates["mean"]["point_estimate"]
            .as_f64()
            .ok_or_else(|| format!("{} has no mean", path.display()))?;
        lines.push(Line::new(
            what,
            format!("{:.1} µs", mean_ns / 1000.0),
            String::new(),
        ));
        figures.insert(id.to_owned(), Value::from(mean_ns));
    }
    Ok(Section {
        name: "mutation".into(),
        lines,
        figures: Value::Object(figures),
    })
}
