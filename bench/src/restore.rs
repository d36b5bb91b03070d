//! The restore section: trees dumped (and killed) by `dumper dump`, then
//! brought back by `dumper restore --detach`, timed by the restore's own
//! report (plan steps, memory, per-process state, the verification of
//! the stopped tree against the image), with the wall time of the command
//! beside it. Each repetition needs a fresh tree: the dump kills it.

use crate::workload::{Population, Spec};
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RestoreRow {
    pub tree: String,
    /// The restore's log level: 0 (none) or 4 (every step and system call).
    pub verbosity: u8,
    pub processes: usize,
    pub fds: usize,
    pub vmas: usize,
    pub resident_mib: usize,
    pub reps: usize,
    /// Medians over the repetitions.
    pub total_ns: u64,
    pub tree_ns: u64,
    pub memory_ns: u64,
    pub state_ns: u64,
    pub verify_ns: u64,
    /// `dumper restore` from exec to exit.
    pub wall_ns: u64,
    pub pages_written: u64,
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

pub fn tree_name(s: &Spec) -> String {
    format!(
        "{} processes × {} fds × {} mappings, {} MiB resident",
        s.processes,
        s.fds_per_process,
        s.vmas_per_process,
        s.processes * s.resident_kib / 1024
    )
}

/// `reps` dump-and-restore cycles of a fresh `spec` population at each of
/// -v0 and -v4, alternating (so that drift hits both alike): two rows.
/// `bench` is the dumper-bench binary (the workload), `dumper` the
/// dumper binary.
pub fn measure(
    bench: &Path,
    dumper: &Path,
    spec: Spec,
    reps: usize,
    scratch: &Path,
) -> Result<Vec<RestoreRow>> {
    ensure!(spec.restorable, "restore trees are restorable populations");
    // The dump kills the tree: its members, orphaned, come here to be
    // reaped (init may take its time), so that their pids are free when
    // the restore starts and the restore's time is its own.
    // SAFETY: prctl on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let dir = scratch.join("restore");
    let log = scratch.join("restore.log");
    let mut runs: [Vec<serde_json::Value>; 2] = [vec![], vec![]];
    let mut walls: [Vec<u64>; 2] = [vec![], vec![]];
    let mut counts = (0, 0, 0);
    for _ in 0..reps.max(1) {
        for (k, v) in ["-v0", "-v4"].iter().enumerate() {
            let _ = std::fs::remove_dir_all(&dir);
            let mut pop = Population::spawn(bench, spec).context("starting the restore tree")?;
            let r = dumper::dump::dump(
                &dumper::dump::Options {
                    root: pop.root,
                    dir: &dir,
                    collector: "bpf",
                    verify: false,
                    leave_running: false,
                },
                |_| {},
            )
            .context("dump before the restore")?;
            counts = (r.processes, r.fds, r.vmas);
            pop.reap();
            let pids: Vec<i32> = dumper::image::read::open(&dir)?
                .inventory
                .snapshot
                .tasks
                .iter()
                .map(|t| t.pid)
                .collect();
            reap_until_gone(&pids)?;
            let t0 = Instant::now();
            let o = Command::new(dumper)
                .args(["restore", "--detach", "--json", v, "-o"])
                .arg(&log)
                .arg("-D")
                .arg(&dir)
                .output()
                .context("dumper restore")?;
            walls[k].push(t0.elapsed().as_nanos() as u64);
            ensure!(
                o.status.success(),
                "dumper restore: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            runs[k].push(serde_json::from_slice(&o.stdout).context("restore report")?);
            // Drop kills the restored tree (it holds the population's
            // group), whose orphans come here too.
            drop(pop);
            reap_until_gone(&pids)?;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&log);
    Ok((0..2)
        .map(|k| {
            let m = |f: &str| median(runs[k].iter().map(|r| r[f].as_u64().unwrap_or(0)).collect());
            RestoreRow {
                tree: tree_name(&spec),
                verbosity: [0, 4][k],
                processes: counts.0,
                fds: counts.1,
                vmas: counts.2,
                resident_mib: spec.processes * spec.resident_kib / 1024,
                reps: runs[k].len(),
                total_ns: m("total_ns"),
                tree_ns: m("tree_ns"),
                memory_ns: m("memory_ns"),
                state_ns: m("state_ns"),
                verify_ns: m("verify_ns"),
                wall_ns: median(walls[k].clone()),
                pages_written: m("pages_written"),
            }
        })
        .collect())
}

/// Reaps this process's dead children until none of `pids` exists.
fn reap_until_gone(pids: &[i32]) -> Result<()> {
    let t0 = Instant::now();
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        // SAFETY: reaping dead children of this process.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::__WALL | libc::WNOHANG) } > 0 {
        }
        ensure!(
            t0.elapsed().as_secs() < 30,
            "the dumped tree's processes did not go"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// The report's restore section.
pub fn markdown(rows: &[RestoreRow]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let ms = |ns: u64| ns as f64 / 1e6;
    writeln!(o, "\n## Restore\n").unwrap();
    writeln!(
        o,
        "Trees dumped with `--collect=bpf` (which kills them), then `dumper restore --detach`. Medians of the repetitions, from the restore's own report: the plan's steps (processes, sessions, groups, files), the address spaces and pages, the rest of each process's state with its registers, and the check of the stopped tree against the image before it runs. Wall is the command from exec to exit. The trees hold only fds the restore brings back (files, directories, pipes, /dev/null).\n"
    )
    .unwrap();
    writeln!(o, "| tree | log | processes | fds | mappings | restore ms | plan steps ms | memory ms | state ms | verify ms | wall ms | pages written |").unwrap();
    writeln!(
        o,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    .unwrap();
    for r in rows {
        writeln!(
            o,
            "| {} | -v{} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.tree,
            r.verbosity,
            r.processes,
            r.fds,
            r.vmas,
            ms(r.total_ns),
            ms(r.tree_ns),
            ms(r.memory_ns),
            ms(r.state_ns),
            ms(r.verify_ns),
            ms(r.wall_ns),
            r.pages_written
        )
        .unwrap();
    }
    for v0 in rows.iter().filter(|r| r.verbosity == 0) {
        if let Some(v4) = rows.iter().find(|r| r.verbosity == 4 && r.tree == v0.tree) {
            writeln!(
                o,
                "\nLog: {}: -v4 (every plan step, remote system call and page range) against -v0, medians side by side: {:.1} against {:.1} ms, {:+.1}%.",
                v0.tree,
                ms(v4.total_ns),
                ms(v0.total_ns),
                100.0 * (v4.total_ns as f64 / v0.total_ns.max(1) as f64 - 1.0)
            )
            .unwrap();
        }
    }
    if let Some(r) = rows.iter().find(|r| r.processes >= 100 && r.verbosity == 0) {
        let s = ms(r.wall_ns) / 1000.0;
        writeln!(
            o,
            "\nGoal: {} restored in well under a second: **{:.2} s** wall{}.",
            r.tree,
            s,
            if s < 1.0 { ", met" } else { ", missed" }
        )
        .unwrap();
    }
    o
}
