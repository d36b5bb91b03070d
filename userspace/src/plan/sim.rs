//! The simulator: Linux's rules for the plan operations (ops.rs), exactly
//! as the model states them, and the comparison of a final state with the
//! target. Every plan the planner makes is checked here; `dumper plan
//! --check` runs it on any plan.

use super::ops::{Op, Step};
use super::target::{End, File, Kind, Proc, Target};
use std::collections::{BTreeMap, HashMap};

type Table = BTreeMap<u32, u64>;

#[derive(Clone, Debug)]
pub struct Sim {
    pub procs: BTreeMap<i32, Proc>,
    /// pid → fd table id (live processes only).
    table_of: HashMap<i32, u64>,
    tables: HashMap<u64, Table>,
    /// Open file descriptions: id → (the plan's name for it, kind, peer).
    descs: HashMap<u64, (String, File)>,
    /// References to each description from fd tables.
    refs: HashMap<u64, usize>,
    /// Indexes, so that each step costs what Linux's own lookups cost:
    /// processes per pgid (with the group's session) and per sid,
    /// children per parent, descriptions by name.
    groups: HashMap<i32, (i32, usize)>,
    sessions: HashMap<i32, usize>,
    kids: HashMap<i32, Vec<i32>>,
    by_name: HashMap<String, u64>,
    next: u64,
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

impl Sim {
    /// The initial state: pid 1, parent 0, its own group and session.
    pub fn new() -> Sim {
        let mut s = Sim {
            procs: BTreeMap::new(),
            table_of: HashMap::new(),
            tables: HashMap::new(),
            descs: HashMap::new(),
            refs: HashMap::new(),
            groups: HashMap::new(),
            sessions: HashMap::new(),
            kids: HashMap::new(),
            by_name: HashMap::new(),
            next: 1,
        };
        s.add_proc(Proc::INIT);
        let t = s.new_id();
        s.tables.insert(t, Table::new());
        s.table_of.insert(1, t);
        s
    }

    fn add_proc(&mut self, p: Proc) {
        let g = self.groups.entry(p.pgid).or_insert((p.sid, 0));
        g.1 += 1;
        *self.sessions.entry(p.sid).or_default() += 1;
        self.kids.entry(p.ppid).or_default().push(p.pid);
        self.procs.insert(p.pid, p);
    }

    fn leave_ids(&mut self, pgid: i32, sid: i32) {
        let g = self.groups.get_mut(&pgid).unwrap();
        g.1 -= 1;
        if g.1 == 0 {
            self.groups.remove(&pgid);
        }
        let n = self.sessions.get_mut(&sid).unwrap();
        *n -= 1;
        if *n == 0 {
            self.sessions.remove(&sid);
        }
    }

    fn set_ids(&mut self, pid: i32, pgid: i32, sid: i32) {
        let p = self.procs[&pid];
        self.leave_ids(p.pgid, p.sid);
        let g = self.groups.entry(pgid).or_insert((sid, 0));
        g.1 += 1;
        *self.sessions.entry(sid).or_default() += 1;
        let q = self.procs.get_mut(&pid).unwrap();
        q.pgid = pgid;
        q.sid = sid;
    }

