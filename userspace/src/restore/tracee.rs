//! Processes being restored, driven by dumper with ptrace: every system
//! call that builds a process (its place in the tree, its files, its
//! address space, its state) runs inside it, issued from a small page of
//! code dumper places at an address the restored layout leaves free (the
//! *hole*).
//!
//! - The hole is mapped in dumper itself before the first process is
//!   created, so every process inherits it through fork: one page of code
//!   (the stub below), one page for a table of calls, the rest for their
//!   arguments (paths, structs).
//! - The stub runs the table's calls in order, each result stored back in
//!   its slot, and stops on `int3`: a batch of calls costs one ptrace round
//!   trip, not one each.
//! - A call that creates a process (clone3) ends its batch: the child
//!   starts as a copy of the caller in the middle of the stub and must not
//!   run the calls after it. The child is traced from birth
//!   (PTRACE_O_TRACEFORK), so dumper holds it before it runs anything.
//! - Every tracee has PTRACE_O_EXITKILL: if dumper dies, SIGKILL included,
//!   the kernel kills everything it created, and no half-restored process
//!   runs on.
//! - Tracees run with every signal blocked (the first process blocks them
//!   before it stops; children inherit the mask), so no signal interrupts
//!   a batch; the restored mask is set last, with PTRACE_SETSIGMASK.

use crate::ptrace::{self, errno, request, set_regs, Regs};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

std::arch::global_asm!(
    ".pushsection .rodata.dumper_restore_stub,\"a\"",
    ".balign 16",
    ".globl dumper_restore_stub_start",
    "dumper_restore_stub_start:",
    // rbx: the next slot {nr, a0..a5, links}, r12: calls left, r13: the
    // table. Byte i of links, when not 0, is 1 + the index of an earlier
    // call whose result is argument i (an fd just opened, say).
    ".Lrnext:",
    "test r12, r12",
    "jz .Lrdone",
    "mov rax, [rbx]",
    "mov rdi, [rbx + 8]",
    "mov rsi, [rbx + 16]",
    "mov rdx, [rbx + 24]",
    "mov r10, [rbx + 32]",
    "mov r8, [rbx + 40]",
    "mov r9, [rbx + 48]",
    "movzx ecx, byte ptr [rbx + 56]",
    "test ecx, ecx",
    "jz .Lrlink0",
    "shl rcx, 6",
    "mov rdi, [r13 + rcx - 64]",
    ".Lrlink0:",
    "movzx ecx, byte ptr [rbx + 57]",
    "test ecx, ecx",
    "jz .Lrlink1",
    "shl rcx, 6",
    "mov rsi, [r13 + rcx - 64]",
    ".Lrlink1:",
    "movzx ecx, byte ptr [rbx + 58]",
    "test ecx, ecx",
    "jz .Lrlink2",
    "shl rcx, 6",
    "mov rdx, [r13 + rcx - 64]",
    ".Lrlink2:",
    "movzx ecx, byte ptr [rbx + 59]",
    "test ecx, ecx",
    "jz .Lrlink3",
    "shl rcx, 6",
    "mov r10, [r13 + rcx - 64]",
    ".Lrlink3:",
    "movzx ecx, byte ptr [rbx + 60]",
    "test ecx, ecx",
    "jz .Lrlink4",
    "shl rcx, 6",
    "mov r8, [r13 + rcx - 64]",
    ".Lrlink4:",
    "movzx ecx, byte ptr [rbx + 61]",
    "test ecx, ecx",
    "jz .Lrlink5",
    "shl rcx, 6",
    "mov r9, [r13 + rcx - 64]",
    ".Lrlink5:",
    "syscall",
    "mov [rbx], rax",
    "add rbx, 64",
    "dec r12",
    "jmp .Lrnext",
    ".Lrdone:",
    "int3",
    // A lone system call, for the one whose exit stop dumper catches
    // (the unmapping of the hole itself, which cannot return into it).
    ".globl dumper_restore_stub_syscall",
    "dumper_restore_stub_syscall:",
    "syscall",
    "int3",
    ".globl dumper_restore_stub_end",
    "dumper_restore_stub_end:",
    ".popsection",
);

