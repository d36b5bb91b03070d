//! The bpf collector's dump detail: [`TaskExtRecord`]s, which the task
//! program emits after the task records of the tree when the filter asks
//! for them, turned into [`TaskDetail`]s.

use super::bpf::{record, Record};
use super::CollectError;
use crate::model::{AltStack, MmFields, Rlimit, Rseq, SigAction, TaskDetail, ThreadDetail};
use dumper_common::*;
use std::collections::HashMap;

/// The kernel offsets the eBPF object was built with: the raw action table
/// is decoded with them.
#[allow(dead_code)]
mod k {
    include!(concat!(env!("OUT_DIR"), "/kernel_offsets.rs"));
}

// SAFETY: #[repr(C)], integers and integer arrays only.
unsafe impl Record for TaskExtRecord {
    const KIND: u32 = KIND_TASK_EXT;
}

/// The details of a task stream read with the detail flag on, by tgid
/// (task records are skipped: the extensions follow them).
pub fn from_stream(buf: &[u8]) -> Result<HashMap<i32, TaskDetail>, CollectError> {
    let mut out: HashMap<i32, TaskDetail> = HashMap::new();
    let mut at = 0;
    let (ts, es) = (size_of::<TaskRecord>(), size_of::<TaskExtRecord>());
    while at < buf.len() {
        let rest = &buf[at..];
        let kind = rest
            .get(..4)
            .map(|m| u32::from_le_bytes(m.try_into().unwrap()))
            .unwrap_or(0);
        if kind == magic(KIND_TASK) && rest.len() >= ts {
            at += ts;
        } else if kind == magic(KIND_TASK_EXT) && rest.len() >= es {
            let e: TaskExtRecord = record(&rest[..es])?;
            let d = out.entry(e.tgid).or_default();
            d.threads.push(thread(&e));
            if e.pid == e.tgid {
                process(&e, d);
            }
            at += es;
        } else {
            return Err(CollectError::Decode(format!(
                "task stream with detail: no task or extension record at byte {at} of {} (magic {kind:#x}): userspace and eBPF object disagree, rebuild dumper",
                buf.len()
            )));
        }
    }
    Ok(out)
}

fn thread(e: &TaskExtRecord) -> ThreadDetail {
    ThreadDetail {
        tid: e.pid,
        blocked: e.blocked,
        pending: e.pending,
        altstack: AltStack {
            sp: e.sas_ss_sp,
            size: e.sas_ss_size,
            flags: altstack_flags(e),
        },
        rseq: Rseq {
            addr: e.rseq,
            len: e.rseq_len,
            sig: e.rseq_sig,
        },
        clear_child_tid: e.clear_child_tid,
    }
}

const SS_ONSTACK: u32 = 1;
const SS_DISABLE: u32 = 2;

/// sigaltstack(2)'s view of the kernel's fields (kernel/signal.c,
/// do_sigaltstack and sas_ss_flags): SS_DISABLE without a stack, the
/// stored flags (SS_AUTODISARM) otherwise. SS_ONSTACK is left out on both
/// sides: it says where the stack pointer is now, which the registers
/// already hold, and nothing restores it.
fn altstack_flags(e: &TaskExtRecord) -> u32 {
    if e.sas_ss_size == 0 {
        SS_DISABLE
    } else {
        e.sas_ss_flags & !(SS_ONSTACK | SS_DISABLE)
    }
}

fn process(e: &TaskExtRecord, d: &mut TaskDetail) {
    let stride = k::K_SIGACTION_SIZE as usize;
    let field = |base: usize, f: (u64, usize)| {
        let o = base + f.0 as usize;
        u64::from_le_bytes(e.actions[o..o + 8].try_into().unwrap())
    };
    d.sigactions = (0..NSIG)
        .map(|i| {
            let b = i * stride;
            SigAction {
                handler: field(b, k::K_SIGACTION__SA__SA_HANDLER),
                flags: field(b, k::K_SIGACTION__SA__SA_FLAGS),
                restorer: field(b, k::K_SIGACTION__SA__SA_RESTORER),
                mask: field(b, k::K_SIGACTION__SA__SA_MASK),
            }
        })
        .collect();
    d.shared_pending = e.shared_pending;
    d.rlimits = e
        .rlim
        .chunks_exact(2)
        .map(|c| Rlimit {
            cur: c[0],
            max: c[1],
        })
        .collect();
    d.personality = e.personality;
    d.exit_code = e.exit_code;
    d.subreaper = e.subreaper != 0;
    d.mm = (e.has_mm != 0).then(|| {
        let [start_code, end_code, start_data, end_data, start_brk, brk, start_stack, arg_start, arg_end, env_start, env_end] =
            e.mm;
        MmFields {
            start_code,
            end_code,
            start_data,
            end_data,
            start_brk,
            brk,
            start_stack,
            arg_start,
            arg_end,
            env_start,
            env_end,
            auxv: auxv_until_null(&e.auxv),
        }
    });
}

/// The (type, value) pairs up to and including AT_NULL, as /proc/PID/auxv
/// shows them.
pub fn auxv_until_null(words: &[u64]) -> Vec<u64> {
    let mut out = vec![];
    for p in words.chunks_exact(2) {
        out.extend_from_slice(p);
        if p[0] == 0 {
            break;
        }
    }
    out
}
