//! The operations of a plan: the contract between the planner, the
//! simulator that proves plans, and the restorer that runs them. Field
//! names are those of the model; JSON is `{"op": "fork", "by": 1,
//! "pid": 5, "share_files": false}`.

use serde::{Deserialize, Serialize};

/// One step: operation `op` done by live process `by`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub by: i32,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Fork {
        pid: i32,
        share_files: bool,
    },
    CloneParent {
        pid: i32,
        share_files: bool,
    },
    Setsid,
    Setpgid {
        pid: i32,
        pgid: i32,
    },
    Subreaper {
        on: bool,
    },
    Exit,
    Wait {
        pid: i32,
    },
    Open {
        file: String,
        fd: u32,
    },
    Pipe {
        files: [String; 2],
        fds: [u32; 2],
    },
    Socketpair {
        files: [String; 2],
        fds: [u32; 2],
    },
    Dup2 {
        from: u32,
        to: u32,
    },
    Close {
        fd: u32,
    },
    SendFd {
        fd: u32,
        to: i32,
        #[serde(rename = "as")]
        as_fd: u32,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.by;
        match &self.op {
            Op::Fork { pid, share_files } => write!(
                f,
                "{b}: fork {pid}{}",
                if *share_files { " sharing files" } else { "" }
            ),
            Op::CloneParent { pid, share_files } => write!(
                f,
                "{b}: clone_parent {pid}{}",
                if *share_files { " sharing files" } else { "" }
            ),
            Op::Setsid => write!(f, "{b}: setsid"),
            Op::Setpgid { pid, pgid } => write!(f, "{b}: setpgid {pid} {pgid}"),
            Op::Subreaper { on } => write!(f, "{b}: subreaper {}", if *on { "on" } else { "off" }),
            Op::Exit => write!(f, "{b}: exit"),
            Op::Wait { pid } => write!(f, "{b}: wait {pid}"),
            Op::Open { file, fd } => write!(f, "{b}: open {file} as fd {fd}"),
            Op::Pipe { files, fds } => write!(
                f,
                "{b}: pipe {} {} as fds {} {}",
                files[0], files[1], fds[0], fds[1]
            ),
            Op::Socketpair { files, fds } => write!(
                f,
                "{b}: socketpair {} {} as fds {} {}",
                files[0], files[1], fds[0], fds[1]
            ),
            Op::Dup2 { from, to } => write!(f, "{b}: dup2 {from} {to}"),
            Op::Close { fd } => write!(f, "{b}: close {fd}"),
            Op::SendFd { fd, to, as_fd } => write!(f, "{b}: send fd {fd} to {to} as {as_fd}"),
        }
    }
}
