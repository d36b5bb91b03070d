//! `dumper-bench guest`: the kernel series' numbers, run inside the QEMU
//! guest by `cargo xtask kernel test`. The collectors that read /proc
//! (`proc-tuned`, the same reads through batch(2) as `batch`) against the
//! iterators (`bpf`, and `bpf-null`, their floor), warm, on the same
//! populations, one after the other; wall time under TCG is emulated, so
//! the ratios are indicative and the system-call counts exact. The kernel
//! reports each batch(2) entry to the sys_enter tracepoint, which the
//! counter listens to: batch's count is kernel entries, the entries'
//! own events taken off (the population does not change between
//! collections, so neither does their number).

use crate::measure::{measure, Meter, Row};
use crate::plan::Plan;
use crate::workload::{Population, Spec};
use anyhow::{Context, Result};
use dumper::collect::{self, Target};
use std::fmt::Write;

pub const COLLECTORS: &[&str] = &["proc-tuned", "batch", "bpf", "bpf-null"];

pub const SPECS: &[Spec] = &[
    Spec {
        processes: 100,
        fds_per_process: 20,
        vmas_per_process: 30,
        threads_per_process: 1,
        resident_kib: 0,
        restorable: false,
    },
    Spec {
        processes: 500,
        fds_per_process: 20,
        vmas_per_process: 30,
        threads_per_process: 1,
        resident_kib: 0,
        restorable: false,
    },
];

fn plan() -> Plan {
    Plan {
        quick: true,
        sweeps: vec![],
        dump_trees: vec![],
        dump_reps: 0,
        restore_trees: vec![],
        warm_budget_s: 1.0,
        min_reps: 5,
        max_reps: 50,
        cold_reps: 1,
    }
}

/// Rotations of the collectors on each population: the row kept is the
/// one with the median time, so that the host's drift under TCG hits all
/// collectors alike.
const ROTATIONS: usize = 3;

/// Measures and returns (markdown table, warm rows).
pub fn run() -> Result<(String, Vec<Row>)> {
    let exe = std::env::current_exe()?;
    let meter = Meter::new().context("loading the system-call counter")?;
    let plan = plan();
    let mut rows = vec![];
    let mut batched = vec![];
    for &spec in SPECS {
        eprintln!(
            "guest bench: {} processes × {} fds × {} mappings",
            spec.processes, spec.fds_per_process, spec.vmas_per_process
        );
        let pop = Population::spawn(&exe, spec)
            .with_context(|| format!("starting the population {spec:?}"))?;
        // The entries inside batch(2), which fire sys_enter as direct calls
        // do: the counter's count less those is the kernel entries.
        let mut b = collect::by_name("batch")?;
        b.collect(Target::Tree(pop.root))?;
        let (calls, entries, traced) = b.batched().context("batch reports its entries")?;
        batched.push((spec.processes, calls, entries));
        let mut runs: Vec<Vec<Row>> = vec![vec![]; COLLECTORS.len()];
        for _ in 0..ROTATIONS {
            for (i, name) in COLLECTORS.iter().enumerate() {
                let [mut warm, _cold] = measure(&meter, &plan, name, spec, pop.root)
                    .with_context(|| format!("{name} on {} processes", spec.processes))?;
                if *name == "batch" {
                    warm.syscalls = warm.syscalls.saturating_sub(traced as u64);
                }
                runs[i].push(warm);
            }
        }
        for mut r in runs {
            r.sort_by_key(|x| x.median_ns);
            rows.push(r.swap_remove(r.len() / 2));
        }
    }
    let mut text = table(&rows);
    for (p, calls, entries) in batched {
        writeln!(text, "\n{p} processes: batch made {calls} batch(2) calls running {entries} entries ({:.0} entries per call).", entries as f64 / calls.max(1) as f64).unwrap();
    }
    Ok((text, rows))
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| processes | collector | median ms | user ms | sys ms | syscalls | syscalls vs proc-tuned | time vs proc-tuned | time vs bpf |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let of = |name: &str| {
            rows.iter()
                .find(|x| x.collector == name && x.processes == r.processes)
        };
        let tuned = of("proc-tuned").expect("proc-tuned measured");
        let bpf = of("bpf").expect("bpf measured");
        let ratio = |a: u64, b: u64| {
            if b == 0 {
                "-".to_string()
            } else {
                format!("{:.2}×", a as f64 / b as f64)
            }
        };
        writeln!(
            out,
            "| {} | {} | {:.2} | {:.1} | {:.1} | {} | {} | {} | {} |",
            r.processes,
            r.collector,
            r.median_ns as f64 / 1e6,
            r.user_ns as f64 / 1e6,
            r.sys_ns as f64 / 1e6,
            r.syscalls,
            if r.syscalls == 0 {
                "-".into()
            } else {
                format!("1/{:.0}", tuned.syscalls as f64 / r.syscalls as f64)
            },
            ratio(r.median_ns, tuned.median_ns),
            ratio(r.median_ns, bpf.median_ns),
        )
        .unwrap();
    }
    out
}
