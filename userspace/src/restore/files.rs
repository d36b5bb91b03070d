//! Open file descriptions, recreated inside the process the plan names:
//! files reopened by path with their flags and offset, pipes made anew.
//! A file that is gone or is another inode than the one dumped is an
//! error naming it, found before anything is created ([`check_all`]).

use super::tracee::{Batch, TraceError, Tracee};
use super::RestoreError;
use crate::image::PipeData;
use crate::model::{Fd, FileType, Snapshot};
use std::os::unix::fs::MetadataExt;

/// Kinds this restorer recreates.
pub fn restorable(k: FileType) -> bool {
    matches!(
        k,
        FileType::Reg
            | FileType::Dir
            | FileType::Chr
            | FileType::Pipe
            | FileType::Fifo
            | FileType::Eventfd
            | FileType::Memfd
            | FileType::Unix
    )
}

/// Kinds reopened by path.
fn by_path(k: FileType) -> bool {
    matches!(
        k,
        FileType::Reg | FileType::Dir | FileType::Chr | FileType::Fifo
    )
}

/// Whether the path names the dumped inode now; the reason when not.
pub fn same_file(path: &str, dev: u64, ino: u64) -> Result<(), String> {
    if path.ends_with(" (deleted)") {
        return Err(format!("{path} was deleted before the dump"));
    }
    let m = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
    if (m.dev(), m.ino()) != (dev, ino) {
        return Err(format!(
            "{path} is another file than the one dumped (inode {} on device {:#x}, dumped {} on {:#x})",
            m.ino(),
            m.dev(),
            ino,
            dev
        ));
    }
    Ok(())
}

pub fn check_all(snap: &Snapshot) -> Result<(), RestoreError> {
    for t in snap.tasks.iter().filter(|t| t.state != "Z") {
        for f in t.fds.iter().filter(|f| by_path(f.kind)) {
            same_file(&f.path, f.dev, f.ino).map_err(|why| {
                RestoreError::Changed(format!(
                    "process {} fd {}: {why}: restore needs the files as they were at the dump",
                    t.pid, f.fd
                ))
            })?;
        }
    }
    Ok(())
}

/// The flags to open a dumped description with: its own, less what only
/// creation or this fd means (close-on-exec is set per fd at the end),
/// and never becoming a controlling terminal.
fn open_flags(f: &Fd) -> u64 {
    let drop = libc::O_CLOEXEC | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC;
    ((f.flags as i32 & !drop) | libc::O_NOCTTY) as u64
}

/// Moves fds `got` (fresh ones) to the numbers `want`, through `tmp`, a
/// number above every fd the process will have, so no move clobbers the
/// other.
fn place(tr: &Tracee, got: &[i64], want: &[u32], tmp: u32) -> Result<(), TraceError> {
    if got.iter().zip(want).all(|(g, w)| *g == *w as i64) {
        return Ok(());
    }
    let mut b = tr.batch();
    for (i, &g) in got.iter().enumerate() {
        b.call("dup2", libc::SYS_dup2, &[g as u64, (tmp + i as u32) as u64]);
        b.call("close", libc::SYS_close, &[g as u64]);
    }
    for (i, &w) in want.iter().enumerate() {
        b.call("dup2", libc::SYS_dup2, &[(tmp + i as u32) as u64, w as u64]);
        b.call("close", libc::SYS_close, &[(tmp + i as u32) as u64]);
    }
    tr.run(&b).map(|_| ())
}

/// Adds to `b` the calls that move the fd call `got` returned to `at`,
/// through `stage`: a number above every fd the process has but one
/// (`tmp`, free), so the fresh fd cannot be it, while it may be `at`.
fn settle(b: &mut Batch, got: usize, at: u32, stage: u32) {
    let i = b.call("dup2", libc::SYS_dup2, &[0, stage as u64]);
    b.link(i, 0, got);
    let i = b.call("close", libc::SYS_close, &[0]);
    b.link(i, 0, got);
    b.call("dup2", libc::SYS_dup2, &[stage as u64, at as u64]);
    b.call("close", libc::SYS_close, &[stage as u64]);
}

/// Adds to `b` the open of `f`'s path with its dumped flags, moved to fd
/// `at`.
fn open_as_dumped(b: &mut Batch, f: &Fd, at: u32, tmp: u32) {
    let path = b.cstr(&f.path);
    let got = b.call(
        "open",
        libc::SYS_openat,
        &[libc::AT_FDCWD as u64, path, open_flags(f), 0],
    );
    settle(b, got, at, tmp + 2);
}

