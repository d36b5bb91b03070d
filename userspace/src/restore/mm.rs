//! A process's address space, replaced: dumper's mappings go (all but the
//! hole, which goes last, see [`super::tracee::Tracee::finish`]), the
//! kernel's vdso and vvar move to their dumped addresses, every dumped
//! mapping is made again at its address with its protection, flags and
//! file offset, the saved pages are written in, and the mm's fields
//! (brk, arguments, environment, auxiliary vector, exe) are set with
//! PR_SET_MM_MAP, the one PR_SET_MM option that needs no CAP_SYS_RESOURCE.

use super::files::same_file;
use super::tracee::{self, terr, TraceError, Tracee, HOLE_LEN};
use super::RestoreError;
use crate::image::read::Image;
use crate::model::{Snapshot, Task, Vma};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

/// The kernel's mappings, moved rather than made.
const SPECIAL: [&str; 3] = ["[vdso]", "[vvar]", "[vvar_vclock]"];
/// Linux 5.14's madvise advice (not in the libc crate's list here).
const MADV_POPULATE_WRITE: u64 = 23;
/// Above the last user address (x86-64, 4-level paging).
const TASK_END: u64 = 0x7fff_ffff_f000;

/// A mapping of a file reopened by path (shared memory objects are made
/// anew, `shm.rs`).
fn is_file(v: &Vma) -> bool {
    v.path.as_deref().is_some_and(|p| p.starts_with('/')) && !crate::dump::memory::is_shmem(v)
}

fn special(v: &Vma) -> Option<&str> {
    v.path
        .as_deref()
        .filter(|p| SPECIAL.contains(p) || *p == "[vsyscall]")
}

/// Every mapped file is the one dumped.
pub fn check_files(snap: &Snapshot) -> Result<(), RestoreError> {
    for t in snap.tasks.iter().filter(|t| t.state != "Z") {
        for v in t.vmas.iter().filter(|v| is_file(v)) {
            same_file(v.path.as_deref().unwrap(), v.dev, v.ino).map_err(|why| {
                RestoreError::Changed(format!(
                    "process {} mapping {:#x}-{:#x}: {why}: restore needs the files as they were at the dump",
                    t.pid, v.start, v.end
                ))
            })?;
        }
    }
    Ok(())
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// An address for the hole that no dumped mapping of any process uses,
/// mapped in dumper (so every process created inherits it).
pub fn pick_hole(snap: &Snapshot) -> Result<u64, RestoreError> {
    let min = std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(65536)
        .max(tracee::PAGE);
    let used: Vec<(u64, u64)> = snap
        .tasks
        .iter()
        .flat_map(|t| t.vmas.iter().map(|v| (v.start, v.end)))
        .collect();
    let mut at = (min + HOLE_LEN - 1) & !(tracee::PAGE - 1);
    // Low addresses first (free in nearly every layout), then upward in
    // 1 GiB steps.
    let mut tries = 0;
    while at + HOLE_LEN < TASK_END && tries < 4096 {
        let r = (at, at + HOLE_LEN);
        if !used.iter().any(|&u| overlaps(u, r)) && tracee::map_hole(at).is_ok() {
            log_debug!("hole at {:#x}", at);
            return Ok(at);
        }
        at = if at < 1 << 30 {
            at + (1 << 20)
        } else {
            at + (1 << 30)
        };
        tries += 1;
    }
    Err(RestoreError::Unsupported(
        "no address is free in every dumped layout and in dumper's for the restorer's page".into(),
    ))
}

/// (start, end, name) of the tracee's mappings now.
fn current_maps(pid: i32) -> Result<Vec<(u64, u64, String)>, TraceError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| terr(pid, "reading its /proc/PID/maps", e))?;
    let mut out = vec![];
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let range = w.next().unwrap_or("");
        let name = w.nth(4).unwrap_or("").to_string();
        if let Some((a, b)) = range.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                out.push((a, b, name));
            }
        }
    }
    Ok(out)
}

fn flush(tr: &Tracee, b: &mut tracee::Batch) -> Result<(), TraceError> {
    if !b.is_empty() {
        tr.run(b)?;
        *b = tr.batch();
    }
    Ok(())
}

/// madvise advice for the vm flags mmap cannot ask for.
const ADVICE: [(&str, i32); 8] = [
    ("dd", libc::MADV_DONTDUMP),
    ("dc", libc::MADV_DONTFORK),
    ("wf", libc::MADV_WIPEONFORK),
    ("hg", libc::MADV_HUGEPAGE),
    ("nh", libc::MADV_NOHUGEPAGE),
    ("sr", libc::MADV_SEQUENTIAL),
    ("rr", libc::MADV_RANDOM),
    ("mg", libc::MADV_MERGEABLE),
];

