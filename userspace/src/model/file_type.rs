use serde::{Deserialize, Serialize};
use std::fmt;

/// What an open fd refers to, by the names `dumper collect --json` uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    #[default]
    Reg,
    Dir,
    Pipe,
    Fifo,
    Unix,
    Inet,
    Netlink,
    /// A socket of another family (packet, vsock, ...).
    Sock,
    Eventfd,
    Epoll,
    Signalfd,
    Timerfd,
    Inotify,
    Memfd,
    Chr,
    Blk,
    /// Any other anonymous inode (pidfd, bpf objects, userfaultfd, ...).
    Anon,
}

impl FileType {
    pub fn name(self) -> &'static str {
        use FileType::*;
        match self {
            Reg => "reg",
            Dir => "dir",
            Pipe => "pipe",
            Fifo => "fifo",
            Unix => "unix",
            Inet => "inet",
            Netlink => "netlink",
            Sock => "sock",
            Eventfd => "eventfd",
            Epoll => "epoll",
            Signalfd => "signalfd",
            Timerfd => "timerfd",
            Inotify => "inotify",
            Memfd => "memfd",
            Chr => "chr",
            Blk => "blk",
            Anon => "anon",
        }
    }

    /// The kind of an anonymous-inode file from its name, the part of the
    /// link after `anon_inode:` (`[eventfd]`, `inotify`, ...).
    pub fn from_anon_name(name: &str) -> FileType {
        match name {
            "[eventfd]" => FileType::Eventfd,
            "[eventpoll]" => FileType::Epoll,
            "[signalfd]" => FileType::Signalfd,
            "[timerfd]" => FileType::Timerfd,
            "inotify" => FileType::Inotify,
            _ => FileType::Anon,
        }
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