extern "C" {
    static dumper_restore_stub_start: u8;
    static dumper_restore_stub_syscall: u8;
    static dumper_restore_stub_end: u8;
}

fn stub() -> (&'static [u8], u64) {
    // The three symbols label one rodata blob, in order: to Rust they are
    // three statics, so the blob is reached through the exposed address
    // of the first, not by offsets between them.
    let start = (&raw const dumper_restore_stub_start).expose_provenance();
    let sys = (&raw const dumper_restore_stub_syscall).addr();
    let end = (&raw const dumper_restore_stub_end).addr();
    // SAFETY: [start, end) is the blob, read-only data for the program's
    // life.
    let code = unsafe {
        std::slice::from_raw_parts(std::ptr::with_exposed_provenance::<u8>(start), end - start)
    };
    (code, (sys - start) as u64)
}

pub const PAGE: u64 = 4096;
/// Code, call table, arguments.
pub const HOLE_PAGES: u64 = 16;
pub const HOLE_LEN: u64 = HOLE_PAGES * PAGE;
const TABLE: u64 = PAGE;
const DATA: u64 = 2 * PAGE;
const SLOT: u64 = 64;
/// Calls one batch holds (one page of slots).
pub const MAX_CALLS: usize = (PAGE / SLOT) as usize;
/// Argument bytes one batch holds.
pub const MAX_DATA: usize = (HOLE_LEN - DATA) as usize;
/// How long one batch may take: a call that blocks (a wait for a child
/// that never exits, an open of a FIFO) is an error, not a hang.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

const PTRACE_O_TRACESYSGOOD: libc::c_long = 1;
const PTRACE_O_TRACEFORK: libc::c_long = 2;
const PTRACE_O_TRACEVFORK: libc::c_long = 4;
const PTRACE_O_TRACECLONE: libc::c_long = 8;
const PTRACE_O_EXITKILL: libc::c_long = 1 << 20;
pub const OPTIONS: libc::c_long = PTRACE_O_TRACESYSGOOD
    | PTRACE_O_TRACEFORK
    | PTRACE_O_TRACEVFORK
    | PTRACE_O_TRACECLONE
    | PTRACE_O_EXITKILL;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;

/// Why a tracee failed: the pid, what it was doing, the cause.
#[derive(Debug, thiserror::Error)]
#[error("process {pid}: {what}: {why}")]
pub struct TraceError {
    pub pid: i32,
    pub what: String,
    pub why: String,
}

pub fn terr(pid: i32, what: impl Into<String>, why: impl std::fmt::Display) -> TraceError {
    TraceError {
        pid,
        what: what.into(),
        why: why.to_string(),
    }
}

fn os(e: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(e)
}

/// Maps the hole at `addr` in dumper itself, with the stub in its first
/// page; MAP_FIXED_NOREPLACE, so an address dumper uses fails (EEXIST).
pub fn map_hole(addr: u64) -> std::io::Result<()> {
    // SAFETY: a new private mapping at a free address.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            HOLE_LEN as usize,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    if p as u64 != addr {
        // Kernels before 4.17 ignore MAP_FIXED_NOREPLACE.
        // SAFETY: unmapping what was just mapped.
        unsafe { libc::munmap(p, HOLE_LEN as usize) };
        return Err(os(libc::EEXIST));
    }
    let (code, _) = stub();
    // SAFETY: the mapping is HOLE_LEN bytes, writable, and the stub fits
    // in its first page.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), p.cast(), code.len()) };
    Ok(())
}

pub fn unmap_hole(addr: u64) {
    // SAFETY: the hole is dumper's own mapping, used by no Rust object.
    unsafe { libc::munmap(addr as *mut libc::c_void, HOLE_LEN as usize) };
}

/// A list of calls and their argument bytes, run by one tracee in one
/// stop.
#[derive(Default)]
pub struct Batch {
    calls: Vec<(i64, [u64; 6], [u8; 8], &'static str)>,
    data: Vec<u8>,
    hole: u64,
}

impl Batch {
    pub fn new(hole: u64) -> Batch {
        Batch {
            hole,
            ..Default::default()
        }
    }

