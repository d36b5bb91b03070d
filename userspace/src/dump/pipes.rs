//! What the tree's pipes and FIFOs hold, copied without taking it: for
//! each (by inode), dumper opens a read end of its own through
//! /proc/PID/fd/N (a pipe opened there is opened like a FIFO) and tee(2)s
//! the buffered bytes into a pipe of its own as large, then reads them
//! from there. The tree's frozen readers find every byte still in place.

use super::DumpError;
use crate::image::PipeData;
use crate::model::{FileType, Snapshot};
use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

fn err(what: String) -> impl FnOnce(std::io::Error) -> DumpError {
    move |e| DumpError::io(what, e)
}

fn check(r: libc::c_int, what: &str) -> Result<libc::c_int, DumpError> {
    if r < 0 {
        return Err(err(what.to_string())(std::io::Error::last_os_error()));
    }
    Ok(r)
}

pub fn collect(snap: &Snapshot) -> Result<Vec<PipeData>, DumpError> {
    let mut seen = BTreeSet::new();
    let mut out = vec![];
    for t in snap.tasks.iter().filter(|t| t.state != "Z") {
        for f in t
            .fds
            .iter()
            .filter(|f| matches!(f.kind, FileType::Pipe | FileType::Fifo))
        {
            if !seen.insert(f.ino) {
                continue;
            }
            let link = format!("/proc/{}/fd/{}", t.pid, f.fd);
            // O_NONBLOCK: a FIFO's open for reading does not wait for a
            // writer.
            let src = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&link)
                .map_err(err(format!(
                    "{link} (a pipe, opened to copy what it holds)"
                )))?;
            out.push(copy(src.as_raw_fd(), f.ino, &link)?);
        }
    }
    Ok(out)
}

fn copy(src: i32, ino: u64, link: &str) -> Result<PipeData, DumpError> {
    // SAFETY: fcntl and pipe2 on fds this function owns.
    let capacity = check(unsafe { libc::fcntl(src, libc::F_GETPIPE_SZ) }, link)?;
    let mut fds = [0; 2];
    check(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) },
        "pipe2",
    )?;
    // SAFETY: pipe2 just returned both.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    check(
        unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, capacity) },
        "F_SETPIPE_SZ on dumper's copy of a pipe",
    )?;
    // SAFETY: tee between two pipes dumper holds.
    let n = unsafe {
        libc::tee(
            src,
            w.as_raw_fd(),
            capacity as usize,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    let mut data = vec![];
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err(format!("tee from {link}"))(e));
        }
    } else {
        drop(w);
        std::fs::File::from(r)
            .read_to_end(&mut data)
            .map_err(err(format!("reading the copy of {link}")))?;
    }
    log_debug!(
        "pipe {} holds {} bytes, capacity {}",
        ino,
        data.len() as u64,
        capacity as u64
    );
    Ok(PipeData {
        ino,
        capacity: capacity as u32,
        data,
    })
}
