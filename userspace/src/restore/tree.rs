//! The plan's steps as real system calls, each inside the process that
//! does it. The plan's pid 1 is dumper: it creates the first process
//! itself and reaps the helpers it is the parent of; every other step runs
//! in a tracee.

use super::files;
use super::tracee::{self, terr, Tracee};
use super::{Created, RestoreError};
use crate::image::read::Image;
use crate::model::{Fd, FileType, Task};
use crate::plan::{Op, Step};
use std::collections::{BTreeMap, HashMap};

pub struct Tree<'a> {
    img: &'a Image,
    hole: u64,
    procs: BTreeMap<i32, Tracee>,
    /// Dumped descriptions by the plan's file id (`f<file_id>`).
    descs: HashMap<String, &'a Fd>,
    /// An fd number above every dumped one, for moving fds about.
    tmp: u32,
    /// Whose restored memory each process has (a copy of its creator's):
    /// None for dumper's own.
    mem_of: HashMap<i32, Option<i32>>,
    pub pages_written: u64,
    pub memory_ns: u64,
    /// FIFOs (by inode) already refilled with what they held.
    refilled: std::collections::HashSet<u64>,
    /// Shared memory objects made so far.
    shm: super::shm::Objects,
}

const CLONE_FILES: u64 = libc::CLONE_FILES as u64;
const CLONE_PARENT: u64 = libc::CLONE_PARENT as u64;