/// Whether two dumped mappings are the same mapping (a fork's copy).
fn same_vma(a: &Vma, b: &Vma) -> bool {
    (
        a.start, a.end, a.prot, a.shared, a.flags, a.pgoff, a.dev, a.ino, &a.path,
    ) == (
        b.start, b.end, b.prot, b.shared, b.flags, b.pgoff, b.dev, b.ino, &b.path,
    )
}

/// Page address → page of pages.img, for one process.
fn page_map(img: &Image, pid: i32) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    if let Some(pp) = img.memory.processes.iter().find(|p| p.pid == pid) {
        for r in &pp.ranges {
            for i in 0..r.pages {
                m.insert(r.addr + i * tracee::PAGE, r.at + i);
            }
        }
    }
    m
}

/// Replaces the address space of `tr` with `task`'s; the pages written.
///
/// `inherited` is the dumped process whose restored memory `tr` has now
/// (the one that created it, as a copy of itself). Mappings the two have
/// alike are kept, and of their pages only those that differ are written
/// (or dropped, where `task` had none): the rest stay shared
/// copy-on-write, as they were in the dumped tree, where the dump saved
/// them once.
pub fn restore(
    tr: &Tracee,
    task: &Task,
    img: &Image,
    inherited: Option<&Task>,
    objects: &mut super::shm::Objects,
) -> Result<u64, RestoreError> {
    let pid = tr.pid;
    let hole = tr.hole();
    // dumper's rseq area goes with its memory: unregister it first (the
    // kernel writes to it on unregistration).
    if let Ok(r) = crate::ptrace::rseq(pid) {
        if r.addr != 0 {
            tr.call(
                "rseq unregister",
                libc::SYS_rseq,
                &[r.addr, r.len as u64, 1, r.sig as u64],
            )?;
        }
    }
    let now = current_maps(pid)?;
    let kept: Vec<&Vma> = match inherited {
        Some(from) => task
            .vmas
            .iter()
            .filter(|v| special(v).is_none() && from.vmas.iter().any(|w| same_vma(v, w)))
            .collect(),
        None => vec![],
    };
    let mut keep: Vec<(u64, u64)> = vec![(hole, hole + HOLE_LEN)];
    keep.extend(kept.iter().map(|v| (v.start, v.end)));
    let cur_special: BTreeMap<&str, (u64, u64)> = now
        .iter()
        .filter(|m| SPECIAL.contains(&m.2.as_str()))
        .map(|m| (m.2.as_str(), (m.0, m.1)))
        .collect();
    keep.extend(cur_special.values());
    keep.sort();
    let mut b = tr.batch();
    let mut from = 0;
    for &(s, e) in &keep {
        if s > from {
            b.call("munmap", libc::SYS_munmap, &[from, s - from]);
        }
        from = from.max(e);
    }
    b.call("munmap", libc::SYS_munmap, &[from, TASK_END - from]);
    tr.run(&b)?;

    // The kernel's mappings: to a free spot first, then to their dumped
    // addresses, so that no move lands on one not yet moved.
    let want: BTreeMap<&str, (u64, u64)> = task
        .vmas
        .iter()
        .filter_map(|v| {
            let n = v.path.as_deref()?;
            SPECIAL.contains(&n).then_some((n, (v.start, v.end)))
        })
        .collect();
    for (n, w) in &want {
        match cur_special.get(n) {
            Some(c) if c.1 - c.0 == w.1 - w.0 => {}
            _ => {
                return Err(RestoreError::Unsupported(format!(
                    "process {pid}: the dumped {n} ({} bytes) does not fit this kernel's ({}): restore on the kernel that dumped ({})",
                    w.1 - w.0,
                    cur_special.get(n).map_or(0, |c| c.1 - c.0),
                    img.manifest.kernel
                )))
            }
        }
    }
    let total: u64 = cur_special.values().map(|c| c.1 - c.0).sum();
    let busy: Vec<(u64, u64)> = keep.iter().chain(want.values()).copied().collect();
    let temp = (1..7u64)
        .map(|i| i << 44)
        .find(|&t| !busy.iter().any(|&u| overlaps(u, (t, t + total))))
        .ok_or_else(|| terr(pid, "moving the vdso", "no free room"))?;
    let mut b = tr.batch();
    let mut at = temp;
    let mut parked = vec![];
    for (n, c) in &cur_special {
        let len = c.1 - c.0;
        b.call(
            "mremap vdso",
            libc::SYS_mremap,
            &[
                c.0,
                len,
                len,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                at,
            ],
        );
        parked.push((*n, at, len));
        at += len;
    }
    for (n, at, len) in parked {
        match want.get(n) {
            Some(w) => b.call(
                "mremap vdso",
                libc::SYS_mremap,
                &[
                    at,
                    len,
                    len,
                    (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                    w.0,
                ],
            ),
            None => b.call("munmap vdso", libc::SYS_munmap, &[at, len]),
        };
    }
    tr.run(&b)?;

    // Files first, each opened once (fd numbers are known only after).
    let mut paths: Vec<(&str, bool)> = vec![];
    for v in task
        .vmas
        .iter()
        .filter(|v| is_file(v) && !kept.iter().any(|k| k.start == v.start))
    {
        let rw = v.shared && (v.prot.write || v.flags.has("mw"));
        let p = v.path.as_deref().unwrap();
        match paths.iter_mut().find(|(q, _)| *q == p) {
            Some(e) => e.1 |= rw,
            None => paths.push((p, rw)),
        }
    }
    let exe = exe_to_set(pid, task);
    let mut fds: BTreeMap<&str, u64> = BTreeMap::new();
    let mut exe_fd = u32::MAX as u64;
    for chunk in paths.chunks(tracee::MAX_CALLS - 1) {
        let mut b = tr.batch();
        for (p, rw) in chunk {
            let a = b.cstr(p);
            let mode = if *rw { libc::O_RDWR } else { libc::O_RDONLY };
            b.call(
                "open a mapped file",
                libc::SYS_openat,
                &[libc::AT_FDCWD as u64, a, mode as u64, 0],
            );
        }
        let ran = tr.run(&b)?;
        for ((p, _), r) in chunk.iter().zip(ran.results) {
            fds.insert(p, r as u64);
        }
    }
    if let Some(e) = &exe {
        let mut b = tr.batch();
        let a = b.cstr(e);
        b.call(
            "open the executable",
            libc::SYS_openat,
            &[libc::AT_FDCWD as u64, a, libc::O_RDONLY as u64, 0],
        );
        exe_fd = tr.run(&b)?.results[0] as u64;
    }
    let mut b = tr.batch();
    let mut shared = vec![];
    for v in &task.vmas {
        if special(v).is_some() || kept.iter().any(|k| k.start == v.start) {
            continue;
        }
        if crate::dump::memory::is_shmem(v) {
            shared.push(v);
            continue;
        }
        if !b.fits(4 + ADVICE.len(), 0) {
            flush(tr, &mut b)?;
        }
        let bit = |on: bool, b: i32| if on { b as u64 } else { 0 };
        let prot = bit(v.prot.read, libc::PROT_READ)
            | bit(v.prot.write, libc::PROT_WRITE)
            | bit(v.prot.exec, libc::PROT_EXEC);
        let mut flags = libc::MAP_FIXED
            | if v.shared {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            };
        if v.flags.has("gd") {
            flags |= libc::MAP_GROWSDOWN;
        }
        if v.flags.has("nr") {
            flags |= libc::MAP_NORESERVE;
        }
        let (fd, off) = match v.path.as_deref() {
            Some(p) if p.starts_with('/') => (fds[p], v.pgoff),
            _ => {
                flags |= libc::MAP_ANONYMOUS;
                (u64::MAX, 0)
            }
        };
        // A private mapping that was writable once is charged for
        // (VM_ACCOUNT, smaps's `ac`) and keeps the charge when made
        // read-only: so it does not merge with a neighbour that never
        // was (ld.so's RELRO after its text). Made writable, then
        // protected, it is again.
        let charged = !v.shared && v.flags.has("ac") && !v.prot.write;
        let first = if charged {
            prot | libc::PROT_WRITE as u64
        } else {
            prot
        };
        b.call(
            "mmap",
            libc::SYS_mmap,
            &[v.start, v.end - v.start, first, flags as u64, fd, off],
        );
        if charged {
            if fd == u64::MAX {
                // mprotect drops the charge of an anonymous mapping that
                // never had a page (no anon_vma yet): fault one in and
                // drop it, which leaves the anon_vma.
                b.call(
                    "madvise MADV_POPULATE_WRITE",
                    libc::SYS_madvise,
                    &[v.start, tracee::PAGE, MADV_POPULATE_WRITE],
                );
                b.call(
                    "madvise MADV_DONTNEED",
                    libc::SYS_madvise,
                    &[v.start, tracee::PAGE, libc::MADV_DONTNEED as u64],
                );
            }
            b.call(
                "mprotect",
                libc::SYS_mprotect,
                &[v.start, v.end - v.start, prot],
            );
        }
        for (name, advice) in ADVICE {
            if v.flags.has(name) {
                b.call(
                    "madvise",
                    libc::SYS_madvise,
                    &[v.start, v.end - v.start, advice as u64],
                );
            }
        }
    }
    for &fd in fds.values() {
        if !b.fits(1, 0) {
            flush(tr, &mut b)?;
        }
        b.call("close", libc::SYS_close, &[fd]);
    }
    flush(tr, &mut b)?;
    for v in shared {
        objects.map(tr, v, img)?;
    }

    // The pages, through /proc/PID/mem (which writes whatever the
    // protection, as the kernel's copy-on-write for a debugger): in kept
    // mappings only those that differ from the inherited ones.
    let mine = page_map(img, task.pid);
    let theirs = inherited.map(|f| page_map(img, f.pid)).unwrap_or_default();
    let in_kept = |a: u64| kept.iter().any(|k| (k.start..k.end).contains(&a));
    let mut pages = 0;
    let mut run: Option<(u64, u64, u64)> = None; // (addr, first slot, pages)
    let flush_run = |r: (u64, u64, u64)| {
        log_debug!(
            "process {} pages {:#x} +{} from pages.img page {}",
            pid,
            r.0,
            r.2,
            r.1
        );
        let bytes =
            &img.pages[(r.1 * tracee::PAGE) as usize..((r.1 + r.2) * tracee::PAGE) as usize];
        tr.write(r.0, bytes)
    };
    for (&a, &slot) in &mine {
        if in_kept(a) && theirs.get(&a) == Some(&slot) {
            continue;
        }
        pages += 1;
        run = match run {
            Some((ra, rs, n)) if ra + n * tracee::PAGE == a && rs + n == slot => {
                Some((ra, rs, n + 1))
            }
            Some(r) => {
                flush_run(r)?;
                Some((a, slot, 1))
            }
            None => Some((a, slot, 1)),
        };
    }
    if let Some(r) = run {
        flush_run(r)?;
    }
    // Pages the creator had and this process did not: back to zero (or
    // to the file, in a private file mapping).
    let mut b = tr.batch();
    for &a in theirs
        .keys()
        .filter(|a| in_kept(**a) && !mine.contains_key(a))
    {
        if !b.fits(1, 0) {
            flush(tr, &mut b)?;
        }
        b.call(
            "madvise MADV_DONTNEED",
            libc::SYS_madvise,
            &[a, tracee::PAGE, libc::MADV_DONTNEED as u64],
        );
    }
    flush(tr, &mut b)?;

    let mm = task.detail.as_ref().and_then(|d| d.mm.as_ref()).unwrap();
    let mut b = tr.batch();
    let auxv: Vec<u8> = mm.auxv.iter().flat_map(|w| w.to_le_bytes()).collect();
    let auxv_at = b.data(&auxv);
    let mut map = vec![];
    for w in [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        auxv_at,
    ] {
        map.extend_from_slice(&w.to_le_bytes());
    }
    map.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
    map.extend_from_slice(&(exe_fd as u32).to_le_bytes());
    let m = b.data(&map);
    b.call(
        "prctl PR_SET_MM_MAP",
        libc::SYS_prctl,
        &[
            libc::PR_SET_MM as u64,
            libc::PR_SET_MM_MAP as u64,
            m,
            map.len() as u64,
            0,
        ],
    );
    if exe.is_some() {
        b.call("close", libc::SYS_close, &[exe_fd]);
    }
    tr.run(&b)?;
    Ok(pages)
}

/// The executable to name in PR_SET_MM_MAP: None when the process has it
/// already (dumper's own, or its creator's, set before it forked): the
/// kernel refuses to replace an exe file that is still mapped.
fn exe_to_set(pid: i32, task: &Task) -> Option<String> {
    let e = task.exe.as_deref()?;
    let now = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    match std::fs::metadata(e) {
        Ok(m) if (m.dev(), m.ino()) == (now.dev(), now.ino()) => None,
        _ => Some(e.to_string()),
    }
}
