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
    }
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

/// Runs workload `name` with `args`. Never returns.
pub fn run(name: &str, args: &[String]) -> ! {
    match (name, args) {
        ("counter", [out]) => counter(out),
        _ => {
            // SAFETY: fd 2 stays open for the process's life.
            let mut err = unsafe { std::fs::File::from_raw_fd(2) };
            let _ = writeln!(err, "dumper: unknown workload {name} {args:?}");
            std::process::exit(2)
        }
    }
}
