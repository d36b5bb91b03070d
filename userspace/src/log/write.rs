//! The writing side: a file mapped shared, cut into chunks that threads
//! claim one at a time and fill without locks. What a thread stored is in
//! the page cache at once, so a crash or a SIGKILL of dumper loses
//! nothing that was logged before it.

use super::format::{self, hdr, CHUNK, CHUNK_HEADER, HEADER};
use std::cell::Cell;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{compiler_fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// Levels below this one are recorded: CRIU's -v numbers, 0 nothing (or
/// no log open), 1 errors, 2 warnings too, 3 information too, 4
/// everything. One load and one compare per call site.
pub static LIMIT: AtomicU8 = AtomicU8::new(0);

/// Address space reserved for the mapping; the file grows into it.
const CAPACITY: usize = 1 << 30;
/// Chunks the file grows by at a time.
const GROW: u64 = 16;

struct Writer {
    base: *mut u8,
    file: File,
    /// Chunks claimed.
    next: AtomicU64,
    /// Chunks the file has room for.
    room: Mutex<u64>,
    /// Records dropped because the log was full.
    dropped: AtomicU64,
    /// Chunks whose pages are already faulted in.
    ready: AtomicU64,
    /// Wakes the prefaulter when a chunk is claimed.
    wake: std::sync::Condvar,
    stop: std::sync::atomic::AtomicBool,
}

/// Chunks the prefaulter keeps ready ahead of the last claimed one
/// (DUMPER_LOG_AHEAD overrides it; 0: no prefaulter): 4 MiB, about what a
/// dump of 500 processes logs at -v4. It works while dumper prepares (the
/// eBPF programs load in 80 ms) and is held while the tree is frozen
/// ([`hold`]): there its page faults would compete with the dump's two
/// collection threads for a small machine's cores.
const AHEAD: u64 = 64;

static HOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Holds the prefaulter (`true`) while a tree is frozen, or lets it go on.
pub fn hold(on: bool) {
    HOLD.store(on, Ordering::Relaxed);
    if !on {
        if let Some(w) = writer() {
            let _g = w.room.lock().unwrap_or_else(|e| e.into_inner());
            w.wake.notify_one();
        }
    }
}

const MADV_POPULATE_WRITE: i32 = 23;

fn ahead() -> u64 {
    static A: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *A.get_or_init(|| {
        std::env::var("DUMPER_LOG_AHEAD")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(AHEAD)
    })
}

/// The first write to each page of a shared file mapping faults (and on
/// ext4 reserves its block): a few microseconds, which would land on the
/// logging thread once per page. A helper thread takes that cost ahead of
/// the writers, with MADV_POPULATE_WRITE (Linux 5.14), which faults pages
/// in without changing their bytes.
fn prefault(w: &'static Writer) {
    let mut room = w.room.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if w.stop.load(Ordering::Relaxed) {
            return;
        }
        let next = w.next.load(Ordering::Relaxed);
        let ready = w.ready.load(Ordering::Relaxed).max(next);
        if HOLD.load(Ordering::Relaxed)
            || ready >= next + ahead()
            || HEADER as u64 + (ready + 1) * CHUNK as u64 > CAPACITY as u64
        {
            room = w.wake.wait(room).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        if grow(w, &mut room, ready).is_err() {
            return;
        }
        drop(room);
        if fault_in(w, ready, 1).is_err() {
            // An older kernel: the writers fault their pages themselves.
            return;
        }
        w.ready.store(ready + 1, Ordering::Relaxed);
        room = w.room.lock().unwrap_or_else(|e| e.into_inner());
    }
}

// SAFETY: the mapping is shared memory; each chunk has one writer, the
// header fields are written under `room` or atomically.
unsafe impl Send for Writer {}
unsafe impl Sync for Writer {}

static WRITER: Mutex<Option<&'static Writer>> = Mutex::new(None);
static CURRENT: AtomicU64 = AtomicU64::new(0);
/// Bumped by every open, so that threads drop chunks of an older log.
static GENERATION: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Copy)]
struct Slot {
    pos: *mut u8,
    end: *mut u8,
    generation: u32,
    /// Records in this chunk so far.
    count: u32,
}

thread_local! {
    static SLOT: Cell<Slot> = const {
        Cell::new(Slot { pos: std::ptr::null_mut(), end: std::ptr::null_mut(), generation: 0, count: 0 })
    };
}

/// Debug records read the time stamp counter one time in this many (and
/// always first in a chunk); the decoder places the others between the
/// stamps around them. rdtsc takes 30-40 cycles on AMD's cores, as long as
/// the rest of a call; records of the other levels (phases, warnings,
/// errors: few) are always stamped.
pub const STAMP_EVERY: u32 = 8;

