//! The tree's unix sockets: type, peer and the bytes queued for reading.
//!
//! The peer is what sock_diag says (NETLINK_SOCK_DIAG, UNIX_DIAG_PEER:
//! net/unix/diag.c), for every unix socket at once; a socket that is bound
//! to a name (UNIX_DIAG_NAME) is left for a later issue (it is refused at
//! restore). The queued bytes are peeked (MSG_PEEK) through a copy of the
//! socket's fd that dumper takes with pidfd_getfd, so nothing is taken
//! from the frozen tree; only stream sockets' queues are read that way (a
//! datagram socket's messages would need SO_PEEK_OFF, which changes the
//! socket): a datagram or seqpacket socket with bytes queued is refused
//! at dump time, and so is a stream socket whose peek stops short of what
//! sock_diag says is queued (fds or credentials in flight).

use super::DumpError;
use crate::image::UnixSocket;
use crate::model::{FileType, Snapshot};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_NAME: u32 = 1;
const UDIAG_SHOW_PEER: u32 = 4;
const UDIAG_SHOW_RQLEN: u32 = 16;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;

/// What sock_diag says of one socket: (type, peer inode, bound, queued).
struct Diag {
    kind: u8,
    peer: u64,
    bound: bool,
    queued: u32,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> DumpError + '_ {
    move |e| DumpError::io(what, e)
}

/// Every unix socket of the system, by inode.
fn diag_all() -> Result<HashMap<u64, Diag>, DumpError> {
    // SAFETY: a netlink socket this function owns.
    let s = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if s < 0 {
        return Err(io("sock_diag socket")(std::io::Error::last_os_error()));
    }
    // SAFETY: just made.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // nlmsghdr (16) + unix_diag_req (24).
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_le_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_le_bytes());
    req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_le_bytes());
    req[16] = libc::AF_UNIX as u8;
    req[20..24].copy_from_slice(&u32::MAX.to_le_bytes()); // every state
    req[28..32]
        .copy_from_slice(&(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN).to_le_bytes());
    // SAFETY: sending a buffer this function owns.
    if unsafe { libc::send(s.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io("sock_diag request")(std::io::Error::last_os_error()));
    }
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receiving into a buffer this function owns.
        let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io("sock_diag answer")(std::io::Error::last_os_error()));
        }
        let mut at = 0usize;
        let n = n as usize;
        while at + 16 <= n {
            let len = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            let ty = u16::from_le_bytes(buf[at + 4..at + 6].try_into().unwrap());
            if len < 16 || at + len > n {
                break;
            }
            if ty == libc::NLMSG_DONE as u16 {
                return Ok(out);
            }
            if ty == libc::NLMSG_ERROR as u16 {
                return Err(DumpError::Kernel(
                    "sock_diag refused the unix socket dump".into(),
                ));
            }
            // unix_diag_msg: family, type, state, pad, ino (u32), cookie.
            let m = &buf[at + 16..at + len];
            if m.len() >= 16 {
                let ino = u32::from_le_bytes(m[4..8].try_into().unwrap()) as u64;
                let mut d = Diag {
                    kind: m[1],
                    peer: 0,
                    bound: false,
                    queued: 0,
                };
                let mut a = 16;
                while a + 4 <= m.len() {
                    let alen = u16::from_le_bytes(m[a..a + 2].try_into().unwrap()) as usize;
                    let aty = u16::from_le_bytes(m[a + 2..a + 4].try_into().unwrap());
                    if alen < 4 || a + alen > m.len() {
                        break;
                    }
                    let v = &m[a + 4..a + alen];
                    match aty {
                        UNIX_DIAG_PEER if v.len() >= 4 => {
                            d.peer = u32::from_le_bytes(v[..4].try_into().unwrap()) as u64
                        }
                        UNIX_DIAG_NAME => d.bound = true,
                        UNIX_DIAG_RQLEN if v.len() >= 4 => {
                            d.queued = u32::from_le_bytes(v[..4].try_into().unwrap())
                        }
                        _ => {}
                    }
                    a += (alen + 3) & !3;
                }
                out.insert(ino, d);
            }
            at += (len + 3) & !3;
        }
    }
}

/// The bytes queued on a stream socket, peeked through a copy of fd `fd`
/// of `pid`.
fn peek(pid: i32, fd: u32) -> Result<Vec<u8>, DumpError> {
    let what = format!("process {pid} fd {fd} (a unix socket, peeked)");
    // SAFETY: pidfd_open and pidfd_getfd give fds this function owns.
    let copy = unsafe {
        let p = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        if p < 0 {
            return Err(io(&what)(std::io::Error::last_os_error()));
        }
        let p = OwnedFd::from_raw_fd(p as i32);
        let c = libc::syscall(libc::SYS_pidfd_getfd, p.as_raw_fd(), fd, 0);
        if c < 0 {
            return Err(io(&what)(std::io::Error::last_os_error()));
        }
        OwnedFd::from_raw_fd(c as i32)
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // SAFETY: peeking into a buffer this function owns.
        let n = unsafe {
            libc::recv(
                copy.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                return Ok(vec![]);
            }
            return Err(io(&what)(e));
        }
        if (n as usize) < buf.len() {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let l = buf.len();
        buf.resize(l * 2, 0);
    }
}

pub fn collect(snap: &Snapshot) -> Result<Vec<UnixSocket>, DumpError> {
    let mut mine: BTreeMap<u64, (i32, u32)> = BTreeMap::new();
    for t in snap.tasks.iter().filter(|t| t.state != "Z") {
        for f in t.fds.iter().filter(|f| f.kind == FileType::Unix) {
            mine.entry(f.ino).or_insert((t.pid, f.fd));
        }
    }
    if mine.is_empty() {
        return Ok(vec![]);
    }
    let all = diag_all()?;
    let inos: BTreeSet<u64> = mine.keys().copied().collect();
    let mut out = vec![];
    for (ino, (pid, fd)) in mine {
        let Some(d) = all.get(&ino) else {
            return Err(DumpError::Kernel(format!(
                "process {pid} fd {fd}: sock_diag does not know unix socket {ino}"
            )));
        };
        let data = if d.kind as i32 == libc::SOCK_STREAM {
            peek(pid, fd)?
        } else {
            vec![]
        };
        if d.kind as i32 != libc::SOCK_STREAM && d.queued > 0 {
            log_warn!(
                "process {} fd {}: {} bytes queued on a datagram unix socket are not saved",
                pid,
                fd,
                d.queued as u64
            );
        }
        out.push(UnixSocket {
            ino,
            kind: d.kind as u32,
            peer: d.peer,
            peer_in_tree: inos.contains(&d.peer),
            bound: d.bound,
            data,
        });
    }
    Ok(out)
}
