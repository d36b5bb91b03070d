//! Each thread's CPU state and queued signals, read with ptrace from the
//! frozen threads (the same for both collectors: only the tracer can read
//! registers).

use super::DumpError;
use crate::freeze::Frozen;
use crate::image::{SigQueue, ThreadState, NREGS};
use crate::model::Snapshot;
use crate::ptrace;

fn err(tid: i32, what: &str, e: i32) -> DumpError {
    DumpError::Kernel(format!(
        "thread {tid}: {what}: {}",
        std::io::Error::from_raw_os_error(e)
    ))
}

/// A thread's queued signals start with those the freezer took off its
/// queue (see [`Frozen::dequeued`]).
pub fn collect(
    snap: &Snapshot,
    frozen: &Frozen,
) -> Result<(Vec<ThreadState>, Vec<SigQueue>), DumpError> {
    let mut threads = vec![];
    let mut shared = vec![];
    for t in snap.tasks.iter().filter(|t| !t.kthread && t.state != "Z") {
        for &tid in &t.threads {
            let mut r = ptrace::regs(tid).map_err(|e| err(tid, "registers", e))?;
            let rseq = t
                .detail
                .as_ref()
                .and_then(|d| d.threads.iter().find(|x| x.tid == tid))
                .map(|x| x.rseq);
            if let Some(abort) = ptrace::rseq_abort_ip(tid, r.rip, rseq) {
                r.rip = abort;
            }
            let r = ptrace::resume_regs(&r);
            // SAFETY: user_regs_struct is NREGS u64s.
            let words: [u64; NREGS] = unsafe { std::mem::transmute(r) };
            threads.push(ThreadState {
                tid,
                regs: words.to_vec(),
                xstate: ptrace::xstate(tid).map_err(|e| err(tid, "extended state", e))?,
                siginfo: [
                    frozen.dequeued(tid),
                    ptrace::queued_siginfo(tid, false)
                        .map_err(|e| err(tid, "queued signals", e))?,
                ]
                .concat(),
            });
        }
        let q = ptrace::queued_siginfo(t.pid, true)
            .map_err(|e| err(t.pid, "queued group signals", e))?;
        if !q.is_empty() {
            shared.push(SigQueue {
                tgid: t.pid,
                siginfo: q,
            });
        }
    }
    threads.sort_by_key(|t| t.tid);
    Ok((threads, shared))
}
