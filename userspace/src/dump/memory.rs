//! Memory contents of a frozen tree, each page saved once.
//!
//! - Private mappings (anonymous, heap, stack, private file mappings):
//!   the pages /proc/PID/pagemap shows present and anonymous (bit 61
//!   clear: a clean page of a private file mapping is the file's and is
//!   mapped from it again at restore), or swapped out.
//! - Pages still shared copy-on-write since a fork have one physical frame
//!   (pagemap's PFN, visible to root); the first process met with a frame
//!   saves it and every other one's page map points at that copy. Pages
//!   pagemap marks exclusively mapped (bit 56) need no lookup.
//! - Shared memory objects (shared anonymous mappings, memfd, SysV shm)
//!   are read once per (dev, ino) from the object itself
//!   (/proc/PID/map_files, /proc/PID/fd) with SEEK_DATA/SEEK_HOLE, so
//!   their swapped and unmapped pages come along.
//! - Shared file mappings and the kernel's special mappings (vdso, vvar)
//!   are not saved.
//!
//! Copies of pages mapped once are made with process_vm_readv, many ranges
//! a call, into a buffer written to pages.img in large pieces. Pages
//! mapped more than once, swapped out, or in mappings the tree cannot read
//! are read through /proc/PID/mem instead: process_vm_readv pins pages
//! (FOLL_PIN), and a read-only pin of an anonymous page that is not
//! exclusive makes the kernel unshare it first (mm/internal.h,
//! gup_must_unshare), so copying a forked tree with it would give every
//! process its own copy of what it shared: measured here, a dump of a
//! python3 process with 3 children that shared 3,580 pages with it left
//! them sharing 1. /proc/PID/mem takes references (FOLL_GET), which do not
//! unshare.

use super::DumpError;
use crate::image::write::RawFile;
use crate::image::{Memory, PageRange, ProcessPages, ShmemObject, PAGE_SIZE};
use crate::model::{FileType, Snapshot, Task, Vma};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crate::pagemap::{
    EXCLUSIVE as PM_EXCLUSIVE, FILE as PM_FILE, PFN_MASK, PRESENT as PM_PRESENT, SWAP as PM_SWAP,
};
/// Bytes copied per batch: large enough that system calls do not count,
/// small enough to stay in cache-friendly territory.
const BATCH: usize = 8 << 20;
/// IOV_MAX.
const MAX_IOV: usize = 1024;
/// Pages whose pagemap entries are read at a time (512 KiB of entries).
const PAGEMAP_CHUNK: u64 = 64 * 1024;

/// The names the kernel gives mappings whose pages are not the process's
/// to save.
const SPECIAL: [&str; 4] = ["[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]"];

/// Shared memory the kernel backs with an internal shmem file.
pub fn is_shmem(v: &Vma) -> bool {
    v.shared
        && v.path.as_deref().is_some_and(|p| {
            p.starts_with("/dev/zero (deleted)")
                || p.starts_with("/SYSV")
                || p.starts_with("/memfd:")
        })
}

/// What one page of a process will be in the image.
#[derive(Clone, Copy)]
enum Src {
    /// Saved at this page of pages.img by this process.
    Own(u64),
    /// The copy another process saved of the same frame.
    Shared(u64),
}

struct Page {
    addr: u64,
    pfn: Option<u64>,
    src: Src,
}

struct Plan {
    pid: i32,
    pages: Vec<Page>,
    /// Pages copied through /proc/PID/mem (see the module comment).
    via_mem: HashSet<u64>,
}

pub struct Stats {
    pub pages_written: u64,
    pub pages_shared: u64,
}

fn pagemap_entries(pm: &File, pid: i32, start: u64, end: u64) -> Result<Vec<u64>, DumpError> {
    crate::pagemap::entries(pm, start, end)
        .map_err(|e| DumpError::io(format!("/proc/{pid}/pagemap"), e))
}

fn open_pagemap(pid: i32) -> Result<File, DumpError> {
    File::open(format!("/proc/{pid}/pagemap"))
        .map_err(|e| DumpError::io(format!("/proc/{pid}/pagemap"), e))
}

