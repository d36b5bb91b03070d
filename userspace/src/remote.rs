//! System calls run inside a stopped thread, in a way that survives
//! dumper's death at any instant (SIGKILL included).
//!
//! The naive way (point the thread's registers at a `syscall` instruction,
//! resume it to the syscall's exit stop, put the registers back) leaves the
//! thread with borrowed registers if the tracer dies in between: the
//! kernel detaches it (kernel/ptrace.c, exit_ptrace) and it runs on from
//! wherever the borrowed instruction pointer was, and crashes. So here the
//! thread runs a small stub that finishes the job by itself:
//!
//! - The stub ([`STUB`]) is written once per process into the zero padding
//!   after the end of the vdso's ELF image (through /proc/PID/mem, which
//!   copies the page on write as it does for a debugger's breakpoint). The
//!   program never executes those bytes, so a stub left there is inert.
//! - Below the thread's stack pointer and its 128-byte red zone go the
//!   thread's own registers (as it must resume with them, see
//!   [`resume_regs`]), a table of calls and their buffers. The area below
//!   the red zone is free by the ABI: signal delivery writes there too.
//! - The stub runs the calls in order, each result stored back into its
//!   table slot, then pops every register from the save area, flags
//!   included, and returns with `ret $128` to the thread's own instruction
//!   pointer with its own stack pointer. No kernel state is involved, so
//!   this works the same traced or not.
//! - The first call blocks every signal and the last puts the thread's
//!   mask back, so nothing reaches a handler while the stub runs.
//!
//! While dumper lives it steps the thread from syscall stop to syscall
//! stop, and at the last exit stop sets the registers back itself and
//! restores the stack bytes. If dumper dies at any point, the thread runs
//! the rest of the stub and goes on as if nothing happened.
//!
//! What the stub calls must be harmless queries: a dying dumper cannot
//! stop them. Threads under seccomp get PTRACE_O_SUSPEND_SECCOMP while
//! dumper steps them; a stub finishing after dumper's death runs under the
//! thread's filter again.

use crate::pagemap::{self, PAGE};
use crate::ptrace::{
    self, errno, regs, request, resume_regs, set_regs, wait_stop, Regs, PTRACE_EVENT_STOP,
    PTRACE_O_TRACESYSGOOD, STOP_TIMEOUT,
};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

std::arch::global_asm!(
    // Data, not code, in dumper: copied into the target and run there.
    ".pushsection .rodata.dumper_remote_stub,\"a\"",
    ".balign 16",
    ".globl dumper_remote_stub_start",
    "dumper_remote_stub_start:",
    // rbx: the next call's slot {nr, a0..a5}, r12: calls left, r13: the
    // save area.
    ".Lnext:",
    "test r12, r12",
    "jz .Ldone",
    "mov rax, [rbx]",
    "mov rdi, [rbx + 8]",
    "mov rsi, [rbx + 16]",
    "mov rdx, [rbx + 24]",
    "mov r10, [rbx + 32]",
    "mov r8, [rbx + 40]",
    "mov r9, [rbx + 48]",
    "syscall",
    "mov [rbx], rax",
    "add rbx, 56",
    "dec r12",
    "jmp .Lnext",
    ".Ldone:",
    "mov rsp, r13",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rbp",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbx",
    "pop rax",
    "popfq",
    // The return address sits just below the red zone.
    "ret 128",
    ".globl dumper_remote_stub_end",
    "dumper_remote_stub_end:",
    ".popsection",
);

extern "C" {
    static dumper_remote_stub_start: u8;
    static dumper_remote_stub_end: u8;
}

/// The stub's machine code.
pub fn stub_code() -> &'static [u8] {
    // SAFETY: both symbols label the same rodata blob, start before end.
    unsafe {
        let start = &raw const dumper_remote_stub_start;
        let end = &raw const dumper_remote_stub_end;
        std::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

const RED_ZONE: u64 = 128;
/// A signal frame's size, generously (AMX's XSAVE area is about 11 KiB).
const FRAME_ROOM: u64 = 16 * 1024;
/// The general-purpose registers the stub pops (all but rsp), then flags
/// and the return address.
const SAVED_WORDS: u64 = 15 + 2;
const SLOT: u64 = 56;
const PTRACE_O_SUSPEND_SECCOMP: libc::c_long = 1 << 21;

/// An argument of a call: a value, or the address of a byte offset into
/// the call's buffer.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Val(u64),
    Buf(usize),
}

