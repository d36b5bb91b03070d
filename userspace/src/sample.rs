//! The built-in sample workload (`dumper sample`): a small tree with every
//! shape the model knows, used by `cargo xtask demo` and the integration
//! tests. It prints a JSON [`Manifest`] of what it made on stdout, then
//! lives until its stdin closes; every process has PR_SET_PDEATHSIG, so the
//! tree dies with its root whatever kills it.
//!
//! Shape: root R (its own session) with threads; child A (own group, a
//! thread, the inherited pipe); child B (own session) with grandchild C
//! (own group in B's session); child D (R's group, its own open of R's
//! file); a zombie Z. R holds one fd of every type and one mapping of
//! every kind.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{IntoRawFd, RawFd};

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub root: i32,
    pub a: i32,
    pub b: i32,
    pub c: i32,
    pub d: i32,
    pub zombie: i32,
    pub dir: String,
    /// Named fds of the root.
    pub fds: BTreeMap<String, i32>,
    /// Named mapping start addresses of the root.
    pub maps: BTreeMap<String, u64>,
    pub root_threads: usize,
    pub a_threads: usize,
    /// A root thread that blocks SIGUSR1 and waits in ppoll with SIGPROF
    /// blocked too (a temporary mask: the one it resumes with is SIGUSR1
    /// alone).
    pub ppoll_tid: i32,
}

/// The first word of the root's `private_file_written` mapping.
pub const PRIVATE_WORD: u64 = 0x7072_6976_6174_6521;
/// The first word of the root's SysV shared memory (`sysv`).
pub const SYSV_WORD: u64 = 0x5359_5356_5f73_686d;

/// Pages of the root's `pattern` mapping, filled with [`pattern_word`].
pub const PATTERN_PAGES: usize = 3;

/// Word `i` of the pattern mapping.
pub fn pattern_word(i: usize) -> u64 {
    0xd00d_f00d_0000_0000 | (i as u64).wrapping_mul(0x9e37_79b9)
}

fn check(r: libc::c_int, what: &str) -> RawFd {
    if r < 0 {
        panic!("sample: {what}: {}", std::io::Error::last_os_error());
    }
    r
}

fn die_with_parent() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

fn idle_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// Forks; the child runs `f` (which must not return) after asking to die
/// with its parent, then writes one byte to `ready`.
fn spawn(ready: RawFd, f: impl FnOnce(RawFd)) -> i32 {
    // SAFETY: the sample is single-threaded while it forks.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        die_with_parent();
        f(ready);
        idle_forever();
    }
    check(pid, "fork")
}

fn signal_ready(fd: RawFd) {
    // SAFETY: one byte from a valid buffer.
    unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
}

fn mmap(len: usize, prot: i32, flags: i32, fd: RawFd, off: i64) -> u64 {
    // SAFETY: a fresh mapping at a kernel-chosen address.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
    if p == libc::MAP_FAILED {
        panic!("sample: mmap: {}", std::io::Error::last_os_error());
    }
    p as u64
}