/// Saves the memory of every live process of `snap` into `out`.
/// Pages in `scratch` (by pid) are dumper's own, see
/// [`crate::freeze::Frozen::not_the_trees`].
pub fn dump(
    snap: &Snapshot,
    scratch: &HashMap<i32, HashSet<u64>>,
    out: &mut RawFile,
) -> Result<(Memory, Stats), DumpError> {
    let live: Vec<&Task> = snap
        .tasks
        .iter()
        .filter(|t| !t.kthread && t.state != "Z")
        .collect();
    // Pass 1: which pages, and which frames are met more than once.
    let mut owner: HashMap<u64, u64> = HashMap::new();
    let mut next = out.pages();
    let mut plans = vec![];
    let mut shared = 0u64;
    for t in &live {
        let pm = open_pagemap(t.pid)?;
        let mut plan = Plan {
            pid: t.pid,
            pages: vec![],
            via_mem: HashSet::new(),
        };
        for v in &t.vmas {
            if (v.shared && v.path.is_some())
                || v.path.as_deref().is_some_and(|p| SPECIAL.contains(&p))
            {
                continue;
            }
            // In pieces: a reservation of terabytes (a sanitizer's shadow)
            // would otherwise need gigabytes of pagemap at once.
            let mut entries = vec![];
            let mut from = v.start;
            let mut k = 0;
            loop {
                if k == entries.len() {
                    if from >= v.end {
                        break;
                    }
                    let to = v.end.min(from + PAGEMAP_CHUNK * PAGE_SIZE);
                    entries = pagemap_entries(&pm, t.pid, from, to)?;
                    k = 0;
                    from = to;
                }
                let e = entries[k];
                let addr = from - (entries.len() - k) as u64 * PAGE_SIZE;
                k += 1;
                let wanted = (e & PM_PRESENT != 0 && e & PM_FILE == 0) || e & PM_SWAP != 0;
                if !wanted || scratch.get(&t.pid).is_some_and(|s| s.contains(&addr)) {
                    continue;
                }
                if !v.prot.read || e & PM_EXCLUSIVE == 0 {
                    plan.via_mem.insert(addr);
                }
                // Without CAP_SYS_ADMIN pagemap shows every PFN as 0: then
                // no page can be known shared, and each is saved as its own.
                let pfn = (e & PM_PRESENT != 0 && e & PM_EXCLUSIVE == 0)
                    .then_some(e & PFN_MASK)
                    .filter(|&p| p != 0);
                let src = match pfn.and_then(|p| owner.get(&p)) {
                    Some(&at) => {
                        shared += 1;
                        Src::Shared(at)
                    }
                    None => {
                        if let Some(p) = pfn {
                            owner.insert(p, next);
                        }
                        next += 1;
                        Src::Own(next - 1)
                    }
                };
                plan.pages.push(Page { addr, pfn, src });
            }
        }
        plans.push(plan);
    }
    // Copy what each process owns, in pages.img order.
    for p in &plans {
        copy_owned(p, out)?;
    }
    // Pass 2: a frame that moved between pass 1 and the copies (memory
    // compaction, NUMA balancing) could have made two different pages look
    // like one. Pages whose frame changed get a copy of their own.
    let mut memory = Memory::default();
    for p in &mut plans {
        let moved = moved_frames(p)?;
        for pg in p.pages.iter_mut().filter(|pg| moved.contains(&pg.addr)) {
            if let Src::Shared(_) = pg.src {
                let b = read_mem_pages(p.pid, pg.addr, 1)?;
                pg.src = Src::Own(out.pages());
                out.write(&b)?;
                shared -= 1;
            }
        }
        memory.processes.push(ProcessPages {
            pid: p.pid,
            ranges: ranges(p.pages.iter().map(|pg| {
                let at = match pg.src {
                    Src::Own(a) | Src::Shared(a) => a,
                };
                (pg.addr, at)
            })),
        });
    }
    memory.shmem = dump_shmem(&live, out)?;
    let stats = Stats {
        pages_written: out.pages(),
        pages_shared: shared,
    };
    memory.pages_written = stats.pages_written;
    memory.pages_shared = stats.pages_shared;
    Ok((memory, stats))
}

/// Addresses of pages of `p` whose frame is no longer the one pass 1 saw.
fn moved_frames(p: &Plan) -> Result<HashSet<u64>, DumpError> {
    let mut moved = HashSet::new();
    if !p.pages.iter().any(|pg| pg.pfn.is_some()) {
        return Ok(moved);
    }
    let pm = open_pagemap(p.pid)?;
    // One pagemap read per run of consecutive pages.
    let pages: Vec<&Page> = p.pages.iter().filter(|pg| pg.pfn.is_some()).collect();
    let mut i = 0;
    while i < pages.len() {
        let mut j = i + 1;
        while j < pages.len() && pages[j].addr == pages[j - 1].addr + PAGE_SIZE {
            j += 1;
        }
        let e = pagemap_entries(&pm, p.pid, pages[i].addr, pages[j - 1].addr + PAGE_SIZE)?;
        for (pg, e) in pages[i..j].iter().zip(e) {
            if e & PM_PRESENT == 0 || Some(e & PFN_MASK) != pg.pfn {
                moved.insert(pg.addr);
            }
        }
        i = j;
    }
    Ok(moved)
}

