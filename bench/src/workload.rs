//! The benchmark population: P processes, each with F fds (a mix of every
//! fd type the model knows), V mappings and T threads.
//!
//! `dumper-bench workload ...` builds it and serves until its stdin closes;
//! [`Population`] starts one and tears it down. Nothing outlives a run:
//! every member has PR_SET_PDEATHSIG(SIGKILL) (the root on the driver,
//! members on the root), they form one process group that Drop kills, and
//! the root exits when the driver's end of its stdin closes.

use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub processes: usize,
    pub fds_per_process: usize,
    pub vmas_per_process: usize,
    pub threads_per_process: usize,
    /// Private anonymous memory each process writes (KiB), for the dump
    /// measurements; 0 in the collection sweeps.
    #[serde(default)]
    pub resident_kib: usize,
    /// Only fds a restore brings back (files, directories, pipes,
    /// /dev/null), and the root leads its own session: the restore
    /// measurements' trees.
    #[serde(default)]
    pub restorable: bool,
}

impl Spec {
    pub fn args(&self) -> Vec<String> {
        vec![
            self.processes.to_string(),
            self.fds_per_process.to_string(),
            self.vmas_per_process.to_string(),
            self.threads_per_process.to_string(),
            self.resident_kib.to_string(),
            (self.restorable as u8).to_string(),
        ]
    }

    pub fn from_args(a: &[String]) -> Option<Spec> {
        let n = |i: usize| a.get(i)?.parse().ok();
        Some(Spec {
            processes: n(0)?,
            fds_per_process: n(1)?,
            vmas_per_process: n(2)?,
            threads_per_process: n(3)?,
            resident_kib: n(4).unwrap_or(0),
            restorable: n(5).unwrap_or(0) == 1,
        })
    }
}

/// A running population, killed (all of it) when dropped.
pub struct Population {
    child: Child,
    pub root: i32,
    pub spec: Spec,
}

impl Population {
    /// Starts `exe workload SPEC` (exe: the dumper-bench binary) and waits
    /// until every member is built.
    pub fn spawn(exe: &Path, spec: Spec) -> std::io::Result<Population> {
        let mut child = Command::new(exe)
            .arg("workload")
            .args(spec.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        let root = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("workload did not start: {line:?}")))?;
        Ok(Population { child, root, spec })
    }
}

impl Population {
    /// Waits for the root once something else (a dump) has killed it, so
    /// its pid is free; Drop then kills whatever holds its group.
    pub fn reap(&mut self) {
        let _ = self.child.wait();
    }
}

impl Drop for Population {
    fn drop(&mut self) {
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(-self.root, libc::SIGKILL) };
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(data_dir(self.root));
    }
}

/// Where a population's root keeps the file its members open and map.
fn data_dir(root: i32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("dumper-bench-{root}"))
}

fn check(r: i64, what: &str) -> i32 {
    if r < 0 {
        eprintln!("workload: {what}: {}", std::io::Error::last_os_error());
        // SAFETY: leaving a forked child without unwinding.
        unsafe { libc::_exit(1) };
    }
    r as i32
}

const PAGE: usize = 4096;
const DATA_PAGES: usize = 256;

/// inotify instances are limited per user (fs.inotify.max_user_instances,
/// 128 by default): only this many members hold one, one each; elsewhere
/// its place in the mix goes to an eventfd.
const INOTIFY_MEMBERS: usize = 64;

/// Opens `n` fds, cycling through the fd types of the model.
unsafe fn open_fds(n: usize, member: usize, dir: &CString, data: &CString, restorable: bool) {
    let mut opened = 0;
    let mut k = 0usize;
    let mut last = -1;
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut mask);
        libc::sigaddset(&mut mask, libc::SIGUSR1);
    }
    while opened < n {
        let one = |fd: i64, what: &str| check(fd, what);
        // The restorable mix: files, directories, pipes, /dev/null, dups.
        let kind = if restorable {
            [0, 1, 2, 10, 13][k % 5]
        } else {
            k % 14
        };
        let fds: Vec<i32> = unsafe {
            match kind {
                0 => vec![one(
                    libc::open(data.as_ptr(), libc::O_RDONLY) as i64,
                    "open",
                )],
                1 => vec![one(
                    libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) as i64,
                    "open dir",
                )],
                2 => {
                    let mut p = [0; 2];
                    one(libc::pipe(p.as_mut_ptr()) as i64, "pipe");
                    p.to_vec()
                }
                3 => {
                    let mut p = [0; 2];
                    one(
                        libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, p.as_mut_ptr())
                            as i64,
                        "socketpair",
                    );
                    p.to_vec()
                }
                4 => vec![one(libc::eventfd(0, 0) as i64, "eventfd")],
                5 => vec![one(libc::epoll_create1(0) as i64, "epoll")],
                6 => vec![one(
                    libc::timerfd_create(libc::CLOCK_MONOTONIC, 0) as i64,
                    "timerfd",
                )],
                7 => vec![one(libc::signalfd(-1, &mask, 0) as i64, "signalfd")],
                8 if member < INOTIFY_MEMBERS && k == 8 => {
                    vec![one(libc::inotify_init1(0) as i64, "inotify")]
                }
                8 => vec![one(libc::eventfd(0, 0) as i64, "eventfd")],
                9 => vec![one(
                    libc::memfd_create(c"bench".as_ptr(), 0) as i64,
                    "memfd",
                )],
                10 => vec![one(
                    libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) as i64,
                    "open /dev/null",
                )],
                11 => vec![one(
                    libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) as i64,
                    "socket",
                )],
                12 => vec![one(
                    libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE) as i64,
                    "netlink",
                )],
                _ if last >= 0 => vec![one(libc::dup(last) as i64, "dup")],
                _ => vec![],
            }
        };
        for fd in fds {
            if opened < n {
                opened += 1;
                last = fd;
            } else {
                unsafe { libc::close(fd) };
            }
        }
        k += 1;
    }
}

