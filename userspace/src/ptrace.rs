//! ptrace requests on frozen (seized and stopped) threads: registers,
//! extended state, rseq configuration, queued siginfo. System calls run
//! inside a stopped thread are [`crate::remote`]'s.
//!
//! x86-64 only, like the rest of dumper.

use crate::model::Rseq;
use std::time::{Duration, Instant};

pub type Regs = libc::user_regs_struct;

const NT_PRSTATUS: usize = 1;
const NT_X86_XSTATE: usize = 0x202;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
/// Large enough for any XSAVE layout (AMX's is about 11 KiB).
const XSTATE_MAX: usize = 64 * 1024;
pub const SIGINFO_SIZE: usize = 128;
/// `status >> 16` of an interrupt or group stop of a seized thread.
pub const PTRACE_EVENT_STOP: i32 = 128;
/// Syscall stops report SIGTRAP | 0x80: the option every tracee has.
pub const PTRACE_O_TRACESYSGOOD: libc::c_long = 1;
/// How long a thread may take to reach a stop dumper waits for.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A ptrace request whose addr and data are integers or pointers the
/// caller keeps valid.
///
/// # Safety
/// `addr` and `data` must be what `req` expects.
unsafe fn raw(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> Result<libc::c_long, i32> {
    // SAFETY: per the caller.
    let r = unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    };
    let r = if r < 0 { Err(errno()) } else { Ok(r) };
    log_debug!(
        "thread {} ptrace({:#x}, {:#x}, {:#x}) = {}",
        tid,
        req,
        addr,
        data,
        match r {
            Ok(v) => v,
            Err(e) => -(e as i64),
        }
    );
    r
}

/// Waits for `tid`'s next stop for up to `timeout`: Ok(Some(status)), or
/// Ok(None) on time-out. Polls (WNOHANG) so that a thread that never
/// stops cannot hang dumper: yielding for the first millisecond, where a
/// resumed thread's syscall stop almost always arrives, then sleeping.
pub fn wait_stop(tid: i32, timeout: Duration) -> Result<Option<i32>, i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own tracee.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
        if r == tid {
            return Ok(Some(status));
        }
        if r < 0 {
            return Err(errno());
        }
        let waited = start.elapsed();
        if waited > timeout {
            return Ok(None);
        }
        if waited < Duration::from_millis(1) {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// Requests that take integers only (SEIZE, INTERRUPT, DETACH, SYSCALL).
pub fn request(req: libc::c_uint, tid: i32, data: libc::c_long) -> Result<(), i32> {
    // SAFETY: addr is null and data an integer for these requests.
    unsafe { raw(req, tid, 0, data as usize) }.map(|_| ())
}

fn getregset(tid: i32, note: usize, buf: &mut [u8]) -> Result<usize, i32> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the iovec points into buf; the kernel shortens iov_len.
    unsafe {
        raw(
            libc::PTRACE_GETREGSET,
            tid,
            note,
            &mut iov as *mut _ as usize,
        )
    }?;
    Ok(iov.iov_len)
}

pub fn regs(tid: i32) -> Result<Regs, i32> {
    // SAFETY: user_regs_struct is integers only.
    let mut r: Regs = unsafe { std::mem::zeroed() };
    // SAFETY: viewing the struct as its bytes, which the kernel fills.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(&mut r as *mut Regs as *mut u8, size_of::<Regs>())
    };
    let n = getregset(tid, NT_PRSTATUS, bytes)?;
    if n != size_of::<Regs>() {
        return Err(libc::EIO);
    }
    Ok(r)
}

fn setregset(tid: i32, note: usize, bytes: &[u8]) -> Result<(), i32> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: the iovec points at bytes, which the kernel only reads.
    unsafe {
        raw(
            libc::PTRACE_SETREGSET,
            tid,
            note,
            &mut iov as *mut _ as usize,
        )
    }
    .map(|_| ())
}

pub fn set_regs(tid: i32, r: &Regs) -> Result<(), i32> {
    // SAFETY: viewing the struct as its bytes, which the kernel reads.
    let bytes =
        unsafe { std::slice::from_raw_parts(r as *const Regs as *const u8, size_of::<Regs>()) };
    setregset(tid, NT_PRSTATUS, bytes)
}

/// The thread's XSAVE area (FPU, SSE, AVX, ...), as long as the CPU's.
pub fn xstate(tid: i32) -> Result<Vec<u8>, i32> {
    // One scratch buffer of the largest size, reused: a fresh 64 KiB per
    // thread costs its page faults every time (30 us a thread, measured).
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; XSTATE_MAX]);
    }
    BUF.with_borrow_mut(|buf| {
        let n = getregset(tid, NT_X86_XSTATE, buf)?;
        Ok(buf[..n].to_vec())
    })
}

/// Sets the XSAVE area [`xstate`] read (same CPU features: the kernel
/// refuses a layout it does not know).
pub fn set_xstate(tid: i32, x: &[u8]) -> Result<(), i32> {
    setregset(tid, NT_X86_XSTATE, x)
}

pub fn rseq(tid: i32) -> Result<Rseq, i32> {
    #[repr(C)]
    #[derive(Default)]
    struct Conf {
        rseq_abi_pointer: u64,
        rseq_abi_size: u32,
        signature: u32,
        flags: u32,
        pad: u32,
    }
    let mut c = Conf::default();
    // SAFETY: addr is the buffer size, data the buffer.
    unsafe {
        raw(
            PTRACE_GET_RSEQ_CONFIGURATION,
            tid,
            size_of::<Conf>(),
            &mut c as *mut Conf as usize,
        )
    }?;
    Ok(Rseq {
        addr: c.rseq_abi_pointer,
        len: c.rseq_abi_size,
        sig: c.signature,
    })
}

