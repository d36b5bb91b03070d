//! Fixed-size `#[repr(C)]` records streamed by dumper's iterator programs.
//!
//! This crate is the only coupling between the kernel side (`ebpf/`) and the
//! user side (`userspace/`). Every record starts with a [`RecordHeader`]
//! holding a magic that names the record kind and version, and the record's
//! size, so a decoder built from another revision refuses the stream instead
//! of misreading it.
#![no_std]

/// `"DMP"` followed by the layout version. Bump the version on any change
/// to a record below.
pub const MAGIC_BASE: u32 = 0x444d_5000;
pub const LAYOUT_VERSION: u32 = 7;

pub const KIND_TASK: u32 = 1;
pub const KIND_FILE: u32 = 2;
pub const KIND_VMA: u32 = 3;
pub const KIND_TASK_EXT: u32 = 4;

pub const fn magic(kind: u32) -> u32 {
    MAGIC_BASE | (LAYOUT_VERSION << 4) | kind
}

/// Supplementary groups carried inline; a task with more is completed from
/// /proc by userspace (the record says how many there are).
pub const MAX_GROUPS: usize = 32;
/// Bytes of a dentry name or special-mapping name carried inline.
pub const NAME_LEN: usize = 40;
pub const COMM_LEN: usize = 16;
/// Highest pid the tree filter can hold (PID_MAX_LIMIT on 64-bit).
pub const PID_LIMIT: usize = 4 * 1024 * 1024;
pub const FILTER_WORDS: usize = PID_LIMIT / 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    pub magic: u32,
    pub size: u32,
}

impl RecordHeader {
    pub const fn new(kind: u32, size: usize) -> Self {
        RecordHeader {
            magic: magic(kind),
            size: size as u32,
        }
    }
}

/// One task (thread) as iter/task sees it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TaskRecord {
    pub hdr: RecordHeader,
    pub pid: i32,
    pub tgid: i32,
    /// tgid of `real_parent`, as /proc's PPid.
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// `task->__state` and `task->exit_state`; userspace derives the letter.
    pub state: u32,
    pub exit_state: i32,
    pub exit_signal: i32,
    pub static_prio: i32,
    /// `task->flags` (PF_KTHREAD and friends).
    pub flags: u32,
    pub comm: [u8; COMM_LEN],
    /// uid, euid, suid, fsuid, gid, egid, sgid, fsgid (init user namespace).
    pub ids: [u32; 8],
    pub ngroups: u32,
    pub _pad0: u32,
    pub groups: [u32; MAX_GROUPS],
    /// inheritable, permitted, effective, bounding, ambient.
    pub caps: [u64; 5],
    pub sig_blocked: u64,
    pub sig_ignored: u64,
    pub sig_caught: u64,
    pub mm_start_brk: u64,
    pub mm_brk: u64,
    pub mm_start_stack: u64,
    /// `(vfsmount, dentry)` pairs: keys for deduplicated path lookups. Kernel
    /// addresses: userspace never lets them out of the collector.
    pub cwd: [u64; 2],
    pub root: [u64; 2],
    pub exe: [u64; 2],
    /// `task->files`: the fd table's identity (kernel address, as above).
    pub files: u64,
}

/// One open fd as iter/task_file sees it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileRecord {
    pub hdr: RecordHeader,
    pub tgid: i32,
    /// The task the iterator visited (a thread with its own fd table may
    /// be visited besides its leader).
    pub pid: i32,
    pub fd: u32,
    pub _pad0: u32,
    /// `struct file` address: the open file description's identity.
    pub file: u64,
    pub pos: i64,
    pub ino: u64,
    pub s_magic: u64,
    /// `(vfsmount, dentry)` for the path lookup.
    pub path: [u64; 2],
    pub f_flags: u32,
    pub cloexec: u32,
    pub s_dev: u32,
    pub rdev: u32,
    pub mnt_id: i32,
    pub i_mode: u16,
    /// 1 when the file is on a kernel-internal mount (memfd's shm_mnt,
    /// pipefs, sockfs: `mount->mnt_ns == MNT_NS_INTERNAL`).
    pub internal_mount: u16,
    /// The dentry name: for sockets the protocol name ("UNIX-STREAM",
    /// "TCPv6"), for anonymous inodes the kind ("[eventfd]").
    pub name: [u8; NAME_LEN],
}

