//! What a restore needs beyond what /proc shows at a glance: signal
//! handlers, the mm's layout fields, limits, and per-thread signal state.
//! Collected only for dumps (and `compare --detail`): the bpf collector
//! reads it from kernel structures, the proc collector from /proc files
//! and system calls injected into the stopped tasks.

use serde::{Deserialize, Serialize};

/// Signals 1..=64.
pub const NSIG: usize = 64;
/// RLIMIT_NLIMITS on Linux.
pub const NLIMITS: usize = 16;

/// One signal's disposition, as the kernel's `struct k_sigaction` (and
/// rt_sigaction(2)'s kernel-side `struct sigaction`) holds it on x86-64.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    /// SIG_DFL (0), SIG_IGN (1) or the handler's address.
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

impl SigAction {
    /// From the 32 bytes rt_sigaction(2) writes (handler, flags,
    /// restorer, mask, each 8 bytes little endian).
    pub fn from_kernel(b: &[u8]) -> SigAction {
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        SigAction {
            handler: w(0),
            flags: w(1),
            restorer: w(2),
            mask: w(3),
        }
    }
}

/// The mm's layout fields (`struct mm_struct`; /proc/PID/stat fields 26-28
/// and 45-51 show most of them), and the saved auxiliary vector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// (type, value) pairs up to and including AT_NULL.
    pub auxv: Vec<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// u64::MAX is RLIM_INFINITY.
    pub cur: u64,
    pub max: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AltStack {
    pub sp: u64,
    pub size: u64,
    /// SS_AUTODISARM and friends; SS_DISABLE when none is set.
    pub flags: u32,
}

/// The rseq registration (PTRACE_GET_RSEQ_CONFIGURATION's fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rseq {
    /// Address of the thread's `struct rseq`, 0 when unregistered.
    pub addr: u64,
    pub len: u32,
    pub sig: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadDetail {
    pub tid: i32,
    /// Bit n-1 for signal n.
    pub blocked: u64,
    /// Pending for this thread only.
    pub pending: u64,
    pub altstack: AltStack,
    pub rseq: Rseq,
    /// set_tid_address(2)'s address: the word the kernel clears (and
    /// wakes a futex on) when the thread exits, which pthread_join waits
    /// on. 0 when none.
    pub clear_child_tid: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDetail {
    /// Index n-1 for signal n.
    pub sigactions: Vec<SigAction>,
    /// Pending for the whole thread group.
    pub shared_pending: u64,
    /// None for zombies.
    pub mm: Option<MmFields>,
    /// Indexed by RLIMIT_* number.
    pub rlimits: Vec<Rlimit>,
    pub personality: u32,
    /// The leader's exit code (a zombie's wait status), else 0.
    pub exit_code: i32,
    /// A child subreaper (PR_SET_CHILD_SUBREAPER): orphans below it come
    /// to it rather than to init.
    pub subreaper: bool,
    /// Sorted by tid.
    pub threads: Vec<ThreadDetail>,
}