    /// Copies `bytes` into the argument area; the address the tracee sees.
    pub fn data(&mut self, bytes: &[u8]) -> u64 {
        let at = self.data.len();
        self.data.extend_from_slice(bytes);
        self.data.resize((self.data.len() + 7) & !7, 0);
        self.hole + DATA + at as u64
    }

    /// A NUL-terminated copy of `s`.
    pub fn cstr(&mut self, s: &str) -> u64 {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.data(&b)
    }

    /// Room for `len` bytes the kernel fills; read back with [`Ran::bytes`].
    pub fn space(&mut self, len: usize) -> u64 {
        self.data(&vec![0; len])
    }

    /// Adds call `nr`; `what` names it in errors. Its index in the results.
    pub fn call(&mut self, what: &'static str, nr: i64, args: &[u64]) -> usize {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        self.calls.push((nr, a, [0; 8], what));
        self.calls.len() - 1
    }

    /// Makes argument `arg` of call `call` the result of the earlier call
    /// `from`, as the tracee gets it.
    pub fn link(&mut self, call: usize, arg: usize, from: usize) {
        assert!(from < call && from < 255 && arg < 6);
        self.calls[call].2[arg] = from as u8 + 1;
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Whether `calls` more calls and `bytes` more bytes still fit.
    pub fn fits(&self, calls: usize, bytes: usize) -> bool {
        self.calls.len() + calls <= MAX_CALLS && self.data.len() + bytes + 8 * calls <= MAX_DATA
    }
}

/// What a batch returned: each call's raw result (a negative errno on
/// failure), and the argument area as the kernel left it.
pub struct Ran {
    pub results: Vec<i64>,
    data: Vec<u8>,
    hole: u64,
}

impl Ran {
    /// `len` bytes at address `addr` of the argument area.
    pub fn bytes(&self, addr: u64, len: usize) -> &[u8] {
        let at = (addr - self.hole - DATA) as usize;
        &self.data[at..at + len]
    }
}

/// One process being restored, stopped under dumper's ptrace.
pub struct Tracee {
    pub pid: i32,
    hole: u64,
    mem: File,
    /// The registers it stopped with first; calls start from them.
    base: Regs,
}

/// How a tracee's wait ended.
enum Stop {
    /// The stub's int3, or a syscall stop.
    Trap,
    /// It created a process (fork, vfork, clone events).
    Event,
    Exited(i32),
    Signaled(i32),
    /// Stopped with another signal, delivered to it.
    Signal(i32),
}

fn wait(pid: i32) -> Result<Stop, TraceError> {
    let st = ptrace::wait_stop(pid, BATCH_TIMEOUT)
        .map_err(|e| terr(pid, "waiting for it", os(e)))?
        .ok_or_else(|| {
            terr(
                pid,
                "waiting for it",
                format!("no stop in {} s", BATCH_TIMEOUT.as_secs()),
            )
        })?;
    Ok(if libc::WIFEXITED(st) {
        Stop::Exited(libc::WEXITSTATUS(st))
    } else if libc::WIFSIGNALED(st) {
        Stop::Signaled(libc::WTERMSIG(st))
    } else if st >> 16 != 0 {
        Stop::Event
    } else if libc::WSTOPSIG(st) == libc::SIGTRAP || libc::WSTOPSIG(st) == libc::SIGTRAP | 0x80 {
        Stop::Trap
    } else {
        Stop::Signal(libc::WSTOPSIG(st))
    })
}

/// Waits for a process dumper just created (or that a tracee created) to
/// reach its first stop.
fn first_stop(pid: i32) -> Result<(), TraceError> {
    match wait(pid)? {
        Stop::Exited(c) => Err(terr(pid, "starting", format!("exited with {c}"))),
        Stop::Signaled(s) => Err(terr(pid, "starting", format!("killed by signal {s}"))),
        // Its SIGSTOP or event stop; any other signal is suppressed at
        // its first resumption, which is a batch.
        _ => Ok(()),
    }
}

/// Creates the first process, pid `pid`, a child of dumper: it blocks
/// every signal, asks to be traced and stops. clone3 with set_tid puts
/// it at its dumped pid.
pub fn fork_first(pid: i32, hole: u64) -> Result<Tracee, TraceError> {
    let child = clone3_here(pid, 0)?;
    if child == 0 {
        // In the child: system calls only, no allocation (dumper may have
        // other threads whose locks this copy inherited held).
        // SAFETY: plain system calls on the calling process.
        unsafe {
            let all: u64 = !0;
            libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &all, 0, 8);
            libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0);
            libc::syscall(
                libc::SYS_kill,
                libc::syscall(libc::SYS_getpid),
                libc::SIGSTOP,
            );
            libc::syscall(libc::SYS_exit_group, 127);
        }
        unreachable!();
    }
    first_stop(child)
        .and_then(|()| {
            request(libc::PTRACE_SETOPTIONS, child, OPTIONS)
                .map_err(|e| terr(child, "setting ptrace options", os(e)))
        })
        .and_then(|()| Tracee::attach(child, hole))
        .inspect_err(|_| kill_now(child))
}

