//! The fastest /proc reader we can write, as the honest userspace anchor
//! for the eBPF collector: the same fields, read the way CRIU's own parser
//! reads them. A directory fd per process (`openat` relative to it, never
//! a path walk from /), every file read with one `pread` into a buffer
//! reused for the whole collection, `getdents64` into another, fields found
//! by scanning bytes, no allocation per line. What /proc cannot give any
//! cheaper stays as in [`super::proc`]: one readlink, one fdinfo read and
//! one stat per fd, smaps (the only file with vm flags) per process, and
//! kcmp for file identity.
//!
//! With [`Maps::ProcmapQuery`], mappings come from the PROCMAP_QUERY ioctl
//! on /proc/PID/maps (Linux >= 6.11) instead of smaps: one ioctl per
//! mapping and no text, but without vm flags (the ioctl reports only
//! r/w/x/shared), so those stay empty.

use super::proc::{all_pids, assemble, io_skip, resolve_tgid, sockproto, Skip};
use super::{classify, fdinfo, smaps, vanished, CollectError, Collector, Target};
use crate::model::{Fd, FileType, Prot, SigMasks, Snapshot, Task, VmFlags, Vma, PF_KTHREAD};
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Where mappings come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Maps {
    Smaps,
    ProcmapQuery,
}

pub struct ProcTuned {
    maps: Maps,
    proc: OwnedFd,
    /// File contents (smaps can be megabytes: grown as needed, kept).
    buf: Vec<u8>,
    dents: Vec<u8>,
    names: Names,
    skipped: Vec<(i32, String)>,
}

type R<T> = Result<T, Skip>;

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn skip(what: impl FnOnce() -> String, e: std::io::Error) -> Skip {
    io_skip(std::path::Path::new(&what()), e)
}

fn openat(dir: RawFd, name: &CStr, flags: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: a C string and a directory fd we hold.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(errno())
    } else {
        // SAFETY: the kernel just gave us this fd.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Reads a whole file into `buf` with pread, growing it as needed.
fn read_all(fd: &OwnedFd, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize((buf.len() * 2).max(64 * 1024), 0);
        }
        // SAFETY: the buffer has buf.len() - len bytes free at len.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[len..].as_mut_ptr().cast(),
                buf.len() - len,
                len as i64,
            )
        };
        if n < 0 {
            return Err(errno());
        }
        if n == 0 {
            return Ok(len);
        }
        len += n as usize;
    }
}

/// The numeric names in a directory (pids, tids, fds), via getdents64.
fn numeric_entries(dir: &OwnedFd, dents: &mut Vec<u8>, out: &mut Vec<u32>) -> std::io::Result<()> {
    out.clear();
    if dents.len() < 32 * 1024 {
        dents.resize(32 * 1024, 0);
    }
    loop {
        // SAFETY: getdents64 into our buffer.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                dents.as_mut_ptr(),
                dents.len(),
            )
        };
        if n < 0 {
            return Err(errno());
        }
        if n == 0 {
            return Ok(());
        }
        dirent_numbers(&dents[..n as usize], out);
    }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    b.iter().try_fold(0u64, |a, &c| {
        c.is_ascii_digit().then(|| a * 10 + (c - b'0') as u64)
    })
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    match b.first() {
        Some(b'-') => parse_u64(&b[1..]).map(|v| -(v as i64)),
        _ => parse_u64(b).map(|v| v as i64),
    }
}

fn parse_hex(b: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
}

fn readlinkat(dir: RawFd, name: &CStr, buf: &mut [u8]) -> std::io::Result<String> {
    // SAFETY: a C string and a buffer of the given length.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(errno());
    }
    Ok(String::from_utf8_lossy(&buf[..n as usize]).into_owned())
}

/// The fields of /proc/PID/stat after the comm: state, ppid, pgrp,
/// session, flags, nice, exit_signal (fs/proc/array.c, do_task_stat).
pub struct Stat<'a> {
    pub comm: &'a [u8],
    pub state: u8,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    pub flags: u32,
    pub nice: i32,
    pub exit_signal: i32,
}