#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Stores `payload` bytes written by `fill` as one record of `site`, at
/// `level`. Dropped when no log is open or it is full.
#[inline(always)]
pub fn record(site: u32, level: u8, payload: usize, fill: impl FnOnce(*mut u8)) {
    let most = format::align8(16 + payload);
    // The slot's address only: the body below stays in the caller (a
    // closure this size given to `with` is not inlined).
    let c: *const Cell<Slot> = SLOT.with(|c| c as *const _);
    // SAFETY: the thread-local outlives this call on this thread.
    let c = unsafe { &*c };
    let mut s = c.get();
    if (s.end as usize).wrapping_sub(s.pos as usize) < most
        || s.generation != GENERATION.load(Ordering::Relaxed)
    {
        match refill(most) {
            Some(n) => s = n,
            None => return,
        }
    }
    let stamp = level < super::DEBUG || s.count % STAMP_EVERY == 0;
    let head = if stamp { 16 } else { 8 };
    let len = format::align8(head + payload);
    // SAFETY: [pos, pos + len) lies in this thread's chunk.
    unsafe {
        if stamp {
            s.pos.add(8).cast::<u64>().write(tsc());
        }
        fill(s.pos.add(head));
        // The header last: a record the writer did not finish reads as
        // the chunk's end.
        compiler_fence(Ordering::Release);
        s.pos.cast::<u64>().write(format::header(len, site, stamp));
        s.pos = s.pos.add(len);
    }
    s.count += 1;
    c.set(s);
}

/// Faults in `chunks` chunks from chunk `from` (they lie inside the file)
/// without changing their bytes.
fn fault_in(w: &Writer, from: u64, chunks: u64) -> std::io::Result<()> {
    // SAFETY: the range lies inside the file and the mapping; the advice
    // only faults pages in.
    let r = unsafe {
        libc::madvise(
            w.base.add(HEADER + from as usize * CHUNK).cast(),
            chunks as usize * CHUNK,
            MADV_POPULATE_WRITE,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the file long enough for chunk `n` (and GROW more), under the
/// `room` lock.
fn grow(w: &Writer, room: &mut u64, n: u64) -> std::io::Result<()> {
    if n >= *room {
        let want = n + 1 + GROW;
        w.file.set_len(HEADER as u64 + want * CHUNK as u64)?;
        *room = want;
    }
    Ok(())
}

/// Claims a new chunk for this thread (the slow path).
#[cold]
fn refill(len: usize) -> Option<Slot> {
    let w = writer()?;
    if len > CHUNK - CHUNK_HEADER {
        return None;
    }
    let n = w.next.fetch_add(1, Ordering::Relaxed);
    w.wake.notify_one();
    let end = HEADER as u64 + (n + 1) * CHUNK as u64;
    if end > CAPACITY as u64 {
        w.dropped.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    {
        let mut room = w.room.lock().unwrap_or_else(|e| e.into_inner());
        if grow(w, &mut room, n).is_err() {
            w.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // SAFETY: the header page is mapped; written under the lock.
        unsafe { put64(w.base, hdr::CHUNKS, w.next.load(Ordering::Relaxed)) };
    }
    // SAFETY: the chunk lies inside the file (grown above) and the mapping.
    unsafe {
        let c = w.base.add(HEADER + n as usize * CHUNK);
        c.add(4).cast::<u32>().write(libc::gettid() as u32);
        c.add(8).cast::<u64>().write(n);
        c.add(16).cast::<u64>().write(tsc());
        c.add(24).cast::<u64>().write(clock(libc::CLOCK_MONOTONIC));
        compiler_fence(Ordering::Release);
        c.cast::<u32>().write(format::CHUNK_MAGIC);
        Some(Slot {
            pos: c.add(CHUNK_HEADER),
            end: c.add(CHUNK),
            generation: GENERATION.load(Ordering::Relaxed),
            count: 0,
        })
    }
}

fn writer() -> Option<&'static Writer> {
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: CURRENT holds a leaked &'static Writer or 0.
    (p != 0).then(|| unsafe { &*(p as *const Writer) })
}

/// # Safety
/// `base + off .. + 8` must be mapped.
unsafe fn put64(base: *mut u8, off: usize, v: u64) {
    // SAFETY: per the caller.
    unsafe { base.add(off).cast::<u64>().write_unaligned(v) }
}

extern "C" fn in_child() {
    // A forked child shares the mapping: it must not write into chunks its
    // parent's threads own.
    LIMIT.store(0, Ordering::Relaxed);
    CURRENT.store(0, Ordering::Release);
}

/// Opens `path` (created or truncated) as the log at verbosity `v` (see
/// [`LIMIT`]).
pub fn open(path: &Path, v: u8, build: &str) -> std::io::Result<()> {
    // Held to the end: two opens at once must not both install a log, and
    // a second one must not truncate a file before it is refused.
    let mut cur = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    if cur.is_some() {
        return Err(std::io::Error::other("a log is open already"));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.set_len(HEADER as u64 + GROW * CHUNK as u64)?;
    let fd = file.as_raw_fd();
    // SAFETY: a plain mmap of our fd; the mapping is checked.
    let base = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            CAPACITY,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
            fd,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        p.cast::<u8>()
    };
    // SAFETY: the header page is mapped and inside the file.
    unsafe {
        std::ptr::copy_nonoverlapping(format::MAGIC.as_ptr(), base, 8);
        base.add(hdr::VERSION).cast::<u32>().write(format::VERSION);
        base.add(hdr::CHUNK).cast::<u32>().write(CHUNK as u32);
        base.add(hdr::PID).cast::<u32>().write(std::process::id());
        put64(base, hdr::OPEN, tsc());
        put64(base, hdr::OPEN + 8, clock(libc::CLOCK_MONOTONIC));
        put64(base, hdr::OPEN + 16, clock(libc::CLOCK_REALTIME));
        let b = build.as_bytes();
        let n = b.len().min(hdr::BUILD_LEN - 1);
        std::ptr::copy_nonoverlapping(b.as_ptr(), base.add(hdr::BUILD), n);
    }
    let w: &'static Writer = Box::leak(Box::new(Writer {
        base,
        file,
        next: AtomicU64::new(0),
        room: Mutex::new(GROW),
        dropped: AtomicU64::new(0),
        ready: AtomicU64::new(0),
        wake: std::sync::Condvar::new(),
        stop: std::sync::atomic::AtomicBool::new(false),
    }));
    if ahead() > 0 {
        std::thread::Builder::new()
            .name("dumper-log".into())
            .spawn(move || prefault(w))?;
    }
    *cur = Some(w);
    GENERATION.fetch_add(1, Ordering::Relaxed);
    CURRENT.store(w as *const Writer as u64, Ordering::Release);
    static ATFORK: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a handler that only stores to atomics.
    ATFORK.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(in_child));
    });
    LIMIT.store(v.min(4), Ordering::Relaxed);
    Ok(())
}

