//! Programs the restore tests start, dump and restore (`dumper workload
//! NAME ...`, hidden): each reaches a known state and then goes on in a
//! way a test can check from outside, and fails loudly when what it
//! finds in its own memory is not what it left there.

use std::io::Write;
use std::os::fd::FromRawFd;

/// Counts forever: every 5 ms it adds one to a counter on the heap and
/// one on the stack, checks they agree, and writes the count as a line
/// to `out` (the file offset moving on with it). After a restore the
/// file goes on with the next number; a restore that lost memory, the
/// offset or the registers shows as a gap, a repeat, or a `BAD` line.
pub fn counter(out: &str) -> ! {
    // SAFETY: plain system calls on this process.
    unsafe {
        libc::setsid();
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        // The restorer's int3s force SIGTRAPs: an ignored one must come
        // back ignored.
        libc::signal(libc::SIGTRAP, libc::SIG_IGN);
    }
    count(out)
}

fn count(out: &str) -> ! {
    let mut f = std::fs::File::create(out).unwrap_or_else(|e| {
        eprintln!("workload counter: {out}: {e}");
        std::process::exit(1)
    });
    let mut heap = Box::new(0u64);
    let mut stack = 0u64;
    loop {
        *heap += 1;
        stack += 1;
        if *heap != stack {
            let _ = writeln!(f, "BAD heap {} stack {}", *heap, stack);
            std::process::exit(1);
        }
        let _ = writeln!(f, "{}", *heap);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Forks a child that runs `f`; its pid.
fn fork(f: impl FnOnce()) -> i32 {
    // SAFETY: the workload is single-threaded.
    match unsafe { libc::fork() } {
        0 => {
            f();
            std::process::exit(0)
        }
        p if p > 0 => p,
        _ => {
            eprintln!("workload: fork: {}", std::io::Error::last_os_error());
            std::process::exit(1)
        }
    }
}

/// A tree with two sessions, several groups and a zombie, every live
/// process a counter into `dir/NAME`: root R leads its session; A leads a
/// group in it; B leads a second session, where its child C leads a
/// group; D is in R's group; Z exited with status 7 and R never reaps it.
pub fn tree(dir: &str) -> ! {
    // SAFETY: plain system calls on this process.
    unsafe {
        libc::setsid();
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
    let at = |n: &str| format!("{dir}/{n}");
    fork(|| {
        // A zombie that ignored SIGTRAP (see counter).
        // SAFETY: a disposition of this process's own.
        unsafe { libc::signal(libc::SIGTRAP, libc::SIG_IGN) };
        std::process::exit(7)
    });
    let a = at("A");
    fork(move || {
        // SAFETY: a new group for this process.
        unsafe { libc::setpgid(0, 0) };
        count(&a)
    });
    let (b, c) = (at("B"), at("C"));
    fork(move || {
        // SAFETY: a new session, and the subreaper flag, for this process.
        unsafe {
            libc::setsid();
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        fork(move || {
            // SAFETY: a new group for this process.
            unsafe { libc::setpgid(0, 0) };
            count(&c)
        });
        count(&b)
    });
    let d = at("D");
    fork(move || count(&d));
    count(&at("R"))
}

/// A writer and a reader of one pipe: child W writes the numbers 1, 2,
/// 3, ... a line each into the pipe as fast as it takes them (so it is
/// full, 64 KiB buffered, most of the time); the root reads a line every
/// 2 ms (through a 16-byte buffer: what it has not read is in the pipe)
/// With `fifo`, the two talk through a FIFO made at that path instead;
/// with `socket`, through a unix stream socket pair.
/// and writes it to `out`. Bytes a restore lost or repeated show as
/// a gap or a repeat in `out`.
pub fn pipe(out: &str, fifo: Option<&str>, socket: bool) -> ! {
    // SAFETY: plain system calls on this process.
    unsafe {
        libc::setsid();
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
    let (r, w) = match fifo {
        // The same through a FIFO: each side opens its end by path (the
        // writer in the child, or the reader's open would wait for it).
        Some(path) => {
            let c = std::ffi::CString::new(path).unwrap_or_default();
            // SAFETY: mkfifo with a NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } < 0 {
                std::process::exit(1);
            }
            (-1, -1)
        }
        None => {
            let mut fds = [0; 2];
            // SAFETY: pipe or socketpair into a local array.
            let r = unsafe {
                if socket {
                    libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr())
                } else {
                    libc::pipe(fds.as_mut_ptr())
                }
            };
            if r < 0 {
                std::process::exit(1);
            }
            (fds[0], fds[1])
        }
    };
    let open = |write: bool| {
        let p = fifo.unwrap_or_default();
        let f = if write {
            std::fs::OpenOptions::new().write(true).open(p)
        } else {
            std::fs::File::open(p)
        };
        f.unwrap_or_else(|_| std::process::exit(1))
    };
    fork(move || {
        // SAFETY: each side owns one end from here on.
        let mut w = if fifo.is_some() {
            open(true)
        } else {
            unsafe {
                libc::close(r);
                std::fs::File::from_raw_fd(w)
            }
        };
        for n in 1u64.. {
            if writeln!(w, "{n}").is_err() {
                std::process::exit(1);
            }
        }
    });
    let r = if fifo.is_some() {
        open(false)
    } else {
        // SAFETY: as above.
        unsafe {
            libc::close(w);
            std::fs::File::from_raw_fd(r)
        }
    };
    let mut f = std::fs::File::create(out).unwrap_or_else(|_| std::process::exit(1));
    let mut lines = std::io::BufRead::lines(std::io::BufReader::with_capacity(16, r));
    loop {
        match lines.next() {
            Some(Ok(l)) => {
                let _ = writeln!(f, "{l}");
            }
            _ => std::process::exit(1),
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Word `i` of the memory workload's heap pattern.
fn word(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555_0000_aaaa_ffff
}

/// Memory to find again byte for byte: a `mib` MiB heap filled with a
/// pattern, and a private mapping of `file` (made here, 4 pages of 'f')
/// whose second page it overwrites with 'm'. Every 20 ms it checks all of
/// it and writes `ok N` to `out` (N counting up), or `BAD ...` and exits.
pub fn memory(out: &str, file: &str, mib: usize) -> ! {
    // SAFETY: plain system calls on this process.
    unsafe {
        libc::setsid();
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
    let page = 4096;
    std::fs::write(file, vec![b'f'; 4 * page]).unwrap_or_else(|_| std::process::exit(1));
    let f = std::fs::File::open(file).unwrap_or_else(|_| std::process::exit(1));
    // SAFETY: a fresh private mapping of the file.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    if m == libc::MAP_FAILED {
        std::process::exit(1);
    }
    drop(f);
    // SAFETY: the mapping is 4 pages, writable.
    let map = unsafe { std::slice::from_raw_parts_mut(m as *mut u8, 4 * page) };
    map[page..2 * page].fill(b'm');
    let n = mib << 17;
    let heap: Vec<u64> = (0..n).map(word).collect();
    let mut out = std::fs::File::create(out).unwrap_or_else(|_| std::process::exit(1));
    for round in 1u64.. {
        if let Some(i) = (0..n).find(|&i| heap[i] != word(i)) {
            let _ = writeln!(out, "BAD heap word {i}");
            std::process::exit(1);
        }
        for (p, want) in [(0, b'f'), (1, b'm'), (2, b'f'), (3, b'f')] {
            if map[p * page..(p + 1) * page].iter().any(|&b| b != want) {
                let _ = writeln!(out, "BAD mapping page {p}");
                std::process::exit(1);
            }
        }
        let _ = writeln!(out, "ok {round}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    unreachable!()
}

/// A forked tree sharing memory copy-on-write: the root fills a `mib`
/// MiB heap with the pattern, then forks 3 children; each of the four
/// checks the heap every 20 ms (reading only, so the pages stay shared)
/// and writes `ok N` to `dir/NAME`.
pub fn forked(dir: &str, mib: usize) -> ! {
    // SAFETY: plain system calls on this process.
    unsafe {
        libc::setsid();
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
    let n = mib << 17;
    let heap: Vec<u64> = (0..n).map(word).collect();
    let check = |name: String| -> ! {
        let mut out = std::fs::File::create(name).unwrap_or_else(|_| std::process::exit(1));
        for round in 1u64.. {
            if let Some(i) = (0..n).find(|&i| heap[i] != word(i)) {
                let _ = writeln!(out, "BAD heap word {i}");
                std::process::exit(1);
            }
            let _ = writeln!(out, "ok {round}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        unreachable!()
    };
    for c in ["A", "B", "C"] {
        let name = format!("{dir}/{c}");
        fork(|| check(name));
    }
    check(format!("{dir}/R"))
}

/// A process of three threads, each counting into `dir/NAME` (M the main
/// thread, T1 with SIGUSR1 blocked, T2), and a fourth (J) that exits once
/// the file `dir/stop` exists: the main thread then joins it (which needs
/// the kernel to clear and wake J's tid word, as set_tid_address asked)
/// and writes `joined` to `dir/J`.
pub fn threads(dir: &str) -> ! {
    // SAFETY: plain system calls on this process.
    unsafe {
        libc::setsid();
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
    let d = dir.to_string();
    std::thread::spawn(move || {
        // SAFETY: a signal mask of this thread's own.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        count(&format!("{d}/T1"))
    });
    let d = dir.to_string();
    std::thread::spawn(move || count(&format!("{d}/T2")));
    let stop = format!("{dir}/stop");
    let s = stop.clone();
    let mut joiner = Some(std::thread::spawn(move || {
        while !std::path::Path::new(&s).exists() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }));
    let mut f = std::fs::File::create(format!("{dir}/M")).unwrap_or_else(|_| std::process::exit(1));
    let mut heap = Box::new(0u64);
    loop {
        *heap += 1;
        let _ = writeln!(f, "{}", *heap);
        if joiner.as_ref().is_some_and(|j| j.is_finished()) || std::path::Path::new(&stop).exists()
        {
            if let Some(j) = joiner.take() {
                let _ = j.join();
                let _ = std::fs::write(format!("{dir}/J"), "joined\n");
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Reads `input` (the numbers 1, 2, 3, ... a line each) a line every
/// 2 ms through a 16-byte buffer, so that its place in the file is the
/// file offset, and copies each line to `out`. A restore that lost the
/// offset shows as a gap or a repeat in `out`.
pub fn reader(input: &str, out: &str) -> ! {
    // SAFETY: plain system calls on this process.
    unsafe {
        libc::setsid();
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
    let f = std::fs::File::open(input).unwrap_or_else(|_| std::process::exit(1));
    let mut o = std::fs::File::create(out).unwrap_or_else(|_| std::process::exit(1));
    for l in std::io::BufRead::lines(std::io::BufReader::with_capacity(16, f)) {
        match l {
            Ok(l) => {
                let _ = writeln!(o, "{l}");
            }
            Err(_) => std::process::exit(1),
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// A semaphore eventfd started at 300: every 5 ms the program takes one
/// from it (a read) and writes the number taken so far to `out`, until it
/// is empty and the read blocks for good. A restore that lost or changed
/// the counter shows as fewer or more than 300 lines.
pub fn eventfd(out: &str) -> ! {
    // SAFETY: plain system calls on this process and its own eventfd.
    unsafe {
        libc::setsid();
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        let e = libc::eventfd(300, libc::EFD_SEMAPHORE);
        let mut f = std::fs::File::create(out).unwrap_or_else(|_| std::process::exit(1));
        for n in 1u64.. {
            let mut v = 0u64;
            if libc::read(e, (&mut v as *mut u64).cast(), 8) != 8 {
                std::process::exit(1);
            }
            let _ = writeln!(f, "{n}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    unreachable!()
}

/// Shared memory between two processes: a shared anonymous mapping the
/// child inherits, and a memfd the root maps and the child maps itself
/// (from the fd it inherited). The child adds one to a word of each every
/// 5 ms; the root writes the two words it sees as a line `A B` to `out`.
/// After a restore both go on from where they were only if the contents
/// came back and the two processes share the objects again.
pub fn shared(out: &str) -> ! {
    let page = 4096;
    // SAFETY: plain system calls and mappings of this process's own.
    unsafe {
        libc::setsid();
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        let anon = libc::mmap(
            std::ptr::null_mut(),
            16 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        let mfd = libc::memfd_create(c"dumper-shared".as_ptr(), 0);
        if anon == libc::MAP_FAILED || mfd < 0 || libc::ftruncate(mfd, 16 * page as i64) < 0 {
            std::process::exit(1);
        }
        let map = |fd: i32| {
            let p = libc::mmap(
                std::ptr::null_mut(),
                16 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if p == libc::MAP_FAILED {
                std::process::exit(1);
            }
            p as *mut u64
        };
        let a = anon as *mut u64;
        fork(move || {
            let m = map(mfd);
            loop {
                std::ptr::write_volatile(a, std::ptr::read_volatile(a) + 1);
                std::ptr::write_volatile(m, std::ptr::read_volatile(m) + 1);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        let m = map(mfd);
        let mut f = std::fs::File::create(out).unwrap_or_else(|_| std::process::exit(1));
        loop {
            let _ = writeln!(
                f,
                "{} {}",
                std::ptr::read_volatile(a),
                std::ptr::read_volatile(m)
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// Two processes sharing one fd table (clone with CLONE_FILES, not
/// fork): each counts into its own file, opened by the child after the
/// clone, so the root holds the child's fd too.
pub fn shared_fds(dir: &str) -> ! {
    // SAFETY: plain system calls on this process; clone without CLONE_VM
    // returns in the child on a copy of this stack, as fork does.
    unsafe {
        libc::setsid();
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        let r = libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_FILES | libc::SIGCHLD) as u64,
            0,
            0,
            0,
            0,
        );
        if r == 0 {
            count(&format!("{dir}/C"))
        }
        if r < 0 {
            std::process::exit(1);
        }
    }
    count(&format!("{dir}/R"))
}

/// A session whose leader is gone: the root R (a subreaper) forks B, B
/// makes its own session and forks C, then B exits and R reaps it; C,
/// orphaned, is R's child in B's session and group. Both count into
/// `dir/R` and `dir/C`. (A restore has to make B's session with a helper
/// at B's pid and bring C back under R: clone_parent from the helper.)
pub fn orphan(dir: &str) -> ! {
    // SAFETY: plain system calls on this process.
    unsafe {
        libc::setsid();
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let c = format!("{dir}/C");
    let b = fork(move || {
        // SAFETY: a new session for B.
        unsafe { libc::setsid() };
        fork(move || count(&c));
        std::process::exit(0)
    });
    // SAFETY: reaping B.
    unsafe { libc::waitpid(b, std::ptr::null_mut(), 0) };
    count(&format!("{dir}/R"))
}

/// Runs workload `name` with `args`. Never returns.
pub fn run(name: &str, args: &[String]) -> ! {
    match (name, args) {
        ("counter", [out]) => counter(out),
        ("tree", [dir]) => tree(dir),
        ("pipe", [out]) => pipe(out, None, false),
        ("fifo", [out, path]) => pipe(out, Some(path), false),
        ("socket", [out]) => pipe(out, None, true),
        ("threads", [dir]) => threads(dir),
        ("reader", [input, out]) => reader(input, out),
        ("eventfd", [out]) => eventfd(out),
        ("shared", [out]) => shared(out),
        ("shared-fds", [dir]) => shared_fds(dir),
        ("orphan", [dir]) => orphan(dir),
        ("memory", [out, file, mib]) => memory(out, file, mib.parse().unwrap_or(64)),
        ("forked", [dir, mib]) => forked(dir, mib.parse().unwrap_or(32)),
        _ => {
            // SAFETY: fd 2 stays open for the process's life.
            let mut err = unsafe { std::fs::File::from_raw_fd(2) };
            let _ = writeln!(err, "dumper: unknown workload {name} {args:?}");
            std::process::exit(2)
        }
    }
}
