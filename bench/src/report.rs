//! The results folder: results.json and results.csv (every row), report.md
//! (the machine, the headline table, the goal figures, each sweep with its
//! fitted slopes), and one SVG plot per sweep.

use crate::measure::Row;
use crate::plan::{Dimension, Plan, COLLECTORS, HEADLINE};
use crate::workload::Spec;
use std::fmt::Write as _;
use std::path::Path;

pub const CSV_HEADER: &str = "collector,processes,fds_per_process,vmas_per_process,threads_per_process,cold,median_ns,p90_ns,p99_ns,max_ns,reps,user_ns,sys_ns,syscalls,bytes,records,records_per_s";

pub fn csv(rows: &[Row]) -> String {
    let mut s = format!("{CSV_HEADER}\n");
    for r in rows {
        writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.0}",
            r.collector,
            r.processes,
            r.fds_per_process,
            r.vmas_per_process,
            r.threads_per_process,
            r.cold,
            r.median_ns,
            r.p90_ns,
            r.p99_ns,
            r.max_ns,
            r.reps,
            r.user_ns,
            r.sys_ns,
            r.syscalls,
            r.bytes,
            r.records,
            r.records_per_s
        )
        .unwrap();
    }
    s
}

/// The machine a run was made on.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

fn ms(ns: u64) -> String {
    let v = ns as f64 / 1e6;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn find<'a>(rows: &'a [Row], name: &str, spec: Spec, cold: bool) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.collector == name && r.spec() == spec && r.cold == cold)
}

fn ratio(a: Option<&Row>, b: Option<&Row>) -> Option<f64> {
    Some(a?.median_ns as f64 / b?.median_ns.max(1) as f64)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "–".into())
}

/// Least squares of y on x: (slope, intercept).
pub fn fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|&(x, _)| (x - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|&(x, y)| (x - mx) * (y - my)).sum();
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

fn unit_name(dim: Dimension) -> &'static str {
    match dim {
        Dimension::Processes => "process",
        Dimension::Fds => "fd",
        Dimension::Vmas => "mapping",
        Dimension::Threads => "thread",
    }
}

/// How many units of the dimension the population holds.
fn units(dim: Dimension, s: &Spec) -> f64 {
    match dim {
        Dimension::Processes => s.processes as f64,
        Dimension::Fds => (s.processes * s.fds_per_process) as f64,
        Dimension::Vmas => (s.processes * s.vmas_per_process) as f64,
        Dimension::Threads => (s.processes * s.threads_per_process) as f64,
    }
}

fn headline_table(out: &mut String, rows: &[Row], spec: Spec, cold: bool) {
    let tuned = find(rows, "proc-tuned", spec, cold);
    let null = find(rows, "bpf-null", spec, cold);
    writeln!(
        out,
        "| collector | median ms | p90 ms | p99 ms | max ms | user ms | sys ms | syscalls | bytes read | records/s | vs proc-tuned | vs bpf-null |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    .unwrap();
    for name in COLLECTORS {
        let Some(r) = find(rows, name, spec, cold) else {
            continue;
        };
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3e} | {} | {} |",
            r.collector,
            ms(r.median_ns),
            ms(r.p90_ns),
            ms(r.p99_ns),
            ms(r.max_ns),
            ms(r.user_ns),
            ms(r.sys_ns),
            r.syscalls,
            r.bytes,
            r.records_per_s,
            fmt_ratio(ratio(Some(r), tuned)),
            fmt_ratio(ratio(Some(r), null)),
        )
        .unwrap();
    }
}