/// Builds the tree and serves until stdin closes. Never returns.
pub fn run() -> ! {
    die_with_parent();
    // Only what the sample opens itself: drop whatever the caller leaked to
    // us (cargo's jobserver pipe, say), so the fd table is exactly known.
    // SAFETY: closes fds this process does not use.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // SAFETY: the rest is plain system calls on fds this function owns.
    unsafe {
        libc::setsid();
        let dir = std::env::temp_dir().join(format!("dumper-sample-{}", std::process::id()));
        // A leftover of a killed run with a reused pid would make mkfifo fail.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sample: temp dir");
        let mut fds = BTreeMap::new();
        let mut maps = BTreeMap::new();
        let path = |n: &str| CString::new(dir.join(n).to_str().unwrap()).unwrap();

        // Regular files: known contents and offsets.
        let data = dir.join("data");
        std::fs::write(&data, vec![b'd'; 8192]).unwrap();
        let append = check(
            libc::open(path("data").as_ptr(), libc::O_RDWR | libc::O_APPEND),
            "open append",
        );
        libc::lseek(append, 100, libc::SEEK_SET);
        fds.insert("append".into(), append);
        let nonblock = check(
            libc::open(path("data").as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK),
            "open nonblock",
        );
        libc::lseek(nonblock, 4096, libc::SEEK_SET);
        fds.insert("nonblock".into(), nonblock);
        fds.insert("dup".into(), check(libc::dup(append), "dup"));
        fds.insert(
            "cloexec".into(),
            check(libc::fcntl(append, libc::F_DUPFD_CLOEXEC, 50), "dupfd"),
        );
        fds.insert(
            "dir".into(),
            check(
                libc::open(path("").as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY),
                "open dir",
            ),
        );
        let mut p = [0; 2];
        check(libc::pipe(p.as_mut_ptr()), "pipe");
        fds.insert("pipe_r".into(), p[0]);
        fds.insert("pipe_w".into(), p[1]);
        check(libc::mkfifo(path("fifo").as_ptr(), 0o600), "mkfifo");
        fds.insert(
            "fifo".into(),
            check(
                libc::open(path("fifo").as_ptr(), libc::O_RDWR | libc::O_NONBLOCK),
                "open fifo",
            ),
        );
        let mut sp = [0; 2];
        check(
            libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sp.as_mut_ptr()),
            "socketpair",
        );
        fds.insert("unix".into(), sp[0]);
        fds.insert("unix_peer".into(), sp[1]);
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("sample: tcp listen");
        fds.insert("inet".into(), tcp.into_raw_fd());
        fds.insert(
            "netlink".into(),
            check(
                libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
                "netlink",
            ),
        );
        let efd = check(libc::eventfd(5, libc::EFD_NONBLOCK), "eventfd");
        fds.insert("eventfd".into(), efd);
        let ep = check(libc::epoll_create1(libc::EPOLL_CLOEXEC), "epoll");
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 1,
        };
        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, efd, &mut ev);
        fds.insert("epoll".into(), ep);
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        libc::sigaddset(&mut mask, libc::SIGUSR1);
        libc::sigprocmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut());
        fds.insert(
            "signalfd".into(),
            check(libc::signalfd(-1, &mask, libc::SFD_NONBLOCK), "signalfd"),
        );
        fds.insert(
            "timerfd".into(),
            check(libc::timerfd_create(libc::CLOCK_MONOTONIC, 0), "timerfd"),
        );
        let ino = check(libc::inotify_init1(0), "inotify");
        libc::inotify_add_watch(ino, path("").as_ptr(), libc::IN_CREATE);
        fds.insert("inotify".into(), ino);
        let memfd = check(libc::memfd_create(c"sample".as_ptr(), 0), "memfd");
        libc::ftruncate(memfd, 65536);
        fds.insert("memfd".into(), memfd);
        fds.insert(
            "chr".into(),
            check(
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR),
                "open /dev/null",
            ),
        );
        // A block device when the machine has one (loop devices, disks).
        if let Some(dev) = std::fs::read_dir("/sys/block").ok().and_then(|d| {
            d.flatten()
                .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
                .find(|p| std::path::Path::new(p).exists())
        }) {
            let c = CString::new(dev).unwrap();
            let fd = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
            if fd >= 0 {
                fds.insert("blk".into(), fd);
            }
        }
        // A socket of another family: packet (needs CAP_NET_RAW), else a
        // kernel crypto socket.
        let sock = match libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0) {
            fd if fd >= 0 => fd,
            _ => libc::socket(libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
        };
        if sock >= 0 {
            fds.insert("sock".into(), sock);
        }
        // Signals: one ignored, one caught.
        libc::signal(libc::SIGUSR2, libc::SIG_IGN);
        extern "C" fn on_hup(_: libc::c_int) {}
        libc::signal(libc::SIGHUP, on_hup as *const () as libc::sighandler_t);

        // Mappings of every kind.
        let page = 4096usize;
        maps.insert(
            "guard".into(),
            mmap(
                page * 2,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ),
        );
        let shared_file = check(
            libc::open(path("data").as_ptr(), libc::O_RDWR),
            "open for mmap",
        );
        maps.insert(
            "shared_file".into(),
            mmap(
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                shared_file,
                page as i64,
            ),
        );
        maps.insert(
            "private_file".into(),
            mmap(page, libc::PROT_READ, libc::MAP_PRIVATE, shared_file, 0),
        );
        // A private file mapping whose first page is written (a private
        // copy, saved) and whose second is not (the file's, not saved).
        let written = mmap(
            page * 2,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            shared_file,
            0,
        );
        *(written as *mut u64) = PRIVATE_WORD;
        maps.insert("private_file_written".into(), written);
        libc::close(shared_file);
        // SysV shared memory, attached, with a known word.
        let shmid = check(
            libc::shmget(libc::IPC_PRIVATE, page * 2, libc::IPC_CREAT | 0o600),
            "shmget",
        );
        let sysv = libc::shmat(shmid, std::ptr::null(), 0);
        if sysv as isize == -1 {
            panic!("sample: shmat: {}", std::io::Error::last_os_error());
        }
        *(sysv as *mut u64) = SYSV_WORD;
        // Gone with its last detach.
        libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut());
        maps.insert("sysv".into(), sysv as u64);
        maps.insert(
            "memfd".into(),
            mmap(
                page * 4,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd,
                0,
            ),
        );
        maps.insert(
            "shared_anon".into(),
            mmap(
                page * 3,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            ),
        );
        let locked = mmap(
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        check(libc::mlock(locked as *const _, page), "mlock");
        maps.insert("locked".into(), locked);
        let dontdump = mmap(
            page * 5,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        check(
            libc::madvise(dontdump as *mut _, page * 5, libc::MADV_DONTDUMP),
            "madvise",
        );
        maps.insert("dontdump".into(), dontdump);
        maps.insert(
            "growsdown".into(),
            mmap(
                page * 2,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_GROWSDOWN,
                -1,
                0,
            ),
        );
        // A known pattern in anonymous memory, for the dump tests.
        let pattern = mmap(
            PATTERN_PAGES * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        let words = std::slice::from_raw_parts_mut(pattern as *mut u64, PATTERN_PAGES * page / 8);
        for (i, w) in words.iter_mut().enumerate() {
            *w = pattern_word(i);
        }
        maps.insert("pattern".into(), pattern);
        // Make sure there is a [heap]: move the break.
        let brk = libc::sbrk(0);
        libc::sbrk(65536);
        maps.insert("heap".into(), brk as u64);

        let mut ready = [0; 2];
        check(libc::pipe(ready.as_mut_ptr()), "ready pipe");
        let (rr, rw) = (ready[0], ready[1]);

        let a = spawn(rw, |ready| {
            libc::setpgid(0, 0);
            std::thread::spawn(|| idle_forever());
            signal_ready(ready);
        });
        let mut c = [0i32; 1];
        let mut cp = [0; 2];
        check(libc::pipe(cp.as_mut_ptr()), "pipe");
        let b = spawn(rw, |ready| {
            libc::setsid();
            let c = spawn(ready, |ready| {
                libc::setpgid(0, 0);
                signal_ready(ready);
            });
            libc::write(cp[1], (&c as *const i32).cast(), 4);
            signal_ready(ready);
        });
        libc::read(cp[0], c.as_mut_ptr().cast(), 4);
        libc::close(cp[0]);
        libc::close(cp[1]);
        let d = spawn(rw, |ready| {
            // Its own open file description of the root's file.
            libc::open(path("data").as_ptr(), libc::O_RDONLY);
            signal_ready(ready);
        });
        let zombie = spawn(rw, |_| libc::_exit(0));
        // Another anonymous inode: a pidfd (of child a).
        let pidfd = libc::syscall(libc::SYS_pidfd_open, a, 0) as i32;
        fds.insert("pidfd".into(), check(pidfd, "pidfd_open"));
        // a, b, c and d each say they are ready.
        let mut got = 0;
        let mut byte = [0u8; 1];
        while got < 4 {
            if libc::read(rr, byte.as_mut_ptr().cast(), 1) == 1 {
                got += 1;
            }
        }
        // Let the zombie finish dying.
        while !std::fs::read_to_string(format!("/proc/{zombie}/stat"))
            .is_ok_and(|s| s.contains(") Z "))
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        libc::close(rr);
        libc::close(rw);
        // Threads last: fork only from a single-threaded process.
        std::thread::spawn(|| idle_forever());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut real: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut real);
            libc::sigaddset(&mut real, libc::SIGUSR1);
            libc::pthread_sigmask(libc::SIG_BLOCK, &real, std::ptr::null_mut());
            let mut temp = real;
            libc::sigaddset(&mut temp, libc::SIGPROF);
            let _ = tx.send(libc::gettid());
            loop {
                libc::ppoll(std::ptr::null_mut(), 0, std::ptr::null(), &temp);
            }
        });
        let ppoll_tid = rx.recv().unwrap();
        // In the call, not on its way there.
        while !std::fs::read_to_string(format!("/proc/self/task/{ppoll_tid}/syscall"))
            .is_ok_and(|s| s.starts_with(&format!("{} ", libc::SYS_ppoll)))
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let m = Manifest {
            root: std::process::id() as i32,
            a,
            b,
            c: c[0],
            d,
            zombie,
            dir: dir.display().to_string(),
            fds,
            maps,
            root_threads: 3,
            a_threads: 2,
            ppoll_tid,
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(&m).unwrap()).unwrap();
        out.flush().unwrap();
        drop(out);
        wait_for_stdin_eof();
        let _ = std::fs::remove_dir_all(&dir);
        libc::_exit(0);
    }
}

