//! The reference collector: everything from /proc text files, through the
//! procfs crate where it covers a file (stat, status, task/, children) and
//! dumper's own parsers where it does not (fdinfo, smaps). Open file
//! description identity comes from kcmp(KCMP_FILE).

use super::{classify, fdinfo, kcmp, smaps, vanished, CollectError, Collector, Target};
use crate::model::{Caps, Fd, FileType, Ids, SigMasks, Snapshot, Task, Vma, PF_KTHREAD};
use procfs::process::Process;
use procfs::ProcError;
use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Default)]
pub struct ProcCollector {
    /// Processes a whole-system collection could not read (a non-dumpable
    /// process of another user namespace, say), with the reason. A tree
    /// collection fails instead.
    pub skipped: Vec<(i32, String)>,
}

impl ProcCollector {
    pub fn new() -> Self {
        ProcCollector::default()
    }
}

/// Why one process could not be read.
pub(super) enum Skip {
    /// It exited (or an fd closed) while being read: leave it out.
    Gone,
    Fail(CollectError),
}

impl From<ProcError> for Skip {
    fn from(e: ProcError) -> Self {
        match e {
            ProcError::NotFound(_) => Skip::Gone,
            ProcError::Io(ref io, _) if vanished(io) => Skip::Gone,
            ProcError::PermissionDenied(p) => Skip::Fail(CollectError::Privilege(format!(
                "permission denied reading {}: run dumper as root",
                p.map(|p| p.display().to_string()).unwrap_or_default()
            ))),
            other => Skip::Fail(CollectError::Decode(other.to_string())),
        }
    }
}

pub(super) fn io_skip(what: &Path, e: std::io::Error) -> Skip {
    if vanished(&e) {
        Skip::Gone
    } else {
        Skip::Fail(super::paths::link_error(what, e))
    }
}

impl Collector for ProcCollector {
    fn name(&self) -> &'static str {
        "proc"
    }

    fn skipped(&self) -> &[(i32, String)] {
        &self.skipped
    }

    fn collect_frozen(
        &mut self,
        frozen: &mut crate::freeze::Frozen,
        detail: bool,
    ) -> Result<Snapshot, CollectError> {
        let mut snap = self.collect(Target::Tree(frozen.root()))?;
        if detail {
            super::proc_detail::fill(&mut snap.tasks, frozen)?;
        }
        Ok(snap)
    }

    fn collect(&mut self, target: Target) -> Result<Snapshot, CollectError> {
        let pids = match target {
            Target::Tree(root) => tree_pids(resolve_tgid(root)?),
            Target::System => all_pids()?,
        };
        assemble(
            target,
            pids.into_iter().map(|p| (p, ())),
            |pid, ()| read_task(pid),
            &mut self.skipped,
        )
    }
}

/// A snapshot from reading each process with `read`: processes gone
/// meanwhile are left out, and so are unreadable ones of a whole-system
/// collection (listed in `skipped`); file ids from kcmp, canonical form.
/// Shared by the proc and proc-tuned collectors.
pub(super) fn assemble<P>(
    target: Target,
    procs: impl IntoIterator<Item = (i32, P)>,
    read: impl FnMut(i32, P) -> Result<Task, Skip>,
    skipped: &mut Vec<(i32, String)>,
) -> Result<Snapshot, CollectError> {
    assemble_with(target, procs, read, skipped, kcmp::description_ids)
}

/// As [`assemble`], with `ids` giving each fd its open file description's
/// id, as [`kcmp::description_ids`] does.
pub(super) fn assemble_with<P>(
    target: Target,
    procs: impl IntoIterator<Item = (i32, P)>,
    mut read: impl FnMut(i32, P) -> Result<Task, Skip>,
    skipped: &mut Vec<(i32, String)>,
    ids: impl FnOnce(&[(i32, u32, u64, u64)]) -> Result<Vec<u32>, CollectError>,
) -> Result<Snapshot, CollectError> {
    let mut snap = Snapshot::default();
    skipped.clear();
    for (pid, p) in procs {
        match read(pid, p) {
            Ok(t) => snap.tasks.push(t),
            Err(Skip::Gone) => {}
            Err(Skip::Fail(e @ CollectError::Privilege(_))) if target == Target::System => {
                skipped.push((pid, e.to_string()))
            }
            Err(Skip::Fail(e)) => return Err(e),
        }
    }
    if let Target::Tree(root) = target {
        if snap.tasks.is_empty() {
            return Err(CollectError::NoSuchProcess(root));
        }
    }
    assign_file_ids(&mut snap, ids)?;
    assign_table_ids(&mut snap);
    snap.canonicalize();
    Ok(snap)
}

