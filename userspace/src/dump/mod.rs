//! `dumper dump`: freeze a tree, collect everything a restore needs, and
//! write a verified image directory (docs/images.md).
//!
//! Order matters for the tree's sake: collectors load before the freeze
//! (program verification must not lengthen the stop), the image directory
//! is written to a temporary place and renamed only when complete, and the
//! tree is killed (without `leave_running`) only after the rename is on
//! disk. Every error path drops the [`Frozen`] guard, which releases the
//! tree, and the [`ImageDir`], which removes the temporary directory.

pub mod memory;
pub mod pipes;
pub mod sockets;
pub mod threads;

use crate::collect::{self, CollectError, Collector};
use crate::compare;
use crate::freeze::Frozen;
use crate::image::write::ImageDir;
use crate::image::{self, ImageError, Inventory, Kind, Manifest};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Collect(#[from] CollectError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{0}")]
    Kernel(String),
    #[error("--verify: the {0} and {1} collectors disagree on {2} fields (listed above); no image was written")]
    Disagree(String, String, usize),
}

impl DumpError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        DumpError::Collect(CollectError::io(what, source))
    }
}

pub struct Options<'a> {
    pub root: i32,
    pub dir: &'a Path,
    pub collector: &'a str,
    pub verify: bool,
    pub leave_running: bool,
}

/// What a dump did, for people and for `--json`.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub dir: PathBuf,
    pub collector: String,
    pub processes: usize,
    pub threads: usize,
    pub fds: usize,
    pub vmas: usize,
    pub pages_written: u64,
    pub pages_shared: u64,
    pub shmem_objects: usize,
    pub image_bytes: u64,
    /// From the first thread stopped to the tree released (with
    /// `leave_running`, once everything is copied: writing and syncing the
    /// images happen while it runs) or killed (after the images are on disk).
    pub frozen_ns: u64,
    /// State collection (the collector, registers, signals).
    pub collect_ns: u64,
    pub memory_ns: u64,
    /// Writing, syncing and renaming the image directory.
    pub write_ns: u64,
    pub total_ns: u64,
    pub verified: bool,
    pub left_running: bool,
    /// Mismatches found by --verify (then nothing was written).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<compare::Mismatch>,
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn uname_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The collector `--verify` checks `name` against.
fn other_collector(name: &str) -> &'static str {
    if name == "proc" {
        "bpf"
    } else {
        "proc"
    }
}

