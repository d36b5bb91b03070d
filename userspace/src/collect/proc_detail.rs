//! The proc collector's dump detail, without eBPF: /proc/PID/stat (mm
//! fields, exit code), auxv, limits, personality and each thread's status
//! (signal masks), PTRACE_GET_RSEQ_CONFIGURATION, and, for what no file
//! shows (signal handlers, sigaltstack, the current brk), system calls
//! run inside the stopped threads by a stub that finishes by itself if
//! dumper dies ([`crate::remote`]): rt_sigaction, sigaltstack and brk.

use super::bpf_detail::auxv_until_null;
use super::CollectError;
use crate::freeze::Frozen;
use crate::model::{
    AltStack, MmFields, Rlimit, SigAction, Task, TaskDetail, ThreadDetail, NLIMITS, NSIG,
};
use crate::ptrace;
use crate::remote::{self, Arg, Call, Stub};
use std::collections::HashMap;

const SS_ONSTACK: u32 = 1;

/// Fills `detail` for every task of `snap` from /proc and the frozen
/// threads.
pub fn fill(tasks: &mut [Task], frozen: &mut Frozen) -> Result<(), CollectError> {
    for t in tasks.iter_mut() {
        if t.kthread {
            continue;
        }
        t.detail = Some(task_detail(t, frozen)?);
    }
    Ok(())
}

fn kernel(pid: i32, what: &str, e: i32) -> CollectError {
    CollectError::Kernel(format!(
        "process {pid}: {what}: {}",
        std::io::Error::from_raw_os_error(e)
    ))
}

fn read(path: String) -> Result<String, CollectError> {
    std::fs::read_to_string(&path).map_err(|e| CollectError::io(path, e))
}