pub fn markdown(plan: &Plan, rows: &[Row], skipped: &[(String, String)], seconds: f64) -> String {
    let mut out = String::new();
    let h = HEADLINE;
    writeln!(out, "# dumper collection benchmark\n").unwrap();
    writeln!(out, "Machine: {}.  ", machine()).unwrap();
    writeln!(
        out,
        "Run: `cargo xtask bench{}`, {:.0} s; every collector measured on the same population in this one run. Times are per full collection of the tree (all processes, threads, fds and mappings).\n",
        if plan.quick { " --quick" } else { "" },
        seconds
    )
    .unwrap();
    for (name, why) in skipped {
        writeln!(out, "- `{name}` not measured: {why}").unwrap();
    }
    if !skipped.is_empty() {
        out.push('\n');
    }
    writeln!(
        out,
        "## Headline: {} processes × {} fds × {} mappings × {} thread\n\n### Warm (programs loaded, collector reused; median of the reps column)\n",
        h.processes, h.fds_per_process, h.vmas_per_process, h.threads_per_process
    )
    .unwrap();
    headline_table(&mut out, rows, h, false);
    writeln!(out, "\n### Cold (a fresh collector each time: for bpf, BTF read, object load and verification included)\n").unwrap();
    headline_table(&mut out, rows, h, true);

    writeln!(out, "\n## Goal figures\n").unwrap();
    let bpf = find(rows, "bpf", h, false);
    let tuned = find(rows, "proc-tuned", h, false);
    let null = find(rows, "bpf-null", h, false);
    if let Some(r) = ratio(tuned, bpf) {
        let why = match (r >= 20.0, bpf, null) {
            (false, Some(b), Some(n)) => format!(
                " by {:.0}%: of `bpf`'s {} ms, {} ms is the kernel's walk itself (`bpf-null`), {} ms user time decoding records into the model, {} ms more sys in the programs and copies",
                (20.0 / r - 1.0) * 100.0,
                ms(b.median_ns),
                ms(n.median_ns),
                ms(b.user_ns),
                ms(b.sys_ns.saturating_sub(n.sys_ns))
            ),
            _ => String::new(),
        };
        let verdict = if r >= 20.0 { ", met" } else { ", missed" };
        writeln!(out, "- `bpf` vs `proc-tuned`, warm, headline: **{r:.1}×** faster (goal: at least 20×{verdict}{why}).").unwrap();
    }
    if let Some(r) = ratio(bpf, null) {
        let why = match (r <= 2.0, bpf, null) {
            (false, Some(b), Some(n)) => format!(
                " by {:.0}%: over the floor, {} ms of user time decoding records into the model and {} ms more sys in the programs and copies",
                (r / 2.0 - 1.0) * 100.0,
                ms(b.user_ns),
                ms(b.sys_ns.saturating_sub(n.sys_ns))
            ),
            _ => String::new(),
        };
        let verdict = if r <= 2.0 { ", met" } else { ", missed" };
        writeln!(
            out,
            "- `bpf` vs `bpf-null`: **{r:.2}×** the floor (goal: within 2×{verdict}{why})."
        )
        .unwrap();
    }
    if let Some(sw) = plan.sweeps.iter().find(|s| s.dim == Dimension::Processes) {
        let (lo, hi) = (sw.points[0], sw.points[sw.points.len() - 1]);
        for name in ["bpf", "proc-tuned", "proc"] {
            if let (Some(a), Some(b)) = (find(rows, name, lo, false), find(rows, name, hi, false)) {
                writeln!(
                    out,
                    "- System calls per collection, `{name}`: {} at {} processes, {} at {} processes.",
                    a.syscalls, lo.processes, b.syscalls, hi.processes
                )
                .unwrap();
            }
        }
        writeln!(
            out,
            "  (Goal: O(1) in processes for `bpf`. Its count grows by one read(2) per 32 KiB of records, the size of a BPF iterator's seq_file buffer, and by one readlink per distinct file that is not a pipe, socket, anonymous inode or memfd.)"
        )
        .unwrap();
    }

    for sw in &plan.sweeps {
        let d = sw.dim.name();
        writeln!(out, "\n## Sweep: {d}\n\n![{d}](sweep-{d}.svg)\n").unwrap();
        let fixed: Vec<String> = Dimension::ALL
            .iter()
            .filter(|&&x| x != sw.dim)
            .map(|x| format!("{} = {}", x.name(), x.of(&sw.points[0])))
            .collect();
        writeln!(
            out,
            "Fixed: {}. Warm median ms per collection:\n",
            fixed.join(", ")
        )
        .unwrap();
        write!(out, "| collector |").unwrap();
        for p in &sw.points {
            write!(out, " {} |", sw.dim.of(p)).unwrap();
        }
        writeln!(
            out,
            " cost per added {} | growth exponent |",
            unit_name(sw.dim)
        )
        .unwrap();
        write!(out, "|---|").unwrap();
        for _ in &sw.points {
            write!(out, "---:|").unwrap();
        }
        writeln!(out, "---:|---:|").unwrap();
        for name in COLLECTORS {
            let cells: Vec<Option<&Row>> = sw
                .points
                .iter()
                .map(|&p| find(rows, name, p, false))
                .collect();
            if cells.iter().all(Option::is_none) {
                continue;
            }
            write!(out, "| {name} |").unwrap();
            for c in &cells {
                write!(
                    out,
                    " {} |",
                    c.map(|r| ms(r.median_ns)).unwrap_or_else(|| "–".into())
                )
                .unwrap();
            }
            let pts: Vec<(f64, f64)> = sw
                .points
                .iter()
                .zip(&cells)
                .filter_map(|(p, c)| Some((units(sw.dim, p), c.as_ref()?.median_ns as f64)))
                .collect();
            let slope = fit(&pts)
                .map(|(s, _)| format!("{s:.0} ns"))
                .unwrap_or_else(|| "–".into());
            let logs: Vec<(f64, f64)> = pts
                .iter()
                .filter(|p| p.0 > 0.0 && p.1 > 0.0)
                .map(|&(x, y)| (x.ln(), y.ln()))
                .collect();
            let exp = fit(&logs)
                .map(|(s, _)| format!("{s:.2}"))
                .unwrap_or_else(|| "–".into());
            writeln!(out, " {slope} | {exp} |").unwrap();
        }
        writeln!(
            out,
            "\nCost per added {u}: the least-squares slope of the median against the number of {u}s in the tree. Growth exponent: the slope on log-log axes (1 is linear; below 1, a fixed cost still dominates the small points).",
            u = unit_name(sw.dim)
        )
        .unwrap();
    }
    writeln!(
        out,
        "\n## Columns\n\n- syscalls: counted by a raw_syscalls:sys_enter BPF program filtered to the collecting thread, per collection, less the metering's own calls.\n- bytes read: what read(2) returned to the collecting thread (/proc/thread-self/io rchar), per collection.\n- user, sys: the collecting thread's CPU time (getrusage RUSAGE_THREAD) per collection; a BPF iterator's kernel work is the reading thread's sys time.\n- records: tasks + threads + fds + mappings in the snapshot (0 for bpf-null, which emits nothing).\n- procmap-query reads mappings through the PROCMAP_QUERY ioctl and so has no vm flags; the rest as proc-tuned."
    )
    .unwrap();
    out
}

