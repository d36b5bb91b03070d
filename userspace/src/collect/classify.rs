//! File type classification, one rule per collector input, both ending in
//! the same [`FileType`]. The kernel side knows the inode mode, the
//! superblock magic, the dentry name and the socket family; /proc knows
//! the stat mode, the fd link text and the socket's protocol name.

use crate::model::FileType;

pub const PIPEFS_MAGIC: u64 = 0x5049_5045;
pub const SOCKFS_MAGIC: u64 = 0x534f_434b;
pub const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;
pub const TMPFS_MAGIC: u64 = 0x0102_1994;
pub const HUGETLBFS_MAGIC: u64 = 0x9584_58f6;
pub const PIDFS_MAGIC: u64 = 0x5049_4446;

const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const S_IFREG: u32 = 0o100000;
const S_IFBLK: u32 = 0o060000;
const S_IFDIR: u32 = 0o040000;
const S_IFCHR: u32 = 0o020000;
const S_IFIFO: u32 = 0o010000;

const MEMFD_PREFIX: &str = "memfd:";

/// From what iter/task_file read out of the kernel. For sockets `dname` is
/// the protocol name, as for /proc's xattr (net/socket.c names the socket's
/// dentry after `sk_prot_creator->name`).
pub fn from_kernel(i_mode: u32, s_magic: u64, dname: &str, internal_mount: bool) -> FileType {
    match s_magic {
        // Anonymous inodes have no file type in i_mode (6.18: 0600); pidfs
        // inodes claim S_IFREG internally. Their names tell the kind.
        ANON_INODE_FS_MAGIC => return FileType::from_anon_name(dname),
        PIDFS_MAGIC => return FileType::Anon,
        _ => {}
    }
    match i_mode & S_IFMT {
        // memfd: a shmem or hugetlbfs file on the kernel's internal mount.
        S_IFREG
            if (s_magic == TMPFS_MAGIC || s_magic == HUGETLBFS_MAGIC)
                && internal_mount
                && dname.starts_with(MEMFD_PREFIX) =>
        {
            FileType::Memfd
        }
        S_IFREG => FileType::Reg,
        S_IFDIR => FileType::Dir,
        S_IFCHR => FileType::Chr,
        S_IFBLK => FileType::Blk,
        S_IFIFO if s_magic == PIPEFS_MAGIC => FileType::Pipe,
        S_IFIFO => FileType::Fifo,
        S_IFSOCK => sock_from_proto(dname),
        _ => FileType::Anon,
    }
}

/// From fstat's mode, the fd's link text and, for sockets, the
/// `system.sockprotoname` xattr.
pub fn from_proc(st_mode: u32, link: &str, sockproto: Option<&str>) -> FileType {
    if let Some(name) = link.strip_prefix("anon_inode:") {
        return FileType::from_anon_name(name);
    }
    match st_mode & S_IFMT {
        S_IFREG if link.starts_with("/memfd:") => FileType::Memfd,
        S_IFREG => FileType::Reg,
        S_IFDIR => FileType::Dir,
        S_IFCHR => FileType::Chr,
        S_IFBLK => FileType::Blk,
        S_IFIFO if link.starts_with("pipe:[") => FileType::Pipe,
        S_IFIFO => FileType::Fifo,
        S_IFSOCK => sock_from_proto(sockproto.unwrap_or("")),
        _ => FileType::Anon,
    }
}

/// Protocol names are `sk_prot_creator->name` (net/*): "UNIX",
/// "UNIX-STREAM", "NETLINK", "TCP", "UDPv6", ...
fn sock_from_proto(proto: &str) -> FileType {
    const INET: &[&str] = &[
        "TCP", "UDP", "RAW", "PING", "UDP-Lite", "SCTP", "MPTCP", "L2TP/IP", "SMC",
    ];
    if proto.starts_with("UNIX") {
        FileType::Unix
    } else if proto == "NETLINK" {
        FileType::Netlink
    } else if INET.contains(&proto.trim_end_matches("v6")) || proto == "UDPLITEv6" {
        FileType::Inet
    } else {
        FileType::Sock
    }
}