/// A `SigXxx:` mask line of a status file.
fn status_mask(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

fn task_detail(t: &Task, frozen: &mut Frozen) -> Result<TaskDetail, CollectError> {
    let pid = t.pid;
    let stat = procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map_err(|e| CollectError::Decode(format!("/proc/{pid}/stat: {e}")))?;
    let mut d = TaskDetail {
        exit_code: stat.exit_code.unwrap_or(0),
        ..Default::default()
    };
    if t.state == "Z" {
        // What a zombie keeps is its exit status (and its ids, in Task).
        return Ok(d);
    }
    let status = read(format!("/proc/{pid}/status"))?;
    d.shared_pending = status_mask(&status, "ShdPnd:");
    d.rlimits = limits(&read(format!("/proc/{pid}/limits"))?, pid)?;
    d.personality = u32::from_str_radix(read(format!("/proc/{pid}/personality"))?.trim(), 16)
        .map_err(|e| CollectError::Decode(format!("/proc/{pid}/personality: {e}")))?;
    let auxv = std::fs::read(format!("/proc/{pid}/auxv"))
        .map_err(|e| CollectError::io(format!("/proc/{pid}/auxv"), e))?;
    let words: Vec<u64> = auxv
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let o = |v: Option<u64>| v.unwrap_or(0);
    let mut mm = MmFields {
        start_code: stat.startcode,
        end_code: stat.endcode,
        start_data: o(stat.start_data),
        end_data: o(stat.end_data),
        start_brk: o(stat.start_brk),
        brk: 0,
        start_stack: stat.startstack,
        arg_start: o(stat.arg_start),
        arg_end: o(stat.arg_end),
        env_start: o(stat.env_start),
        env_end: o(stat.env_end),
        auxv: auxv_until_null(&words),
    };

    let vdso = t
        .vmas
        .iter()
        .find(|v| v.path.as_deref() == Some("[vdso]"))
        .ok_or_else(|| {
            CollectError::Kernel(format!(
                "process {pid} has no [vdso] mapping to run system calls from: dump it with --collect=bpf"
            ))
        })?;
    let threads = t.threads.clone();
    let leader = threads
        .first()
        .copied()
        .filter(|&x| x == pid)
        .unwrap_or(pid);
    // A thread's stack must lie in one private writable mapping.
    let floor = |addr: u64| {
        t.vmas
            .iter()
            .find(|v| v.start <= addr && addr < v.end)
            .filter(|v| v.prot.read && v.prot.write && !v.shared)
            .map(|v| (v.start, v.flags.has("gd")))
    };
    let remote = |e: remote::RemoteError, tid: i32| {
        CollectError::Kernel(format!(
            "thread {tid} of process {pid}: {e} (the proc collector runs rt_sigaction, sigaltstack, brk and prctl inside the stopped threads; --collect=bpf runs nothing)"
        ))
    };

    let stub = Stub::place(pid, (vdso.start, vdso.end)).map_err(|e| remote(e, pid))?;
    let mut stacks: HashMap<i32, AltStack> = HashMap::new();
    let mut tid_addrs: HashMap<i32, u64> = HashMap::new();
    let altstack = |b: &[u8]| {
        // stack_t: ss_sp, ss_flags (int, padded), ss_size.
        let w = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        AltStack {
            sp: w(0),
            size: w(16),
            flags: (w(8) as u32) & !SS_ONSTACK,
        }
    };
    for &tid in &threads {
        let seccomp =
            status_mask(&read(format!("/proc/{pid}/task/{tid}/status"))?, "Seccomp:") != 0;
        let mut calls = vec![];
        let mut buf_len = 24;
        if tid == leader {
            // The process-wide state: handlers, brk.
            for sig in 1..=NSIG {
                let at = Arg::Buf(24 + (sig - 1) * 32);
                calls.push(Call::new(
                    libc::SYS_rt_sigaction,
                    &[Arg::Val(sig as u64), Arg::Val(0), at, Arg::Val(8)],
                ));
            }
            calls.push(Call::new(libc::SYS_brk, &[Arg::Val(0)]));
            buf_len += NSIG * 32;
        }
        calls.push(Call::new(
            libc::SYS_sigaltstack,
            &[Arg::Val(0), Arg::Buf(0)],
        ));
        // Per thread: the clear-child-tid address (CONFIG_CHECKPOINT_RESTORE);
        // the leader: whether the process is a subreaper.
        let tid_at = buf_len;
        calls.push(Call::new(
            libc::SYS_prctl,
            &[Arg::Val(libc::PR_GET_TID_ADDRESS as u64), Arg::Buf(tid_at)],
        ));
        buf_len += 8;
        let sub_at = buf_len;
        if tid == leader {
            calls.push(Call::new(
                libc::SYS_prctl,
                &[
                    Arg::Val(libc::PR_GET_CHILD_SUBREAPER as u64),
                    Arg::Buf(sub_at),
                ],
            ));
            buf_len += 8;
        }
        let ran = remote::run(&stub, tid, floor, &calls, &vec![0; buf_len], seccomp)
            .map_err(|e| remote(e, tid))?;
        frozen.hold_signals(tid, ran.caught);
        frozen.not_the_trees(pid, ran.fresh);
        if let Some((i, r)) = ran
            .results
            .iter()
            .enumerate()
            .find(|(i, &r)| r < 0 && calls[*i].nr != libc::SYS_brk)
        {
            let name = match calls[i].nr {
                libc::SYS_sigaltstack => "sigaltstack",
                libc::SYS_prctl => "prctl",
                _ => "rt_sigaction",
            };
            return Err(kernel(tid, name, -*r as i32));
        }
        stacks.insert(tid, altstack(&ran.buf[..24]));
        let word = |at: usize| u64::from_le_bytes(ran.buf[at..at + 8].try_into().unwrap());
        tid_addrs.insert(tid, word(tid_at));
        if tid == leader {
            // PR_GET_CHILD_SUBREAPER stores an int.
            d.subreaper = word(sub_at) as u32 != 0;
            d.sigactions = ran.buf[24..24 + NSIG * 32]
                .chunks_exact(32)
                .map(SigAction::from_kernel)
                .collect();
            mm.brk = ran.results[NSIG] as u64;
        }
    }
    // A failed run returned above and left the stub in place: a thread
    // may still be inside it (it finishes it once released); inert after.
    stub.remove().map_err(|e| remote(e, pid))?;

    for &tid in &threads {
        let st = read(format!("/proc/{pid}/task/{tid}/status"))?;
        d.threads.push(ThreadDetail {
            tid,
            blocked: status_mask(&st, "SigBlk:"),
            pending: status_mask(&st, "SigPnd:"),
            altstack: stacks.get(&tid).copied().unwrap_or_default(),
            rseq: ptrace::rseq(tid).map_err(|e| kernel(tid, "PTRACE_GET_RSEQ_CONFIGURATION", e))?,
            clear_child_tid: tid_addrs.get(&tid).copied().unwrap_or_default(),
        });
    }
    d.mm = Some(mm);
    Ok(d)
}

/// /proc/PID/limits: a header, then per limit its name in 25 columns, the
/// soft and hard values in 20 each ("unlimited" or a number), and units.
fn limits(text: &str, pid: i32) -> Result<Vec<Rlimit>, CollectError> {
    let value = |s: &str| -> Result<u64, CollectError> {
        let s = s.trim();
        if s == "unlimited" {
            Ok(u64::MAX)
        } else {
            s.parse()
                .map_err(|_| CollectError::Decode(format!("/proc/{pid}/limits: bad value {s:?}")))
        }
    };
    let out = text
        .lines()
        .skip(1)
        .map(|l| {
            let soft = l.get(25..45).unwrap_or("");
            let hard = l.get(45..65).unwrap_or("");
            Ok(Rlimit {
                cur: value(soft)?,
                max: value(hard)?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if out.len() != NLIMITS {
        return Err(CollectError::Decode(format!(
            "/proc/{pid}/limits: {} limits where {NLIMITS} were expected",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_by_column() {
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        let l = limits(&text, 0).unwrap();
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
        assert_eq!(l[libc::RLIMIT_NOFILE as usize].cur, r.rlim_cur);
        assert_eq!(l[libc::RLIMIT_NOFILE as usize].max, r.rlim_max);
        unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut r) };
        assert_eq!(l[libc::RLIMIT_STACK as usize].cur, r.rlim_cur);
    }
}