/// Faults in the next `chunks` chunks of the open log now, in the calling
/// thread (for benchmarks of the call alone, with DUMPER_LOG_AHEAD=0: no
/// prefaulter at work meanwhile).
pub fn populate(chunks: u64) -> std::io::Result<()> {
    let Some(w) = writer() else { return Ok(()) };
    let mut room = w.room.lock().unwrap_or_else(|e| e.into_inner());
    let from = w.next.load(Ordering::Relaxed);
    let want = (from + chunks).min(((CAPACITY - HEADER) / CHUNK) as u64 - GROW);
    if want > from {
        grow(w, &mut room, want - 1)?;
    }
    fault_in(w, from, want - from)?;
    w.ready.store(want, Ordering::Relaxed);
    Ok(())
}

/// Closes the log: no more records, the closing clock pair written, the
/// file cut to what was used, the mapping gone. Returns the records
/// dropped because it was full. Only once no other thread logs: dumper
/// closes at the end of main.
pub fn close() -> u64 {
    LIMIT.store(0, Ordering::Relaxed);
    let mut cur = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(w) = cur.take() else { return 0 };
    CURRENT.store(0, Ordering::Release);
    {
        let _room = w.room.lock().unwrap_or_else(|e| e.into_inner());
        w.stop.store(true, Ordering::Relaxed);
        w.wake.notify_one();
    }
    let used = w.next.load(Ordering::Relaxed);
    // SAFETY: the header page is mapped until the munmap below.
    unsafe {
        put64(w.base, hdr::CLOSE, tsc());
        put64(w.base, hdr::CLOSE + 8, clock(libc::CLOCK_MONOTONIC));
        put64(w.base, hdr::CHUNKS, used);
        libc::msync(w.base.cast(), HEADER, libc::MS_ASYNC);
    }
    let _ = w.file.set_len(HEADER as u64 + used * CHUNK as u64);
    GENERATION.fetch_add(1, Ordering::Relaxed);
    // SAFETY: nothing writes to the mapping any more (see above); the
    // prefaulter is told to stop, and a madvise on an unmapped range fails
    // harmlessly.
    unsafe { libc::munmap(w.base.cast(), CAPACITY) };
    w.dropped.load(Ordering::Relaxed)
}