pub fn dump(o: &Options, on_mismatch: impl Fn(&compare::Mismatch)) -> Result<Report, DumpError> {
    let t0 = Instant::now();
    if !matches!(o.collector, "bpf" | "proc") {
        return Err(CollectError::Kernel(format!(
            "dump collects with bpf or proc, not {:?}",
            o.collector
        ))
        .into());
    }
    let mut primary = collect::by_name(o.collector)?;
    let mut checker: Option<Box<dyn Collector>> = if o.verify {
        Some(collect::by_name(other_collector(o.collector))?)
    } else {
        None
    };
    log_info!(
        "dump of tree {} with the {} collector into {}{}",
        o.root,
        o.collector,
        o.dir.to_string_lossy(),
        if o.verify {
            ", verified by the other"
        } else {
            ""
        }
    );
    let mut dir = ImageDir::create(o.dir)?;
    let _held = Held::new();
    let mut frozen = Frozen::freeze(o.root)?;
    log_info!(
        "tree frozen: {} threads in {} us",
        frozen.threads(),
        frozen.since().elapsed().as_micros() as u64
    );
    let mut report = Report {
        collector: o.collector.to_string(),
        ..Default::default()
    };

    let tc = Instant::now();
    let mut snap = primary.collect_frozen(&mut frozen, true)?;
    let (threads, shared_siginfo) = threads::collect(&snap, &frozen)?;
    let pipes = pipes::collect(&snap)?;
    let sockets = sockets::collect(&snap)?;
    report.collect_ns = ns(tc.elapsed());
    log_snapshot(&snap);
    log_info!("collected in {} us", report.collect_ns / 1000);
    if let Some(c) = checker.as_mut() {
        let other = c.collect_frozen(&mut frozen, true)?;
        let ms = compare::diff(&snap, &other);
        if !ms.is_empty() {
            for m in &ms {
                on_mismatch(m);
            }
            return Err(DumpError::Disagree(
                o.collector.into(),
                c.name().into(),
                ms.len(),
            ));
        }
        report.verified = true;
    }
    refuse_unsupported(&snap)?;
    snap.canonicalize();

    let tm = Instant::now();
    let mut pages = dir.raw(image::PAGES)?;
    let (memory, stats) = memory::dump(&snap, frozen.scratch_pages(), &mut pages)?;
    report.memory_ns = ns(tm.elapsed());
    log_info!(
        "memory: {} pages written, {} shared, {} shared memory objects, in {} us",
        stats.pages_written,
        stats.pages_shared,
        memory.shmem.len(),
        report.memory_ns / 1000
    );

    let since = frozen.since();
    let root = frozen.root();
    let job_stopped = frozen.job_stopped();
    // Everything is copied: a tree that runs on need not wait for the
    // disk. One that is to die stays stopped until its images are synced,
    // so that nothing it does after the checkpoint happens at all.
    let frozen = if o.leave_running {
        frozen.thaw();
        crate::log::write::hold(false);
        report.left_running = true;
        report.frozen_ns = ns(since.elapsed());
        None
    } else {
        Some(frozen)
    };

    let tw = Instant::now();
    pages.finish(&mut dir)?;
    (report.processes, report.fds, report.vmas) = snap.counts();
    report.threads = threads.len();
    report.pages_written = stats.pages_written;
    report.pages_shared = stats.pages_shared;
    report.shmem_objects = memory.shmem.len();
    dir.entry(image::MEMORY, Kind::Memory, &memory)?;
    dir.entry(
        image::INVENTORY,
        Kind::Inventory,
        &Inventory {
            snapshot: snap,
            threads,
            shared_siginfo,
            job_stopped,
            pipes,
            sockets,
        },
    )?;
    let manifest = Manifest {
        dumper: env!("CARGO_PKG_VERSION").into(),
        created_unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(ns)
            .unwrap_or(0),
        kernel: uname_release(),
        collector: o.collector.into(),
        root,
        files: vec![],
    };
    (report.dir, report.image_bytes) = dir.commit(manifest)?;
    report.write_ns = ns(tw.elapsed());
    log_info!(
        "images committed to {}: {} bytes",
        report.dir.to_string_lossy(),
        report.image_bytes
    );
    if let Some(frozen) = frozen {
        // The images are on disk: the tree may go (CRIU's convention).
        frozen.kill_all();
        report.frozen_ns = ns(since.elapsed());
        log_info!("tree killed, frozen for {} us", report.frozen_ns / 1000);
    }
    report.total_ns = ns(t0.elapsed());
    Ok(report)
}

/// Holds the log's prefaulter while the dump may hold a frozen tree, and
/// lets it go on however the dump ends.
struct Held;

impl Held {
    fn new() -> Held {
        crate::log::write::hold(true);
        Held
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        crate::log::write::hold(false);
    }
}

/// Every task, fd and mapping the dump saves, at debug level.
fn log_snapshot(snap: &crate::model::Snapshot) {
    if !crate::log::enabled(crate::log::DEBUG) {
        return;
    }
    for t in &snap.tasks {
        log_debug!(
            "task {} ppid {} pgid {} sid {} threads {} comm {}",
            t.pid,
            t.ppid,
            t.pgid,
            t.sid,
            t.threads.len(),
            t.comm
        );
        for f in &t.fds {
            log_debug!(
                "task {} fd {} {} flags {:#x} pos {} path {}",
                t.pid,
                f.fd,
                f.kind.name(),
                f.flags,
                f.pos,
                f.path
            );
        }
        for v in &t.vmas {
            log_debug!(
                "task {} vma {:#x}-{:#x} {} flags {:#x} pgoff {:#x} {}",
                t.pid,
                v.start,
                v.end,
                v.prot.letters(),
                v.flags.bits(),
                v.pgoff,
                v.path.as_deref().unwrap_or("")
            );
        }
    }
}

/// Trees the restore cannot bring back are refused at dump time, before
/// anything is written, with the reason.
fn refuse_unsupported(snap: &crate::model::Snapshot) -> Result<(), DumpError> {
    if let Some(t) = snap.tasks.iter().find(|t| t.kthread) {
        return Err(DumpError::Kernel(format!(
            "process {} is a kernel thread: name the root of a user process tree",
            t.pid
        )));
    }
    Ok(())
}