/// A process just created whose setting up failed: it goes at once (it
/// is not in the caller's list of created processes yet).
fn kill_now(pid: i32) {
    // SAFETY: killing and reaping (when dumper's child) what was just made.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL | libc::WNOHANG);
    }
}

/// clone3(2) in dumper itself, with set_tid: 0 in the child.
fn clone3_here(pid: i32, flags: u64) -> Result<i32, TraceError> {
    let tid = [pid];
    let args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM: the child runs on a copy of this
    // stack and returns here with 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(clone_error(pid, errno()));
    }
    Ok(r as i32)
}

/// `struct clone_args` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

impl CloneArgs {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: a repr(C) struct of u64s has no padding.
        unsafe { std::slice::from_raw_parts(self as *const Self as *const u8, size_of::<Self>()) }
    }
}

pub fn clone_error(pid: i32, e: i32) -> TraceError {
    let why = match e {
        libc::EEXIST => format!(
            "pid {pid} is in use (by a process, or as a process group or session id): \
             free it, or restore into a new pid namespace"
        ),
        libc::EPERM => {
            "clone3 with set_tid needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN: run as root".into()
        }
        libc::ENOSYS => "clone3 with set_tid needs Linux 5.5 or later".into(),
        libc::EINVAL => {
            "clone3 refused its arguments (EINVAL; set_tid needs Linux 5.5 or later)".into()
        }
        e => os(e).to_string(),
    };
    terr(pid, format!("creating pid {pid}"), why)
}

