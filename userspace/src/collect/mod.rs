//! Collectors: each fills a [`Snapshot`] for a [`Target`].
//!
//! - [`proc::ProcCollector`] reads /proc: the reference.
//! - [`bpf::BpfCollector`] walks kernel structures with iterator programs.
//!
//! Both must produce identical snapshots of a frozen tree; `dumper compare`
//! and the integration tests hold them to it.

pub mod batch;
pub mod bpf;
pub mod bpf_detail;
pub mod classify;
pub mod fdinfo;
pub mod kcmp;
pub mod paths;
pub mod proc;
pub mod proc_detail;
pub mod proc_tuned;
pub mod smaps;
pub mod syscall_count;

use crate::freeze::Frozen;
use crate::model::Snapshot;
use std::collections::{HashMap, HashSet};

/// What to collect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A process, all its descendants and all their threads.
    Tree(i32),
    /// Every process on the system.
    System,
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("no process {0}: check the pid (ps -p {0})")]
    NoSuchProcess(i32),
    #[error("{0}")]
    Privilege(String),
    #[error("{0}")]
    Kernel(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "unknown collector {0:?}: choose proc, proc-tuned, procmap-query, bpf, bpf-null or batch"
    )]
    UnknownCollector(String),
    #[error("{0}")]
    Decode(String),
}

impl CollectError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        CollectError::Io {
            what: what.into(),
            source,
        }
    }
}

pub trait Collector {
    fn name(&self) -> &'static str;
    fn collect(&mut self, target: Target) -> Result<Snapshot, CollectError>;
    /// Processes the last collection left out, with the reason.
    fn skipped(&self) -> &[(i32, String)] {
        &[]
    }
    /// readlink calls the last collection made to complete paths, for
    /// collectors whose point is to avoid them.
    fn readlinks(&self) -> Option<usize> {
        None
    }
    /// For the batch collector: the last collection's batch(2) calls, the
    /// entries they ran, and how many of those fire the sys_enter
    /// tracepoint (the kernel reports each entry to tracing as a call).
    fn batched(&self) -> Option<(usize, usize, usize)> {
        None
    }
    /// Collects the frozen tree; with `detail`, each task's
    /// [`crate::model::TaskDetail`] too (what a dump needs). Collectors
    /// that cannot collect detail refuse, naming those that can.
    fn collect_frozen(
        &mut self,
        frozen: &mut Frozen,
        detail: bool,
    ) -> Result<Snapshot, CollectError> {
        if detail {
            return Err(CollectError::Kernel(format!(
                "the {} collector cannot collect what a dump needs: use --collect=bpf or --collect=proc",
                self.name()
            )));
        }
        self.collect(Target::Tree(frozen.root()))
    }
}

/// A collector by its command-line name. Loading `bpf` loads and verifies
/// the programs (its cold cost); collections after that are warm.
pub fn by_name(name: &str) -> Result<Box<dyn Collector>, CollectError> {
    match name {
        "proc" => Ok(Box::new(proc::ProcCollector::new())),
        "proc-tuned" => Ok(Box::new(proc_tuned::ProcTuned::new(
            proc_tuned::Maps::Smaps,
        )?)),
        "procmap-query" => Ok(Box::new(proc_tuned::ProcTuned::new(
            proc_tuned::Maps::ProcmapQuery,
        )?)),
        "bpf" => Ok(Box::new(bpf::BpfCollector::load()?)),
        "bpf-null" => Ok(Box::new(bpf::BpfCollector::load_null()?)),
        "batch" => Ok(Box::new(batch::BatchCollector::new()?)),
        other => Err(CollectError::UnknownCollector(other.to_string())),
    }
}

/// The processes of the tree rooted at `root`: `root` and every process
/// whose parent chain reaches it. `parents` holds (tgid, ppid) pairs.
pub fn tree_members(root: i32, parents: impl IntoIterator<Item = (i32, i32)>) -> HashSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, ppid) in parents {
        if pid != ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut seen = HashSet::from([root]);
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if seen.insert(c) {
                stack.push(c);
            }
        }
    }
    seen
}

/// True for errors that mean "the process (or fd) went away meanwhile":
/// collection then drops it instead of failing.
pub fn vanished(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::EBADF)
    )
}

#[cfg(test)]
mod tests {
    use super::tree_members;

    #[test]
    fn descendants() {
        let m = tree_members(10, [(1, 0), (10, 1), (11, 10), (12, 11), (13, 1), (14, 12)]);
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort();
        assert_eq!(v, vec![10, 11, 12, 14]);
    }
}