impl Arg {
    /// The value the thread sees, its buffer at `buf`.
    fn raw(self, buf: u64) -> u64 {
        match self {
            Arg::Val(v) => v,
            Arg::Buf(off) => buf + off as u64,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub nr: libc::c_long,
    pub args: [Arg; 6],
}

impl Call {
    pub fn new(nr: libc::c_long, args: &[Arg]) -> Call {
        let mut a = [Arg::Val(0); 6];
        a[..args.len()].copy_from_slice(args);
        Call { nr, args: a }
    }
}

/// Why a remote call failed: what, and the errno.
#[derive(Debug)]
pub struct RemoteError {
    pub what: &'static str,
    pub errno: i32,
}

impl RemoteError {
    fn new(what: &'static str, errno: i32) -> RemoteError {
        RemoteError { what, errno }
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.what,
            std::io::Error::from_raw_os_error(self.errno)
        )
    }
}

/// The stub placed in one process's vdso.
pub struct Stub {
    mem: std::fs::File,
    addr: u64,
    len: usize,
}

/// Where the vdso's ELF image ends (section headers, program headers and
/// loaded segments), from its header in the target's memory.
fn elf_end(image: &[u8]) -> Option<u64> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(image.get(o..o + 2)?.try_into().ok()?) as u64);
    let u64_at = |o: usize| Some(u64::from_le_bytes(image.get(o..o + 8)?.try_into().ok()?));
    if image.get(..4)? != b"\x7fELF" || image.get(4)? != &2 {
        return None;
    }
    let (phoff, shoff) = (u64_at(0x20)?, u64_at(0x28)?);
    let (phentsize, phnum) = (u16_at(0x36)?, u16_at(0x38)?);
    let (shentsize, shnum) = (u16_at(0x3a)?, u16_at(0x3c)?);
    let mut end = (phoff + phentsize * phnum).max(shoff + shentsize * shnum);
    for i in 0..phnum {
        let p = (phoff + i * phentsize) as usize;
        // p_offset at +8, p_filesz at +32, p_memsz at +40.
        end = end.max(u64_at(p + 8)? + u64_at(p + 32)?.max(u64_at(p + 40)?));
    }
    Some(end)
}

impl Stub {
    /// Writes the stub near the end of `pid`'s vdso `[start, end)`, into
    /// bytes past its ELF image that are all zero, or hold this same stub
    /// already (left by a dumper that was killed).
    pub fn place(pid: i32, vdso: (u64, u64)) -> Result<Stub, RemoteError> {
        let code = stub_code();
        let image = ptrace::read_mem(pid, vdso.0, (vdso.1 - vdso.0) as usize)
            .map_err(|e| RemoteError::new("reading the vdso", e))?;
        let image_end = elf_end(&image).unwrap_or(u64::MAX);
        let fits = |off: usize| {
            let b = &image[off..off + code.len()];
            off as u64 >= image_end && (b.iter().all(|&x| x == 0) || b == code)
        };
        let last = (image.len() - code.len()) & !15;
        let Some(off) = (0..=last).rev().step_by(16).find(|&o| fits(o)) else {
            return Err(RemoteError::new(
                "finding unused bytes at the end of the vdso",
                libc::ENOSPC,
            ));
        };
        let addr = vdso.0 + off as u64;
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|e| RemoteError::new("opening /proc/PID/mem", io_errno(&e)))?;
        mem.write_all_at(code, addr)
            .map_err(|e| RemoteError::new("writing the stub into the vdso", io_errno(&e)))?;
        Ok(Stub {
            mem,
            addr,
            len: code.len(),
        })
    }

    /// Zeroes the stub's bytes again.
    pub fn remove(self) -> Result<(), RemoteError> {
        self.mem
            .write_all_at(&vec![0; self.len], self.addr)
            .map_err(|e| RemoteError::new("removing the stub from the vdso", io_errno(&e)))
    }
}

fn io_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// What a run gives back: each call's return value (negative errno on
/// failure), the buffer as the calls left it, and the signals that
/// arrived before the thread's signals were blocked (for the freezer to
/// send again at release), and the stack pages that were not present
/// before the run (bits 63 and 62 of pagemap clear): zero-filled, they are
/// the run's, not the thread's, and are left out of the dump.
pub struct Ran {
    pub results: Vec<i64>,
    pub buf: Vec<u8>,
    pub caught: Vec<ptrace::Caught>,
    pub fresh: Vec<u64>,
}