impl<'a> Tree<'a> {
    pub fn new(img: &'a Image, hole: u64, steps: &[Step]) -> Tree<'a> {
        let mut descs = HashMap::new();
        // Above every fd of the image and of the plan (which places ends
        // no dumped fd holds above the dumped ones).
        let mut top = steps
            .iter()
            .map(|s| match &s.op {
                Op::Open { fd, .. } | Op::Close { fd } => *fd,
                Op::Pipe { fds, .. } | Op::Socketpair { fds, .. } => fds[0].max(fds[1]),
                Op::Dup2 { from, to } => *from.max(to),
                Op::SendFd { fd, as_fd, .. } => *fd.max(as_fd),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        for t in &img.inventory.snapshot.tasks {
            for f in &t.fds {
                descs.entry(format!("f{}", f.file_id)).or_insert(f);
                top = top.max(f.fd);
            }
        }
        Tree {
            img,
            hole,
            procs: BTreeMap::new(),
            descs,
            tmp: top + 1,
            mem_of: HashMap::new(),
            pages_written: 0,
            memory_ns: 0,
            refilled: Default::default(),
            shm: Default::default(),
        }
    }

    /// The process, once the plan is done with it.
    pub fn take(&mut self, pid: i32) -> Option<Tracee> {
        self.procs.remove(&pid)
    }

    fn task(&self, pid: i32) -> Option<&'a Task> {
        self.img.inventory.snapshot.task(pid)
    }

    fn by(&self, s: &Step) -> Result<&Tracee, RestoreError> {
        self.procs.get(&s.by).ok_or_else(|| {
            RestoreError::Plan(format!("plan step \"{s}\": process {} is not there", s.by))
        })
    }

    fn desc(&self, id: &str) -> Option<&'a Fd> {
        self.descs.get(id).copied()
    }

    pub fn step(&mut self, s: &Step, created: &mut Created) -> Result<(), RestoreError> {
        log_debug!("plan step: {}", s.to_string());
        let unsupported = || {
            Err(RestoreError::Plan(format!(
                "plan step \"{s}\" would change dumper's own state (the plan's pid 1)"
            )))
        };
        match &s.op {
            Op::Fork { pid, share_files } | Op::CloneParent { pid, share_files } => {
                let parent = matches!(s.op, Op::CloneParent { .. });
                // clone3 refuses an exit signal with CLONE_PARENT (the
                // child takes its creator's).
                let exit_signal = if parent {
                    0
                } else {
                    self.task(*pid)
                        .map_or(libc::SIGCHLD, |t| t.exit_signal)
                        .max(0)
                };
                let t = if s.by == 1 {
                    if *share_files || parent {
                        return unsupported();
                    }
                    let t = tracee::fork_first(*pid, self.hole)?;
                    created.pids.push(*pid);
                    // Nothing of dumper's table: the plan's pid 1 holds no
                    // files.
                    t.call(
                        "close_range",
                        libc::SYS_close_range,
                        &[0, u32::MAX as u64, 0],
                    )?;
                    t
                } else {
                    let flags = if *share_files { CLONE_FILES } else { 0 }
                        | if parent { CLONE_PARENT } else { 0 };
                    let t = self.by(s)?.clone(*pid, flags, exit_signal)?;
                    created.pids.push(*pid);
                    t
                };
                let from = if s.by == 1 {
                    None
                } else {
                    self.mem_of.get(&s.by).copied().flatten()
                };
                // A live process gets its memory at once, before it
                // creates anything: its children then inherit it, shared
                // copy-on-write as in the dumped tree.
                let mine = match self.task(*pid).filter(|t| t.state != "Z") {
                    Some(task) => {
                        let t0 = std::time::Instant::now();
                        let inherited = from.and_then(|f| self.task(f));
                        self.pages_written +=
                            super::mm::restore(&t, task, self.img, inherited, &mut self.shm)?;
                        self.memory_ns += t0.elapsed().as_nanos() as u64;
                        Some(*pid)
                    }
                    None => from,
                };
                self.mem_of.insert(*pid, mine);
                self.procs.insert(*pid, t);
            }
            Op::Setsid => {
                if s.by == 1 {
                    return unsupported();
                }
                self.by(s)?.call("setsid", libc::SYS_setsid, &[])?;
            }
            Op::Setpgid { pid, pgid } => {
                // The plan's group 1 is dumper's.
                // SAFETY: a query of dumper's own group.
                let g = if *pgid == 1 {
                    unsafe { libc::getpgrp() }
                } else {
                    *pgid
                };
                if s.by == 1 {
                    // SAFETY: setpgid on dumper's own child.
                    if unsafe { libc::setpgid(*pid, g) } < 0 {
                        return Err(terr(
                            *pid,
                            format!("setpgid to {g}"),
                            std::io::Error::last_os_error(),
                        )
                        .into());
                    }
                } else {
                    self.by(s)?
                        .call("setpgid", libc::SYS_setpgid, &[*pid as u64, g as u64])?;
                }
            }
            Op::Subreaper { on } => {
                // dumper stays a subreaper throughout: the plan's pid 1
                // takes orphans anyway.
                if s.by != 1 {
                    self.by(s)?.call(
                        "prctl PR_SET_CHILD_SUBREAPER",
                        libc::SYS_prctl,
                        &[libc::PR_SET_CHILD_SUBREAPER as u64, *on as u64],
                    )?;
                }
            }
            Op::Exit => {
                if s.by == 1 {
                    return unsupported();
                }
                let t = self.procs.remove(&s.by).ok_or_else(|| {
                    RestoreError::Plan(format!("plan step \"{s}\": process {} is not there", s.by))
                })?;
                // A zombie dies as it did; a helper with 0.
                let status = self
                    .task(s.by)
                    .filter(|t| t.state == "Z")
                    .and_then(|t| t.detail.as_ref())
                    .map_or(0, |d| d.exit_code);
                let (code, sig) = if status & 0x7f == 0 {
                    ((status >> 8) & 0xff, None)
                } else {
                    (0, Some(status & 0x7f))
                };
                let prep = match self.task(s.by).filter(|t| t.state == "Z") {
                    Some(z) => super::task::before_exit(&t, z)?,
                    None => t.batch(),
                };
                let ppid = parent_of(s.by).map_err(|e| terr(s.by, "reading its parent", e))?;
                // SAFETY: a query.
                let me = unsafe { libc::getpid() };
                t.exit(prep, code, sig, ppid == me)?;
            }
            Op::Wait { pid } => {
                // Reaped: its number may be anyone's from here on, so a
                // failure later must not kill it.
                created.pids.retain(|p| p != pid);
                if s.by == 1 {
                    let mut st = 0;
                    // SAFETY: reaping dumper's own dead child.
                    let r = unsafe { libc::waitpid(*pid, &mut st, libc::__WALL) };
                    if r != *pid {
                        return Err(
                            terr(*pid, "reaping it", std::io::Error::last_os_error()).into()
                        );
                    }
                } else {
                    self.by(s)?.call(
                        "wait4",
                        libc::SYS_wait4,
                        &[*pid as u64, 0, libc::__WALL as u64, 0],
                    )?;
                }
            }
            Op::Open { file, fd } => {
                if s.by == 1 {
                    return unsupported();
                }
                let d = self.desc(file).ok_or_else(|| {
                    RestoreError::Plan(format!("plan step \"{s}\": no dumped file {file}"))
                })?;
                if d.kind == FileType::Fifo {
                    // Refilled at its first open only.
                    let held = self
                        .refilled
                        .insert(d.ino)
                        .then(|| self.img.inventory.pipes.iter().find(|p| p.ino == d.ino))
                        .flatten();
                    files::open_fifo(self.by(s)?, d, *fd, self.tmp, held)?;
                } else if d.kind == FileType::Memfd {
                    let by = self.procs.get(&s.by).ok_or_else(|| {
                        RestoreError::Plan(format!(
                            "plan step \"{s}\": process {} is not there",
                            s.by
                        ))
                    })?;
                    self.shm.open(by, d, *fd, self.tmp, self.img)?;
                } else if d.kind == FileType::Eventfd {
                    files::open_eventfd(self.by(s)?, d, *fd, self.tmp)?;
                } else {
                    files::open(self.by(s)?, d, *fd, self.tmp)?;
                }
            }
            Op::Pipe { files: ids, fds } => {
                if s.by == 1 {
                    return unsupported();
                }
                let ends = [self.desc(&ids[0]), self.desc(&ids[1])];
                if ends
                    .iter()
                    .flatten()
                    .any(|f| !matches!(f.kind, FileType::Pipe))
                {
                    return Err(RestoreError::Plan(format!("plan step \"{s}\": not a pipe")));
                }
                let ino = ends.iter().flatten().map(|f| f.ino).next();
                let held = self.img.inventory.pipes.iter().find(|p| Some(p.ino) == ino);
                files::pipe(self.by(s)?, ends, *fds, self.tmp, held)?;
            }
            Op::Socketpair { files: ids, fds } => {
                if s.by == 1 {
                    return unsupported();
                }
                let ends = [self.desc(&ids[0]), self.desc(&ids[1])];
                let sock = |e: Option<&Fd>| {
                    e.and_then(|f| self.img.inventory.sockets.iter().find(|x| x.ino == f.ino))
                };
                let (a, b) = (sock(ends[0]), sock(ends[1]));
                let kind = a.or(b).map_or(libc::SOCK_STREAM as u32, |x| x.kind);
                let queued = [
                    a.map_or(&[][..], |x| x.data.as_slice()),
                    b.map_or(&[][..], |x| x.data.as_slice()),
                ];
                files::socketpair(self.by(s)?, kind, ends, *fds, self.tmp, queued)?;
            }
            Op::Dup2 { from, to } => {
                if s.by == 1 {
                    return unsupported();
                }
                self.by(s)?
                    .call("dup2", libc::SYS_dup2, &[*from as u64, *to as u64])?;
            }
            Op::Close { fd } => {
                if s.by == 1 {
                    return unsupported();
                }
                self.by(s)?.call("close", libc::SYS_close, &[*fd as u64])?;
            }
            Op::SendFd { fd, to, as_fd } => {
                if s.by == 1 || *to == 1 {
                    return unsupported();
                }
                files::send(
                    self.by(s)?.pid,
                    *fd,
                    self.procs.get(to).ok_or_else(|| {
                        RestoreError::Plan(format!("plan step \"{s}\": process {to} is not there"))
                    })?,
                    *as_fd,
                    self.tmp,
                )?;
            }
        }
        Ok(())
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with(['Z', 'X']))
    })
}

/// Whether `pid` is [`running`] still after up to `wait`.
pub fn still_running(pid: i32, wait: std::time::Duration) -> bool {
    let t0 = std::time::Instant::now();
    while running(pid) {
        if t0.elapsed() > wait {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// The parent of `pid` now, from /proc.
fn parent_of(pid: i32) -> std::io::Result<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = s.rsplit_once(')').map_or("", |x| x.1);
    after
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other("unreadable stat"))
}
