//! `dumper restore`: a dumped tree brought back, at its own pids.
//!
//! 1. The images are opened and verified (checksums), and everything this
//!    restorer cannot restore yet is refused before any process exists
//!    ([`check`]).
//! 2. The planner's plan builds the tree (`tree.rs`): every fork,
//!    setsid, setpgid, open, pipe, dup2 and exit runs as a system call
//!    inside the process the plan names, each process a copy of dumper
//!    traced from birth (`tracee.rs`).
//!    Each live process gets its dumped address space as soon as it
//!    exists (`mm.rs`), before it creates any other: its children start
//!    as copies of it and keep what they share with it, copy-on-write.
//! 3. Each live process then gets the rest of its state (`task.rs`), and
//!    its registers at the exit of the system call that unmaps the last
//!    of dumper's code.
//! 4. All are released at once.
//!
//! Any error kills everything created so far ([`Created`]), and so does
//! dumper's death (PTRACE_O_EXITKILL).

pub mod files;
pub mod mm;
pub mod shm;
pub mod task;
pub mod tracee;
pub mod tree;

use crate::collect::{CollectError, Collector};
use crate::image::read::Image;
use crate::image::ImageError;
use crate::model::{FileType, Snapshot, Task};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use tracee::TraceError;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Plan(String),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("{0}")]
    Changed(String),
    #[error("{0}")]
    Verify(String),
}

pub struct Options<'a> {
    pub dir: &'a Path,
    /// Return once the tree runs, instead of waiting for its root.
    pub detach: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub root: i32,
    pub processes: usize,
    pub zombies: usize,
    pub helpers: usize,
    pub steps: usize,
    pub pages_written: u64,
    /// Building the tree (plan steps: processes and files).
    pub tree_ns: u64,
    /// Address spaces and page contents.
    pub memory_ns: u64,
    /// Everything else per process, registers included.
    pub state_ns: u64,
    /// Collecting the restored tree (still stopped) and comparing it with
    /// the image.
    pub verify_ns: u64,
    pub total_ns: u64,
    /// The root's wait status, when dumper waited for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
}

fn ns(d: std::time::Duration) -> u64 {
    d.as_nanos() as u64
}

/// Everything this restorer cannot bring back yet, refused up front with
/// the object named: nothing is created for an image it would restore
/// wrong.
pub fn check(img: &Image) -> Result<(), RestoreError> {
    let no = |s: String| Err(RestoreError::Unsupported(s));
    for t in &img.inventory.snapshot.tasks {
        if t.kthread {
            return no(format!("process {} is a kernel thread", t.pid));
        }
        if t.state == "Z" {
            continue;
        }
        for f in &t.fds {
            if f.kind == FileType::Unix && crate::plan::from_image::pair_of(img, f.ino).is_none() {
                return no(format!(
                    "process {} fd {} is a unix socket bound to a name or connected outside the tree ({}): restoring it is not supported yet",
                    t.pid, f.fd, f.path
                ));
            }
            if !files::restorable(f.kind) {
                return no(format!(
                    "process {} fd {} is {} ({}): restoring it is not supported yet",
                    t.pid,
                    f.fd,
                    f.kind.name(),
                    f.path
                ));
            }
        }
        for v in &t.vmas {
            if v.path.as_deref().is_some_and(|p| p.starts_with("/SYSV")) {
                return no(format!(
                    "process {} maps SysV shared memory at {:#x}-{:#x} ({}): restoring it is not supported yet",
                    t.pid,
                    v.start,
                    v.end,
                    v.path.as_deref().unwrap_or("")
                ));
            }
        }
        if t.detail.as_ref().and_then(|d| d.mm.as_ref()).is_none() {
            return no(format!("process {} has no saved mm fields", t.pid));
        }
    }
    Ok(())
}

/// Pids (and thread ids) of the image that a process has now. A zombie (the dumped tree
/// itself, just killed by its dump) gets five seconds for its parent to
/// reap it (init, for orphans, can take a second or two).
fn taken(tasks: &[Task]) -> Result<(), RestoreError> {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    // Every thread's tid too (a zombie's list is empty).
    let ids = tasks
        .iter()
        .flat_map(|t| std::iter::once(t.pid).chain(t.threads.iter().copied()));
    for pid in ids {
        let p = format!("/proc/{pid}");
        while let Ok(stat) = std::fs::read_to_string(format!("{p}/stat")) {
            let comm = stat
                .split_once(" (")
                .and_then(|(_, r)| r.rsplit_once(')'))
                .map_or("?", |x| x.0);
            let rest: Vec<&str> = stat
                .rsplit_once(')')
                .map_or("", |x| x.1)
                .split_whitespace()
                .collect();
            let zombie = rest.first() == Some(&"Z");
            if zombie && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            let why = if zombie {
                format!(
                    "a zombie its parent {} has not reaped: reap it (or end its parent)",
                    rest.get(1).unwrap_or(&"?")
                )
            } else {
                "stop it".into()
            };
            return Err(RestoreError::Unsupported(format!(
                "pid {pid} is taken by {comm:?} now, {why}; or restore into a new pid namespace (--pidns, not supported yet)"
            )));
        }
    }
    Ok(())
}

