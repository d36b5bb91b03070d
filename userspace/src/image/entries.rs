//! The entries of an image directory. Field order is wire order: postcard
//! has no tags, so a change here is a new [`super::FORMAT_VERSION`].

use crate::model::Snapshot;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// dumper's version that wrote the image.
    pub dumper: String,
    /// Nanoseconds since the epoch at the end of the dump.
    pub created_unix_ns: u64,
    /// `uname -r` of the dumped machine.
    pub kernel: String,
    /// The collector that gathered the state (`bpf` or `proc`).
    pub collector: String,
    /// The tree's root pid.
    pub root: i32,
    /// Every other file of the directory.
    pub files: Vec<FileSum>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub name: String,
    pub size: u64,
    /// xxh3-128 of the whole file, 32 hex digits.
    pub xxh3_128: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Every process with its detail (canonical form).
    pub snapshot: Snapshot,
    /// Every thread of every live process, by tid.
    pub threads: Vec<ThreadState>,
    /// Signals queued for a whole thread group: (tgid, siginfo records).
    pub shared_siginfo: Vec<SigQueue>,
    /// Threads that were in a job-control stop (state T) when frozen, with
    /// the signal that stopped them: (tid, signal). The snapshot shows
    /// every thread as `t`, frozen.
    pub job_stopped: Vec<(i32, i32)>,
    /// What each pipe of the tree held, by inode.
    pub pipes: Vec<PipeData>,
    /// Each unix socket of the tree, by inode.
    pub sockets: Vec<UnixSocket>,
}

/// A unix socket: its type (SOCK_STREAM, ...), its peer (sock_diag's),
/// whether it is bound to a name, and the bytes queued for it to read
/// (stream sockets; peeked, not taken).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnixSocket {
    pub ino: u64,
    pub kind: u32,
    pub peer: u64,
    pub peer_in_tree: bool,
    pub bound: bool,
    pub data: Vec<u8>,
}

/// The bytes buffered in a pipe at the dump, copied without taking them
/// (tee(2)), and its capacity (F_GETPIPE_SZ).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeData {
    pub ino: u64,
    pub capacity: u32,
    pub data: Vec<u8>,
}

/// x86-64 `struct user_regs_struct`, in its order ([`REG_NAMES`]).
pub const NREGS: usize = 27;
pub const REG_NAMES: [&str; NREGS] = [
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
    "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs",
    "gs",
];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadState {
    pub tid: i32,
    /// The general-purpose registers as the thread must resume with them
    /// (an interrupted system call already set up to restart), fs_base and
    /// gs_base included.
    pub regs: Vec<u64>,
    /// The XSAVE area (PTRACE_GETREGSET NT_X86_XSTATE).
    pub xstate: Vec<u8>,
    /// Signals queued for this thread: 128-byte siginfo records in order.
    pub siginfo: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigQueue {
    pub tgid: i32,
    pub siginfo: Vec<u8>,
}

/// Where page contents are: pages `[at, at + pages)` of `pages.img` hold
/// the range starting at `addr`. Two ranges may name the same pages of
/// `pages.img`: that is how one saved copy serves many processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRange {
    /// A virtual address, or for shared memory objects a byte offset into
    /// the object.
    pub addr: u64,
    pub pages: u64,
    pub at: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Private pages of each process (anonymous memory, and pages of
    /// private file mappings that differ from the file).
    pub processes: Vec<ProcessPages>,
    /// Contents of shared memory objects (shared anonymous mappings,
    /// memfd, SysV shm), once each, by the (dev, ino) that fds and
    /// mappings name them with.
    pub shmem: Vec<ShmemObject>,
    /// Pages of pages.img (for `show`).
    pub pages_written: u64,
    /// Pages referred to more than once: copy-on-write pages shared since
    /// a fork, found by physical frame and saved once.
    pub pages_shared: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessPages {
    pub pid: i32,
    /// Ascending by address.
    pub ranges: Vec<PageRange>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShmemObject {
    pub dev: u64,
    pub ino: u64,
    /// Bytes.
    pub size: u64,
    pub ranges: Vec<PageRange>,
}