pub fn parse_stat(b: &[u8]) -> Option<Stat<'_>> {
    let open = b.iter().position(|&c| c == b'(')?;
    let close = b.iter().rposition(|&c| c == b')')?;
    let mut f = b.get(close + 2..)?.split(|&c| c == b' ');
    let mut next = || f.next();
    let state = *next()?.first()?;
    let ppid = parse_i64(next()?)? as i32;
    let pgrp = parse_i64(next()?)? as i32;
    let session = parse_i64(next()?)? as i32;
    let mut nth = |skip: usize| {
        for _ in 0..skip {
            next()?;
        }
        next()
    };
    // tty_nr, tpgid, then flags.
    let flags = parse_u64(nth(2)?)? as u32;
    // minflt cminflt majflt cmajflt utime stime cutime cstime priority, nice.
    let nice = parse_i64(nth(9)?)? as i32;
    // num_threads ... (16 fields) ..., exit_signal.
    let exit_signal = parse_i64(nth(18)?)? as i32;
    Some(Stat {
        comm: &b[open + 1..close],
        state,
        ppid,
        pgrp,
        session,
        flags,
        nice,
        exit_signal,
    })
}

/// The fields of /proc/PID/status the model needs.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Status {
    pub tgid: i32,
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
    pub sig: [u64; 3],
    pub caps: [u64; 5],
}

pub fn parse_status(b: &[u8]) -> Option<Status> {
    let mut s = Status::default();
    let ids = |v: &[u8]| -> Option<[u32; 4]> {
        let mut it = v.split(|&c| c == b'\t').filter(|x| !x.is_empty());
        let mut n = || parse_u64(it.next()?).map(|x| x as u32);
        Some([n()?, n()?, n()?, n()?])
    };
    for line in b.split(|&c| c == b'\n') {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let (key, val) = (&line[..colon], line[colon + 1..].trim_ascii());
        match key {
            b"Tgid" => s.tgid = parse_i64(val)? as i32,
            b"Uid" => s.uid = ids(val)?,
            b"Gid" => s.gid = ids(val)?,
            b"Groups" => {
                s.groups = val
                    .split(|&c| c == b' ')
                    .filter(|x| !x.is_empty())
                    .map(|g| parse_u64(g).map(|g| g as u32))
                    .collect::<Option<_>>()?
            }
            b"SigBlk" => s.sig[0] = parse_hex(val)?,
            b"SigIgn" => s.sig[1] = parse_hex(val)?,
            b"SigCgt" => s.sig[2] = parse_hex(val)?,
            b"CapInh" => s.caps[0] = parse_hex(val)?,
            b"CapPrm" => s.caps[1] = parse_hex(val)?,
            b"CapEff" => s.caps[2] = parse_hex(val)?,
            b"CapBnd" => s.caps[3] = parse_hex(val)?,
            b"CapAmb" => {
                s.caps[4] = parse_hex(val)?;
                // The last line the model needs.
                return Some(s);
            }
            _ => {}
        }
    }
    Some(s)
}

/// Mapped file names, interned: a library mapped by every process is one
/// allocation.
#[derive(Default)]
pub(super) struct Names(HashMap<Box<str>, Arc<str>>);

impl Names {
    pub(super) fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(a) = self.0.get(name) {
            return a.clone();
        }
        let a: Arc<str> = name.into();
        self.0.insert(name.into(), a.clone());
        a
    }
}

/// The mappings of a smaps text, [vsyscall] left out (task_vma does not
/// visit it); None if a line has an unexpected format.
pub(super) fn smaps_vmas(names: &mut Names, text: &str) -> Option<Vec<Vma>> {
    let mut vmas: Vec<Vma> = vec![];
    // The attributes that follow a left-out mapping are not the
    // previous mapping's.
    let mut keep = false;
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let (true, Some(v)) = (keep, vmas.last_mut()) {
                v.flags = VmFlags::from_smaps(flags.split_whitespace());
            }
        } else if !line.is_empty() && !smaps::is_attribute(line) {
            let m = smaps::header(line)?;
            keep = m.name != "[vsyscall]";
            if !keep {
                continue;
            }
            let path = (!m.name.is_empty()).then(|| names.intern(&m.name));
            vmas.push(m.vma(path));
        }
    }
    Some(vmas)
}