    fn remove_proc(&mut self, pid: i32) {
        let p = self.procs.remove(&pid).unwrap();
        self.leave_ids(p.pgid, p.sid);
        if let Some(v) = self.kids.get_mut(&p.ppid) {
            v.retain(|&c| c != pid);
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn live(&self, pid: i32) -> Result<Proc, String> {
        match self.procs.get(&pid) {
            Some(p) if !p.zombie => Ok(*p),
            Some(_) => Err(format!("process {pid} is a zombie")),
            None => Err(format!("process {pid} does not exist")),
        }
    }

    fn pid_free(&self, c: i32) -> Result<(), String> {
        if c <= 0 {
            return Err(format!("{c} is not a valid pid"));
        }
        if self.procs.contains_key(&c) {
            return Err(format!("pid {c} is in use"));
        }
        if self.groups.contains_key(&c) || self.sessions.contains_key(&c) {
            return Err(format!("pid {c} is still a process group or session id"));
        }
        Ok(())
    }

    fn table(&self, pid: i32) -> &Table {
        &self.tables[&self.table_of[&pid]]
    }

    fn table_mut(&mut self, pid: i32) -> &mut Table {
        let t = self.table_of[&pid];
        self.tables.get_mut(&t).unwrap()
    }

    fn add_ref(&mut self, d: u64) {
        *self.refs.entry(d).or_default() += 1;
    }

    fn drop_ref(&mut self, d: u64) {
        let r = self.refs.get_mut(&d).unwrap();
        *r -= 1;
        if *r == 0 {
            self.refs.remove(&d);
            if let Some((name, _)) = self.descs.remove(&d) {
                self.by_name.remove(&name);
            }
        }
    }

    fn install(&mut self, pid: i32, fd: u32, d: u64) {
        self.add_ref(d);
        if let Some(old) = self.table_mut(pid).insert(fd, d) {
            self.drop_ref(old);
        }
    }

    fn free_fd(&self, pid: i32, fd: u32) -> Result<(), String> {
        if self.table(pid).contains_key(&fd) {
            Err(format!("fd {fd} of process {pid} is in use"))
        } else {
            Ok(())
        }
    }

    fn desc_named(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn new_desc(&mut self, name: &str, f: File) -> Result<u64, String> {
        if self.desc_named(name) {
            return Err(format!("file {name} already exists"));
        }
        let d = self.new_id();
        self.descs.insert(d, (name.to_string(), f));
        self.by_name.insert(name.to_string(), d);
        Ok(d)
    }

    fn spawn(&mut self, by: Proc, c: i32, parent: i32, share: bool) -> Result<(), String> {
        self.pid_free(c)?;
        self.add_proc(Proc {
            pid: c,
            ppid: parent,
            pgid: by.pgid,
            sid: by.sid,
            zombie: false,
            subreaper: false,
        });
        let t = if share {
            self.table_of[&by.pid]
        } else {
            let copy = self.table(by.pid).clone();
            for &d in copy.values() {
                self.add_ref(d);
            }
            let t = self.new_id();
            self.tables.insert(t, copy);
            t
        };
        self.table_of.insert(c, t);
        Ok(())
    }

    /// Applies one step, or says why Linux would refuse it.
    pub fn apply(&mut self, s: &Step) -> Result<(), String> {
        let p = self.live(s.by)?;
        match &s.op {
            Op::Fork { pid, share_files } => self.spawn(p, *pid, p.pid, *share_files),
            Op::CloneParent { pid, share_files } => {
                if p.pid == 1 {
                    return Err("pid 1 cannot clone_parent: it has no parent".into());
                }
                self.spawn(p, *pid, p.ppid, *share_files)
            }
            Op::Setsid => {
                if self.groups.contains_key(&p.pid) {
                    return Err(format!("setsid: a process group {} exists", p.pid));
                }
                self.set_ids(p.pid, p.pid, p.pid);
                Ok(())
            }
            Op::Setpgid { pid, pgid } => {
                let t = self.live(*pid)?;
                if t.pid != p.pid && (t.ppid != p.pid || t.sid != p.sid) {
                    return Err(format!(
                        "setpgid: {} is neither {} nor a child of it in its session",
                        t.pid, p.pid
                    ));
                }
                if t.sid == t.pid {
                    return Err(format!("setpgid: {} is a session leader", t.pid));
                }
                if *pgid != t.pid && self.groups.get(pgid).is_none_or(|g| g.0 != p.sid) {
                    return Err(format!(
                        "setpgid: no process group {pgid} in session {}",
                        p.sid
                    ));
                }
                self.set_ids(*pid, *pgid, t.sid);
                Ok(())
            }
            Op::Subreaper { on } => {
                self.procs.get_mut(&p.pid).unwrap().subreaper = *on;
                Ok(())
            }
            Op::Exit => {
                if p.pid == 1 {
                    return Err("pid 1 cannot exit".into());
                }
                // The new parent of its children: the nearest live
                // subreaper among its ancestors, else pid 1.
                let mut reaper = 1;
                let mut a = p.ppid;
                while a != 0 {
                    let q = self.procs[&a];
                    if !q.zombie && q.subreaper {
                        reaper = a;
                        break;
                    }
                    a = q.ppid;
                }
                let orphans = self.kids.remove(&p.pid).unwrap_or_default();
                for &c in &orphans {
                    self.procs.get_mut(&c).unwrap().ppid = reaper;
                }
                self.kids.entry(reaper).or_default().extend(orphans);
                let me = self.procs.get_mut(&p.pid).unwrap();
                me.zombie = true;
                let t = self.table_of.remove(&p.pid).unwrap();
                if !self.table_of.values().any(|&u| u == t) {
                    let table = self.tables.remove(&t).unwrap();
                    for d in table.into_values() {
                        self.drop_ref(d);
                    }
                }
                Ok(())
            }
            Op::Wait { pid } => {
                match self.procs.get(pid) {
                    Some(c) if c.zombie && c.ppid == p.pid => {}
                    _ => return Err(format!("wait: {pid} is not a zombie child of {}", p.pid)),
                }
                self.remove_proc(*pid);
                Ok(())
            }
            Op::Open { file, fd } => {
                self.free_fd(p.pid, *fd)?;
                let d = self.new_desc(file, File::REG)?;
                self.install(p.pid, *fd, d);
                Ok(())
            }
            Op::Pipe { files, fds } | Op::Socketpair { files, fds } => {
                let pipe = matches!(s.op, Op::Pipe { .. });
                if fds[0] == fds[1] || files[0] == files[1] {
                    return Err("pipe/socketpair: two distinct files and fds are needed".into());
                }
                self.free_fd(p.pid, fds[0])?;
                self.free_fd(p.pid, fds[1])?;
                if let Some(f) = files.iter().find(|f| self.desc_named(f)) {
                    return Err(format!("file {f} already exists"));
                }
                let kind = if pipe { Kind::Pipe } else { Kind::Socket };
                let [(na, fa), (nb, fb)] = File::pair(kind, &files[0], &files[1]);
                let a = self.new_desc(&na, fa)?;
                let b = self.new_desc(&nb, fb)?;
                self.install(p.pid, fds[0], a);
                self.install(p.pid, fds[1], b);
                Ok(())
            }
            Op::Dup2 { from, to } => {
                let d = *self
                    .table(p.pid)
                    .get(from)
                    .ok_or_else(|| format!("dup2: fd {from} of {} is not open", p.pid))?;
                if from != to {
                    self.install(p.pid, *to, d);
                }
                Ok(())
            }
            Op::Close { fd } => {
                let d = self
                    .table_mut(p.pid)
                    .remove(fd)
                    .ok_or_else(|| format!("close: fd {fd} of {} is not open", p.pid))?;
                self.drop_ref(d);
                Ok(())
            }
            Op::SendFd { fd, to, as_fd } => {
                self.live(*to)?;
                let d = *self
                    .table(p.pid)
                    .get(fd)
                    .ok_or_else(|| format!("send_fd: fd {fd} of {} is not open", p.pid))?;
                self.free_fd(*to, *as_fd)?;
                self.install(*to, *as_fd, d);
                Ok(())
            }
        }
    }

    /// Runs `steps` from the initial state; the first refused step and why.
    pub fn run(steps: &[Step]) -> Result<Sim, (usize, String)> {
        let mut s = Sim::new();
        for (i, st) in steps.iter().enumerate() {
            s.apply(st).map_err(|e| (i, e))?;
        }
        Ok(s)
    }

    /// The state as a target (for the generator): descriptions named as
    /// the plan named them.
    pub fn to_target(&self) -> Target {
        let mut t = Target {
            procs: self.procs.clone(),
            ..Default::default()
        };
        for (_, (name, f)) in self.descs.iter() {
            t.files.insert(name.clone(), f.clone());
        }
        // A pipe end or socket whose peer is closed still names it.
        let orphans: Vec<(String, File)> = t
            .files
            .iter()
            .filter_map(|(name, f)| {
                let peer = f.peer.as_ref()?;
                (!t.files.contains_key(peer)).then(|| {
                    let end = f.end.map(|e| {
                        if e == End::Read {
                            End::Write
                        } else {
                            End::Read
                        }
                    });
                    (
                        peer.clone(),
                        File {
                            kind: f.kind,
                            end,
                            peer: Some(name.clone()),
                        },
                    )
                })
            })
            .collect();
        t.files.extend(orphans);
        let mut by_table: BTreeMap<u64, Vec<i32>> = BTreeMap::new();
        for (&pid, &tb) in &self.table_of {
            by_table.entry(tb).or_default().push(pid);
            let fds = self.tables[&tb]
                .iter()
                .map(|(&fd, d)| (fd, self.descs[d].0.clone()))
                .collect::<BTreeMap<u32, String>>();
            if !fds.is_empty() {
                t.fds.insert(pid, fds);
            }
        }
        t.tables = by_table
            .into_values()
            .filter(|g| g.len() > 1)
            .map(|mut g| {
                g.sort_unstable();
                g
            })
            .collect();
        t.tables.sort();
        t
    }

    /// Whether this state is exactly `target`; the first difference.
    pub fn matches(&self, target: &Target) -> Result<(), String> {
        for (pid, want) in &target.procs {
            match self.procs.get(pid) {
                None => return Err(format!("process {pid} is missing")),
                Some(got) if got != want => {
                    return Err(format!(
                        "process {pid} is {got:?}, the target says {want:?}"
                    ))
                }
                _ => {}
            }
        }
        if let Some(extra) = self.procs.keys().find(|p| !target.procs.contains_key(p)) {
            return Err(format!("process {extra} is left over (a helper not gone)"));
        }
        // fds: the same numbers, and descriptions that correspond one to
        // one with the target's ids, of the same kind and peers.
        let mut to_target: HashMap<u64, String> = HashMap::new();
        let mut from_target: HashMap<String, u64> = HashMap::new();
        for (&pid, _) in self.table_of.iter() {
            let want = target.fds.get(&pid).cloned().unwrap_or_default();
            let got = self.table(pid);
            if got.len() != want.len() || got.keys().ne(want.keys()) {
                return Err(format!(
                    "process {pid} has fds {:?}, the target {:?}",
                    got.keys().collect::<Vec<_>>(),
                    want.keys().collect::<Vec<_>>()
                ));
            }
            for (fd, d) in got {
                let id = &want[fd];
                if to_target.get(d).is_some_and(|x| x != id)
                    || from_target.get(id).is_some_and(|x| x != d)
                {
                    return Err(format!(
                        "process {pid} fd {fd}: descriptions are not shared as the target shares them (file {id})"
                    ));
                }
                to_target.insert(*d, id.clone());
                from_target.insert(id.clone(), *d);
            }
        }
        for (d, id) in &to_target {
            let (_, f) = &self.descs[d];
            let want = &target.files[id];
            let peer_ok = match (&f.peer, &want.peer) {
                (None, None) => true,
                (Some(p), Some(q)) => self
                    .by_name
                    .get(p)
                    .and_then(|pd| to_target.get(pd))
                    .is_none_or(|t| t == q),
                _ => false,
            };
            if f.kind != want.kind || f.end != want.end || !peer_ok {
                return Err(format!(
                    "file {id}: made as {f:?}, the target says {want:?}"
                ));
            }
        }
        // Shared tables exactly as the target groups them.
        let mut groups: BTreeMap<u64, Vec<i32>> = BTreeMap::new();
        for (&pid, &t) in &self.table_of {
            groups.entry(t).or_default().push(pid);
        }
        let mut got: Vec<Vec<i32>> = groups
            .into_values()
            .filter(|g| g.len() > 1)
            .map(|mut g| {
                g.sort_unstable();
                g
            })
            .collect();
        got.sort();
        if got != target.tables {
            return Err(format!(
                "shared fd tables {got:?}, the target {:?}",
                target.tables
            ));
        }
        Ok(())
    }
}