/// Counts syscall stops across runs, for `DUMPER_FAULT=remote-stop:N`:
/// dumper then stops at the Nth stop (0: registers set, thread not yet
/// resumed) and waits to be killed. How the tests kill dumper at an exact
/// point of a run.
static STOPS: AtomicUsize = AtomicUsize::new(0);

fn fault_point() {
    let n = STOPS.fetch_add(1, Ordering::Relaxed);
    let Ok(spec) = std::env::var("DUMPER_FAULT") else {
        return;
    };
    if spec
        .strip_prefix("remote-stop:")
        .and_then(|s| s.parse().ok())
        == Some(n)
    {
        eprintln!("dumper: fault injected: waiting at remote stop {n}");
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

/// Runs `calls` in stopped thread `tid` of the process whose stub is
/// `stub`, with `buf` (its initial contents) below the thread's stack.
/// `stack_floor` gives the start of the writable mapping the thread's
/// stack pointer is in and whether it grows down: the run refuses to
/// write below it. With `seccomp`, the
/// thread's filters are suspended while dumper steps it.
pub fn run(
    stub: &Stub,
    tid: i32,
    stack_floor: impl Fn(u64) -> Option<(u64, bool)>,
    calls: &[Call],
    buf: &[u8],
    seccomp: bool,
) -> Result<Ran, RemoteError> {
    let mut saved = regs(tid).map_err(|e| RemoteError::new("reading registers", e))?;
    // Inside an rseq critical section, the kernel would send the thread to
    // the section's abort handler on its way back; seeing the stub's
    // address instead, it would only clear rseq_cs. So the thread is
    // given the handler's address here.
    if let Some(abort) = ptrace::rseq_abort_ip(tid, saved.rip, None) {
        saved.rip = abort;
    }
    let resume = resume_regs(&saved);
    let sp = saved.rsp;

    // Layout, downwards from the red zone: return address, flags, the 15
    // registers (r15 lowest), the call table, the buffer (with two signal
    // masks after the caller's bytes), then the stub's own stack.
    let ret_slot = sp - RED_ZONE - 8;
    let save = ret_slot + 8 - SAVED_WORDS * 8;
    let ncalls = calls.len() + 2;
    let table = (save - ncalls as u64 * SLOT) & !15;
    let masks_at = buf.len().next_multiple_of(8);
    let buf_len = masks_at + 16;
    let buf_addr = (table - buf_len as u64) & !15;
    let stub_sp = (buf_addr - 64) & !15;
    // Below the stub's stack, room for a signal frame (with the XSAVE
    // area): a signal that arrives before the first call, after dumper's
    // death, is delivered there. A growsdown stack makes its own room.
    match stack_floor(sp - 1) {
        Some((floor, grows)) if floor <= stub_sp && (grows || floor + FRAME_ROOM <= stub_sp) => {}
        _ => {
            return Err(RemoteError::new(
                "finding room on the thread's stack below its stack pointer",
                libc::ENOSPC,
            ))
        }
    }

    let mut area = vec![0u8; (ret_slot + 8 - stub_sp) as usize];
    let put = |area: &mut [u8], at: u64, v: u64| {
        let o = (at - stub_sp) as usize;
        area[o..o + 8].copy_from_slice(&v.to_le_bytes());
    };
    let r = &resume;
    let popped = [
        r.r15, r.r14, r.r13, r.r12, r.r11, r.r10, r.r9, r.r8, r.rbp, r.rdi, r.rsi, r.rdx, r.rcx,
        r.rbx, r.rax, r.eflags, r.rip,
    ];
    for (i, v) in popped.iter().enumerate() {
        put(&mut area, save + 8 * i as u64, *v);
    }
    let b0 = (buf_addr - stub_sp) as usize;
    area[b0..b0 + buf.len()].copy_from_slice(buf);
    put(&mut area, buf_addr + masks_at as u64, u64::MAX);
    let full = Arg::Buf(masks_at);
    let old = Arg::Buf(masks_at + 8);
    let mut program = vec![Call::new(
        libc::SYS_rt_sigprocmask,
        &[Arg::Val(libc::SIG_SETMASK as u64), full, old, Arg::Val(8)],
    )];
    program.extend_from_slice(calls);
    program.push(Call::new(
        libc::SYS_rt_sigprocmask,
        &[
            Arg::Val(libc::SIG_SETMASK as u64),
            old,
            Arg::Val(0),
            Arg::Val(8),
        ],
    ));
    for (i, c) in program.iter().enumerate() {
        let slot = table + i as u64 * SLOT;
        put(&mut area, slot, c.nr as u64);
        for (j, a) in c.args.iter().enumerate() {
            put(&mut area, slot + 8 * (j as u64 + 1), a.raw(buf_addr));
        }
    }

    // Pages of the area the thread has never touched: the run makes them
    // present (zero-filled again afterwards), the dump must not save them.
    let first_page = stub_sp & !(PAGE - 1);
    let end_page = (ret_slot + 8).next_multiple_of(PAGE);
    let fresh = std::fs::File::open(format!("/proc/{tid}/pagemap"))
        .and_then(|f| pagemap::entries(&f, first_page, end_page))
        .map_err(|e| RemoteError::new("reading the thread's pagemap", io_errno(&e)))?
        .into_iter()
        .enumerate()
        .filter(|(_, e)| e & (pagemap::PRESENT | pagemap::SWAP) == 0)
        .map(|(i, _)| first_page + i as u64 * PAGE)
        .collect();

    // The bytes the area covers, put back after the run.
    let before = ptrace::read_mem(tid, stub_sp, area.len())
        .map_err(|e| RemoteError::new("reading the thread's stack", e))?;
    write_mem(tid, stub_sp, &area)
        .map_err(|e| RemoteError::new("writing the thread's stack", e))?;

    if seccomp {
        request(
            libc::PTRACE_SETOPTIONS,
            tid,
            PTRACE_O_TRACESYSGOOD | PTRACE_O_SUSPEND_SECCOMP,
        )
        .map_err(|e| RemoteError::new("suspending seccomp (PTRACE_O_SUSPEND_SECCOMP)", e))?;
    }
    let mut start: Regs = saved;
    start.rip = stub.addr;
    start.rsp = stub_sp;
    start.rbx = table;
    start.r12 = ncalls as u64;
    start.r13 = save;
    // Not in a system call: no restart on the way out of this stop.
    start.orig_rax = u64::MAX;
    set_regs(tid, &start).map_err(|e| RemoteError::new("setting registers", e))?;
    // From here on the thread finishes the stub by itself if dumper dies.
    fault_point();
    let mut caught = vec![];
    for _ in 0..ncalls * 2 {
        to_syscall_stop(tid, &mut caught)?;
        fault_point();
    }
    // At the last exit stop the stub has stored every result but the
    // last one, which is still in rax.
    let last = regs(tid)
        .map_err(|e| RemoteError::new("reading registers", e))?
        .rax as i64;
    let mut table_bytes = ptrace::read_mem(tid, table, ncalls * SLOT as usize)
        .map_err(|e| RemoteError::new("reading the results", e))?;
    let o = (ncalls - 1) * SLOT as usize;
    table_bytes[o..o + 8].copy_from_slice(&last.to_le_bytes());
    let out = ptrace::read_mem(tid, buf_addr, buf.len())
        .map_err(|e| RemoteError::new("reading the results", e))?;
    write_mem(tid, stub_sp, &before)
        .map_err(|e| RemoteError::new("restoring the thread's stack", e))?;
    if seccomp {
        request(libc::PTRACE_SETOPTIONS, tid, PTRACE_O_TRACESYSGOOD)
            .map_err(|e| RemoteError::new("resuming seccomp", e))?;
    }
    // Its own registers, interrupted system call included, and back in an
    // interrupt stop: when released, the kernel's own signal path decides
    // what the interrupted call does (restarts it, or returns EINTR to a
    // handler that runs then), as if dumper had never run anything.
    set_regs(tid, &saved).map_err(|e| RemoteError::new("restoring registers", e))?;
    repark(tid, &mut caught)?;
    let word = |i: usize| {
        let o = i * SLOT as usize;
        i64::from_le_bytes(table_bytes[o..o + 8].try_into().unwrap())
    };
    if crate::log::enabled(crate::log::DEBUG) {
        for (i, c) in program.iter().enumerate() {
            log_debug!(
                "thread {} remote syscall {}({:#x}, {:#x}, {:#x}) = {}",
                tid,
                c.nr as u64,
                c.args[0].raw(buf_addr),
                c.args[1].raw(buf_addr),
                c.args[2].raw(buf_addr),
                word(i)
            );
        }
    }
    if word(0) != 0 || word(ncalls - 1) != 0 {
        return Err(RemoteError::new(
            "rt_sigprocmask",
            -word(0).min(word(ncalls - 1)) as i32,
        ));
    }
    Ok(Ran {
        results: (1..ncalls - 1).map(word).collect(),
        buf: out,
        caught,
        fresh,
    })
}

/// From a syscall-exit stop, into an interrupt stop (PTRACE_EVENT_STOP)
/// on the thread's way back to user space, where the freezer left it.
fn repark(tid: i32, caught: &mut Vec<ptrace::Caught>) -> Result<(), RemoteError> {
    request(libc::PTRACE_INTERRUPT, tid, 0).map_err(|e| RemoteError::new("PTRACE_INTERRUPT", e))?;
    resume_until(
        tid,
        libc::PTRACE_CONT,
        "waiting for the interrupt stop",
        |st| st >> 16 == PTRACE_EVENT_STOP,
        caught,
    )
}

/// Resumes `tid` to its next syscall stop.
fn to_syscall_stop(tid: i32, caught: &mut Vec<ptrace::Caught>) -> Result<(), RemoteError> {
    resume_until(
        tid,
        libc::PTRACE_SYSCALL,
        "waiting for a syscall stop",
        |st| st >> 16 == 0 && libc::WSTOPSIG(st) == libc::SIGTRAP | 0x80,
        caught,
    )
}

/// Resumes `tid` with `req` until a stop that `done` accepts, within
/// STOP_TIMEOUT. Signal-delivery stops on the way are suppressed and their
/// signals kept in `caught`; other stops just resume.
fn resume_until(
    tid: i32,
    req: libc::c_uint,
    what: &'static str,
    done: impl Fn(i32) -> bool,
    caught: &mut Vec<ptrace::Caught>,
) -> Result<(), RemoteError> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        request(req, tid, 0).map_err(|e| RemoteError::new(what, e))?;
        let left = deadline.saturating_duration_since(Instant::now());
        let status = wait_stop(tid, left)
            .map_err(|e| RemoteError::new(what, e))?
            // Stops that keep coming count against the time too.
            .filter(|_| !left.is_zero())
            .ok_or(RemoteError::new(what, libc::ETIMEDOUT))?;
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Err(RemoteError::new(what, libc::ESRCH));
        }
        if done(status) {
            return Ok(());
        }
        let stopsig = libc::WSTOPSIG(status);
        if status >> 16 == 0 && stopsig & 0x7f != libc::SIGTRAP {
            caught.push(
                ptrace::caught(tid, stopsig)
                    .map_err(|e| RemoteError::new("PTRACE_GETSIGINFO", e))?,
            );
        }
    }
}

