//! Holding a tree still: PTRACE_SEIZE and PTRACE_INTERRUPT on every thread,
//! repeated until no new thread or child appears. [`Frozen`]'s Drop detaches
//! everything, so every return path and panic releases the tree; if dumper
//! itself dies (SIGINT, SIGTERM, SIGKILL), the kernel detaches its tracees
//! and they resume (kernel/ptrace.c, exit_ptrace), so the tree is never
//! left stopped.

use crate::collect::{proc::resolve_tgid, CollectError};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const PTRACE_EVENT_STOP: i32 = 128;

pub struct Frozen {
    /// tid → signal to re-inject at detach (a signal-delivery stop caught
    /// while interrupting).
    tids: HashMap<i32, i32>,
    pub frozen_at: Instant,
}

/// The live threads of the tree at `root` right now: (tgid, tids).
fn tree_threads(root: i32) -> Vec<(i32, Vec<i32>)> {
    let mut out = vec![];
    let mut queue = vec![root];
    let mut seen = HashSet::from([root]);
    while let Some(pid) = queue.pop() {
        let Ok(tasks) = procfs::process::Process::new(pid).and_then(|p| p.tasks()) else {
            continue;
        };
        let mut tids = vec![];
        for t in tasks.flatten() {
            // Zombies cannot be traced and do not change.
            if t.stat()
                .map(|s| s.state == 'Z' || s.state == 'X')
                .unwrap_or(true)
            {
                continue;
            }
            tids.push(t.tid);
            for c in t.children().unwrap_or_default() {
                if seen.insert(c as i32) {
                    queue.push(c as i32);
                }
            }
        }
        out.push((pid, tids));
    }
    out
}

impl Frozen {
    pub fn freeze(root: i32) -> Result<Frozen, CollectError> {
        let root = resolve_tgid(root)?;
        if root == std::process::id() as i32 {
            return Err(CollectError::Privilege(
                "dumper cannot freeze itself".into(),
            ));
        }
        let mut f = Frozen {
            tids: HashMap::new(),
            frozen_at: Instant::now(),
        };
        // New threads and children can appear until their creators stop.
        for _round in 0..100 {
            let mut new = 0;
            for (_, tids) in tree_threads(root) {
                for tid in tids {
                    if f.tids.contains_key(&tid) {
                        continue;
                    }
                    match f.seize(tid) {
                        Ok(()) => new += 1,
                        // Exited meanwhile: nothing to hold.
                        Err(e) if e == libc::ESRCH => {}
                        Err(e) => {
                            let err = std::io::Error::from_raw_os_error(e);
                            return Err(CollectError::Privilege(format!(
                                "cannot freeze thread {tid} with ptrace ({err}): run as root; it may already be traced (strace, gdb) or ptrace may be restricted (kernel.yama.ptrace_scope)"
                            )));
                        }
                    }
                }
            }
            if new == 0 {
                f.frozen_at = Instant::now();
                return Ok(f);
            }
        }
        Err(CollectError::Kernel(format!(
            "tree {root} keeps creating tasks faster than it can be frozen"
        )))
    }

    fn seize(&mut self, tid: i32) -> Result<(), i32> {
        let errno = || {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)
        };
        // SAFETY: plain ptrace requests on a tid.
        unsafe {
            if libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) != 0 {
                return Err(errno());
            }
            // From here on Drop detaches it, whatever happens next.
            self.tids.insert(tid, 0);
            if libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) != 0 {
                return Err(errno());
            }
            let mut status = 0;
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let r = libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG);
                if r == tid {
                    break;
                }
                if r < 0 {
                    return Err(errno());
                }
                if Instant::now() > deadline {
                    return Err(libc::ETIMEDOUT);
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                self.tids.remove(&tid);
                return Err(libc::ESRCH);
            }
            // A stop that is not our interrupt is a signal-delivery stop:
            // the signal goes back in at detach.
            if libc::WIFSTOPPED(status) && (status >> 16) != PTRACE_EVENT_STOP {
                self.tids.insert(tid, libc::WSTOPSIG(status));
            }
        }
        Ok(())
    }

    pub fn threads(&self) -> usize {
        self.tids.len()
    }

    /// Releases the tree (also done by Drop).
    pub fn thaw(mut self) -> Duration {
        self.release();
        self.frozen_at.elapsed()
    }

    fn release(&mut self) {
        for (tid, sig) in self.tids.drain() {
            // SAFETY: detaching our own tracee.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0, sig as libc::c_long) };
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.release();
    }
}
