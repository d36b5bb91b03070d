//! `--collect=batch`: what `proc-tuned` reads, issued through batch(2),
//! the system call of the kernel series in kernel-patches/. A file is read
//! with one BATCH_READFILE entry (open, read, close, and no fd ever in the
//! table), a directory is listed with an openat → getdents64 → close chain,
//! links and stats are readlinkat and newfstatat entries. Each round of
//! the walk (threads, children, per-process files, per-fd files, socket
//! protocols) is a few batch calls for the whole tree, so the kernel is
//! entered tens of times per collection instead of tens of thousands.
//!
//! The fields are parsed by the same code as proc-tuned's, so the two
//! agree by construction wherever the kernel gives them the same bytes.

use super::proc::{all_pids, assemble_with, io_skip, resolve_tgid, Skip};
use super::proc_tuned::{
    child_pids, dirent_numbers, fd_from, parse_stat, parse_status, smaps_vmas, task_from, Names,
};
use super::{fdinfo, kcmp, vanished, CollectError, Collector, Target};
use crate::model::{Snapshot, Task};
use std::collections::{HashMap, HashSet, VecDeque};

/// batch(2)'s number in the series (the next free one on 6.12.y; on 6.13
/// and later kernels 463 is setxattrat, which the probe tells apart).
pub const NR_BATCH: libc::c_long = 463;
/// The series' include/uapi/linux/batch.h.
const READFILE: u32 = 0x8000_0000;
const MAX_CALLS: usize = 4096;

/// struct batch_call.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Call {
    nr: u32,
    chain: u16,
    reserved: u16,
    args: [u64; 6],
    result: i64,
}

const _: () = assert!(std::mem::size_of::<Call>() == 64);

