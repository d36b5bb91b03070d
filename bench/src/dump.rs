//! The dump section: whole dumps (freeze, collection, registers, memory,
//! images written and synced) of the same trees with each collector, the
//! tree left running between repetitions.

use crate::plan::DumpTree;
use crate::workload::{Population, Spec};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const DUMP_COLLECTORS: [&str; 2] = ["bpf", "proc"];

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DumpRow {
    pub tree: String,
    pub collector: String,
    pub processes: usize,
    pub threads: usize,
    pub fds: usize,
    pub vmas: usize,
    pub reps: usize,
    /// Medians over the repetitions.
    pub frozen_ns: u64,
    pub collect_ns: u64,
    pub memory_ns: u64,
    pub write_ns: u64,
    pub total_ns: u64,
    pub image_bytes: u64,
    pub pages_written: u64,
    pub pages_shared: u64,
}

impl DumpRow {
    /// Share of the frozen time spent collecting state.
    pub fn collect_share(&self) -> f64 {
        self.collect_ns as f64 / self.frozen_ns.max(1) as f64
    }
}

pub fn tree_name(t: &DumpTree) -> String {
    match t {
        DumpTree::Population(s) => format!(
            "{} processes × {} fds × {} mappings, {} MiB resident",
            s.processes,
            s.fds_per_process,
            s.vmas_per_process,
            s.processes * s.resident_kib / 1024
        ),
        DumpTree::ForkedPython(n) => format!("{n} python3 processes forked from one"),
    }
}

/// A running tree of a dump measurement.
pub enum Running {
    Population(Population),
    Python(Python),
}

impl Running {
    pub fn start(exe: &Path, t: &DumpTree) -> Result<Running> {
        Ok(match *t {
            DumpTree::Population(s) => Running::Population(
                Population::spawn(exe, s).with_context(|| format!("starting {s:?}"))?,
            ),
            DumpTree::ForkedPython(n) => Running::Python(Python::spawn(n)?),
        })
    }

    pub fn root(&self) -> i32 {
        match self {
            Running::Population(p) => p.root,
            Running::Python(p) => p.root,
        }
    }
}

/// python3 forking `n - 1` children that sleep: an interpreter's heap
/// shared copy-on-write, the tree CRIU saves once per process.
pub struct Python {
    child: Child,
    pub root: i32,
}

impl Python {
    pub fn spawn(n: usize) -> Result<Python> {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let script = format!(
            "import os, sys, time\n\
             for _ in range({}):\n    \
                 if os.fork() == 0:\n        \
                     while True: time.sleep(3600)\n\
             print('ready', flush=True)\n\
             sys.stdin.read()\n\
             os.killpg(0, 9)\n",
            n.saturating_sub(1)
        );
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .context("python3 (the forked-python dump tree)")?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        anyhow::ensure!(
            line.trim() == "ready",
            "python3 tree did not start: {line:?}"
        );
        let root = child.id() as i32;
        Ok(Python { child, root })
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(-self.root, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// `reps` dumps of the tree at `root` with `collector`, into `scratch`.
pub fn measure(
    tree: &DumpTree,
    root: i32,
    collector: &str,
    reps: usize,
    scratch: &Path,
) -> Result<DumpRow> {
    let dir = scratch.join(format!("dump-{collector}"));
    let mut runs = vec![];
    for _ in 0..reps.max(1) {
        let _ = std::fs::remove_dir_all(&dir);
        let r = dumper::dump::dump(
            &dumper::dump::Options {
                root,
                dir: &dir,
                collector,
                verify: false,
                leave_running: true,
            },
            |_| {},
        )
        .with_context(|| format!("dump of {} with {collector}", tree_name(tree)))?;
        runs.push(r);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let last = runs.last().unwrap();
    let m = |f: fn(&dumper::dump::Report) -> u64| median(runs.iter().map(f).collect());
    Ok(DumpRow {
        tree: tree_name(tree),
        collector: collector.into(),
        processes: last.processes,
        threads: last.threads,
        fds: last.fds,
        vmas: last.vmas,
        reps: runs.len(),
        frozen_ns: m(|r| r.frozen_ns),
        collect_ns: m(|r| r.collect_ns),
        memory_ns: m(|r| r.memory_ns),
        write_ns: m(|r| r.write_ns),
        total_ns: m(|r| r.total_ns),
        image_bytes: last.image_bytes,
        pages_written: last.pages_written,
        pages_shared: last.pages_shared,
    })
}

/// The spec a dump tree is, when it is a population (for the report).
pub fn spec(t: &DumpTree) -> Option<Spec> {
    match t {
        DumpTree::Population(s) => Some(*s),
        DumpTree::ForkedPython(_) => None,
    }
}

/// The report's dump section.
pub fn markdown(rows: &[DumpRow]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let ms = |ns: u64| ns as f64 / 1e6;
    writeln!(o, "\n## Dump\n").unwrap();
    writeln!(
        o,
        "Whole dumps with `--leave-running`: freeze, collect state, read registers, copy memory, write and sync the image directory. Medians of the repetitions. The tree is frozen until everything is copied; the images are written and synced after it runs on (without `--leave-running` it stays stopped until they are on disk).\n"
    )
    .unwrap();
    writeln!(o, "| tree | collector | frozen ms | collection ms | share of frozen | memory ms | write+sync ms | total ms | image MiB | pages saved | pages shared |").unwrap();
    writeln!(o, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    for r in rows {
        writeln!(
            o,
            "| {} | {} | {:.1} | {:.2} | {:.1}% | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            r.tree,
            r.collector,
            ms(r.frozen_ns),
            ms(r.collect_ns),
            100.0 * r.collect_share(),
            ms(r.memory_ns),
            ms(r.write_ns),
            ms(r.total_ns),
            r.image_bytes as f64 / (1 << 20) as f64,
            r.pages_written,
            r.pages_shared
        )
        .unwrap();
    }
    let goal = crate::plan::DUMP_GOAL;
    let goal_name = tree_name(&crate::plan::DumpTree::Population(goal));
    if let Some(b) = rows
        .iter()
        .find(|r| r.tree == goal_name && r.collector == "bpf")
    {
        let share = 100.0 * b.collect_share();
        writeln!(
            o,
            "\nGoal: with `--collect=bpf`, state collection of {goal_name} under 10% of the frozen time: **{share:.1}%** ({:.2} of {:.1} ms){}.",
            ms(b.collect_ns),
            ms(b.frozen_ns),
            if share < 10.0 { ", met" } else { ", missed" }
        )
        .unwrap();
    }
    if let Some(p) = rows.iter().find(|r| r.tree.contains("python3")) {
        writeln!(
            o,
            "\nForked python3: {} processes in a {:.1} MiB image: {} pages saved, and {} more page references that point at a copy another process of the tree saved (pages still shared copy-on-write since the fork, found by physical frame). CRIU saves such a page once per process that maps it (796 MiB for 100 forked python3 processes, measured on this machine earlier).",
            p.processes,
            p.image_bytes as f64 / (1 << 20) as f64,
            p.pages_written,
            p.pages_shared
        )
        .unwrap();
    }
    writeln!(o, "\nColumns: collection is the collector's walk with the dump's detail (signal handlers, mm fields, limits, per-thread state; for proc, system calls run in each stopped thread), registers, XSAVE areas and queued signals. Memory is pagemap reads and copies. Total includes loading the collector (BPF verification) before the freeze.").unwrap();
    o
}