/// The two fds a call like pipe2 or socketpair writes at the address
/// `args` is given.
fn two_fds(
    tr: &Tracee,
    what: &'static str,
    nr: i64,
    args: impl FnOnce(u64) -> [u64; 4],
) -> Result<[i64; 2], TraceError> {
    let mut b = tr.batch();
    let fds = b.space(8);
    b.call(what, nr, &args(fds));
    let ran = tr.run(&b)?;
    let raw = ran.bytes(fds, 8);
    Ok([
        i32::from_le_bytes(raw[0..4].try_into().unwrap()) as i64,
        i32::from_le_bytes(raw[4..8].try_into().unwrap()) as i64,
    ])
}

/// Opens the description `f` at fd `at` of `tr`, in one batch.
pub fn open(tr: &Tracee, f: &Fd, at: u32, tmp: u32) -> Result<(), TraceError> {
    let mut b = tr.batch();
    open_as_dumped(&mut b, f, at, tmp);
    if f.pos != 0 && matches!(f.kind, FileType::Reg | FileType::Dir) {
        b.call(
            "lseek",
            libc::SYS_lseek,
            &[at as u64, f.pos as u64, libc::SEEK_SET as u64],
        );
    }
    tr.run(&b)
        .map_err(|e| retitle(e, format!("opening {} for fd {at}", f.path)))?;
    Ok(())
}

/// Makes the eventfd `f` at fd `at`, with its counter and semaphore mode.
pub fn open_eventfd(tr: &Tracee, f: &Fd, at: u32, tmp: u32) -> Result<(), TraceError> {
    let e = f.eventfd.unwrap_or_default();
    let flags =
        (f.flags as i32 & libc::O_NONBLOCK) | if e.semaphore { libc::EFD_SEMAPHORE } else { 0 };
    let mut b = tr.batch();
    let got = b.call("eventfd2", libc::SYS_eventfd2, &[0, flags as u64]);
    if e.count != 0 {
        // The counter goes in by a write (eventfd2 takes 32 bits).
        let c = b.data(&e.count.to_le_bytes());
        let i = b.call("write the eventfd counter", libc::SYS_write, &[0, c, 8]);
        b.link(i, 0, got);
    }
    settle(&mut b, got, at, tmp + 2);
    tr.run(&b)
        .map_err(|e| retitle(e, format!("making the eventfd for fd {at}")))?;
    Ok(())
}

/// Opens a FIFO's description `f` at fd `at`, refilled with `held` (the
/// first open of that FIFO in the restore). A FIFO's open for reading
/// waits for a writer and the other way round: it is first opened for
/// both (which never waits), refilled through that, then opened as
/// dumped, and the first fd closed.
pub fn open_fifo(
    tr: &Tracee,
    f: &Fd,
    at: u32,
    tmp: u32,
    held: Option<&PipeData>,
) -> Result<(), TraceError> {
    let what = || format!("opening the FIFO {} for fd {at}", f.path);
    let mut b = tr.batch();
    let path = b.cstr(&f.path);
    let both = (libc::O_RDWR | libc::O_NONBLOCK | libc::O_NOCTTY) as u64;
    b.call(
        "open",
        libc::SYS_openat,
        &[libc::AT_FDCWD as u64, path, both, 0],
    );
    let mut rw = tr.run(&b).map_err(|e| retitle(e, what()))?.results[0] as u64;
    let mut b = tr.batch();
    if rw == at as u64 {
        // Out of the way of the dumped number.
        b.call("dup2", libc::SYS_dup2, &[rw, (tmp + 1) as u64]);
        b.call("close", libc::SYS_close, &[rw]);
        rw = (tmp + 1) as u64;
    }
    tr.run(&b)?;
    if let Some(h) = held {
        refill(tr, rw, h)?;
    }
    let mut b = tr.batch();
    open_as_dumped(&mut b, f, at, tmp);
    b.call("close", libc::SYS_close, &[rw]);
    tr.run(&b).map_err(|e| retitle(e, what()))?;
    Ok(())
}

/// Writes what a pipe or FIFO held into its write end `w`, after setting
/// its capacity (at least what it held: no write blocks).
fn refill(tr: &Tracee, w: u64, h: &PipeData) -> Result<(), TraceError> {
    tr.call(
        "F_SETPIPE_SZ",
        libc::SYS_fcntl,
        &[w, libc::F_SETPIPE_SZ as u64, h.capacity as u64],
    )?;
    write_all(tr, w, &h.data, "refilling a pipe")
}

/// Writes `data` into fd `fd` of `tr`, a batch per argument area's worth
/// (into a pipe or socket with room for all of it: none waits).
fn write_all(tr: &Tracee, fd: u64, data: &[u8], what: &'static str) -> Result<(), TraceError> {
    for chunk in data.chunks(super::tracee::MAX_DATA / 2) {
        let mut b = tr.batch();
        let a = b.data(chunk);
        b.call(what, libc::SYS_write, &[fd, a, chunk.len() as u64]);
        if tr.run(&b)?.results[0] != chunk.len() as i64 {
            return Err(super::tracee::terr(tr.pid, what, "short write"));
        }
    }
    Ok(())
}