/// Makes `n` mappings that cannot merge: a run of pages alternating
/// read-write anonymous, read-only anonymous, and private file pages.
unsafe fn map_vmas(n: usize, data_fd: i32) {
    if n == 0 {
        return;
    }
    unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            n * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if base == libc::MAP_FAILED {
            check(-1, "mmap");
        }
        for k in 0..n {
            let at = (base as usize + k * PAGE) as *mut libc::c_void;
            if k % 4 == 3 {
                let off = ((k % DATA_PAGES) * PAGE) as i64;
                let p = libc::mmap(
                    at,
                    PAGE,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_FIXED,
                    data_fd,
                    off,
                );
                if p == libc::MAP_FAILED {
                    check(-1, "mmap file");
                }
            } else if k % 2 == 1 {
                check(libc::mprotect(at, PAGE, libc::PROT_READ) as i64, "mprotect");
            }
        }
    }
}

/// Makes `kib` KiB of private anonymous memory resident, every page with
/// contents of its own (no page is the zero page or another's copy).
unsafe fn touch_memory(kib: usize, member: usize) {
    if kib == 0 {
        return;
    }
    let len = kib * 1024;
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            check(-1, "mmap resident");
        }
        let words = std::slice::from_raw_parts_mut(p as *mut u64, len / 8);
        for (i, w) in words.iter_mut().enumerate() {
            *w = ((member as u64) << 40) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

fn idle() -> ! {
    loop {
        // SAFETY: no preconditions.
        unsafe { libc::pause() };
    }
}

/// One member: fds, mappings, threads; then it says so on `ready`.
unsafe fn build(spec: Spec, member: usize, dir: &CString, data: &CString, ready: i32) {
    unsafe {
        let data_fd = check(
            libc::open(data.as_ptr(), libc::O_RDONLY) as i64,
            "open data",
        );
        map_vmas(spec.vmas_per_process, data_fd);
        libc::close(data_fd);
        touch_memory(spec.resident_kib, member);
        open_fds(spec.fds_per_process, member, dir, data, spec.restorable);
    }
    for _ in 1..spec.threads_per_process {
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| idle())
            .expect("workload: thread");
    }
    // SAFETY: one byte from a valid buffer.
    unsafe { libc::write(ready, b"x".as_ptr().cast(), 1) };
}

/// `dumper-bench workload P F V T [KIB]`: builds the population, prints
/// `ready ROOT`, serves until stdin closes. Never returns.
pub fn serve(spec: Spec) -> ! {
    // SAFETY: process setup with plain system calls, then fork from a
    // single-threaded process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // A group of its own either way (Drop kills it); a restorable
        // tree owns its session too.
        if spec.restorable {
            libc::setsid();
        } else {
            libc::setpgid(0, 0);
        }
        // Only what the population opens itself (not, say, cargo's
        // jobserver pipe): F fds means F fds, plus stdin, stdout, stderr.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        // Up to the hard limit: no CAP_SYS_RESOURCE needed.
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        if (spec.fds_per_process + 16) as u64 > lim.rlim_cur {
            eprintln!(
                "workload: {} fds per process exceed RLIMIT_NOFILE {}",
                spec.fds_per_process, lim.rlim_cur
            );
            libc::_exit(1);
        }
        let dir = data_dir(std::process::id() as i32);
        std::fs::create_dir_all(&dir).expect("workload: temp dir");
        std::fs::write(dir.join("data"), vec![7u8; DATA_PAGES * PAGE])
            .expect("workload: data file");
        let cdir = CString::new(dir.to_str().unwrap()).unwrap();
        let cdata = CString::new(dir.join("data").to_str().unwrap()).unwrap();
        let mut p = [0; 2];
        check(libc::pipe(p.as_mut_ptr()) as i64, "pipe");
        let me = libc::getpid();
        for member in 1..spec.processes.max(1) {
            let pid = check(libc::fork() as i64, "fork");
            if pid == 0 {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != me {
                    libc::_exit(0);
                }
                libc::close(p[0]);
                build(spec, member, &cdir, &cdata, p[1]);
                libc::close(p[1]);
                idle();
            }
        }
        build(spec, 0, &cdir, &cdata, p[1]);
        let mut got = 0;
        let mut byte = [0u8; 256];
        while got < spec.processes.max(1) {
            let n = libc::read(p[0], byte.as_mut_ptr().cast(), byte.len());
            if n <= 0 {
                check(-1, "waiting for members");
            }
            got += n as usize;
        }
        libc::close(p[0]);
        libc::close(p[1]);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready {me}");
        let _ = out.flush();
        drop(out);
        dumper::sample::wait_for_stdin_eof();
        let _ = std::fs::remove_dir_all(&dir);
        libc::kill(0, libc::SIGKILL);
        libc::_exit(0);
    }
}