fn batch(calls: &mut [Call]) -> std::io::Result<usize> {
    loop {
        // SAFETY: the kernel reads and writes `calls.len()` entries; the
        // pointers in them are the caller's (checked by [`Round::run`]).
        // The unused argument registers are zero, so that a kernel where
        // 463 is setxattrat refuses the call at once (EINVAL on a zero
        // size).
        let n = unsafe {
            libc::syscall(
                NR_BATCH,
                calls.as_mut_ptr(),
                calls.len() as libc::c_uint,
                0 as libc::c_uint,
                0usize,
                0usize,
                0usize,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        // A signal before the first entry did anything: nothing ran.
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Checks that this kernel has batch(2): one getpid entry must come back
/// with our pid.
pub fn probe() -> Result<(), CollectError> {
    let mut c = [Call {
        nr: libc::SYS_getpid as u32,
        ..Default::default()
    }];
    let missing = |why: String| {
        CollectError::Kernel(format!(
            "--collect=batch needs the batch(2) system call of kernel-patches/, which this kernel lacks ({why}): try it in QEMU with `cargo xtask kernel test`, or use --collect=proc-tuned"
        ))
    };
    match batch(&mut c) {
        Ok(1) if c[0].result == std::process::id() as i64 => Ok(()),
        Ok(n) => Err(missing(format!("syscall {NR_BATCH} returned {n}"))),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Err(CollectError::Kernel(
            "batch(2) refuses to run while dumper is syscall-traced or audited: run it untraced, or use --collect=proc-tuned".into(),
        )),
        Err(e) => Err(missing(format!("syscall {NR_BATCH}: {e}"))),
    }
}

/// Where a path is: relative to /proc/PID (opened once per batch call and
/// process, as proc-tuned holds a directory fd per process), or absolute
/// (pid 0).
#[derive(Clone)]
struct At {
    pid: i32,
    path: String,
}

fn at(pid: i32, path: impl Into<String>) -> At {
    At {
        pid,
        path: path.into(),
    }
}

/// One read of a round.
#[derive(Clone)]
enum Op {
    /// BATCH_READFILE into `cap` bytes.
    File(At, usize),
    /// readlinkat into `cap` bytes.
    Link(At, usize),
    /// newfstatat(path, 0).
    Stat(At),
    /// getxattr(path, system.sockprotoname): an absolute path (there is no
    /// getxattrat before Linux 6.13).
    SockProto(String),
    /// openat(O_DIRECTORY) → getdents64 into `cap` bytes → close.
    List(At, usize),
    /// kcmp(KCMP_FILE) of (pid, fd) against (pid, fd).
    Kcmp(kcmp::Pair),
}

const STAT_SIZE: usize = std::mem::size_of::<libc::stat>();
/// The largest linux_dirent64 record a /proc name makes: a getdents64
/// that leaves less room than this may have more to give.
const DIRENT_MAX: usize = 24 + 256;
const KCMP_FILE: u64 = 0;

impl Op {
    fn at(&self) -> Option<&At> {
        match self {
            Op::File(a, _) | Op::Link(a, _) | Op::Stat(a) | Op::List(a, _) => Some(a),
            Op::SockProto(_) | Op::Kcmp(_) => None,
        }
    }

    fn path(&self) -> &str {
        match self {
            Op::SockProto(p) => p,
            Op::Kcmp(_) => "",
            _ => &self.at().expect("a path").path,
        }
    }

    /// The /proc/PID directory it is relative to, if any.
    fn dir(&self) -> Option<i32> {
        self.at().map(|a| a.pid).filter(|&p| p != 0)
    }

    fn cap(&self) -> usize {
        match self {
            Op::File(_, c) | Op::Link(_, c) | Op::List(_, c) => *c,
            Op::Stat(_) => STAT_SIZE,
            Op::SockProto(_) => 64,
            Op::Kcmp(_) => 0,
        }
    }

    fn entries(&self) -> usize {
        if matches!(self, Op::List(..)) {
            3
        } else {
            1
        }
    }

    /// The same read with four times the room.
    fn grown(&self) -> Op {
        match self {
            Op::File(p, c) => Op::File(p.clone(), c * 4),
            Op::Link(p, c) => Op::Link(p.clone(), c * 4),
            Op::List(p, c) => Op::List(p.clone(), c * 4),
            other => other.clone(),
        }
    }
}

/// What one read gave: its bytes in the round's arena (for Kcmp, an
/// empty range whose end is kcmp's result), or an errno.
type Out = Result<std::ops::Range<usize>, i32>;

/// The batch calls of a collection, reusing their buffers.
#[derive(Default)]
struct Round {
    arena: Vec<u8>,
    /// The previous arena, kept for its capacity.
    spare: Vec<u8>,
    paths: Vec<u8>,
    calls: Vec<Call>,
    /// batch calls and entries issued, for the log and the bench; and of
    /// those entries, the ones that fire the sys_enter tracepoint as a
    /// direct call does (all but BATCH_READFILE).
    batches: usize,
    entries: usize,
    traced: usize,
}

fn entry(nr: libc::c_long, chain: u16, args: [u64; 6]) -> Call {
    Call {
        nr: nr as u32,
        chain,
        args,
        ..Default::default()
    }
}

impl Round {
    /// Runs `ops`, growing the buffer of any read that filled it, and
    /// returns each one's result (its bytes valid until the next run).
    fn run(&mut self, mut ops: Vec<Op>) -> Result<Vec<Out>, CollectError> {
        let all: Vec<usize> = (0..ops.len()).collect();
        let (results, full) = self.run_once(&ops, &all)?;
        if !full.contains(&true) {
            // The common case: every result fits where it was read.
            return Ok(results);
        }
        let mut outs: Vec<Option<Out>> = vec![None; ops.len()];
        let mut todo = all;
        let mut kept = std::mem::take(&mut self.spare);
        kept.clear();
        let mut first = Some((results, full));
        while !todo.is_empty() {
            let (results, full) = match first.take() {
                Some(r) => r,
                None => self.run_once(&ops, &todo)?,
            };
            let mut again = vec![];
            for (&i, (r, full)) in todo.iter().zip(results.into_iter().zip(full)) {
                if full && ops[i].cap() < 1 << 30 {
                    ops[i] = ops[i].grown();
                    again.push(i);
                    continue;
                }
                outs[i] = Some(r.map(|range| {
                    if matches!(ops[i], Op::Kcmp(_)) {
                        return range;
                    }
                    let start = kept.len();
                    kept.extend_from_slice(&self.arena[range]);
                    start..kept.len()
                }));
            }
            todo = again;
        }
        self.spare = std::mem::replace(&mut self.arena, kept);
        Ok(outs
            .into_iter()
            .map(|o| o.expect("every read ran"))
            .collect())
    }

    /// One pass over the reads `todo` of `ops`: each one's result, and
    /// whether it filled its buffer.
    fn run_once(
        &mut self,
        ops: &[Op],
        todo: &[usize],
    ) -> Result<(Vec<Out>, Vec<bool>), CollectError> {
        // Room first, pointers after: neither buffer moves while the
        // kernel holds pointers into it.
        let mut at = Vec::with_capacity(todo.len());
        let mut size = 0usize;
        self.paths.clear();
        let mut dirs: HashMap<i32, usize> = HashMap::new();
        for &i in todo {
            at.push((size, self.paths.len()));
            size += ops[i].cap().next_multiple_of(8);
            self.paths.extend_from_slice(ops[i].path().as_bytes());
            self.paths.push(0);
            if let Some(pid) = ops[i].dir() {
                if let std::collections::hash_map::Entry::Vacant(v) = dirs.entry(pid) {
                    v.insert(self.paths.len());
                    self.paths
                        .extend_from_slice(format!("/proc/{pid}").as_bytes());
                    self.paths.push(0);
                }
            }
        }
        // Only grown, never cleared: the kernel writes what is read back.
        if self.arena.len() < size {
            self.arena.resize(size, 0);
        }
        let arena = self.arena.as_mut_ptr() as u64;
        let paths = self.paths.as_ptr() as u64;
        let at_cwd = libc::AT_FDCWD as i64 as u64;
        let mut results = vec![Err(0); todo.len()];
        let mut full = vec![false; todo.len()];
        let mut k = 0;
        while k < todo.len() {
            // As many whole reads as fit in one batch call, each process
            // directory opened before its first read and closed at the end.
            self.calls.clear();
            let first = k;
            // pid → the index of its directory's openat in this call.
            let mut opened: HashMap<i32, usize> = HashMap::new();
            let mut starts = vec![];
            while let Some(&i) = todo.get(k) {
                let op = &ops[i];
                let dir = op.dir();
                let new_dir = dir.is_some_and(|p| !opened.contains_key(&p));
                let need = op.entries() + if new_dir { 2 } else { 0 };
                if self.calls.len() + opened.len() + need > MAX_CALLS {
                    break;
                }
                if new_dir {
                    let pid = dir.unwrap();
                    opened.insert(pid, self.calls.len());
                    let flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
                    self.calls.push(entry(
                        libc::SYS_openat,
                        0,
                        [at_cwd, paths + dirs[&pid] as u64, flags, 0, 0, 0],
                    ));
                }
                // arg 0: the directory's fd, from its openat's result.
                let dir_entry = dir.map(|p| opened[&p]);
                let (dfd, chain) = match dir_entry {
                    Some(e) => (e as u64, 1),
                    None => (at_cwd, 0),
                };
                let (off, name) = at[k];
                let (buf, path, cap) = (arena + off as u64, paths + name as u64, op.cap() as u64);
                let base = self.calls.len() as u64;
                starts.push((self.calls.len(), dir_entry));
                match op {
                    Op::File(..) => self.calls.push(Call {
                        nr: READFILE,
                        ..entry(0, chain, [dfd, path, buf, cap, 0, 0])
                    }),
                    Op::Link(..) => self.calls.push(entry(
                        libc::SYS_readlinkat,
                        chain,
                        [dfd, path, buf, cap, 0, 0],
                    )),
                    Op::Stat(_) => self.calls.push(entry(
                        libc::SYS_newfstatat,
                        chain,
                        [dfd, path, buf, 0, 0, 0],
                    )),
                    Op::SockProto(_) => self.calls.push(entry(
                        libc::SYS_getxattr,
                        0,
                        [
                            path,
                            c"system.sockprotoname".as_ptr() as u64,
                            buf,
                            cap,
                            0,
                            0,
                        ],
                    )),
                    Op::List(..) => {
                        let flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
                        self.calls.push(entry(
                            libc::SYS_openat,
                            chain,
                            [dfd, path, flags, 0, 0, 0],
                        ));
                        self.calls
                            .push(entry(libc::SYS_getdents64, 1, [base, buf, cap, 0, 0, 0]));
                        self.calls
                            .push(entry(libc::SYS_close, 1, [base, 0, 0, 0, 0, 0]));
                    }
                    Op::Kcmp(((p1, f1), (p2, f2))) => self.calls.push(entry(
                        libc::SYS_kcmp,
                        0,
                        [*p1 as u64, *p2 as u64, KCMP_FILE, *f1 as u64, *f2 as u64, 0],
                    )),
                }
                k += 1;
            }
            for &e in opened.values() {
                self.calls
                    .push(entry(libc::SYS_close, 1, [e as u64, 0, 0, 0, 0, 0]));
            }
            let n = batch(&mut self.calls).map_err(|e| {
                CollectError::Kernel(format!("batch(2) of {} entries: {e}", self.calls.len()))
            })?;
            self.batches += 1;
            self.entries += n;
            self.traced += self.calls[..n].iter().filter(|c| c.nr != READFILE).count();
            log_debug!("batch: {} entries, {} ran", self.calls.len(), n);
            // The reads whose entries all ran; a signal can end a batch
            // early, and the rest goes again from the first read cut.
            let mut j = first;
            while j < k {
                let (e, dir) = starts[j - first];
                let op = &ops[todo[j]];
                if e + op.entries() > n {
                    break;
                }
                let (off, _) = at[j];
                // A read whose directory did not open gets that error.
                let result = |i: usize| match self.calls[i].result {
                    r if r == -(libc::ECANCELED as i64) => {
                        match dir.map(|d| self.calls[d].result) {
                            Some(d) if d < 0 => d,
                            _ => r,
                        }
                    }
                    r => r,
                };
                let r = result(e);
                let (res, f) = match op {
                    Op::List(..) => {
                        let n = result(e + 1);
                        if r < 0 {
                            (Err(-r as i32), false)
                        } else if n < 0 {
                            (Err(-n as i32), false)
                        } else {
                            (
                                Ok(off..off + n as usize),
                                n as usize + DIRENT_MAX > op.cap(),
                            )
                        }
                    }
                    Op::Kcmp(_) if r >= 0 => (Ok(0..r as usize), false),
                    Op::Stat(_) if r == 0 => (Ok(off..off + STAT_SIZE), false),
                    Op::SockProto(_) if r == -(libc::ERANGE as i64) => (Err(libc::ERANGE), true),
                    _ if r < 0 => (Err(-r as i32), false),
                    _ => (Ok(off..off + r as usize), r as usize >= op.cap()),
                };
                results[j] = res;
                full[j] = f;
                j += 1;
            }
            if j < k {
                // Cut short: close what the batch opened and did not close.
                let (e, _) = starts[j - first];
                if matches!(ops[todo[j]], Op::List(..)) && e < n && self.calls[e].result >= 0 {
                    close(self.calls[e].result);
                }
                for &d in opened.values() {
                    if d < n && self.calls[d].result >= 0 {
                        close(self.calls[d].result);
                    }
                }
            }
            k = j;
        }
        Ok((results, full))
    }
}

fn close(fd: i64) {
    // SAFETY: an fd the batch opened for us and nothing closed.
    unsafe { libc::close(fd as i32) };
}

/// A process read, or why it is left out.
type Read = (i32, Result<Task, Skip>);
/// A process read but for its fds, with their numbers.
type Partial = (i32, Result<(Task, Vec<u32>), Skip>);

pub struct BatchCollector {
    round: Round,
    /// The last collection's batch calls, entries and traced entries.
    last: (usize, usize, usize),
    names: Names,
    skipped: Vec<(i32, String)>,
}

/// The processes a batch round reads together: enough to make each batch
/// call long, few enough that the buffers stay small.
const CHUNK: usize = 256;

impl BatchCollector {
    /// Probes for batch(2) first: without it, a clear error.
    pub fn new() -> Result<Self, CollectError> {
        probe()?;
        Ok(BatchCollector {
            round: Round::default(),
            last: (0, 0, 0),
            names: Names::default(),
            skipped: vec![],
        })
    }

    /// The threads of each process in `pids` (None: gone).
    fn threads(&mut self, pids: &[i32]) -> Result<Vec<Option<Vec<i32>>>, CollectError> {
        let ops: Vec<Op> = pids
            .iter()
            .map(|p| Op::List(at(0, format!("/proc/{p}/task")), 16 * 1024))
            .collect();
        let outs = self.round.run(ops)?;
        Ok(outs
            .into_iter()
            .map(|o| {
                o.ok().map(|r| {
                    let mut tids = vec![];
                    dirent_numbers(&self.round.arena[r], &mut tids);
                    let mut t: Vec<i32> = tids.into_iter().map(|t| t as i32).collect();
                    t.sort_unstable();
                    t
                })
            })
            .collect())
    }

    /// The tree's processes with their threads, level by level through
    /// every thread's `children` file: two rounds a level.
    fn tree(&mut self, root: i32) -> Result<Vec<(i32, Vec<i32>)>, CollectError> {
        let mut out = vec![];
        let mut seen = HashSet::from([root]);
        let mut level = vec![root];
        while !level.is_empty() {
            let threads = self.threads(&level)?;
            let alive: Vec<(i32, Vec<i32>)> = level
                .iter()
                .zip(threads)
                .filter_map(|(&p, t)| t.map(|t| (p, t)))
                .collect();
            let ops: Vec<Op> = alive
                .iter()
                .flat_map(|(p, tids)| {
                    tids.iter()
                        .map(move |t| Op::File(at(0, format!("/proc/{p}/task/{t}/children")), 4096))
                })
                .collect();
            let outs = self.round.run(ops)?;
            let mut next = VecDeque::new();
            for r in outs.into_iter().flatten() {
                for c in child_pids(&self.round.arena[r]) {
                    if seen.insert(c) {
                        next.push_back(c);
                    }
                }
            }
            out.extend(alive);
            level = next.into();
        }
        Ok(out)
    }

    /// Reads the tasks of `procs`, CHUNK processes a round.
    fn tasks(&mut self, procs: Vec<(i32, Vec<i32>)>) -> Result<Vec<Read>, CollectError> {
        let mut out = Vec::with_capacity(procs.len());
        for chunk in procs.chunks(CHUNK) {
            out.extend(self.chunk(chunk)?);
        }
        Ok(out)
    }

    fn chunk(&mut self, procs: &[(i32, Vec<i32>)]) -> Result<Vec<Read>, CollectError> {
        const PER: usize = 7;
        let mut ops = Vec::with_capacity(procs.len() * PER);
        for (p, _) in procs {
            ops.extend([
                Op::File(at(*p, "stat"), 1024),
                Op::File(at(*p, "status"), 4096),
                Op::Link(at(*p, "cwd"), 512),
                Op::Link(at(*p, "root"), 512),
                Op::Link(at(*p, "exe"), 512),
                Op::File(at(*p, "smaps"), 64 * 1024),
                Op::List(at(*p, "fd"), 8 * 1024),
            ]);
        }
        let outs = self.round.run(ops)?;
        let arena = std::mem::take(&mut self.round.arena);
        let mut tasks: Vec<Partial> = vec![];
        for ((pid, threads), o) in procs.iter().zip(outs.chunks(PER)) {
            tasks.push((*pid, self.task(*pid, threads.clone(), o, &arena)));
        }
        self.round.arena = arena;

        // Per fd: its link, its fdinfo, its stat.
        let mut ops = vec![];
        for (pid, t) in &tasks {
            if let Ok((_, fds)) = t {
                for fd in fds {
                    let link = at(*pid, format!("fd/{fd}"));
                    ops.push(Op::Link(link.clone(), 256));
                    ops.push(Op::File(at(*pid, format!("fdinfo/{fd}")), 1024));
                    ops.push(Op::Stat(link));
                }
            }
        }
        let outs = self.round.run(ops)?;
        let arena = std::mem::take(&mut self.round.arena);
        let mut sockets = vec![];
        let mut o = outs.chunks(3);
        for (ti, (pid, t)) in tasks.iter_mut().enumerate() {
            let Ok((task, fds)) = t else { continue };
            let mut failed = None;
            for &fd in fds.iter() {
                let r = o.next().expect("three reads per fd");
                match fd_entry(*pid, fd, r, &arena) {
                    Ok(Some((f, st))) => {
                        if st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
                            sockets.push((ti, task.fds.len()));
                        }
                        task.fds.push(fd_from(fd, f.0, &f.1, &st, None));
                    }
                    // Closed meanwhile: not part of the snapshot.
                    Ok(None) => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                *t = Err(e);
            }
        }
        self.round.arena = arena;

        // Sockets: their protocol names complete their kind.
        // (A task that failed after its socket was seen has none left.)
        sockets.retain(|&(ti, _)| tasks[ti].1.is_ok());
        let ops: Vec<Op> = sockets
            .iter()
            .map(|&(ti, i)| {
                let (pid, t) = &tasks[ti];
                let fd = t.as_ref().map_or(0, |t| t.0.fds[i].fd);
                Op::SockProto(format!("/proc/{pid}/fd/{fd}"))
            })
            .collect();
        let outs = self.round.run(ops)?;
        for ((ti, i), r) in sockets.into_iter().zip(outs) {
            let Ok((task, _)) = &mut tasks[ti].1 else {
                continue;
            };
            // As proc-tuned: no protocol name, no protocol.
            let Ok(r) = r else { continue };
            let b = &self.round.arena[r];
            let proto =
                String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(b)).into_owned();
            let f = &mut task.fds[i];
            f.kind = super::classify::from_proc(libc::S_IFSOCK, &f.path, Some(&proto));
        }
        Ok(tasks
            .into_iter()
            .map(|(p, t)| (p, t.map(|(t, _)| t)))
            .collect())
    }

    /// A task from its seven reads; also its fd numbers.
    fn task(
        &mut self,
        pid: i32,
        threads: Vec<i32>,
        o: &[Out],
        arena: &[u8],
    ) -> Result<(Task, Vec<u32>), Skip> {
        let err = |f: &str, e: i32| {
            io_skip(
                std::path::Path::new(&format!("/proc/{pid}/{f}")),
                std::io::Error::from_raw_os_error(e),
            )
        };
        let bad = |f: &str| {
            Skip::Fail(CollectError::Decode(format!(
                "/proc/{pid}/{f}: unexpected format"
            )))
        };
        let stat = o[0].clone().map_err(|e| err("stat", e))?;
        let st = parse_stat(&arena[stat]).ok_or_else(|| bad("stat"))?;
        let status = o[1].clone().map_err(|e| err("status", e))?;
        let status = parse_status(&arena[status]).ok_or_else(|| bad("status"))?;
        let link = |i: usize, f: &str| -> Result<Option<String>, Skip> {
            match &o[i] {
                Ok(r) => Ok(Some(
                    String::from_utf8_lossy(&arena[r.clone()]).into_owned(),
                )),
                Err(e) if vanished(&std::io::Error::from_raw_os_error(*e)) => Ok(None),
                Err(e) => Err(err(f, *e)),
            }
        };
        let links = [link(2, "cwd")?, link(3, "root")?, link(4, "exe")?];
        let comm = String::from_utf8_lossy(st.comm).into_owned();
        let mut task = task_from(pid, comm, &st, status, threads, links);
        let smaps = o[5].clone().map_err(|e| err("smaps", e))?;
        task.vmas = smaps_vmas(&mut self.names, &String::from_utf8_lossy(&arena[smaps]))
            .ok_or_else(|| bad("smaps"))?;
        let dents = o[6].clone().map_err(|e| err("fd", e))?;
        let mut fds = vec![];
        dirent_numbers(&arena[dents], &mut fds);
        fds.sort_unstable();
        Ok((task, fds))
    }
}

/// An fd's link, fdinfo and stat; None when it closed meanwhile.
#[allow(clippy::type_complexity)]
fn fd_entry(
    pid: i32,
    fd: u32,
    r: &[Out],
    arena: &[u8],
) -> Result<Option<((String, fdinfo::FdInfo), libc::stat)>, Skip> {
    let fail = |f: String, e: i32| {
        let e = std::io::Error::from_raw_os_error(e);
        if vanished(&e) {
            Ok(None)
        } else {
            Err(io_skip(
                std::path::Path::new(&format!("/proc/{pid}/{f}")),
                e,
            ))
        }
    };
    let path = match &r[0] {
        Ok(x) => String::from_utf8_lossy(&arena[x.clone()]).into_owned(),
        Err(e) => return fail(format!("fd/{fd}"), *e),
    };
    let info = match &r[1] {
        Ok(x) => fdinfo::parse_file(pid, fd, &arena[x.clone()]).map_err(Skip::Fail)?,
        Err(e) => return fail(format!("fdinfo/{fd}"), *e),
    };
    let st = match &r[2] {
        // SAFETY: the kernel wrote a whole struct stat there; read it
        // unaligned, as the arena is bytes.
        Ok(x) => unsafe {
            std::ptr::read_unaligned(arena[x.clone()].as_ptr().cast::<libc::stat>())
        },
        Err(e) => return fail(format!("fd/{fd}"), *e),
    };
    Ok(Some(((path, info), st)))
}

impl Collector for BatchCollector {
    fn name(&self) -> &'static str {
        "batch"
    }

    fn skipped(&self) -> &[(i32, String)] {
        &self.skipped
    }

    fn collect(&mut self, target: Target) -> Result<Snapshot, CollectError> {
        let (b0, e0, t0) = (self.round.batches, self.round.entries, self.round.traced);
        let procs = match target {
            Target::Tree(root) => self.tree(resolve_tgid(root)?)?,
            Target::System => {
                let pids = all_pids()?;
                let threads = self.threads(&pids)?;
                pids.into_iter()
                    .zip(threads)
                    .filter_map(|(p, t)| t.map(|t| (p, t)))
                    .collect()
            }
        };
        let tasks = self.tasks(procs)?;
        let n = tasks.len();
        let mut skipped = std::mem::take(&mut self.skipped);
        let round = &mut self.round;
        let snap = assemble_with(
            target,
            tasks,
            |_, t| t,
            &mut skipped,
            |fds| {
                kcmp::description_ids_in_rounds(fds, |pairs| {
                    let ops: Vec<Op> = pairs.iter().map(|&p| Op::Kcmp(p)).collect();
                    Ok(round
                        .run(ops)?
                        .into_iter()
                        .map(|r| {
                            r.map(|v| match v.end {
                                0 => std::cmp::Ordering::Equal,
                                1 => std::cmp::Ordering::Less,
                                _ => std::cmp::Ordering::Greater,
                            })
                        })
                        .collect())
                })
            },
        );
        self.skipped = skipped;
        self.last = (
            self.round.batches - b0,
            self.round.entries - e0,
            self.round.traced - t0,
        );
        log_info!(
            "batch: collected {} processes in {} batch calls of {} entries",
            n,
            self.last.0,
            self.last.1
        );
        snap
    }

    fn batched(&self) -> Option<(usize, usize, usize)> {
        Some(self.last)
    }
}
