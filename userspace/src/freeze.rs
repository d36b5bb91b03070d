//! Holding a tree still: PTRACE_SEIZE and PTRACE_INTERRUPT on every thread,
//! repeated until no new thread or child appears. [`Frozen`]'s Drop detaches
//! everything, so every return path and panic releases the tree; if dumper
//! itself dies (SIGINT, SIGTERM, SIGKILL), the kernel detaches its tracees
//! and they resume (kernel/ptrace.c, exit_ptrace), so the tree is never
//! left stopped.

use crate::collect::{proc::resolve_tgid, proc::tree_pids, CollectError};
use crate::ptrace::{
    caught, request as ptrace, wait_stop, Caught, PTRACE_EVENT_STOP, PTRACE_O_TRACESYSGOOD,
    STOP_TIMEOUT,
};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

pub struct Frozen {
    root: i32,
    /// tid → signal to re-inject at detach (a signal-delivery stop caught
    /// while interrupting), or None while the thread has not stopped yet.
    tids: HashMap<i32, Option<i32>>,
    /// Signals taken off a thread's queue that a detach cannot give back
    /// (the thread is no longer in the signal-delivery stop that took it;
    /// see [`crate::remote`]): queued again at release.
    extra: Vec<(i32, Caught)>,
    /// tid → every signal a stop of ours took off its queue, in order:
    /// the image holds them as pending, ahead of what is still queued.
    dequeued: HashMap<i32, Vec<Caught>>,
    /// tid → signal of threads found in a job-control stop.
    job_stopped: HashMap<i32, i32>,
    /// pid → stack pages that system calls run in the tree made present
    /// (see [`crate::remote::Ran`]): zero, and not to be saved.
    scratch_pages: HashMap<i32, HashSet<u64>>,
    /// When the first thread was stopped.
    since: Instant,
}

/// The live threads of the tree at `root` right now.
fn tree_threads(root: i32) -> Vec<i32> {
    let mut out = vec![];
    for pid in tree_pids(root) {
        let Ok(tasks) = procfs::process::Process::new(pid).and_then(|p| p.tasks()) else {
            continue;
        };
        for t in tasks.flatten() {
            // Zombies cannot be traced and do not change.
            if t.stat().is_ok_and(|s| s.state != 'Z' && s.state != 'X') {
                out.push(t.tid);
            }
        }
    }
    out
}

/// True when `tid` is gone or a zombie.
fn exited(tid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 2..].chars().next())
            .is_none_or(|c| c == 'Z' || c == 'X'),
        Err(_) => true,
    }
}

fn in_tree(root: i32, me: i32) -> CollectError {
    CollectError::Privilege(format!(
        "the tree of {root} contains dumper itself (pid {me}): name a root that is not an ancestor of dumper"
    ))
}

impl Frozen {
    pub fn freeze(root: i32) -> Result<Frozen, CollectError> {
        let root = resolve_tgid(root)?;
        let me = std::process::id() as i32;
        if tree_pids(root).contains(&me) {
            return Err(in_tree(root, me));
        }
        let mut f = Frozen {
            root,
            tids: HashMap::new(),
            extra: vec![],
            dequeued: HashMap::new(),
            job_stopped: HashMap::new(),
            scratch_pages: HashMap::new(),
            since: Instant::now(),
        };
        // New threads and children can appear until their creators stop.
        for _round in 0..100 {
            let mut new = 0;
            for tid in tree_threads(root) {
                if f.tids.contains_key(&tid) {
                    continue;
                }
                if resolve_tgid(tid).is_ok_and(|tgid| tgid == me) {
                    return Err(in_tree(root, me));
                }
                if f.tids.is_empty() {
                    f.since = Instant::now();
                }
                match f.seize(tid) {
                    Ok(()) => new += 1,
                    // Exited meanwhile: nothing to hold. (PTRACE_SEIZE of a
                    // task that has just become a zombie fails with EPERM.)
                    Err(libc::ESRCH) => {}
                    Err(libc::EPERM) if exited(tid) => {}
                    Err(libc::ETIMEDOUT) => {
                        return Err(CollectError::Kernel(format!(
                            "thread {tid} did not stop within {} s (in an uninterruptible wait?); the tree was released",
                            STOP_TIMEOUT.as_secs()
                        )))
                    }
                    Err(e @ (libc::EPERM | libc::EACCES)) => {
                        return Err(CollectError::Privilege(format!(
                            "cannot freeze thread {tid} with ptrace ({}): run as root; it may already be traced (strace, gdb), or ptrace may be restricted (kernel.yama.ptrace_scope)",
                            std::io::Error::from_raw_os_error(e)
                        )))
                    }
                    Err(e) => {
                        return Err(CollectError::Kernel(format!(
                            "cannot freeze thread {tid} with ptrace: {}",
                            std::io::Error::from_raw_os_error(e)
                        )))
                    }
                }
            }
            if new == 0 {
                return Ok(f);
            }
        }
        Err(CollectError::Kernel(format!(
            "tree {root} keeps creating tasks faster than it can be frozen; it was released"
        )))
    }