/// A task from its stat (but for the comm, given) and status, with no fds
/// or mappings yet.
pub(super) fn task_from(
    pid: i32,
    comm: String,
    st: &Stat,
    status: Status,
    threads: Vec<i32>,
    links: [Option<String>; 3],
) -> Task {
    let [cwd, root, exe] = links;
    Task {
        pid,
        tgid: status.tgid,
        ppid: st.ppid,
        pgid: st.pgrp,
        sid: st.session,
        comm,
        state: (st.state as char).to_string(),
        threads,
        uid: status.uid.into(),
        gid: status.gid.into(),
        groups: status.groups,
        caps: status.caps.into(),
        signals: SigMasks {
            blocked: status.sig[0],
            ignored: status.sig[1],
            caught: status.sig[2],
        },
        exit_signal: st.exit_signal,
        nice: st.nice,
        kthread: st.flags & PF_KTHREAD != 0,
        cwd,
        root,
        exe,
        fd_table: None,
        fds: vec![],
        vmas: vec![],
        detail: None,
    }
}

/// An fd from its link, fdinfo and stat (and a socket's protocol).
pub(super) fn fd_from(
    fd: u32,
    path: String,
    info: &fdinfo::FdInfo,
    st: &libc::stat,
    proto: Option<&str>,
) -> Fd {
    let kind = classify::from_proc(st.st_mode, &path, proto);
    Fd {
        fd,
        kind,
        flags: info.flags,
        pos: info.pos,
        mnt_id: info.mnt_id,
        dev: st.st_dev,
        ino: info.ino,
        rdev: if matches!(kind, FileType::Chr | FileType::Blk) {
            st.st_rdev
        } else {
            0
        },
        path: path.into(),
        file_id: 0,
        eventfd: info.eventfd,
    }
}

/// The pids in a /proc/PID/task/TID/children file.
pub(super) fn child_pids(b: &[u8]) -> impl Iterator<Item = i32> + '_ {
    b.split(|&c| c == b' ')
        .filter_map(|c| parse_u64(c.trim_ascii()))
        .map(|c| c as i32)
}

/// The numeric names (pids, tids, fds) in getdents64 records.
pub(super) fn dirent_numbers(dents: &[u8], out: &mut Vec<u32>) {
    let mut off = 0usize;
    while off + 19 <= dents.len() {
        // struct linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name.
        let reclen = u16::from_ne_bytes([dents[off + 16], dents[off + 17]]) as usize;
        if reclen < 19 || off + reclen > dents.len() {
            return;
        }
        let name = &dents[off + 19..off + reclen];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if let Some(v) = parse_u64(name) {
            out.push(v as u32);
        }
        off += reclen;
    }
}

fn cname(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).expect("no NUL in a /proc name")
}

impl ProcTuned {
    pub fn new(maps: Maps) -> Result<Self, CollectError> {
        let proc = openat(libc::AT_FDCWD, c"/proc", libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| CollectError::io("/proc", e))?;
        Ok(ProcTuned {
            maps,
            proc,
            buf: vec![0; 256 * 1024],
            dents: vec![0; 32 * 1024],
            names: Names::default(),
            skipped: vec![],
        })
    }

    /// The tree's pids, through every thread's `children` file; also
    /// returns each process's threads, read on the way.
    fn tree(&mut self, root: i32) -> Vec<(i32, Vec<i32>)> {
        let mut out = vec![];
        let mut seen = HashSet::from([root]);
        let mut queue = VecDeque::from([root]);
        let mut tids = vec![];
        while let Some(pid) = queue.pop_front() {
            let Ok(task) = openat(
                self.proc.as_raw_fd(),
                &cname(&format!("{pid}/task")),
                libc::O_RDONLY | libc::O_DIRECTORY,
            ) else {
                continue;
            };
            if numeric_entries(&task, &mut self.dents, &mut tids).is_err() {
                continue;
            }
            for &tid in &tids {
                let Ok(f) = openat(
                    task.as_raw_fd(),
                    &cname(&format!("{tid}/children")),
                    libc::O_RDONLY,
                ) else {
                    continue;
                };
                let Ok(n) = read_all(&f, &mut self.buf) else {
                    continue;
                };
                for c in child_pids(&self.buf[..n]) {
                    if seen.insert(c) {
                        queue.push_back(c);
                    }
                }
            }
            let mut threads: Vec<i32> = tids.iter().map(|&t| t as i32).collect();
            threads.sort_unstable();
            out.push((pid, threads));
        }
        out
    }