/// Returns when standard input closes: how a served tree (the sample, the
/// benchmark's population) learns that its driver is done or dead.
pub fn wait_for_stdin_eof() {
    let mut sink = [0u8; 64];
    while std::io::stdin()
        .read(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {}
}

/// A running sample tree, killed when dropped.
pub struct SampleTree {
    pub child: std::process::Child,
    pub manifest: Manifest,
}

impl SampleTree {
    /// Starts `exe sample` (exe: the dumper binary) and reads its manifest.
    pub fn start(exe: &std::path::Path) -> std::io::Result<SampleTree> {
        // Its stderr is a pipe of its own, forwarded: an inherited stderr is
        // a file description shared with processes outside the tree (the
        // test runner writing to a log), whose position moves on while the
        // tree is frozen and makes collectors disagree.
        let mut child = std::process::Command::new(exe)
            .arg("sample")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut err, &mut std::io::stderr());
        });
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut out, &mut line)?;
        let manifest = serde_json::from_str(&line)
            .map_err(|e| std::io::Error::other(format!("sample manifest {line:?}: {e}")))?;
        Ok(SampleTree { child, manifest })
    }

    pub fn fd(&self, name: &str) -> u32 {
        self.manifest.fds[name] as u32
    }
}

impl Drop for SampleTree {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.manifest.dir);
    }
}