/// Which live processes share an fd table (kcmp KCMP_FILES); zombies and
/// kernel threads have none. Processes that share a table have the same
/// fds on the same descriptions, so kcmp runs only among those alike:
/// in most trees none are, and it costs no call (the batch collector's
/// kernel entries stay as few as they were).
fn assign_table_ids(snap: &mut Snapshot) {
    let mut alike: HashMap<Vec<(u32, u32)>, Vec<usize>> = HashMap::new();
    for (i, t) in snap.tasks.iter().enumerate() {
        if !t.kthread && t.state != "Z" {
            let key = t.fds.iter().map(|f| (f.fd, f.file_id)).collect();
            alike.entry(key).or_default().push(i);
        }
    }
    let mut next = 0;
    let mut groups: Vec<Vec<usize>> = alike.into_values().collect();
    groups.sort();
    for g in groups {
        let pids: Vec<i32> = g.iter().map(|&i| snap.tasks[i].pid).collect();
        let ids = if g.len() > 1 {
            kcmp::table_ids(&pids)
        } else {
            vec![0]
        };
        let base = next;
        for (&i, id) in g.iter().zip(&ids) {
            snap.tasks[i].fd_table = Some(base + id);
            next = next.max(base + id + 1);
        }
    }
}

/// The process a pid names (a thread id names its thread group).
pub fn resolve_tgid(pid: i32) -> Result<i32, CollectError> {
    let status = Process::new(pid)
        .and_then(|p| p.status())
        .map_err(|_| CollectError::NoSuchProcess(pid))?;
    Ok(status.tgid)
}

/// `root` and its descendants, found through every thread's `children`
/// file (CONFIG_PROC_CHILDREN), so only the tree is read, never all of
/// /proc.
pub fn tree_pids(root: i32) -> Vec<i32> {
    let mut seen = HashSet::from([root]);
    let mut order = vec![];
    let mut queue = VecDeque::from([root]);
    while let Some(pid) = queue.pop_front() {
        order.push(pid);
        let Ok(tasks) = Process::new(pid).and_then(|p| p.tasks()) else {
            continue;
        };
        for task in tasks.flatten() {
            for child in task.children().unwrap_or_default() {
                if seen.insert(child as i32) {
                    queue.push_back(child as i32);
                }
            }
        }
    }
    order
}

