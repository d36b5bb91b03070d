//! The state model: one snapshot of a process tree, filled by every
//! collector, diffed by `compare`, and (later) serialized into images.
//!
//! Everything here is plain data. Kernel addresses never appear: open file
//! descriptions are named by [`Fd::file_id`], a small id that
//! [`Snapshot::canonicalize`] makes independent of the collector.

mod detail;
mod file_type;
mod prot;
mod task_state;
mod vm_flags;

pub use detail::*;
pub use file_type::FileType;
pub use prot::Prot;
pub use task_state::state_letter;
pub use vm_flags::{VmFlags, RESTORE_FLAGS};

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// One entry per process (thread group), sorted by pid.
    pub tasks: Vec<Task>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    pub real: u32,
    pub effective: u32,
    pub saved: u32,
    pub fs: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

impl From<[u32; 4]> for Ids {
    /// From real, effective, saved, fs: the order of /proc's `Uid:` line
    /// and of `struct cred`.
    fn from([real, effective, saved, fs]: [u32; 4]) -> Self {
        Ids {
            real,
            effective,
            saved,
            fs,
        }
    }
}

impl From<[u64; 5]> for Caps {
    /// From inheritable, permitted, effective, bounding, ambient: the order
    /// of /proc's `Cap*:` lines.
    fn from([inheritable, permitted, effective, bounding, ambient]: [u64; 5]) -> Self {
        Caps {
            inheritable,
            permitted,
            effective,
            bounding,
            ambient,
        }
    }
}

/// Signal sets, bit `n-1` for signal `n`, as /proc/PID/status prints them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigMasks {
    /// The thread-group leader's blocked mask.
    pub blocked: u64,
    pub ignored: u64,
    pub caught: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub pid: i32,
    pub tgid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    /// The kernel's letter: R, S, D, T, t, X, Z, P, I.
    pub state: String,
    /// Every thread id of the process, the leader's included, ascending.
    pub threads: Vec<i32>,
    pub uid: Ids,
    pub gid: Ids,
    pub groups: Vec<u32>,
    pub caps: Caps,
    pub signals: SigMasks,
    pub exit_signal: i32,
    pub nice: i32,
    /// Kernel thread (no user memory, nothing to restore).
    pub kthread: bool,
    /// None when the process has none (zombies, kernel threads).
    pub cwd: Option<String>,
    pub root: Option<String>,
    pub exe: Option<String>,
    /// The fd table: equal exactly when processes share one (CLONE_FILES);
    /// numbered by first appearance. None for zombies and kernel threads.
    pub fd_table: Option<u32>,
    /// Sorted by fd number.
    pub fds: Vec<Fd>,
    /// Sorted by start address.
    pub vmas: Vec<Vma>,
    /// Only when asked for (dumps): see [`TaskDetail`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<TaskDetail>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fd {
    pub fd: u32,
    #[serde(rename = "type")]
    pub kind: FileType,
    /// The open flags as fdinfo reports them: the description's f_flags,
    /// plus O_CLOEXEC when this fd has close-on-exec set.
    pub flags: u32,
    pub pos: i64,
    pub mnt_id: i32,
    /// Device of the filesystem holding the inode (userspace dev_t).
    pub dev: u64,
    pub ino: u64,
    /// Device number for character and block devices, else 0.
    pub rdev: u64,
    /// As readlink(/proc/PID/fd/N) shows it: a path, or `pipe:[ino]`,
    /// `socket:[ino]`, `anon_inode:[eventfd]`, ... (Shared: many fds and
    /// mappings name one file.)
    pub path: Arc<str>,
    /// Equal exactly when two fds refer to one open file description.
    pub file_id: u32,
    /// An eventfd's counter and semaphore mode (fdinfo's `eventfd-count`
    /// and `eventfd-semaphore`); None for other files.
    pub eventfd: Option<Eventfd>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eventfd {
    pub count: u64,
    /// EFD_SEMAPHORE.
    pub semaphore: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: Prot,
    /// MAP_SHARED (VM_MAYSHARE; /proc/PID/maps's `s`).
    pub shared: bool,
    /// The restore-relevant vm flags (see [`RESTORE_FLAGS`]).
    pub flags: VmFlags,
    /// Byte offset into the mapped file, 0 for anonymous memory (as maps).
    pub pgoff: u64,
    pub dev: u64,
    pub ino: u64,
    /// The file's path, or `[heap]`, `[stack]`, `[vdso]`, `[vvar]`,
    /// `[vvar_vclock]`; None for anonymous memory.
    pub path: Option<Arc<str>>,
}