/// Every process created so far; on drop (any error), all are killed.
#[derive(Default)]
pub struct Created {
    pub pids: Vec<i32>,
    pub hole: Option<u64>,
    done: bool,
}

impl Drop for Created {
    fn drop(&mut self) {
        if let Some(h) = self.hole {
            tracee::unmap_hole(h);
        }
        if self.done {
            return;
        }
        for &p in &self.pids {
            // SAFETY: killing a process dumper created.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        for &p in &self.pids {
            // Reaps dumper's own children (the others go to their
            // parents, dead too, and then to dumper, a subreaper).
            // SAFETY: waiting for a child that was just killed.
            unsafe { libc::waitpid(p, std::ptr::null_mut(), libc::__WALL | libc::WNOHANG) };
        }
        log_warn!(
            "restore failed: killed the {} processes it had created",
            self.pids.len()
        );
    }
}

/// What a restored tree and its image may differ in: the root's parent
/// is the restorer; pipes and socket pairs are new (new inodes); what a dump adds beyond
/// the snapshot (detail) is not collected here.
fn comparable(mut s: Snapshot, root: i32) -> Snapshot {
    // Shared memory objects are new ones: compared by which mappings and
    // fds share one (numbered by first appearance), not by inode.
    let mut objects: std::collections::HashMap<u64, u64> = Default::default();
    s.tasks.sort_by_key(|t| t.pid);
    for t in &mut s.tasks {
        for v in t
            .vmas
            .iter_mut()
            .filter(|v| crate::dump::memory::is_shmem(v))
        {
            let n = objects.len() as u64;
            v.ino = *objects.entry(v.ino).or_insert(n);
        }
        for f in t.fds.iter_mut().filter(|f| f.kind == FileType::Memfd) {
            let n = objects.len() as u64;
            f.ino = *objects.entry(f.ino).or_insert(n);
        }
    }
    for t in &mut s.tasks {
        t.detail = None;
        if t.pid == root {
            t.ppid = 0;
        }
        for f in &mut t.fds {
            if f.kind == FileType::Pipe {
                f.ino = 0;
                f.path = "pipe:".into();
            }
            if f.kind == FileType::Unix {
                f.ino = 0;
                f.path = "socket:".into();
            }
        }
    }
    s.canonicalize();
    s
}

/// The restored tree, stopped just before it runs, collected and compared
/// with the image field by field: a restore that made something else
/// fails (and kills it) rather than letting it run. The collector is bpf
/// (8 ms for 100 processes with 5,300 fds and 8,400 mappings, where
/// proc-tuned takes 156 ms), or proc-tuned where BPF cannot load; both
/// are held to the reference collector by `dumper compare`.
fn verify(
    img: &Image,
    loading: std::thread::JoinHandle<Result<crate::collect::bpf::BpfCollector, CollectError>>,
) -> Result<(), RestoreError> {
    let root = img.manifest.root;
    let loaded = loading
        .join()
        .unwrap_or_else(|_| Err(CollectError::Kernel("the loader panicked".into())));
    let mut c: Box<dyn Collector> = match loaded {
        Ok(c) => Box::new(c),
        Err(e) => {
            log_info!(
                "verifying with proc-tuned: the bpf collector does not load: {}",
                e.to_string()
            );
            crate::collect::by_name("proc-tuned")
                .map_err(|e| RestoreError::Verify(e.to_string()))?
        }
    };
    let got = c
        .collect(crate::collect::Target::Tree(root))
        .map_err(|e| RestoreError::Verify(format!("collecting the restored tree: {e}")))?;
    let want = comparable(img.inventory.snapshot.clone(), root);
    let ms = crate::compare::diff(&want, &comparable(got, root));
    for m in &ms {
        log_error!(
            "restored tree differs: {}: image {} restored {}",
            m.path,
            m.values[0].to_string(),
            m.values[1].to_string()
        );
    }
    match ms.first() {
        None => Ok(()),
        Some(m) => Err(RestoreError::Verify(format!(
            "the restored tree differs from the image in {} fields (all in the log), first {}: image {} restored {}",
            ms.len(),
            m.path,
            m.values[0],
            m.values[1]
        ))),
    }
}

/// Fault injection for the failure tests: `DUMPER_FAULT=fail:N` makes the
/// restore fail before plan step N, `DUMPER_FAULT=hang:N` stops it there
/// for good (to be killed), saying so on stderr.
struct Fault(Option<(bool, usize)>);