pub(super) fn all_pids() -> Result<Vec<i32>, CollectError> {
    let dir = std::fs::read_dir("/proc").map_err(|e| CollectError::io("/proc", e))?;
    Ok(dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}

fn read_task(pid: i32) -> Result<Task, Skip> {
    let p = Process::new(pid)?;
    let stat = p.stat()?;
    let status = p.status()?;
    let threads: Vec<i32> = p.tasks()?.flatten().map(|t| t.tid).collect();
    log_debug!(
        "task {}: open, read, close /proc/{}/stat and /proc/{}/status; readdir /proc/{}/task ({} threads)",
        pid,
        pid,
        pid,
        pid,
        threads.len()
    );
    let base = format!("/proc/{pid}");
    // cwd, root and exe: gone for zombies (and exe for kernel threads).
    let link = |name: &str| -> Result<Option<String>, Skip> {
        let p = format!("{base}/{name}");
        let r = super::paths::readlink(Path::new(&p));
        log_debug!(
            "task {}: readlink {} = {}",
            pid,
            p,
            r.as_deref().unwrap_or("(error)")
        );
        match r {
            Ok(t) => Ok(Some(t)),
            Err(e) if vanished(&e) => Ok(None),
            Err(e) => Err(io_skip(Path::new(&p), e)),
        }
    };
    let mut task = Task {
        pid,
        tgid: status.tgid,
        ppid: stat.ppid,
        pgid: stat.pgrp,
        sid: stat.session,
        comm: stat.comm.clone(),
        state: stat.state.to_string(),
        threads,
        uid: Ids {
            real: status.ruid,
            effective: status.euid,
            saved: status.suid,
            fs: status.fuid,
        },
        gid: Ids {
            real: status.rgid,
            effective: status.egid,
            saved: status.sgid,
            fs: status.fgid,
        },
        groups: status.groups.iter().map(|&g| g as u32).collect(),
        caps: Caps {
            inheritable: status.capinh,
            permitted: status.capprm,
            effective: status.capeff,
            bounding: status.capbnd.unwrap_or(0),
            ambient: status.capamb.unwrap_or(0),
        },
        signals: SigMasks {
            blocked: status.sigblk,
            ignored: status.sigign,
            caught: status.sigcgt,
        },
        exit_signal: stat.exit_signal.unwrap_or(0),
        nice: stat.nice as i32,
        kthread: stat.flags & PF_KTHREAD != 0,
        cwd: link("cwd")?,
        root: link("root")?,
        exe: link("exe")?,
        fd_table: None,
        fds: vec![],
        vmas: vec![],
        detail: None,
    };
    task.fds = read_fds(pid)?;
    task.vmas = read_vmas(pid)?;
    Ok(task)
}

fn read_fds(pid: i32) -> Result<Vec<Fd>, Skip> {
    let dir = format!("/proc/{pid}/fd");
    let entries = match std::fs::read_dir(&dir) {
        Ok(d) => d,
        // Zombies and kernel threads list an empty directory; an error
        // here is a process gone or a permission missing.
        Err(e) => return Err(io_skip(Path::new(&dir), e)),
    };
    let mut fds = vec![];
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        match read_fd(pid, fd) {
            Ok(f) => fds.push(f),
            // Closed while we looked: not part of the snapshot.
            Err(Skip::Gone) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(fds)
}

fn read_fd(pid: i32, fd: u32) -> Result<Fd, Skip> {
    let lnk = format!("/proc/{pid}/fd/{fd}");
    let path = std::fs::read_link(&lnk).map_err(|e| io_skip(Path::new(&lnk), e))?;
    let path = path.to_string_lossy().into_owned();
    let info_path = format!("/proc/{pid}/fdinfo/{fd}");
    let text =
        std::fs::read_to_string(&info_path).map_err(|e| io_skip(Path::new(&info_path), e))?;
    let info = fdinfo::parse(&text)
        .map_err(|e| Skip::Fail(CollectError::Decode(format!("{info_path}: {e}"))))?;
    let md = std::fs::metadata(&lnk).map_err(|e| io_skip(Path::new(&lnk), e))?;
    log_debug!(
        "task {} fd {}: readlink {} = {}, read {} ({} bytes), stat",
        pid,
        fd,
        lnk,
        path,
        info_path,
        text.len()
    );
    let proto = if md.mode() & libc::S_IFMT == libc::S_IFSOCK {
        sockproto(&lnk)
    } else {
        None
    };
    let kind = classify::from_proc(md.mode(), &path, proto.as_deref());
    Ok(Fd {
        fd,
        kind,
        flags: info.flags,
        pos: info.pos,
        mnt_id: info.mnt_id,
        dev: md.dev(),
        ino: info.ino,
        rdev: if matches!(kind, FileType::Chr | FileType::Blk) {
            md.rdev()
        } else {
            0
        },
        path: path.into(),
        // Raw identity is filled by assign_file_ids.
        file_id: 0,
        eventfd: info.eventfd,
    })
}

/// The socket's protocol name (`system.sockprotoname`, net/socket.c).
pub(super) fn sockproto(link: &str) -> Option<String> {
    let c = std::ffi::CString::new(link).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: valid C string and buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"system.sockprotoname".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return None;
    }
    let s = &buf[..n as usize];
    let s = s.split(|&b| b == 0).next().unwrap_or(s);
    Some(String::from_utf8_lossy(s).into_owned())
}

fn read_vmas(pid: i32) -> Result<Vec<Vma>, Skip> {
    let path = format!("/proc/{pid}/smaps");
    let text = std::fs::read_to_string(&path).map_err(|e| io_skip(Path::new(&path), e))?;
    log_debug!("task {}: read {} ({} bytes)", pid, path, text.len());
    let maps = smaps::parse(&text)
        .map_err(|e| Skip::Fail(CollectError::Decode(format!("{path}: {e}"))))?;
    Ok(maps
        .into_iter()
        // The gate page is not a vma of the mm (task_vma never sees it) and
        // no restore can create it: it is in every process already.
        .filter(|m| m.name != "[vsyscall]")
        .map(|m| m.vma((!m.name.is_empty()).then(|| m.name.as_ref().into())))
        .collect())
}

/// Gives every fd a raw description id (kcmp-equal fds share one); the
/// snapshot's canonical ids are derived from these.
pub(super) fn assign_file_ids(
    snap: &mut Snapshot,
    ids: impl FnOnce(&[(i32, u32, u64, u64)]) -> Result<Vec<u32>, CollectError>,
) -> Result<(), CollectError> {
    let all: Vec<(i32, u32, u64, u64)> = snap
        .tasks
        .iter()
        .flat_map(|t| t.fds.iter().map(move |f| (t.pid, f.fd, f.dev, f.ino)))
        .collect();
    let ids = ids(&all)?;
    let mut it = ids.into_iter();
    for t in &mut snap.tasks {
        for f in &mut t.fds {
            f.file_id = it.next().unwrap_or(0);
        }
    }
    Ok(())
}
