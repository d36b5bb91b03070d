//! Shared memory objects (shared anonymous mappings and memfds): made once,
//! by the first process that maps or holds one, filled with the contents
//! the dump saved, and reached by every other process through the first
//! one's /proc/PID/map_files or /proc/PID/fd link (opening either gives
//! the same object, as sharing it by fork or SCM_RIGHTS did). A child
//! that inherited the mapping from its creator keeps it: nothing to do.

use super::tracee::{terr, TraceError, Tracee};
use super::RestoreError;
use crate::image::read::Image;
use crate::image::ShmemObject;
use crate::model::{Fd, Vma};
use std::collections::HashMap;
use std::os::unix::fs::FileExt;

/// Where each object made so far can be opened: (dev, ino) as dumped →
/// a /proc path.
#[derive(Default)]
pub struct Objects(HashMap<(u64, u64), String>);

fn object(img: &Image, dev: u64, ino: u64) -> Option<&ShmemObject> {
    img.memory
        .shmem
        .iter()
        .find(|o| (o.dev, o.ino) == (dev, ino))
}

/// The name a memfd was made with, from its link (`/memfd:NAME (deleted)`).
fn memfd_name(path: &str) -> &str {
    let p = path.strip_prefix("/memfd:").unwrap_or(path);
    p.strip_suffix(" (deleted)").unwrap_or(p)
}

/// Writes the object's saved contents through `path` (a file the
/// restorer opens: the object itself).
fn fill(o: &ShmemObject, img: &Image, path: &str, pid: i32) -> Result<(), TraceError> {
    if o.ranges.is_empty() {
        return Ok(());
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| terr(pid, format!("opening {path} to fill it"), e))?;
    for r in &o.ranges {
        f.write_all_at(crate::image::show::range_bytes(img, r), r.addr)
            .map_err(|e| terr(pid, format!("filling {path}"), e))?;
    }
    Ok(())
}

fn prot_of(v: &Vma) -> u64 {
    let bit = |on: bool, b: i32| if on { b as u64 } else { 0 };
    bit(v.prot.read, libc::PROT_READ)
        | bit(v.prot.write, libc::PROT_WRITE)
        | bit(v.prot.exec, libc::PROT_EXEC)
}

impl Objects {
    /// Maps the shared memory `v` of process `tr`.
    pub fn map(&mut self, tr: &Tracee, v: &Vma, img: &Image) -> Result<(), RestoreError> {
        let pid = tr.pid;
        let key = (v.dev, v.ino);
        let len = v.end - v.start;
        let path = v.path.as_deref().unwrap_or("");
        let link = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
        let rw = v.prot.write || v.flags.has("mw");
        let fixed = (libc::MAP_SHARED | libc::MAP_FIXED) as u64;
        if let Some(src) = self.0.get(&key) {
            let mut b = tr.batch();
            let p = b.cstr(src);
            let mode = if rw { libc::O_RDWR } else { libc::O_RDONLY };
            let fd = b.call(
                "open a shared object",
                libc::SYS_openat,
                &[libc::AT_FDCWD as u64, p, mode as u64, 0],
            );
            let m = b.call(
                "mmap",
                libc::SYS_mmap,
                &[v.start, len, prot_of(v), fixed, 0, v.pgoff],
            );
            b.link(m, 4, fd);
            let c = b.call("close", libc::SYS_close, &[0]);
            b.link(c, 0, fd);
            tr.run(&b)?;
            return Ok(());
        }
        let o = object(img, v.dev, v.ino).ok_or_else(|| {
            RestoreError::Plan(format!(
                "the image has no contents for {path} of process {pid}"
            ))
        })?;
        if path.starts_with("/dev/zero") {
            // mmap names it so; the object is as large as the mapping.
            if v.pgoff != 0 || o.size != len {
                return Err(RestoreError::Unsupported(format!(
                    "process {pid} maps part of a shared anonymous object at {:#x}-{:#x} (offset {:#x} of {} bytes): not supported yet",
                    v.start, v.end, v.pgoff, o.size
                )));
            }
            let mut b = tr.batch();
            let anon = fixed | libc::MAP_ANONYMOUS as u64;
            let all = (libc::PROT_READ | libc::PROT_WRITE) as u64;
            b.call(
                "mmap shared anonymous",
                libc::SYS_mmap,
                &[v.start, len, all, anon, u64::MAX, 0],
            );
            tr.run(&b)?;
            fill(o, img, &link, pid)?;
            if prot_of(v) != all {
                tr.call("mprotect", libc::SYS_mprotect, &[v.start, len, prot_of(v)])?;
            }
        } else if path.starts_with("/memfd:") {
            let fd = self.make_memfd(tr, path, o, img)?;
            let mut b = tr.batch();
            b.call(
                "mmap",
                libc::SYS_mmap,
                &[v.start, len, prot_of(v), fixed, fd, v.pgoff],
            );
            b.call("close", libc::SYS_close, &[fd]);
            tr.run(&b)?;
        } else {
            return Err(RestoreError::Unsupported(format!(
                "process {pid} maps {path}: SysV shared memory is not restored yet"
            )));
        }
        self.0.insert(key, link);
        Ok(())
    }

    /// A new memfd named as `path` says, sized and filled as `o`: its fd.
    fn make_memfd(
        &self,
        tr: &Tracee,
        path: &str,
        o: &ShmemObject,
        img: &Image,
    ) -> Result<u64, TraceError> {
        let mut b = tr.batch();
        let n = b.cstr(memfd_name(path));
        let fd = b.call("memfd_create", libc::SYS_memfd_create, &[n, 0]);
        let t = b.call("ftruncate", libc::SYS_ftruncate, &[0, o.size]);
        b.link(t, 0, fd);
        let fd = tr.run(&b)?.results[fd] as u64;
        fill(o, img, &format!("/proc/{}/fd/{fd}", tr.pid), tr.pid)?;
        Ok(fd)
    }

    /// Opens the memfd description `f` in `tr` as fd `at`: a new
    /// description of the object if it exists already, or the object
    /// itself, made now.
    pub fn open(
        &mut self,
        tr: &Tracee,
        f: &Fd,
        at: u32,
        tmp: u32,
        img: &Image,
    ) -> Result<(), RestoreError> {
        let key = (f.dev, f.ino);
        match self.0.get(&key) {
            Some(src) => {
                let mut g = f.clone();
                g.path = src.as_str().into();
                super::files::open(tr, &g, at, tmp)?;
            }
            None => {
                let o = object(img, f.dev, f.ino).ok_or_else(|| {
                    RestoreError::Plan(format!(
                        "the image has no contents for {} of process {}",
                        f.path, tr.pid
                    ))
                })?;
                let fd = self.make_memfd(tr, &f.path, o, img)?;
                let mut b = tr.batch();
                if fd != at as u64 {
                    b.call("dup2", libc::SYS_dup2, &[fd, at as u64]);
                    b.call("close", libc::SYS_close, &[fd]);
                }
                if f.pos != 0 {
                    b.call(
                        "lseek",
                        libc::SYS_lseek,
                        &[at as u64, f.pos as u64, libc::SEEK_SET as u64],
                    );
                }
                if f.flags as i32 & libc::O_ACCMODE != libc::O_RDWR {
                    log_warn!("process {} fd {}: a memfd opened other than read-write comes back read-write", tr.pid, at);
                }
                if !b.is_empty() {
                    tr.run(&b)?;
                }
                self.0.insert(key, format!("/proc/{}/fd/{at}", tr.pid));
            }
        }
        Ok(())
    }
}