/// Merges (addr, at) pairs into ranges contiguous in both.
fn ranges(pages: impl Iterator<Item = (u64, u64)>) -> Vec<PageRange> {
    let mut out: Vec<PageRange> = vec![];
    for (addr, at) in pages {
        if let Some(r) = out.last_mut() {
            if r.addr + r.pages * PAGE_SIZE == addr && r.at + r.pages == at {
                r.pages += 1;
                continue;
            }
        }
        out.push(PageRange { addr, pages: 1, at });
    }
    out
}

/// Copies the pages `p` owns, which are consecutive in pages.img.
fn copy_owned(p: &Plan, out: &mut RawFile) -> Result<(), DumpError> {
    let mem = File::open(format!("/proc/{}/mem", p.pid))
        .map_err(|e| DumpError::io(format!("/proc/{}/mem", p.pid), e))?;
    let own: Vec<u64> = p
        .pages
        .iter()
        .filter_map(|pg| match pg.src {
            Src::Own(_) => Some(pg.addr),
            Src::Shared(_) => None,
        })
        .collect();
    let mut buf: Vec<u8> = Vec::with_capacity(BATCH);
    let mut iov: Vec<(u64, u64)> = vec![];
    let flush = |buf: &mut Vec<u8>, iov: &mut Vec<(u64, u64)>, out: &mut RawFile| {
        if iov.is_empty() {
            return Ok::<(), DumpError>(());
        }
        let total: u64 = iov.iter().map(|r| r.1).sum();
        buf.resize(total as usize, 0);
        readv(p.pid, iov, buf)?;
        out.write(buf)?;
        buf.clear();
        iov.clear();
        Ok(())
    };
    let mut run: Option<(u64, u64)> = None;
    let mem_run = |run: &mut Option<(u64, u64)>, out: &mut RawFile| {
        if let Some((a, len)) = run.take() {
            let mut b = vec![0u8; len as usize];
            log_debug!(
                "task {} pread /proc/{}/mem at {:#x}, {} bytes",
                p.pid,
                p.pid,
                a,
                len
            );
            mem.read_exact_at(&mut b, a)
                .map_err(|e| DumpError::io(format!("/proc/{}/mem at {a:#x}", p.pid), e))?;
            out.write(&b)?;
        }
        Ok::<(), DumpError>(())
    };
    for addr in own {
        if p.via_mem.contains(&addr) {
            flush(&mut buf, &mut iov, out)?;
            match &mut run {
                Some((a, len)) if *a + *len == addr && *len < BATCH as u64 => *len += PAGE_SIZE,
                _ => {
                    mem_run(&mut run, out)?;
                    run = Some((addr, PAGE_SIZE));
                }
            }
            continue;
        }
        mem_run(&mut run, out)?;
        match iov.last_mut() {
            Some(r) if r.0 + r.1 == addr => r.1 += PAGE_SIZE,
            _ => iov.push((addr, PAGE_SIZE)),
        }
        let queued: u64 = iov.iter().map(|r| r.1).sum();
        if iov.len() == MAX_IOV || queued as usize >= BATCH {
            flush(&mut buf, &mut iov, out)?;
        }
    }
    flush(&mut buf, &mut iov, out)?;
    mem_run(&mut run, out)
}

