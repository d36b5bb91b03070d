//! The target state a plan must build, read from `dumper plan --tree FILE`
//! JSON, and checked for what Linux can never produce before any planning.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Alive,
    Zombie,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Reg,
    Pipe,
    Socket,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum End {
    #[serde(rename = "r")]
    Read,
    #[serde(rename = "w")]
    Write,
}

/// A file id: the JSON may spell it as a string or a number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Str(String),
    Num(i64),
}

impl Id {
    pub fn key(&self) -> String {
        match self {
            Id::Str(s) => s.clone(),
            Id::Num(n) => n.to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcIn {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub state: State,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub subreaper: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIn {
    pub id: Id,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<End>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Id>,
}

/// The `--tree` file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeFile {
    pub processes: Vec<ProcIn>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileIn>,
    /// pid → fd → file id (JSON object keys are strings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fds: BTreeMap<String, BTreeMap<String, Id>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fd_tables: Vec<Vec<i32>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub zombie: bool,
    pub subreaper: bool,
}

impl Proc {
    /// pid 1 as every plan starts: parent 0, its own group and session.
    pub const INIT: Proc = Proc {
        pid: 1,
        ppid: 0,
        pgid: 1,
        sid: 1,
        zombie: false,
        subreaper: false,
    };
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub kind: Kind,
    pub end: Option<End>,
    pub peer: Option<String>,
}

impl File {
    pub const REG: File = File {
        kind: Kind::Reg,
        end: None,
        peer: None,
    };

    /// The two peer descriptions of a pipe (`a` the read end, `b` the
    /// write end) or of a socket pair.
    pub fn pair(kind: Kind, a: &str, b: &str) -> [(String, File); 2] {
        let end = |e| (kind == Kind::Pipe).then_some(e);
        [
            (
                a.to_string(),
                File {
                    kind,
                    end: end(End::Read),
                    peer: Some(b.to_string()),
                },
            ),
            (
                b.to_string(),
                File {
                    kind,
                    end: end(End::Write),
                    peer: Some(a.to_string()),
                },
            ),
        ]
    }
}

/// A validated target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub procs: BTreeMap<i32, Proc>,
    pub files: BTreeMap<String, File>,
    /// Live processes' fd tables: pid → fd → file id.
    pub fds: BTreeMap<i32, BTreeMap<u32, String>>,
    /// Groups of processes sharing one fd table (two or more, sorted).
    pub tables: Vec<Vec<i32>>,
}

impl Target {
    /// The processes sharing `pid`'s fd table, itself included.
    pub fn table_of(&self, pid: i32) -> Vec<i32> {
        self.tables
            .iter()
            .find(|t| t.contains(&pid))
            .cloned()
            .unwrap_or_else(|| vec![pid])
    }

    pub fn to_file(&self) -> TreeFile {
        TreeFile {
            processes: self
                .procs
                .values()
                .map(|p| ProcIn {
                    pid: p.pid,
                    ppid: p.ppid,
                    pgid: p.pgid,
                    sid: p.sid,
                    state: if p.zombie {
                        State::Zombie
                    } else {
                        State::Alive
                    },
                    subreaper: p.subreaper,
                })
                .collect(),
            files: self
                .files
                .iter()
                .map(|(id, f)| FileIn {
                    id: Id::Str(id.clone()),
                    kind: f.kind,
                    end: f.end,
                    peer: f.peer.clone().map(Id::Str),
                })
                .collect(),
            fds: self
                .fds
                .iter()
                .filter(|(_, t)| !t.is_empty())
                .map(|(pid, t)| {
                    (
                        pid.to_string(),
                        t.iter()
                            .map(|(fd, id)| (fd.to_string(), Id::Str(id.clone())))
                            .collect(),
                    )
                })
                .collect(),
            fd_tables: self.tables.clone(),
        }
    }
}

/// Checks `f` against what Linux can produce at all; the first problem, in
/// one line naming the pid or file id.
pub fn validate(f: &TreeFile) -> Result<Target, String> {
    let mut t = Target::default();
    for p in &f.processes {
        if p.pid <= 0 {
            return Err(format!("pid {} is not a valid pid", p.pid));
        }
        let proc = Proc {
            pid: p.pid,
            ppid: p.ppid,
            pgid: p.pgid,
            sid: p.sid,
            zombie: p.state == State::Zombie,
            subreaper: p.subreaper,
        };
        if t.procs.insert(p.pid, proc).is_some() {
            return Err(format!("pid {} is used twice", p.pid));
        }
    }
    let init = t
        .procs
        .get(&1)
        .ok_or("pid 1 is missing: the tree starts from init")?;
    if init.ppid != 0 || init.pgid != 1 || init.sid != 1 || init.zombie {
        return Err(
            "pid 1 must be alive with ppid 0, pgid 1 and sid 1 (its own session and group)".into(),
        );
    }
    let mut group_session: BTreeMap<i32, (i32, i32)> = BTreeMap::new();
    for p in t.procs.values() {
        if p.pid != 1 {
            match t.procs.get(&p.ppid) {
                None => {
                    return Err(format!(
                        "process {}: parent {} is not in the tree",
                        p.pid, p.ppid
                    ))
                }
                Some(q) if q.zombie => {
                    return Err(format!(
                    "process {}: parent {} is a zombie, whose children would have been reparented",
                    p.pid, p.ppid
                ))
                }
                _ => {}
            }
        }
        if let Some(&(s, other)) = group_session.get(&p.pgid) {
            if s != p.sid {
                return Err(format!(
                    "process group {} spans two sessions: {} in session {s}, {} in session {}",
                    p.pgid, other, p.pid, p.sid
                ));
            }
        }
        group_session.insert(p.pgid, (p.sid, p.pid));
    }
    let sessions: BTreeSet<i32> = t.procs.values().map(|p| p.sid).collect();
    for p in t.procs.values() {
        if sessions.contains(&p.pid) && p.sid != p.pid {
            return Err(format!(
                "process {} has the pid of session {} but is not its leader (its sid is {})",
                p.pid, p.pid, p.sid
            ));
        }
        if p.sid == p.pid && p.pgid != p.pid {
            return Err(format!(
                "process {} leads session {} but not its own process group ({}): a session leader cannot change group",
                p.pid, p.pid, p.pgid
            ));
        }
        if let Some(&(s, _)) = group_session.get(&p.pid) {
            if s != p.sid {
                return Err(format!(
                    "process {} is in session {} but group {} that it created is in session {s}",
                    p.pid, p.sid, p.pid
                ));
            }
        }
    }
    for fi in &f.files {
        let id = fi.id.key();
        let file = File {
            kind: fi.kind,
            end: fi.end,
            peer: fi.peer.as_ref().map(Id::key),
        };
        match (fi.kind, fi.end, &file.peer) {
            (Kind::Reg, None, None) => {}
            (Kind::Reg, _, _) => {
                return Err(format!("file {id}: a regular file has no end or peer"))
            }
            (Kind::Pipe, Some(_), Some(_)) | (Kind::Socket, None, Some(_)) => {}
            (Kind::Pipe, _, _) => {
                return Err(format!(
                    "file {id}: a pipe end needs \"end\" (r or w) and its \"peer\""
                ))
            }
            (Kind::Socket, _, _) => {
                return Err(format!("file {id}: a socket needs its \"peer\" and no end"))
            }
        }
        if t.files.insert(id.clone(), file).is_some() {
            return Err(format!("file id {id} is used twice"));
        }
    }
    for (id, f) in &t.files {
        if let Some(peer) = &f.peer {
            let q = t
                .files
                .get(peer)
                .ok_or_else(|| format!("file {id}: its peer {peer} is not in files"))?;
            let ends_ok = match (f.end, q.end) {
                (Some(a), Some(b)) => a != b,
                (None, None) => true,
                _ => false,
            };
            if q.kind != f.kind || q.peer.as_deref() != Some(id.as_str()) || !ends_ok || peer == id
            {
                return Err(format!(
                    "file {id}: its peer {peer} is not the other end of the same {}",
                    if f.kind == Kind::Pipe {
                        "pipe"
                    } else {
                        "socket pair"
                    }
                ));
            }
        }
    }
    for (pid, table) in &f.fds {
        let pid: i32 = pid
            .parse()
            .map_err(|_| format!("fds: {pid:?} is not a pid"))?;
        let p = t
            .procs
            .get(&pid)
            .ok_or_else(|| format!("fds: process {pid} is not in the tree"))?;
        if p.zombie && !table.is_empty() {
            return Err(format!("process {pid} is a zombie: it has no fds"));
        }
        let mut m = BTreeMap::new();
        for (fd, id) in table {
            let n: u32 = fd
                .parse()
                .map_err(|_| format!("process {pid}: {fd:?} is not an fd number"))?;
            let id = id.key();
            if !t.files.contains_key(&id) {
                return Err(format!("process {pid} fd {n} names unknown file {id}"));
            }
            m.insert(n, id);
        }
        if !m.is_empty() {
            t.fds.insert(pid, m);
        }
    }
    let mut seen = BTreeSet::new();
    for g in &f.fd_tables {
        let mut g = g.clone();
        g.sort_unstable();
        g.dedup();
        for &pid in &g {
            match t.procs.get(&pid) {
                None => return Err(format!("fd_tables: process {pid} is not in the tree")),
                Some(p) if p.zombie => {
                    return Err(format!(
                        "fd_tables: process {pid} is a zombie and has no fd table"
                    ))
                }
                _ => {}
            }
            if !seen.insert(pid) {
                return Err(format!("fd_tables: process {pid} is in two tables"));
            }
        }
        let first = t.fds.get(&g[0]).cloned().unwrap_or_default();
        for &pid in &g[1..] {
            if t.fds.get(&pid).cloned().unwrap_or_default() != first {
                return Err(format!(
                    "fd_tables: processes {} and {pid} share one table but list different fds",
                    g[0]
                ));
            }
        }
        if g.len() > 1 {
            t.tables.push(g);
        }
    }
    t.tables.sort();
    Ok(t)
}