impl Snapshot {
    /// Puts the snapshot in its one canonical form: tasks by pid, threads,
    /// fds and vmas sorted, and file ids renumbered 0, 1, 2... in order of
    /// first appearance (by pid, then fd). Two collectors that see the same
    /// sharing of open file descriptions then produce identical ids,
    /// whatever raw identities (kernel addresses, kcmp order) they used.
    pub fn canonicalize(&mut self) {
        self.tasks.sort_by_key(|t| t.pid);
        let mut ids: HashMap<u32, u32> = HashMap::new();
        let mut tables: HashMap<u32, u32> = HashMap::new();
        for t in &mut self.tasks {
            if let Some(ft) = &mut t.fd_table {
                let next = tables.len() as u32;
                *ft = *tables.entry(*ft).or_insert(next);
            }
            t.threads.sort_unstable();
            t.fds.sort_by_key(|f| f.fd);
            t.vmas.sort_by_key(|v| v.start);
            if let Some(d) = &mut t.detail {
                d.threads.sort_by_key(|x| x.tid);
            }
            for f in &mut t.fds {
                let next = ids.len() as u32;
                f.file_id = *ids.entry(f.file_id).or_insert(next);
            }
        }
    }

    pub fn task(&self, pid: i32) -> Option<&Task> {
        self.tasks
            .binary_search_by_key(&pid, |t| t.pid)
            .ok()
            .map(|i| &self.tasks[i])
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        let fds = self.tasks.iter().map(|t| t.fds.len()).sum();
        let vmas = self.tasks.iter().map(|t| t.vmas.len()).sum();
        (self.tasks.len(), fds, vmas)
    }
}

/// `task->flags` bit of kernel threads (include/linux/sched.h).
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// The kernel's `struct super_block::s_dev` (major << 20 | minor) as a
/// userspace dev_t, which is what stat(2) and /proc show.
pub fn kdev_to_dev(kdev: u32) -> u64 {
    libc::makedev(kdev >> 20, kdev & 0xfffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(n: u32, id: u32) -> Fd {
        Fd {
            fd: n,
            file_id: id,
            ..Default::default()
        }
    }

    #[test]
    fn canonical_ids_follow_first_appearance() {
        let mut s = Snapshot {
            tasks: vec![
                Task {
                    pid: 20,
                    fds: vec![fd(1, 900), fd(0, 77)],
                    ..Default::default()
                },
                Task {
                    pid: 10,
                    fds: vec![fd(3, 77), fd(4, 5)],
                    ..Default::default()
                },
            ],
        };
        s.canonicalize();
        let ids: Vec<(i32, u32, u32)> = s
            .tasks
            .iter()
            .flat_map(|t| t.fds.iter().map(move |f| (t.pid, f.fd, f.file_id)))
            .collect();
        assert_eq!(ids, vec![(10, 3, 0), (10, 4, 1), (20, 0, 0), (20, 1, 2)]);
    }

    #[test]
    fn kernel_dev_encoding() {
        // fe:00 is /dev/vda here; 0:1 is the shmem internal mount.
        assert_eq!(kdev_to_dev(0xfe << 20), 0xfe00);
        assert_eq!(kdev_to_dev(1), 1);
        assert_eq!(kdev_to_dev((8 << 20) | 0x123), libc::makedev(8, 0x123));
    }
}