/// The whole-operation sections of a report, beside the collection rows.
pub struct Sections<'a> {
    pub dumps: &'a [crate::dump::DumpRow],
    pub restores: &'a [crate::restore::RestoreRow],
    pub plans: &'a [crate::planner::PlanRow],
}

pub fn write(
    dir: &Path,
    plan: &Plan,
    rows: &[Row],
    sections: Sections,
    skipped: &[(String, String)],
    seconds: f64,
) -> anyhow::Result<()> {
    let Sections {
        dumps,
        restores,
        plans,
    } = sections;
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(rows)?,
    )?;
    std::fs::write(dir.join("results.csv"), csv(rows))?;
    std::fs::write(dir.join("dump.json"), serde_json::to_string_pretty(dumps)?)?;
    std::fs::write(dir.join("plan.json"), serde_json::to_string_pretty(plans)?)?;
    std::fs::write(
        dir.join("restore.json"),
        serde_json::to_string_pretty(restores)?,
    )?;
    std::fs::write(
        dir.join("report.md"),
        markdown(plan, rows, skipped, seconds)
            + &crate::dump::markdown(dumps)
            + &crate::restore::markdown(restores)
            + &crate::planner::markdown(plans),
    )?;
    for sw in &plan.sweeps {
        crate::plot::sweep(&dir.join(format!("sweep-{}.svg", sw.dim.name())), sw, rows)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn least_squares() {
        let (s, i) = fit(&[(1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]).unwrap();
        assert!((s - 2.0).abs() < 1e-9 && (i - 1.0).abs() < 1e-9);
        assert!(fit(&[(1.0, 1.0)]).is_none());
        assert!(fit(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    }
}