/// The queued siginfo of a thread (or, `shared`, of its thread group), in
/// queue order, 128 bytes each.
pub fn queued_siginfo(tid: i32, shared: bool) -> Result<Vec<u8>, i32> {
    #[repr(C)]
    struct Args {
        off: u64,
        flags: u32,
        nr: i32,
    }
    let mut out = vec![];
    let mut buf = vec![0u8; 32 * SIGINFO_SIZE];
    loop {
        let mut a = Args {
            off: (out.len() / SIGINFO_SIZE) as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: 32,
        };
        // SAFETY: addr is the argument block, data a buffer of nr entries.
        let n = unsafe {
            raw(
                PTRACE_PEEKSIGINFO,
                tid,
                &mut a as *mut Args as usize,
                buf.as_mut_ptr() as usize,
            )
        }? as usize;
        out.extend_from_slice(&buf[..n * SIGINFO_SIZE]);
        if n < 32 {
            return Ok(out);
        }
    }
}

/// A signal taken off a thread's queue by a signal-delivery stop while it
/// was frozen: its number and its 128-byte siginfo (PTRACE_GETSIGINFO).
#[derive(Clone, Debug)]
pub struct Caught {
    pub sig: i32,
    pub info: Vec<u8>,
}

/// The signal `tid` stopped with at a signal-delivery stop.
pub fn caught(tid: i32, sig: i32) -> Result<Caught, i32> {
    let mut info = vec![0u8; SIGINFO_SIZE];
    // SAFETY: data is a buffer of a siginfo's size.
    unsafe { raw(libc::PTRACE_GETSIGINFO, tid, 0, info.as_mut_ptr() as usize) }?;
    Ok(Caught { sig, info })
}

const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;
const NR_RESTART_SYSCALL: u64 = 219;

/// The registers a thread stopped inside a system call must resume with
/// when it returns to user space without the kernel's own restart logic:
/// in a saved image (a restored process), or when the remote stub returns
/// by itself after dumper's death. What
/// arch/x86/kernel/signal.c does when no handler runs: re-execute the
/// interrupted call, or restart_syscall(2) for a restart block (which, in
/// a process that lacks the block, returns EINTR).
pub fn resume_regs(r: &Regs) -> Regs {
    let mut r = *r;
    if (r.orig_rax as i64) >= 0 {
        match -(r.rax as i64) {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                r.rax = r.orig_rax;
                r.rip -= 2;
            }
            ERESTART_RESTARTBLOCK => {
                r.rax = NR_RESTART_SYSCALL;
                r.rip -= 2;
            }
            _ => {}
        }
    }
    // Not in a system call any more, so nothing restarts twice.
    r.orig_rax = u64::MAX;
    r
}

/// Where thread `tid` goes if it is stopped at `rip` inside the critical
/// section its rseq area names: the section's abort handler, where the
/// kernel sends a thread it preempted or stopped there on its way back
/// (kernel/rseq.c, rseq_ip_fixup). None outside a section, or when the
/// kernel would kill the thread instead (a bad signature before the
/// handler). A thread is saved and resumed at that address: the section
/// restarts, as it would have anyway.
///
/// `known` is the thread's rseq registration when the caller has it (the
/// dump's detail), saving a ptrace request.
pub fn rseq_abort_ip(tid: i32, rip: u64, known: Option<Rseq>) -> Option<u64> {
    let conf = known.or_else(|| rseq(tid).ok()).filter(|c| c.addr != 0)?;
    let read = |addr: u64, len: usize| read_mem(tid, addr, len).ok().filter(|b| b.len() == len);
    let word = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    // struct rseq: cpu_id_start, cpu_id (u32 each), then rseq_cs.
    let cs = word(&read(conf.addr, 16)?, 8);
    // struct rseq_cs: version, flags (u32), start_ip, post_commit_offset,
    // abort_ip.
    let c = read(cs, 32).filter(|_| cs != 0)?;
    let (start, len, abort) = (word(&c, 8), word(&c, 16), word(&c, 24));
    if !(start..start.saturating_add(len)).contains(&rip) {
        return None;
    }
    let sig = read(abort.wrapping_sub(4), 4)?;
    (u32::from_le_bytes(sig[..4].try_into().unwrap()) == conf.sig).then_some(abort)
}

/// Copies `len` bytes at `addr` of process `pid` with process_vm_readv.
pub fn read_mem(pid: i32, addr: u64, len: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: local points into buf; remote is only read by the kernel.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs_in_syscall(rax: i64) -> Regs {
        let mut r: Regs = unsafe { std::mem::zeroed() };
        r.orig_rax = 35; // nanosleep
        r.rax = rax as u64;
        r.rip = 0x1002;
        r
    }

    #[test]
    fn interrupted_calls_resume_as_the_kernel_resumes_them() {
        let r = resume_regs(&regs_in_syscall(-ERESTARTSYS));
        assert_eq!((r.rax, r.rip, r.orig_rax), (35, 0x1000, u64::MAX));
        let r = resume_regs(&regs_in_syscall(-ERESTART_RESTARTBLOCK));
        assert_eq!((r.rax, r.rip), (NR_RESTART_SYSCALL, 0x1000));
        // A finished call returns its result.
        let r = resume_regs(&regs_in_syscall(-4));
        assert_eq!((r.rax as i64, r.rip), (-4, 0x1002));
        // Outside a system call nothing changes but orig_rax.
        let mut u = regs_in_syscall(-ERESTARTSYS);
        u.orig_rax = u64::MAX;
        let r = resume_regs(&u);
        assert_eq!((r.rax as i64, r.rip), (-ERESTARTSYS, 0x1002));
    }
}