/// Writes `bytes` at `addr` of `tid` with process_vm_writev, which (unlike
/// /proc/PID/mem) respects the mapping's protection.
fn write_mem(tid: i32, addr: u64, bytes: &[u8]) -> Result<(), i32> {
    let local = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: the kernel only reads local; remote is in the target.
    let n = unsafe { libc::process_vm_writev(tid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(errno());
    }
    if n as usize != bytes.len() {
        return Err(libc::EFAULT);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stub_is_the_loop_then_the_pops() {
        let c = stub_code();
        // One syscall instruction, ending in `ret $128` (c2 80 00).
        assert_eq!(c.windows(2).filter(|w| w == &[0x0f, 0x05]).count(), 1);
        assert!(c.ends_with(&[0x9d, 0xc2, 0x80, 0x00]), "{c:02x?}");
        assert!(c.len() < 128);
    }

    #[test]
    fn this_vdso_has_room_after_its_image() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let l = maps.lines().find(|l| l.ends_with("[vdso]")).unwrap();
        let (a, b) = l
            .split_whitespace()
            .next()
            .unwrap()
            .split_once('-')
            .unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let image = ptrace::read_mem(std::process::id() as i32, a, (b - a) as usize).unwrap();
        let end = elf_end(&image).unwrap();
        assert!(end + stub_code().len() as u64 + 16 <= b - a, "{end:#x}");
        assert!(image[end as usize..].iter().all(|&x| x == 0));
    }
}