    fn seize(&mut self, tid: i32) -> Result<(), i32> {
        ptrace(libc::PTRACE_SEIZE, tid, PTRACE_O_TRACESYSGOOD)?;
        // From here on release() detaches it, whatever happens next.
        self.tids.insert(tid, None);
        ptrace(libc::PTRACE_INTERRUPT, tid, 0)?;
        let Some(status) = wait_stop(tid, STOP_TIMEOUT)? else {
            return Err(libc::ETIMEDOUT);
        };
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            self.tids.remove(&tid);
            return Err(libc::ESRCH);
        }
        // A stop that is not our interrupt is a signal-delivery stop: the
        // signal goes back in at detach.
        let sig = if libc::WIFSTOPPED(status) && (status >> 16) != PTRACE_EVENT_STOP {
            libc::WSTOPSIG(status)
        } else {
            0
        };
        if sig != 0 {
            let c = caught(tid, sig)?;
            self.dequeued.entry(tid).or_default().push(c);
        }
        // An interrupt of a thread in a job-control stop reports the stop
        // signal instead of SIGTRAP: it stays stopped when released, and a
        // restore must stop it again.
        if libc::WIFSTOPPED(status)
            && (status >> 16) == PTRACE_EVENT_STOP
            && libc::WSTOPSIG(status) != libc::SIGTRAP
        {
            self.job_stopped.insert(tid, libc::WSTOPSIG(status));
        }
        self.tids.insert(tid, Some(sig));
        log_debug!(
            "thread {} seized and stopped (status {:#x}, signal {} dequeued)",
            tid,
            status as u32,
            sig
        );
        Ok(())
    }

    /// Threads that were in a job-control stop when frozen, with the
    /// signal that stopped them.
    pub fn job_stopped(&self) -> Vec<(i32, i32)> {
        let mut v: Vec<(i32, i32)> = self.job_stopped.iter().map(|(&t, &s)| (t, s)).collect();
        v.sort_unstable();
        v
    }

    pub fn threads(&self) -> usize {
        self.tids.len()
    }

    /// The tree's root process.
    pub fn root(&self) -> i32 {
        self.root
    }

    /// The frozen threads, ascending.
    pub fn tids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.tids.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// When the first thread stopped.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Signals that arrived at `tid` while it ran system calls for dumper:
    /// they are delivered when the tree is released.
    ///
    /// Such a thread was resumed and parked again in an interrupt stop, so
    /// a signal its first stop had taken is queued again at release too.
    pub fn hold_signals(&mut self, tid: i32, sigs: Vec<Caught>) {
        if let Some(slot @ Some(1..)) = self.tids.get_mut(&tid) {
            *slot = Some(0);
            if let Some(first) = self.dequeued.get(&tid).and_then(|d| d.first()) {
                self.extra.push((tid, first.clone()));
            }
        }
        for c in sigs {
            self.extra.push((tid, c.clone()));
            self.dequeued.entry(tid).or_default().push(c);
        }
    }

    /// The siginfo records (128 bytes each) of the signals our stops took
    /// off `tid`'s queue, oldest first.
    pub fn dequeued(&self, tid: i32) -> Vec<u8> {
        self.dequeued
            .get(&tid)
            .into_iter()
            .flatten()
            .flat_map(|c| c.info.iter().copied())
            .collect()
    }

    /// Notes pages of process `pid` that dumper's own system calls in it
    /// made present: zero-filled, not the tree's memory.
    pub fn not_the_trees(&mut self, pid: i32, pages: Vec<u64>) {
        self.scratch_pages.entry(pid).or_default().extend(pages);
    }

    /// What [`Frozen::not_the_trees`] noted.
    pub fn scratch_pages(&self) -> &HashMap<i32, HashSet<u64>> {
        &self.scratch_pages
    }

    /// SIGKILLs every process of the frozen tree (the end of a dump that
    /// does not leave it running), then releases what is left.
    pub fn kill_all(mut self) {
        let mut tgids: Vec<i32> = self
            .tids
            .keys()
            .filter_map(|&t| resolve_tgid(t).ok())
            .collect();
        tgids.sort_unstable();
        tgids.dedup();
        for t in tgids {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(t, libc::SIGKILL) };
        }
        self.extra.clear();
        self.release();
    }

    /// Releases the tree (also done by Drop); returns how long it was held.
    pub fn thaw(mut self) -> Duration {
        self.release();
        self.since.elapsed()
    }

    fn release(&mut self) {
        for (tid, sig) in self.tids.drain() {
            let sig = match sig {
                Some(sig) => sig,
                // Seized but not yet stopped: PTRACE_DETACH needs a stopped
                // tracee. Give it a last chance to stop; one that never does
                // is detached by the kernel when dumper exits.
                None => match wait_stop(tid, Duration::from_millis(500)) {
                    Ok(Some(status)) if libc::WIFSTOPPED(status) => 0,
                    _ => continue,
                },
            };
            let _ = ptrace(libc::PTRACE_DETACH, tid, sig as libc::c_long);
        }
        for (tid, c) in self.extra.drain(..) {
            requeue(tid, &c);
        }
    }
}

/// Queues `c` for `tid` again: with its own siginfo where the kernel lets
/// another process do that (rt_tgsigqueueinfo takes negative si_codes
/// only: sigqueue, timers, message queues, async I/O), otherwise with
/// tkill (the handler then sees dumper as the sender).
fn requeue(tid: i32, c: &Caught) {
    let tgid = resolve_tgid(tid).unwrap_or(tid);
    // SAFETY: info is a whole siginfo; the calls only read it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            tgid,
            tid,
            c.sig,
            c.info.as_ptr(),
        )
    };
    if r != 0 {
        // SAFETY: tkill(2) on a thread of the tree.
        unsafe { libc::syscall(libc::SYS_tkill, tid, c.sig) };
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.release();
    }
}