/// process_vm_readv of `ranges` into `buf`, all of it or an error.
fn readv(pid: i32, ranges: &[(u64, u64)], buf: &mut [u8]) -> Result<(), DumpError> {
    let remote: Vec<libc::iovec> = ranges
        .iter()
        .map(|&(a, l)| libc::iovec {
            iov_base: a as *mut libc::c_void,
            iov_len: l as usize,
        })
        .collect();
    let mut done = 0usize;
    let mut first = 0usize;
    let mut skip = 0usize;
    while first < remote.len() {
        let mut r = remote[first..].to_vec();
        r[0].iov_base = (r[0].iov_base as usize + skip) as *mut libc::c_void;
        r[0].iov_len -= skip;
        let local = libc::iovec {
            iov_base: buf[done..].as_mut_ptr().cast(),
            iov_len: buf.len() - done,
        };
        // SAFETY: local points into buf; the remote ranges are only read.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, r.as_ptr(), r.len() as u64, 0) };
        log_debug!(
            "task {} process_vm_readv({} ranges from {:#x}, {} bytes) = {}",
            pid,
            r.len(),
            r[0].iov_base as u64,
            local.iov_len,
            n as i64
        );
        if crate::log::enabled(crate::log::DEBUG) {
            for x in &r {
                log_debug!(
                    "task {} page range {:#x} +{} bytes",
                    pid,
                    x.iov_base as u64,
                    x.iov_len
                );
            }
        }
        if n <= 0 {
            let e = std::io::Error::last_os_error();
            let at = ranges[first].0 + skip as u64;
            return Err(DumpError::Kernel(format!(
                "process {pid}: process_vm_readv at {at:#x}: {}",
                if n == 0 {
                    "nothing read".into()
                } else {
                    e.to_string()
                }
            )));
        }
        // A short read stops at a range boundary or inside a range: go on
        // from there.
        let mut n = n as usize;
        done += n;
        while n > 0 {
            let left = remote[first].iov_len - skip;
            if n >= left {
                n -= left;
                first += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// Pages through /proc/PID/mem (FOLL_GET | FOLL_FORCE: no unsharing, and
/// mappings the process may not read are reached too).
fn read_mem_pages(pid: i32, addr: u64, pages: u64) -> Result<Vec<u8>, DumpError> {
    let path = format!("/proc/{pid}/mem");
    let f = File::open(&path).map_err(|e| DumpError::io(&path, e))?;
    let mut b = vec![0u8; (pages * PAGE_SIZE) as usize];
    log_debug!(
        "task {} pread /proc/{}/mem at {:#x}, {} pages",
        pid,
        pid,
        addr,
        pages
    );
    f.read_exact_at(&mut b, addr)
        .map_err(|e| DumpError::io(format!("{path} at {addr:#x}"), e))?;
    Ok(b)
}

/// The data extents of a file: (offset, length) pairs from SEEK_DATA and
/// SEEK_HOLE, page aligned.
fn extents(f: &File, size: u64) -> Vec<(u64, u64)> {
    let fd = f.as_raw_fd();
    let mut out = vec![];
    let mut at = 0i64;
    while (at as u64) < size {
        // SAFETY: lseek on an fd we own.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { size as i64 } else { hole };
        let s = data as u64 / PAGE_SIZE * PAGE_SIZE;
        let e = (hole as u64).min(size).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if e > s {
            out.push((s, e - s));
        }
        at = hole;
    }
    out
}

/// Each shared memory object of the tree, once.
fn dump_shmem(live: &[&Task], out: &mut RawFile) -> Result<Vec<ShmemObject>, DumpError> {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut objects = vec![];
    for t in live {
        let maps = t.vmas.iter().filter(|v| is_shmem(v)).map(|v| {
            (
                (v.dev, v.ino),
                format!("/proc/{}/map_files/{:x}-{:x}", t.pid, v.start, v.end),
                Some(v),
            )
        });
        let fds = t
            .fds
            .iter()
            .filter(|f| f.kind == FileType::Memfd)
            .map(|f| ((f.dev, f.ino), format!("/proc/{}/fd/{}", t.pid, f.fd), None));
        for (key, path, vma) in maps.chain(fds).collect::<Vec<_>>() {
            if !seen.insert(key) {
                continue;
            }
            let mut obj = ShmemObject {
                dev: key.0,
                ino: key.1,
                ..Default::default()
            };
            let sysv =
                vma.is_some_and(|v| v.path.as_deref().is_some_and(|p| p.starts_with("/SYSV")));
            let opened = File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f)));
            match opened {
                Ok((size, f)) if !sysv => {
                    obj.size = size;
                    let mut pairs = vec![];
                    for (off, len) in extents(&f, size) {
                        let mut b = vec![0u8; len as usize];
                        f.read_exact_at(&mut b, off)
                            .map_err(|e| DumpError::io(&path, e))?;
                        for i in 0..len / PAGE_SIZE {
                            pairs.push((off + i * PAGE_SIZE, out.pages() + i));
                        }
                        out.write(&b)?;
                    }
                    obj.ranges = ranges(pairs.into_iter());
                }
                // SysV shm files cannot be read(2): copy what the mapping
                // shows, from its page offset on.
                _ => {
                    let Some(v) = vma else {
                        return Err(DumpError::Kernel(format!("cannot read memfd {path}")));
                    };
                    let pages = (v.end - v.start) / PAGE_SIZE;
                    let b = read_mem_pages(t.pid, v.start, pages)?;
                    obj.size = v.pgoff + (v.end - v.start);
                    obj.ranges = vec![PageRange {
                        addr: v.pgoff,
                        pages,
                        at: out.pages(),
                    }];
                    out.write(&b)?;
                }
            }
            objects.push(obj);
        }
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_only_when_contiguous_on_both_sides() {
        let r = ranges([(0x1000, 5), (0x2000, 6), (0x3000, 2), (0x5000, 3)].into_iter());
        let pr = |addr, pages, at| PageRange { addr, pages, at };
        assert_eq!(
            r,
            vec![pr(0x1000, 2, 5), pr(0x3000, 1, 2), pr(0x5000, 1, 3)]
        );
    }
}