    fn threads(&mut self, dir: &OwnedFd) -> std::io::Result<Vec<i32>> {
        let task = openat(dir.as_raw_fd(), c"task", libc::O_RDONLY | libc::O_DIRECTORY)?;
        let mut tids = vec![];
        numeric_entries(&task, &mut self.dents, &mut tids)?;
        let mut t: Vec<i32> = tids.into_iter().map(|t| t as i32).collect();
        t.sort_unstable();
        Ok(t)
    }

    fn read_task(&mut self, pid: i32, threads: Option<Vec<i32>>) -> R<Task> {
        let what = |f: &'static str| move || format!("/proc/{pid}/{f}");
        let dir = openat(
            self.proc.as_raw_fd(),
            &cname(&pid.to_string()),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .map_err(|e| skip(what(""), e))?;
        let bad = |f: &str| {
            Skip::Fail(CollectError::Decode(format!(
                "/proc/{pid}/{f}: unexpected format"
            )))
        };
        let f =
            openat(dir.as_raw_fd(), c"stat", libc::O_RDONLY).map_err(|e| skip(what("stat"), e))?;
        let n = read_all(&f, &mut self.buf).map_err(|e| skip(what("stat"), e))?;
        let st = parse_stat(&self.buf[..n]).ok_or_else(|| bad("stat"))?;
        // The comm out of the buffer, which the next read reuses.
        let comm = String::from_utf8_lossy(st.comm).into_owned();
        let st = Stat { comm: &[], ..st };
        let f = openat(dir.as_raw_fd(), c"status", libc::O_RDONLY)
            .map_err(|e| skip(what("status"), e))?;
        let n = read_all(&f, &mut self.buf).map_err(|e| skip(what("status"), e))?;
        let status = parse_status(&self.buf[..n]).ok_or_else(|| bad("status"))?;
        let threads = match threads {
            Some(t) => t,
            None => self.threads(&dir).map_err(|e| skip(what("task"), e))?,
        };
        let mut link = [0u8; 4096];
        let mut readlink = |name: &CStr| -> R<Option<String>> {
            match readlinkat(dir.as_raw_fd(), name, &mut link) {
                Ok(p) => Ok(Some(p)),
                Err(e) if vanished(&e) => Ok(None),
                Err(e) => Err(skip(
                    || format!("/proc/{pid}/{}", name.to_string_lossy()),
                    e,
                )),
            }
        };
        let links = [readlink(c"cwd")?, readlink(c"root")?, readlink(c"exe")?];
        let mut task = task_from(pid, comm, &st, status, threads, links);
        task.fds = self.read_fds(pid, &dir)?;
        task.vmas = match self.maps {
            Maps::Smaps => self.read_smaps(pid, &dir)?,
            Maps::ProcmapQuery => self.read_procmap(pid, &dir)?,
        };
        Ok(task)
    }

    fn read_fds(&mut self, pid: i32, dir: &OwnedFd) -> R<Vec<Fd>> {
        let what = |f: String| move || format!("/proc/{pid}/{f}");
        let fd_dir = openat(dir.as_raw_fd(), c"fd", libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| skip(what("fd".into()), e))?;
        let info_dir = openat(
            dir.as_raw_fd(),
            c"fdinfo",
            libc::O_RDONLY | libc::O_DIRECTORY,
        )
        .map_err(|e| skip(what("fdinfo".into()), e))?;
        let mut nums = vec![];
        numeric_entries(&fd_dir, &mut self.dents, &mut nums)
            .map_err(|e| skip(what("fd".into()), e))?;
        nums.sort_unstable();
        let mut link = [0u8; 4096];
        let mut fds = Vec::with_capacity(nums.len());
        for fd in nums {
            let name = cname(&fd.to_string());
            // Each step may find the fd closed meanwhile: then it is not
            // part of the snapshot.
            let path = match readlinkat(fd_dir.as_raw_fd(), &name, &mut link) {
                Ok(p) => p,
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(skip(what(format!("fd/{fd}")), e)),
            };
            let info = match openat(info_dir.as_raw_fd(), &name, libc::O_RDONLY)
                .and_then(|f| read_all(&f, &mut self.buf))
            {
                Ok(n) => fdinfo::parse_file(pid, fd, &self.buf[..n]).map_err(Skip::Fail)?,
                Err(e) if vanished(&e) => continue,
                Err(e) => return Err(skip(what(format!("fdinfo/{fd}")), e)),
            };
            // SAFETY: a stat buffer and a name relative to our fd dir.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if unsafe { libc::fstatat(fd_dir.as_raw_fd(), name.as_ptr(), &mut st, 0) } != 0 {
                let e = errno();
                if vanished(&e) {
                    continue;
                }
                return Err(skip(what(format!("fd/{fd}")), e));
            }
            let proto = if st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
                sockproto(&format!("/proc/{pid}/fd/{fd}"))
            } else {
                None
            };
            fds.push(fd_from(fd, path, &info, &st, proto.as_deref()));
        }
        Ok(fds)
    }

    fn read_smaps(&mut self, pid: i32, dir: &OwnedFd) -> R<Vec<Vma>> {
        let what = || format!("/proc/{pid}/smaps");
        let f = openat(dir.as_raw_fd(), c"smaps", libc::O_RDONLY).map_err(|e| skip(what, e))?;
        let n = read_all(&f, &mut self.buf).map_err(|e| skip(what, e))?;
        let text = String::from_utf8_lossy(&self.buf[..n]);
        smaps_vmas(&mut self.names, &text).ok_or_else(|| {
            Skip::Fail(CollectError::Decode(format!(
                "{}: unexpected format",
                what()
            )))
        })
    }

    /// PROCMAP_QUERY (include/uapi/linux/fs.h): one ioctl per mapping.
    fn read_procmap(&mut self, pid: i32, dir: &OwnedFd) -> R<Vec<Vma>> {
        #[repr(C)]
        #[derive(Default)]
        struct Query {
            size: u64,
            query_flags: u64,
            query_addr: u64,
            vma_start: u64,
            vma_end: u64,
            vma_flags: u64,
            vma_page_size: u64,
            vma_offset: u64,
            inode: u64,
            dev_major: u32,
            dev_minor: u32,
            vma_name_size: u32,
            build_id_size: u32,
            vma_name_addr: u64,
            build_id_addr: u64,
        }
        const COVERING_OR_NEXT_VMA: u64 = 0x10;
        // _IOWR('f', 17, struct procmap_query)
        const PROCMAP_QUERY: libc::c_ulong =
            (3 << 30) | ((std::mem::size_of::<Query>() as libc::c_ulong) << 16) | (0x66 << 8) | 17;
        let what = || format!("/proc/{pid}/maps");
        let f = openat(dir.as_raw_fd(), c"maps", libc::O_RDONLY).map_err(|e| skip(what, e))?;
        let mut name = [0u8; 4096];
        let mut vmas = vec![];
        let mut addr = 0u64;
        loop {
            let mut q = Query {
                size: std::mem::size_of::<Query>() as u64,
                query_flags: COVERING_OR_NEXT_VMA,
                query_addr: addr,
                vma_name_size: name.len() as u32,
                vma_name_addr: name.as_mut_ptr() as u64,
                ..Default::default()
            };
            // SAFETY: the query struct and name buffer outlive the call.
            if unsafe { libc::ioctl(f.as_raw_fd(), PROCMAP_QUERY, &mut q) } != 0 {
                let e = errno();
                match e.raw_os_error() {
                    // No mapping at or after addr: done. ESRCH: no mm
                    // (a zombie, or a process exiting meanwhile).
                    Some(libc::ENOENT) | Some(libc::ESRCH) => break,
                    Some(libc::ENOTTY) | Some(libc::EINVAL) => {
                        return Err(Skip::Fail(CollectError::Kernel(
                            "this kernel has no PROCMAP_QUERY ioctl (Linux >= 6.11): use the smaps reader".into(),
                        )))
                    }
                    _ => return Err(skip(what, e)),
                }
            }
            addr = q.vma_end;
            let n = (q.vma_name_size as usize).saturating_sub(1).min(name.len());
            let text = String::from_utf8_lossy(&name[..n]);
            if text == "[vsyscall]" {
                continue;
            }
            let file = q.inode != 0 || q.dev_major != 0 || q.dev_minor != 0;
            let path = (n > 0).then(|| self.names.intern(&text));
            vmas.push(Vma {
                start: q.vma_start,
                end: q.vma_end,
                prot: Prot {
                    read: q.vma_flags & 1 != 0,
                    write: q.vma_flags & 2 != 0,
                    exec: q.vma_flags & 4 != 0,
                },
                shared: q.vma_flags & 8 != 0,
                flags: VmFlags::default(),
                pgoff: if file { q.vma_offset } else { 0 },
                dev: libc::makedev(q.dev_major, q.dev_minor),
                ino: q.inode,
                path,
            });
        }
        Ok(vmas)
    }
}

