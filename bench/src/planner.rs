//! The report's restore-planner section: planning time against tree size
//! (synthetic trees of 10 fds per process), and plan quality (steps and
//! helpers per process) on random reachable states.

use dumper::plan::{gen, plan};
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PlanRow {
    /// "large" (synthetic trees) or "random" (reachable states).
    pub kind: String,
    pub processes: usize,
    pub fds: usize,
    /// Median planning time (with the simulator's proof), ns.
    pub plan_ns: u64,
    pub steps_per_process: f64,
    pub helpers_per_process: f64,
    pub send_fd: usize,
    /// For "random": states planned of those generated.
    pub planned: usize,
    pub generated: usize,
}

pub fn measure(quick: bool) -> Vec<PlanRow> {
    let mut rows = vec![];
    let sizes: &[usize] = if quick {
        &[1000, 3000]
    } else {
        &[1000, 3000, 10000]
    };
    for &n in sizes {
        let t = gen::large(n, 9, 1);
        let mut times = vec![];
        let mut last = None;
        for _ in 0..3 {
            let t0 = Instant::now();
            last = plan(&t).ok();
            times.push(t0.elapsed().as_nanos() as u64);
        }
        times.sort_unstable();
        let p = last.expect("the synthetic trees are planned");
        rows.push(PlanRow {
            kind: "large".into(),
            processes: n,
            fds: t.fds.values().map(|m| m.len()).sum(),
            plan_ns: times[1],
            steps_per_process: p.steps.len() as f64 / n as f64,
            helpers_per_process: p.helpers.len() as f64 / n as f64,
            send_fd: p.send_fds(),
            planned: 1,
            generated: 1,
        });
    }
    let seeds = if quick { 200 } else { 2000 };
    let (mut procs, mut steps, mut helpers, mut sent, mut planned, mut ns) = (0, 0, 0, 0, 0, 0u64);
    for seed in 0..seeds {
        let (t, _) = gen::reachable(seed, 60);
        let t0 = Instant::now();
        if let Ok(p) = plan(&t) {
            ns += t0.elapsed().as_nanos() as u64;
            planned += 1;
            procs += t.procs.len();
            steps += p.steps.len();
            helpers += p.helpers.len();
            sent += p.send_fds();
        }
    }
    rows.push(PlanRow {
        kind: "random".into(),
        processes: procs,
        fds: 0,
        plan_ns: ns / planned.max(1) as u64,
        steps_per_process: steps as f64 / procs.max(1) as f64,
        helpers_per_process: helpers as f64 / procs.max(1) as f64,
        send_fd: sent,
        planned,
        generated: seeds as usize,
    });
    rows
}

pub fn markdown(rows: &[PlanRow]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    writeln!(o, "\n## Restore planner\n").unwrap();
    writeln!(o, "Planning time includes the simulator's proof of the plan (the planner checks every plan it returns). Synthetic trees: random parents, one session leader in fifty, groups, nine files per process and a pipe to the parent.\n").unwrap();
    writeln!(
        o,
        "| tree | processes | fds | plan ms | steps / process | helpers / process | fds sent |"
    )
    .unwrap();
    writeln!(o, "|---|---:|---:|---:|---:|---:|---:|").unwrap();
    for r in rows.iter().filter(|r| r.kind == "large") {
        writeln!(
            o,
            "| synthetic | {} | {} | {:.1} | {:.2} | {:.3} | {} |",
            r.processes,
            r.fds,
            r.plan_ns as f64 / 1e6,
            r.steps_per_process,
            r.helpers_per_process,
            r.send_fd
        )
        .unwrap();
    }
    if let Some(r) = rows.iter().find(|r| r.kind == "random") {
        writeln!(
            o,
            "\nRandom reachable states (60 random operations each): {} of {} planned ({:.2}%), {:.2} steps and {:.3} helpers per process, {:.3} ms per plan.",
            r.planned,
            r.generated,
            100.0 * r.planned as f64 / r.generated.max(1) as f64,
            r.steps_per_process,
            r.helpers_per_process,
            r.plan_ns as f64 / 1e6
        )
        .unwrap();
    }
    o
}
