//! Counting one thread's system calls for real: a raw_syscalls:sys_enter
//! program (ebpf/, `dumper_count_syscalls`) that counts the calls of the
//! thread named in a map. The benchmark's "system calls per collection".

use super::bpf::open_object;
use super::CollectError;
use aya::maps::{Array, PerCpuArray};
use aya::programs::RawTracePoint;
use aya::Ebpf;

pub struct SyscallCounter {
    ebpf: Ebpf,
}

fn kernel(what: &str, e: impl std::fmt::Display) -> CollectError {
    CollectError::Kernel(format!("syscall counter: {what}: {e}"))
}

impl SyscallCounter {
    /// Loads and attaches the counter; it counts nothing until [`watch`].
    ///
    /// [`watch`]: SyscallCounter::watch
    pub fn load() -> Result<Self, CollectError> {
        let (mut ebpf, _) = open_object()?;
        let prog: &mut RawTracePoint = ebpf
            .program_mut("dumper_count_syscalls")
            .ok_or_else(|| kernel("program missing from the object", "rebuild dumper"))?
            .try_into()
            .map_err(|e| kernel("program type", e))?;
        prog.load().map_err(|e| kernel("load", e))?;
        prog.attach("sys_enter")
            .map_err(|e| kernel("attach to sys_enter", e))?;
        Ok(SyscallCounter { ebpf })
    }

    /// Counts the system calls of thread `tid` from now on (0: none).
    pub fn watch(&mut self, tid: u32) -> Result<(), CollectError> {
        let map = self
            .ebpf
            .map_mut("COUNT_TID")
            .ok_or_else(|| kernel("map COUNT_TID", "missing"))?;
        let mut a: Array<_, u32> = Array::try_from(map).map_err(|e| kernel("COUNT_TID", e))?;
        a.set(0, tid, 0).map_err(|e| kernel("COUNT_TID", e))
    }

    /// The calls counted so far.
    pub fn count(&self) -> Result<u64, CollectError> {
        let map = self
            .ebpf
            .map("SYSCALLS")
            .ok_or_else(|| kernel("map SYSCALLS", "missing"))?;
        let a: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| kernel("SYSCALLS", e))?;
        let v = a.get(&0, 0).map_err(|e| kernel("SYSCALLS", e))?;
        Ok(v.iter().sum())
    }
}

/// The calling thread's id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_threads_calls() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (BPF)");
            return;
        }
        let mut c = SyscallCounter::load().unwrap();
        c.watch(gettid()).unwrap();
        let before = c.count().unwrap();
        for _ in 0..100 {
            unsafe { libc::getppid() };
        }
        let n = c.count().unwrap() - before;
        // 100 getppid calls, plus the bpf() reading the count.
        assert!((100..=102).contains(&n), "{n}");
        c.watch(0).unwrap();
    }
}