impl Collector for ProcTuned {
    fn name(&self) -> &'static str {
        match self.maps {
            Maps::Smaps => "proc-tuned",
            Maps::ProcmapQuery => "procmap-query",
        }
    }

    fn skipped(&self) -> &[(i32, String)] {
        &self.skipped
    }

    fn collect(&mut self, target: Target) -> Result<Snapshot, CollectError> {
        let procs: Vec<(i32, Option<Vec<i32>>)> = match target {
            Target::Tree(root) => self
                .tree(resolve_tgid(root)?)
                .into_iter()
                .map(|(p, t)| (p, Some(t)))
                .collect(),
            Target::System => all_pids()?.into_iter().map(|p| (p, None)).collect(),
        };
        let mut skipped = std::mem::take(&mut self.skipped);
        let snap = assemble(
            target,
            procs,
            |pid, threads| self.read_task(pid, threads),
            &mut skipped,
        );
        self.skipped = skipped;
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        let line = b"4242 (a (b) c) S 1 4242 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 -5 3 0 123 1000 10 18446744073709551615 1 1 0 0 0 0 0 4096 16384 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, b"a (b) c");
        assert_eq!((s.state, s.ppid, s.pgrp, s.session), (b'S', 1, 4242, 4240));
        assert_eq!((s.flags, s.nice, s.exit_signal), (4194560, -5, 17));
        assert!(parse_stat(b"1 (x) S 1").is_none());
    }

    #[test]
    fn status_fields() {
        let text = b"Name:\tx\nTgid:\t7\nPid:\t7\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t10 20 \nSigBlk:\t0000000000010000\nSigIgn:\t0000000000000001\nSigCgt:\t0000000000000002\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\n";
        let s = parse_status(text).unwrap();
        assert_eq!((s.tgid, s.uid, s.gid), (7, [1, 2, 3, 4], [5, 6, 7, 8]));
        assert_eq!(s.groups, vec![10, 20]);
        assert_eq!(s.sig, [0x10000, 1, 2]);
        assert_eq!(s.caps[2], 0x1ffffffffff);
        assert!(parse_status(b"Uid:\tx\n").is_none());
        assert_eq!(
            parse_status(b"Groups:\t \n").unwrap().groups,
            Vec::<u32>::new()
        );
    }

    #[test]
    fn own_process_both_ways() {
        // (Agreement with the other collectors on a frozen tree is in
        // tests/collect.rs; this process is not frozen.)
        let me = std::process::id() as i32;
        let a = ProcTuned::new(Maps::Smaps)
            .unwrap()
            .collect(Target::Tree(me))
            .unwrap();
        let b = ProcTuned::new(Maps::ProcmapQuery)
            .unwrap()
            .collect(Target::Tree(me))
            .unwrap();
        let (x, y) = (a.task(me).unwrap(), b.task(me).unwrap());
        assert_eq!(x.comm, y.comm);
        assert!(!x.vmas.is_empty() && !x.fds.is_empty() && !y.vmas.is_empty());
        assert!(
            x.vmas.iter().any(|v| v.flags.has("gd")),
            "the stack grows down"
        );
        assert!(
            y.vmas.iter().all(|v| v.flags == VmFlags::default()),
            "PROCMAP_QUERY has no vm flags"
        );
        assert!(y.vmas.iter().any(|v| v.path.as_deref() == Some("[stack]")));
    }
}