/// One mapping as iter/task_vma sees it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VmaRecord {
    pub hdr: RecordHeader,
    pub tgid: i32,
    pub pid: i32,
    pub s_dev: u32,
    /// 1 when the mapped file is on a kernel-internal shmem or hugetlbfs
    /// mount (memfd, shared anonymous memory, SysV shm): `name` then holds
    /// its dentry name, from which userspace spells the path.
    pub internal_mount: u32,
    pub start: u64,
    pub end: u64,
    pub flags: u64,
    pub pgoff: u64,
    pub ino: u64,
    /// `(vfsmount, dentry)` of the mapped file, zero for anonymous memory.
    pub path: [u64; 2],
    /// Special mapping name (`[vdso]`, `[vvar]`, ...), or the dentry name
    /// of a file on an internal mount; empty otherwise.
    pub name: [u8; NAME_LEN],
}

/// Words of `mm_struct::saved_auxv` carried (AT_VECTOR_SIZE is 52 on
/// x86-64; the build checks the kernel's fits).
pub const AUXV_WORDS: usize = 64;
pub const NSIG: usize = 64;
/// Bytes of the raw `sighand->action` table carried: 64 `k_sigaction`s of
/// at most 64 bytes (32 on x86-64; userspace decodes with the BTF offsets).
pub const ACTION_BYTES: usize = 64 * NSIG;
pub const RLIMITS: usize = 16;

/// What a dump needs of a task beyond [`TaskRecord`], emitted right after
/// it for the tasks of the filter when [`TgidFilter::detail`] is set.
/// The process-wide part (from `shared_pending` on) is filled for thread
/// group leaders only.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TaskExtRecord {
    pub hdr: RecordHeader,
    pub pid: i32,
    pub tgid: i32,
    pub pending: u64,
    /// The mask the thread returns to user space with: `saved_sigmask`
    /// while a call that sets a temporary one (sigsuspend, ppoll, pselect,
    /// epoll_pwait) is interrupted, `blocked` otherwise.
    pub blocked: u64,
    pub sas_ss_sp: u64,
    pub sas_ss_size: u64,
    pub sas_ss_flags: u32,
    pub personality: u32,
    pub rseq: u64,
    pub rseq_len: u32,
    pub rseq_sig: u32,
    /// set_tid_address(2)'s address (CLONE_CHILD_CLEARTID's), 0 if none.
    pub clear_child_tid: u64,
    pub exit_code: i32,
    /// 1 when the leader has an mm (the fields below `mm` are valid).
    pub has_mm: u32,
    /// 1 when the process is a child subreaper (PR_SET_CHILD_SUBREAPER).
    pub subreaper: u32,
    pub _pad: u32,
    pub shared_pending: u64,
    /// start_code, end_code, start_data, end_data, start_brk, brk,
    /// start_stack, arg_start, arg_end, env_start, env_end.
    pub mm: [u64; 11],
    pub auxv: [u64; AUXV_WORDS],
    /// (rlim_cur, rlim_max) per RLIMIT_* number.
    pub rlim: [u64; 2 * RLIMITS],
    pub actions: [u8; ACTION_BYTES],
}

/// The tree filter: bit `tgid` set means "emit this process's fds and
/// mappings". `all != 0` emits everything (whole-system collection).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TgidFilter {
    pub all: u64,
    /// Nonzero: also emit a [`TaskExtRecord`] for every task of the filter.
    pub detail: u64,
    pub bits: [u64; FILTER_WORDS],
}

/// The digest of the kernel BTF an object was built against lives in this
/// ELF section of the object, 8 bytes, little endian.
pub const BTF_DIGEST_SECTION: &str = ".dumper.btf";