impl Tracee {
    /// A process stopped under dumper's ptrace, created from a tracee (so
    /// its hole is where its creator's was).
    pub fn attach(pid: i32, hole: u64) -> Result<Tracee, TraceError> {
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|e| terr(pid, "opening its /proc/PID/mem", e))?;
        let base = ptrace::regs(pid).map_err(|e| terr(pid, "reading registers", os(e)))?;
        Ok(Tracee {
            pid,
            hole,
            mem,
            base,
        })
    }

    pub fn batch(&self) -> Batch {
        Batch::new(self.hole)
    }

    pub fn hole(&self) -> u64 {
        self.hole
    }

    /// Writes `bytes` at `addr` of the tracee, whatever the protection
    /// there (as a debugger writes a breakpoint).
    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<(), TraceError> {
        self.mem
            .write_all_at(bytes, addr)
            .map_err(|e| terr(self.pid, format!("writing memory at {addr:#x}"), e))
    }

    fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, TraceError> {
        let mut b = vec![0; len];
        self.mem
            .read_exact_at(&mut b, addr)
            .map_err(|e| terr(self.pid, format!("reading memory at {addr:#x}"), e))?;
        Ok(b)
    }

    fn start(&self, rip: u64, set: impl FnOnce(&mut Regs)) -> Result<(), TraceError> {
        let mut r = self.base;
        r.rip = rip;
        // Not in a system call: nothing for the kernel to restart.
        r.orig_rax = u64::MAX;
        set(&mut r);
        set_regs(self.pid, &r).map_err(|e| terr(self.pid, "setting registers", os(e)))
    }

    fn resume(&self, how: libc::c_uint, sig: i32) -> Result<(), TraceError> {
        request(how, self.pid, sig as libc::c_long).map_err(|e| terr(self.pid, "resuming", os(e)))
    }

    fn upload(&self, b: &Batch) -> Result<(), TraceError> {
        let mut table = Vec::with_capacity(b.calls.len() * SLOT as usize);
        for (nr, a, links, _) in &b.calls {
            table.extend_from_slice(&nr.to_le_bytes());
            for v in a {
                table.extend_from_slice(&v.to_le_bytes());
            }
            table.extend_from_slice(links);
        }
        self.write(self.hole + TABLE, &table)?;
        if !b.data.is_empty() {
            self.write(self.hole + DATA, &b.data)?;
        }
        Ok(())
    }

    /// Writes the batch into the hole and points the tracee's registers at
    /// the stub with it (rbx: the next slot, r12: calls left, r13: the
    /// table); it runs at the next resumption.
    fn load(&self, b: &Batch) -> Result<(), TraceError> {
        self.upload(b)?;
        let table = self.hole + TABLE;
        let n = b.calls.len() as u64;
        self.start(self.hole, |r| {
            r.rbx = table;
            r.r12 = n;
            r.r13 = table;
        })
    }

    /// Runs the batch to its end. Results are raw (negative errno); see
    /// [`Tracee::run`] for a batch whose every call must succeed.
    pub fn run_raw(&self, b: &Batch) -> Result<Ran, TraceError> {
        if b.calls.len() > MAX_CALLS || b.data.len() > MAX_DATA {
            return Err(terr(self.pid, "running calls", "batch too large"));
        }
        self.load(b)?;
        let table = self.hole + TABLE;
        self.resume(libc::PTRACE_CONT, 0)?;
        loop {
            match wait(self.pid)? {
                Stop::Trap => break,
                Stop::Event => self.resume(libc::PTRACE_CONT, 0)?,
                // Blocked signals cannot stop it; one the kernel forces
                // (a fault in the calls, say) is not suppressed.
                Stop::Signal(s) if s == libc::SIGSEGV || s == libc::SIGBUS || s == libc::SIGILL => {
                    return Err(terr(self.pid, "running calls", format!("got signal {s}")));
                }
                Stop::Signal(_) => self.resume(libc::PTRACE_CONT, 0)?,
                Stop::Exited(c) => {
                    return Err(terr(self.pid, "running calls", format!("exited with {c}")))
                }
                Stop::Signaled(s) => {
                    return Err(terr(
                        self.pid,
                        "running calls",
                        format!("killed by signal {s}"),
                    ))
                }
            }
        }
        let raw = self.read(table, b.calls.len() * SLOT as usize)?;
        let results: Vec<i64> = (0..b.calls.len())
            .map(|i| {
                let o = i * SLOT as usize;
                i64::from_le_bytes(raw[o..o + 8].try_into().unwrap())
            })
            .collect();
        // Every system call the restore issues, with its result.
        if crate::log::enabled(crate::log::DEBUG) {
            for ((nr, a, _, what), r) in b.calls.iter().zip(&results) {
                log_debug!(
                    "process {} syscall {} {}({:#x}, {:#x}, {:#x}, {:#x}) = {}",
                    self.pid,
                    *nr,
                    *what,
                    a[0],
                    a[1],
                    a[2],
                    a[3],
                    *r
                );
            }
        }
        let data = if b.data.is_empty() {
            vec![]
        } else {
            self.read(self.hole + DATA, b.data.len())?
        };
        Ok(Ran {
            results,
            data,
            hole: self.hole,
        })
    }

    /// Runs the batch; the first call that failed is the error, named.
    pub fn run(&self, b: &Batch) -> Result<Ran, TraceError> {
        let ran = self.run_raw(b)?;
        for (i, &r) in ran.results.iter().enumerate() {
            if (-4095..0).contains(&r) {
                let (nr, _, _, what) = &b.calls[i];
                log_debug!(
                    "process {} call {} ({}) failed: {}",
                    self.pid,
                    *nr,
                    *what,
                    r
                );
                return Err(terr(self.pid, *what, os(-r as i32)));
            }
        }
        Ok(ran)
    }

    /// One call that must succeed; its result.
    pub fn call(&self, what: &'static str, nr: i64, args: &[u64]) -> Result<i64, TraceError> {
        let mut b = self.batch();
        b.call(what, nr, args);
        Ok(self.run(&b)?.results[0])
    }

    /// clone3 in the tracee with set_tid `pid`: the new process, stopped
    /// and traced.
    pub fn clone(&self, pid: i32, flags: u64, exit_signal: i32) -> Result<Tracee, TraceError> {
        let mut b = self.batch();
        let tid = b.data(&pid.to_le_bytes());
        let args = CloneArgs {
            flags,
            exit_signal: exit_signal as u64,
            set_tid: tid,
            set_tid_size: 1,
            ..Default::default()
        };
        let a = b.data(args.bytes());
        b.call(
            "clone3",
            libc::SYS_clone3,
            &[a, size_of::<CloneArgs>() as u64],
        );
        let r = self.run_raw(&b)?.results[0];
        if r < 0 {
            return Err(clone_error(pid, -r as i32));
        }
        let child = r as i32;
        first_stop(child)
            .and_then(|()| Tracee::attach(child, self.hole))
            .inspect_err(|_| kill_now(child))
    }

    /// Ends the tracee with exit_group(`code`), or by signal `sig` when
    /// given; returns once the kernel has reported its death to dumper
    /// (which, for a process whose parent is not dumper, hands it over to
    /// its parent as a zombie). A child of dumper stays unreaped
    /// (`WNOWAIT`) until the plan waits for it.
    ///
    /// `b` holds calls to run first, in the same batch (a zombie's signal
    /// state: no `int3` comes after it to reset SIGTRAP's action).
    pub fn exit(
        self,
        mut b: Batch,
        code: i32,
        sig: Option<i32>,
        dumpers_child: bool,
    ) -> Result<(), TraceError> {
        if let Some(s) = sig {
            // The default action, unblocked, no core file.
            let dfl = b.data(&[0u8; 32]);
            b.call(
                "rt_sigaction",
                libc::SYS_rt_sigaction,
                &[s as u64, dfl, 0, 8],
            );
            let core = b.data(&[0u8; 16]);
            b.call(
                "prlimit64",
                libc::SYS_prlimit64,
                &[0, libc::RLIMIT_CORE as u64, core, 0],
            );
            let set = b.data(&(1u64 << (s - 1)).to_le_bytes());
            b.call(
                "rt_sigprocmask",
                libc::SYS_rt_sigprocmask,
                &[libc::SIG_UNBLOCK as u64, set, 0, 8],
            );
            b.call(
                "tgkill",
                libc::SYS_tgkill,
                &[self.pid as u64, self.pid as u64, s as u64],
            );
        }
        b.call("exit_group", libc::SYS_exit_group, &[code as u64]);
        self.load(&b)?;
        let mut pass = 0;
        loop {
            self.resume(libc::PTRACE_CONT, pass)?;
            let stop = if dumpers_child {
                peek(self.pid)?
            } else {
                wait(self.pid)?
            };
            pass = match stop {
                Stop::Exited(_) | Stop::Signaled(_) => return Ok(()),
                Stop::Signal(s) if Some(s) == sig => s,
                _ => 0,
            };
        }
    }

    /// One system call from the stub's lone `syscall`, stepped from its
    /// entry stop to its exit stop (PTRACE_SYSCALL): the tracee never
    /// reaches the `int3` after it. Its raw result.
    fn stepped(&self, what: &'static str, nr: i64, args: [u64; 3]) -> Result<i64, TraceError> {
        let (_, sys) = stub();
        self.start(self.hole + sys, |r| {
            r.rax = nr as u64;
            r.rdi = args[0];
            r.rsi = args[1];
            r.rdx = args[2];
            r.r10 = 8;
        })?;
        for _ in 0..2 {
            self.resume(libc::PTRACE_SYSCALL, 0)?;
            loop {
                match wait(self.pid)? {
                    Stop::Trap => break,
                    Stop::Signal(_) | Stop::Event => self.resume(libc::PTRACE_SYSCALL, 0)?,
                    _ => return Err(terr(self.pid, what, "it died")),
                }
            }
        }
        let r = ptrace::regs(self.pid).map_err(|e| terr(self.pid, "reading registers", os(e)))?;
        Ok(r.rax as i64)
    }

    /// Unmaps the hole with its last system call and stops at that call's
    /// exit, so the tracee never returns into it; then takes the restored
    /// registers, extended state and signal mask. It stays stopped until
    /// [`Tracee::release`].
    ///
    /// `trap` is the process's SIGTRAP action (`struct k_sigaction`'s 32
    /// bytes), set here rather than with the others: each batch's `int3`
    /// forces a SIGTRAP, which resets an ignored or blocked one to SIG_DFL.
    pub fn finish(
        &self,
        regs: &Regs,
        xstate: &[u8],
        blocked: u64,
        trap: Option<[u8; 32]>,
    ) -> Result<(), TraceError> {
        if let Some(act) = trap {
            let at = self.hole + DATA;
            self.write(at, &act)?;
            let r = self.stepped(
                "rt_sigaction SIGTRAP",
                libc::SYS_rt_sigaction,
                [libc::SIGTRAP as u64, at, 0],
            )?;
            if r < 0 {
                return Err(terr(self.pid, "rt_sigaction SIGTRAP", os(-r as i32)));
            }
        }
        let r = self.stepped(
            "munmap the hole",
            libc::SYS_munmap,
            [self.hole, HOLE_LEN, 0],
        )?;
        if r != 0 {
            return Err(terr(self.pid, "unmapping the hole", os(-r as i32)));
        }
        self.set_final(regs, xstate, blocked)
    }

    /// Sets the restored registers, extended state and signal mask of a
    /// stopped tracee: a thread, stopped after its last batch (it resumes
    /// at the restored address, never in the hole), or the leader at the
    /// exit of its hole's munmap.
    pub fn set_final(&self, regs: &Regs, xstate: &[u8], blocked: u64) -> Result<(), TraceError> {
        set_regs(self.pid, regs).map_err(|e| terr(self.pid, "setting its registers", os(e)))?;
        if !xstate.is_empty() {
            ptrace::set_xstate(self.pid, xstate)
                .map_err(|e| terr(self.pid, "setting its FPU and vector state", os(e)))?;
        }
        // SAFETY: PTRACE_SETSIGMASK reads 8 bytes of mask at data.
        let r =
            unsafe { libc::ptrace(PTRACE_SETSIGMASK, self.pid, 8usize, &blocked as *const u64) };
        if r < 0 {
            return Err(terr(self.pid, "setting its signal mask", os(errno())));
        }
        Ok(())
    }

    /// Lets the tracee run.
    /// Lets the tracee run; with `sig`, it takes that signal as it goes
    /// (a job-control stop it was in at the dump, re-entered at once).
    pub fn release(&self, sig: i32) -> Result<(), TraceError> {
        request(libc::PTRACE_DETACH, self.pid, sig as libc::c_long)
            .map_err(|e| terr(self.pid, "letting it run (PTRACE_DETACH)", os(e)))
    }
}

/// [`wait`] for a child of dumper that must stay a zombie: its death is
/// seen with WNOWAIT, not reaped (its parent in the plan is dumper, whose
/// `wait` step reaps it).
fn peek(pid: i32) -> Result<Stop, TraceError> {
    let deadline = std::time::Instant::now() + BATCH_TIMEOUT;
    loop {
        // SAFETY: waitid into a local siginfo.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT | libc::__WALL | libc::WNOHANG,
            )
        };
        if r < 0 {
            return Err(terr(pid, "waiting for its exit", os(errno())));
        }
        // SAFETY: si_pid and si_status are valid after a waitid that
        // found a child.
        if unsafe { info.si_pid() } == pid {
            let status = unsafe { info.si_status() };
            return Ok(match info.si_code {
                libc::CLD_EXITED => Stop::Exited(status),
                libc::CLD_KILLED | libc::CLD_DUMPED => Stop::Signaled(status),
                // A stop is not the exit: take it off.
                _ => wait(pid)?,
            });
        }
        if std::time::Instant::now() > deadline {
            return Err(terr(pid, "exiting", "it did not exit"));
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}