impl Fault {
    fn from_env() -> Fault {
        let v = std::env::var("DUMPER_FAULT").unwrap_or_default();
        let parse = |p: &str| v.strip_prefix(p).and_then(|n| n.parse().ok());
        Fault(
            parse("fail:")
                .map(|n| (false, n))
                .or_else(|| parse("hang:").map(|n| (true, n))),
        )
    }

    fn at(&self, step: usize, created: &Created) -> Result<(), RestoreError> {
        match self.0 {
            Some((false, n)) if n == step => Err(RestoreError::Plan(format!(
                "DUMPER_FAULT: failing before plan step {step}, with {} processes created",
                created.pids.len()
            ))),
            Some((true, n)) if n == step => {
                eprintln!("dumper: DUMPER_FAULT: hanging before plan step {step}");
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            _ => Ok(()),
        }
    }
}

/// Restores the image in `o.dir`.
pub fn restore(o: &Options) -> Result<Report, RestoreError> {
    let t0 = Instant::now();
    // The verifier's BPF programs load (and pass the kernel's verifier)
    // on the other core while the tree is built.
    let loading = std::thread::spawn(crate::collect::bpf::BpfCollector::load);
    let img = crate::image::read::open(o.dir)?;
    check(&img)?;
    let snap = &img.inventory.snapshot;
    taken(&snap.tasks)?;
    let target = crate::plan::from_image::target(&img).map_err(RestoreError::Plan)?;
    let plan = crate::plan::plan(&target)
        .map_err(|e| RestoreError::Plan(format!("no plan builds this tree: {e}")))?;
    log_info!(
        "restore of {} processes from {}: {} plan steps, {} helpers",
        snap.tasks.len(),
        o.dir.to_string_lossy(),
        plan.steps.len(),
        plan.helpers.len()
    );
    files::check_all(snap)?;
    mm::check_files(snap)?;

    // Orphans of dying helpers must come to dumper, the plan's pid 1.
    // SAFETY: prctl on dumper itself.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut created = Created::default();
    let hole = mm::pick_hole(snap)?;
    created.hole = Some(hole);

    let tt = Instant::now();
    let mut t = tree::Tree::new(&img, hole, &plan.steps);
    let fault = Fault::from_env();
    for (i, s) in plan.steps.iter().enumerate() {
        fault.at(i, &created)?;
        t.step(s, &mut created)?;
    }
    let tree_ns = ns(tt.elapsed()) - t.memory_ns;
    log_info!("tree built in {} us", tree_ns / 1000);

    let mut report = Report {
        root: img.manifest.root,
        helpers: plan.helpers.len(),
        steps: plan.steps.len(),
        tree_ns,
        memory_ns: t.memory_ns,
        pages_written: t.pages_written,
        ..Default::default()
    };
    let mut live = vec![];
    for task in &snap.tasks {
        if task.state == "Z" {
            report.zombies += 1;
            continue;
        }
        let tr = t
            .take(task.pid)
            .ok_or_else(|| RestoreError::Plan(format!("the plan left no process {}", task.pid)))?;
        let ts = Instant::now();
        let threads = task::restore(&tr, task, &img)?;
        report.state_ns += ns(ts.elapsed());
        live.push(tr);
        live.extend(threads);
    }
    report.processes = snap.tasks.len();
    let tv = Instant::now();
    verify(&img, loading)?;
    report.verify_ns = ns(tv.elapsed());
    // Everyone at once. Once one runs, it may end others (a root that
    // kills its group when its stdin, a pipe from outside the tree,
    // reads empty): those are the tree's own doing, not the restore's.
    let stop_of = |tid: i32| {
        img.inventory
            .job_stopped
            .iter()
            .find(|(t, _)| *t == tid)
            .map_or(0, |(_, sig)| *sig)
    };
    for tr in &live {
        match tr.release(stop_of(tr.pid)) {
            // ESRCH from a process being killed: give it a moment to die.
            Err(e) if !tree::still_running(tr.pid, std::time::Duration::from_millis(500)) => {
                log_warn!(
                    "process {} ended before it was released: {}",
                    tr.pid,
                    e.to_string()
                );
            }
            r => r?,
        }
    }
    created.done = true;
    report.total_ns = ns(t0.elapsed());
    log_info!(
        "restored {} processes in {} us",
        report.processes,
        report.total_ns / 1000
    );
    if !o.detach {
        let mut status = 0;
        // SAFETY: waiting for dumper's own child, the root.
        let r = unsafe { libc::waitpid(report.root, &mut status, 0) };
        if r == report.root {
            report.exit_status = Some(status);
        }
    }
    Ok(report)
}
