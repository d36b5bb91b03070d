//! `dumper-bench check DIR`: the results folder is complete and well
//! formed (CI runs it after `cargo xtask bench --quick`). It checks form,
//! never timings.

use crate::measure::Row;
use crate::report::CSV_HEADER;
use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

const REQUIRED: &[&str] = &[
    "collector",
    "processes",
    "fds_per_process",
    "vmas_per_process",
    "threads_per_process",
    "cold",
    "median_ns",
    "p99_ns",
    "syscalls",
    "bytes",
];

pub fn check(dir: &Path) -> Result<String> {
    let json = std::fs::read_to_string(dir.join("results.json")).context("results.json")?;
    let value: serde_json::Value =
        serde_json::from_str(&json).context("results.json is not JSON")?;
    let list = value.as_array().context("results.json is not a list")?;
    ensure!(!list.is_empty(), "results.json has no rows");
    for (i, r) in list.iter().enumerate() {
        for k in REQUIRED {
            ensure!(r.get(k).is_some(), "results.json row {i} has no {k:?}");
        }
    }
    let rows: Vec<Row> = serde_json::from_value(value.clone()).context("results.json rows")?;
    ensure!(
        rows.iter().any(|r| r.cold) && rows.iter().any(|r| !r.cold),
        "results.json needs warm and cold rows"
    );
    for name in ["proc", "proc-tuned", "bpf", "bpf-null"] {
        ensure!(
            rows.iter().any(|r| r.collector == name),
            "no rows for collector {name}"
        );
    }
    ensure!(
        rows.iter()
            .all(|r| r.reps > 0 && r.median_ns > 0 && r.median_ns <= r.max_ns),
        "a row with no measurement"
    );

    let csv = std::fs::read_to_string(dir.join("results.csv")).context("results.csv")?;
    let mut lines = csv.lines();
    ensure!(lines.next() == Some(CSV_HEADER), "results.csv header");
    let n = CSV_HEADER.split(',').count();
    let body: Vec<&str> = lines.collect();
    ensure!(
        body.len() == rows.len(),
        "results.csv has {} rows, results.json {}",
        body.len(),
        rows.len()
    );
    ensure!(
        body.iter().all(|l| l.split(',').count() == n),
        "results.csv: a row without {n} columns"
    );

    let restores: Vec<crate::restore::RestoreRow> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("restore.json")).context("restore.json")?,
    )
    .context("restore.json rows")?;
    ensure!(!restores.is_empty(), "restore.json has no restore");
    ensure!(
        restores.iter().all(|r| r.reps > 0
            && r.processes > 0
            && r.total_ns > 0
            && r.wall_ns >= r.total_ns
            && r.pages_written > 0),
        "restore.json: a restore with no measurement"
    );
    let dumps: Vec<crate::dump::DumpRow> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dump.json")).context("dump.json")?)
            .context("dump.json rows")?;
    for c in crate::dump::DUMP_COLLECTORS {
        ensure!(
            dumps.iter().any(|r| r.collector == c),
            "dump.json has no dump with {c}"
        );
    }
    ensure!(
        dumps
            .iter()
            .all(|r| r.reps > 0 && r.frozen_ns >= r.collect_ns && r.pages_written > 0),
        "dump.json: a dump with no measurement"
    );

    let md = std::fs::read_to_string(dir.join("report.md")).context("report.md")?;
    ensure!(md.contains("## Dump"), "report.md lacks the dump section");
    let plans: Vec<crate::planner::PlanRow> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).context("plan.json")?)
            .context("plan.json rows")?;
    ensure!(
        plans.iter().any(|r| r.kind == "large" && r.plan_ns > 0)
            && plans.iter().any(|r| r.kind == "random" && r.planned > 0),
        "plan.json lacks planner measurements"
    );
    ensure!(
        md.contains("## Restore planner"),
        "report.md lacks the planner section"
    );
    ensure!(
        md.contains("## Headline") && md.contains("Machine:"),
        "report.md lacks the headline or the machine"
    );
    let mut plots = 0;
    for dim in [
        "processes",
        "fds_per_process",
        "vmas_per_process",
        "threads_per_process",
    ] {
        let name = format!("sweep-{dim}.svg");
        ensure!(md.contains(&name), "report.md does not show {name}");
        let svg = std::fs::read_to_string(dir.join(&name)).with_context(|| name.clone())?;
        let doc = roxmltree::Document::parse(&svg)
            .with_context(|| format!("{name} is not well-formed XML"))?;
        ensure!(
            doc.root_element().tag_name().name() == "svg",
            "{name}: root is not <svg>"
        );
        let lines = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline") || n.has_tag_name("path"))
            .count();
        if lines == 0 {
            bail!("{name} draws no line");
        }
        plots += 1;
    }
    Ok(format!(
        "{}: {} rows, report, CSV and {plots} plots well formed",
        dir.display(),
        rows.len()
    ))
}
