//! The proc collector's dump detail, without eBPF: /proc/PID/stat (mm
//! fields, exit code), auxv, limits, personality and each thread's status
//! (signal masks), PTRACE_GET_RSEQ_CONFIGURATION, and, for what no file
//! shows (signal handlers, sigaltstack, the current brk), system calls
//! run inside the stopped threads ([`Remote`]): rt_sigaction, sigaltstack
//! and brk write into a scratch page mmap'ed into the process for the
//! purpose and unmapped again before the process runs.

use super::bpf_detail::auxv_until_null;
use super::CollectError;
use crate::freeze::Frozen;
use crate::model::{
    AltStack, MmFields, Rlimit, SigAction, Task, TaskDetail, ThreadDetail, NLIMITS, NSIG,
};
use crate::ptrace::{self, Remote};
use std::collections::HashMap;

const PAGE: u64 = 4096;
const SS_ONSTACK: u32 = 1;

/// Fills `detail` for every task of `snap` from /proc and the frozen
/// threads.
pub fn fill(tasks: &mut [Task], frozen: &mut Frozen) -> Result<(), CollectError> {
    // One vdso image per boot: where its syscall instruction sits is
    // found once and reused at each process's vdso address.
    let mut insn_offset: Option<u64> = None;
    for t in tasks.iter_mut() {
        if t.kthread {
            continue;
        }
        t.detail = Some(task_detail(t, frozen, &mut insn_offset)?);
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

fn task_detail(
    t: &Task,
    frozen: &mut Frozen,
    insn_offset: &mut Option<u64>,
) -> Result<TaskDetail, CollectError> {
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
    let at = match *insn_offset {
        Some(off) => vdso.start + off,
        None => {
            let a = ptrace::find_syscall_insn(pid, vdso.start, vdso.end)
                .map_err(|e| kernel(pid, "finding a syscall instruction in the vdso", e))?;
            *insn_offset = Some(a - vdso.start);
            a
        }
    };
    let threads = t.threads.clone();
    let leader = threads
        .first()
        .copied()
        .filter(|&x| x == pid)
        .unwrap_or(pid);

    // The leader maps the scratch page and runs the process-wide calls.
    let mut remote = Remote::new(leader, at).map_err(|e| kernel(pid, "taking registers", e))?;
    let call = |r: &mut Remote, nr: libc::c_long, args: [u64; 6], what: &str| {
        r.syscall(nr, args).map_err(|e| kernel(pid, what, e))
    };
    let scratch = call(
        &mut remote,
        libc::SYS_mmap,
        [
            0,
            PAGE * 2,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
        "mmap of a scratch page",
    )?;
    if !(0..(1i64 << 47)).contains(&scratch) {
        return Err(kernel(pid, "mmap of a scratch page", -scratch as i32));
    }
    let scratch = scratch as u64;
    let result = (|| {
        for sig in 1..=NSIG as u64 {
            let r = call(
                &mut remote,
                libc::SYS_rt_sigaction,
                [sig, 0, scratch + (sig - 1) * 32, 8, 0, 0],
                "rt_sigaction",
            )?;
            if r != 0 {
                return Err(kernel(pid, &format!("rt_sigaction({sig})"), -r as i32));
            }
        }
        mm.brk = call(&mut remote, libc::SYS_brk, [0; 6], "brk")? as u64;
        let acts = ptrace::read_mem(pid, scratch, NSIG * 32)
            .map_err(|e| kernel(pid, "reading the scratch page", e))?;
        d.sigactions = acts.chunks_exact(32).map(SigAction::from_kernel).collect();

        let mut stacks: HashMap<i32, AltStack> = HashMap::new();
        for &tid in &threads {
            let slot = scratch + PAGE;
            let args = [0, slot, 0, 0, 0, 0];
            let r = if tid == leader {
                call(&mut remote, libc::SYS_sigaltstack, args, "sigaltstack")?
            } else {
                let mut other =
                    Remote::new(tid, at).map_err(|e| kernel(tid, "taking registers", e))?;
                let r = call(&mut other, libc::SYS_sigaltstack, args, "sigaltstack")?;
                let caught = other
                    .finish()
                    .map_err(|e| kernel(tid, "restoring registers", e))?;
                frozen.hold_signals(tid, caught);
                r
            };
            if r != 0 {
                return Err(kernel(tid, "sigaltstack", -r as i32));
            }
            // stack_t: ss_sp, ss_flags (int, padded), ss_size.
            let b = ptrace::read_mem(pid, slot, 24)
                .map_err(|e| kernel(pid, "reading the scratch page", e))?;
            let w = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
            stacks.insert(
                tid,
                AltStack {
                    sp: w(0),
                    size: w(16),
                    flags: (w(8) as u32) & !SS_ONSTACK,
                },
            );
        }
        Ok(stacks)
    })();
    // Unmapped whatever happened above.
    let unmapped = call(
        &mut remote,
        libc::SYS_munmap,
        [scratch, PAGE * 2, 0, 0, 0, 0],
        "munmap",
    );
    let caught = remote
        .finish()
        .map_err(|e| kernel(pid, "restoring registers", e))?;
    frozen.hold_signals(leader, caught);
    let stacks = result?;
    unmapped?;

    for &tid in &threads {
        let st = read(format!("/proc/{pid}/task/{tid}/status"))?;
        d.threads.push(ThreadDetail {
            tid,
            blocked: status_mask(&st, "SigBlk:"),
            pending: status_mask(&st, "SigPnd:"),
            altstack: stacks.get(&tid).copied().unwrap_or_default(),
            rseq: ptrace::rseq(tid).map_err(|e| kernel(tid, "PTRACE_GET_RSEQ_CONFIGURATION", e))?,
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