/// Gives `to` a copy of fd `fd` of process `from` as `as_fd`, in one
/// batch: the receiver takes it itself with pidfd_getfd (the SCM_RIGHTS
/// of the model, without a socket). The pidfd and the copy may take the
/// very number the fd goes to, so the copy is staged above them all
/// (`tmp` + 2: the two fresh fds are at most `tmp` and `tmp` + 1). dup2
/// clears the close-on-exec flag pidfd_getfd sets; the restored flags are
/// set at the end.
pub fn send(from: i32, fd: u32, to: &Tracee, as_fd: u32, tmp: u32) -> Result<(), TraceError> {
    let stage = (tmp + 2) as u64;
    let mut b = to.batch();
    let p = b.call("pidfd_open", libc::SYS_pidfd_open, &[from as u64, 0]);
    let g = b.call("pidfd_getfd", libc::SYS_pidfd_getfd, &[0, fd as u64, 0]);
    b.link(g, 0, p);
    let i = b.call("dup2", libc::SYS_dup2, &[0, stage]);
    b.link(i, 0, g);
    for c in [g, p] {
        let i = b.call("close", libc::SYS_close, &[0]);
        b.link(i, 0, c);
    }
    b.call("dup2", libc::SYS_dup2, &[stage, as_fd as u64]);
    b.call("close", libc::SYS_close, &[stage]);
    to.run(&b).map(|_| ())
}

/// Makes a pipe whose ends are `ends` (read, write: their dumped
/// descriptions, None for an end no fd holds) at fds `at`, holding what
/// the dumped one held.
pub fn pipe(
    tr: &Tracee,
    ends: [Option<&Fd>; 2],
    at: [u32; 2],
    tmp: u32,
    held: Option<&PipeData>,
) -> Result<(), TraceError> {
    let got = two_fds(tr, "pipe2", libc::SYS_pipe2, |fds| [fds, 0, 0, 0])?;
    if let Some(h) = held {
        refill(tr, got[1] as u64, h)?;
    }
    place(tr, &got, &at, tmp)?;
    nonblock(tr, ends, at)
}

/// Makes a unix socket pair of type `kind` whose ends are `ends` at fds
/// `at`, each with the bytes that were queued for it to read (written
/// into the other end).
pub fn socketpair(
    tr: &Tracee,
    kind: u32,
    ends: [Option<&Fd>; 2],
    at: [u32; 2],
    tmp: u32,
    queued: [&[u8]; 2],
) -> Result<(), TraceError> {
    let got = two_fds(tr, "socketpair", libc::SYS_socketpair, |fds| {
        [libc::AF_UNIX as u64, kind as u64, 0, fds]
    })?;
    for (i, q) in queued.iter().enumerate() {
        // What end i had to read was sent by the other end.
        write_all(tr, got[1 - i] as u64, q, "refilling a socket")?;
    }
    place(tr, &got, &at, tmp)?;
    nonblock(tr, ends, at)
}

/// O_NONBLOCK (and O_DIRECT, for pipes) per end, as dumped.
fn nonblock(tr: &Tracee, ends: [Option<&Fd>; 2], at: [u32; 2]) -> Result<(), TraceError> {
    let mut b = tr.batch();
    for (e, &fd) in ends.iter().zip(&at) {
        let fl = e.map_or(0, |f| f.flags as i32) & (libc::O_NONBLOCK | libc::O_DIRECT);
        if fl != 0 {
            b.call(
                "fcntl F_SETFL",
                libc::SYS_fcntl,
                &[fd as u64, libc::F_SETFL as u64, fl as u64],
            );
        }
    }
    if !b.is_empty() {
        tr.run(&b)?;
    }
    Ok(())
}

/// Close-on-exec, per fd (dup2 clears it, so it is set last).
pub fn cloexec(tr: &Tracee, fds: &[Fd]) -> Result<(), TraceError> {
    let mut b = tr.batch();
    for f in fds.iter().filter(|f| f.flags as i32 & libc::O_CLOEXEC != 0) {
        if !b.fits(1, 0) {
            tr.run(&b)?;
            b = tr.batch();
        }
        b.call(
            "fcntl F_SETFD",
            libc::SYS_fcntl,
            &[f.fd as u64, libc::F_SETFD as u64, libc::FD_CLOEXEC as u64],
        );
    }
    if !b.is_empty() {
        tr.run(&b)?;
    }
    Ok(())
}

pub fn retitle(mut e: TraceError, what: String) -> TraceError {
    e.what = what;
    e
}