/// The link text /proc would show for a file on a pseudo filesystem whose
/// d_dname is a pure function of what the kernel record holds, or for a
/// shmem/hugetlbfs file on the kernel's internal mount (memfd, shared
/// anonymous memory), whose d_path is "/NAME (deleted)": such files are
/// never linked. None for everything else, and for a name that may have
/// been cut to the record's `name_len`.
pub fn pseudo_link(
    s_magic: u64,
    ino: u64,
    dname: &str,
    internal_mount: bool,
    name_len: usize,
) -> Option<String> {
    match s_magic {
        PIPEFS_MAGIC => Some(format!("pipe:[{ino}]")),
        SOCKFS_MAGIC => Some(format!("socket:[{ino}]")),
        ANON_INODE_FS_MAGIC => Some(format!("anon_inode:{dname}")),
        PIDFS_MAGIC => Some("anon_inode:[pidfd]".into()),
        TMPFS_MAGIC | HUGETLBFS_MAGIC
            if internal_mount && !dname.is_empty() && dname.len() + 1 < name_len =>
        {
            Some(format!("/{dname} (deleted)"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (i_mode, s_magic, d_name, internal mount) | (st_mode, link, sockproto) | kind
    type Case<'a> = (
        u32,
        u64,
        &'a str,
        bool,
        u32,
        &'a str,
        Option<&'a str>,
        FileType,
    );

    #[test]
    #[rustfmt::skip]
    fn kernel_and_proc_agree() {
        let cases: &[Case] = &[
            (0o600, ANON_INODE_FS_MAGIC, "[eventfd]", false, 0o600, "anon_inode:[eventfd]", None, FileType::Eventfd),
            (0o600, ANON_INODE_FS_MAGIC, "[eventpoll]", false, 0o600, "anon_inode:[eventpoll]", None, FileType::Epoll),
            (0o600, ANON_INODE_FS_MAGIC, "inotify", false, 0o600, "anon_inode:inotify", None, FileType::Inotify),
            (0o100700, PIDFS_MAGIC, "", false, 0o700, "anon_inode:[pidfd]", None, FileType::Anon),
            (0o10600, PIPEFS_MAGIC, "", true, 0o10600, "pipe:[12]", None, FileType::Pipe),
            (0o10644, 0xef53, "f", false, 0o10644, "/tmp/f", None, FileType::Fifo),
            (0o100777, TMPFS_MAGIC, "memfd:x", true, 0o100777, "/memfd:x (deleted)", None, FileType::Memfd),
            // A tmpfs file that only looks like a memfd.
            (0o100644, TMPFS_MAGIC, "memfd:x", false, 0o100644, "/dev/shm/memfd:x", None, FileType::Reg),
            (0o140777, SOCKFS_MAGIC, "UNIX-STREAM", true, 0o140777, "socket:[9]", Some("UNIX-STREAM"), FileType::Unix),
            (0o140777, SOCKFS_MAGIC, "TCPv6", true, 0o140777, "socket:[9]", Some("TCPv6"), FileType::Inet),
            (0o140777, SOCKFS_MAGIC, "NETLINK", true, 0o140777, "socket:[9]", Some("NETLINK"), FileType::Netlink),
            (0o140777, SOCKFS_MAGIC, "PACKET", true, 0o140777, "socket:[9]", Some("PACKET"), FileType::Sock),
            (0o20666, 0x1373, "null", false, 0o20666, "/dev/null", None, FileType::Chr),
            (0o40755, 0xef53, "tmp", false, 0o40755, "/tmp", None, FileType::Dir),
        ];
        for &(im, mag, dn, internal, sm, link, proto, want) in cases {
            assert_eq!(from_kernel(im, mag, dn, internal), want, "kernel {link}");
            assert_eq!(from_proc(sm, link, proto), want, "proc {link}");
        }
        assert_eq!(pseudo_link(PIPEFS_MAGIC, 12, "", true, 40), Some("pipe:[12]".into()));
        assert_eq!(pseudo_link(0xef53, 12, "f", false, 40), None);
        assert_eq!(pseudo_link(TMPFS_MAGIC, 9, "memfd:x", true, 40), Some("/memfd:x (deleted)".into()));
        assert_eq!(pseudo_link(TMPFS_MAGIC, 9, "memfd:x", false, 40), None, "a tmpfs someone mounted");
        let long = "m".repeat(39);
        assert_eq!(pseudo_link(TMPFS_MAGIC, 9, &long, true, 40), None, "maybe cut: read the link");
    }
}
