//! The planner: a target state in, the steps that build it from pid 1 out.
//!
//! Every process is created directly as a child of its final parent, so
//! nothing has to be reparented:
//! - by its parent's `fork`, when the parent is in the session the child
//!   must be born in;
//! - otherwise by `clone_parent` from a *carrier*: a child of the parent
//!   that is already in that session. The carrier is the session's leader
//!   when the parent is the leader's parent, or a helper with the
//!   session's pid that the parent forks and that calls setsid (a session
//!   whose leader is gone), reaped at the end.
//!
//! A session leader whose children belong to the session it was born in
//! (it left that session with setsid after forking them) is *born* there:
//! its children of that session are forked before its setsid.
//!
//! Then:
//! - process groups: each leader makes its group, helpers stand in for
//!   groups whose leader is gone, members join, and leaders that moved
//!   move;
//! - files: each description is made once, by a process holding it, and
//!   dup2'ed or sent (SCM_RIGHTS) to the others;
//! - subreaper flags are set;
//! - helpers exit and are reaped;
//! - zombies exit.
//!
//! Shapes this construction cannot build are refused with the reason. Some
//! of them are unreachable; others need reparenting through dying helpers,
//! which is not done yet.

use super::ops::{Op, Step};
use super::target::{Kind, Target};
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Processes the plan creates that are not in the target.
    pub helpers: Vec<i32>,
}

impl Plan {
    pub fn send_fds(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s.op, Op::SendFd { .. }))
            .count()
    }
}

struct Planner<'a> {
    t: &'a Target,
    /// Final tree: parent → children (alive and zombie), ascending.
    children: BTreeMap<i32, Vec<i32>>,
    steps: Vec<Step>,
    helpers: Vec<i32>,
    /// Helper parents: helper → the process that reaps it.
    helper_parent: BTreeMap<i32, i32>,
    /// The session each created process is in now.
    cur: HashMap<i32, i32>,
    /// Session leaders born in another session: leader → that session.
    born_in: HashMap<i32, i32>,
    /// Sessions whose leader is gone: session → the parent its helper
    /// carrier is forked under.
    session_helper: HashMap<i32, i32>,
    /// The fd table each process was made with: its own pid, or that of
    /// the process whose table it shares.
    table_alias: HashMap<i32, i32>,
    /// (parent, session) → a process of that session below the parent in
    /// the final tree: it forks a helper that forks the child, and the
    /// helper's exit hands the child to the parent.
    reparent_via: HashMap<(i32, i32), i32>,
    /// Session leaders made below a deeper parent of their members:
    /// leader → that parent.
    lead_below: HashMap<i32, i32>,
    /// Leaders made so, with the dying helper that holds them until they
    /// are lifted: leader → helper.
    lifted: BTreeMap<i32, i32>,
    /// Zombie session leaders that held an fd table of the target while
    /// alive: zombie → a live member of that table.
    adopted: HashMap<i32, i32>,
    /// The next pid for helpers that need no particular pid.
    fresh: i32,
    strategy: Strategy,
}

/// Choices the construction can make either way; [`plan`] tries them in
/// turn (each attempt is proven by the simulator, so trying costs only
/// time, and the first succeeds for nearly every target).
#[derive(Clone, Copy, Debug, Default)]
struct Strategy {
    /// A session whose leader is gone gets its helper under the deepest
    /// parent that needs it, rather than the first one met; shallower
    /// parents get their children of that session through dying helpers.
    deeper_helper: bool,
    /// A child whose fd table a deeper process shares waits for it even
    /// when another member near that process's parent looks as if it could
    /// make it (it may itself depend on the table).
    wait_for_deeper_mates: bool,
    /// A zombie session leader joins the fd table of the leaders it makes
    /// in its session too, not only of its other members: a leader born
    /// there may take a table of another session into its own.
    carry_leaders: bool,
    /// Zombie session leaders hold the fd tables their session must have
    /// got from outside ([`Planner::adopt`]).
    adopt: bool,
    /// A leader that carries its session for its siblings may still be
    /// born in another session to make its fd table's orphans there.
    carriers_born_in: bool,
    /// [`Planner::adopt`] for every table with members in more than one
    /// session.
    adopt_wide: bool,
    /// A session leader whose members have a parent below its own is
    /// made below that one and lifted ([`Planner::lead_from`]).
    lift_leaders: bool,
    /// [`Planner::adopt`] by where the table must start.
    adopt_origin: bool,
    /// A leader with children in a session whose leader is gone is born
    /// in it rather than made the parent of its helper.
    born_first: bool,
    /// When no child can be made, one that waited for a deeper process
    /// goes before one that cannot be made at all.
    deferred_first: bool,
    /// Lifting a leader ([`Planner::lift_into`]) before a birth in
    /// another session.
    lift_first: bool,
}

impl Strategy {
    /// Every combination, fewest choices changed first (nearly every
    /// target that the default does not build takes one change).
    fn all() -> impl Iterator<Item = Strategy> {
        let mut bits: Vec<u16> = (0..2048).collect();
        bits.sort_by_key(|b| (b.count_ones(), *b));
        bits.into_iter().map(|b| Strategy {
            deeper_helper: b & 1 != 0,
            wait_for_deeper_mates: b & 2 != 0,
            carry_leaders: b & 4 != 0,
            adopt: b & 8 != 0,
            carriers_born_in: b & 16 != 0,
            adopt_wide: b & 32 != 0,
            lift_leaders: b & 64 != 0,
            adopt_origin: b & 128 != 0,
            born_first: b & 256 != 0,
            deferred_first: b & 512 != 0,
            lift_first: b & 1024 != 0,
        })
    }
}

fn unsupported(what: String) -> String {
    format!("cannot plan: {what}")
}

impl<'a> Planner<'a> {
    fn push(&mut self, by: i32, op: Op) {
        self.steps.push(Step { by, op });
    }

    fn sid(&self, p: i32) -> i32 {
        self.t.procs[&p].sid
    }

    fn is_leader(&self, p: i32) -> bool {
        self.sid(p) == p
    }

    /// The session `x` must be born in: its own for non-leaders, the one
    /// chosen for leaders born elsewhere, None when any will do.
    fn birth(&self, x: i32) -> Option<i32> {
        if self.is_leader(x) {
            self.born_in.get(&x).copied()
        } else {
            Some(self.sid(x))
        }
    }

    /// Makes sure parent `p` can create children born in session `s`.
    fn provide(&mut self, p: i32, s: i32, why: i32) -> Result<(), String> {
        if self.sid(p) == s || self.born_in.get(&p) == Some(&s) {
            return Ok(());
        }
        // The session's leader, a child of p, carries it.
        if self.t.procs.get(&s).is_some_and(|l| l.ppid == p) {
            return Ok(());
        }
        if !self.t.procs.contains_key(&s) {
            match self.session_helper.get(&s).copied() {
                Some(q) if q == p => return Ok(()),
                // A leader is rather born in s, its parent providing s.
                _ if self.strategy.born_first
                    && self.is_leader(p)
                    && p != 1
                    && !self.born_in.contains_key(&p)
                    && self.born_there(p, s) =>
                {
                    return Ok(());
                }
                None => {
                    self.session_helper.insert(s, p);
                    return Ok(());
                }
                // p is below the parent chosen so far: the helper goes
                // under p, the deeper one, and q's children of s come up
                // to q through dying helpers it forks.
                // (Not under a leader that its parent's session can give
                // birth to: it makes its children of s before its setsid.)
                Some(q)
                    if self.strategy.deeper_helper
                        && self.final_below(p, q)
                        && !(self.is_leader(p) && self.sid(self.t.procs[&p].ppid) == s) =>
                {
                    self.session_helper.insert(s, p);
                    self.reparent_via.insert((q, s), s);
                    return Ok(());
                }
                Some(_) => {}
            }
        }
        if self.strategy.lift_first {
            if let Some(r) = self.lift_into(p, s) {
                return r;
            }
        }
        // p left session s with setsid after creating what it needed there.
        if self.is_leader(p) && p != 1 && !self.born_in.contains_key(&p) && self.born_there(p, s) {
            return Ok(());
        }
        // A process of session s below p: a helper it forks makes the
        // child, and dies.
        if let Some(a) = self.below_in_session(p, s, why) {
            self.reparent_via.insert((p, s), a);
            return Ok(());
        }
        // The session's helper, made further down under q, is a process of
        // s below p too.
        if let Some(&q) = self.session_helper.get(&s) {
            if self.final_below(q, p) {
                self.reparent_via.insert((p, s), s);
                return Ok(());
            }
        }
        if let Some(r) = self.lift_into(p, s) {
            return r;
        }
        Err(unsupported(format!(
            "process {why} (session {s}) has parent {p} in session {}, and no way into session {s} from {p}: its leader is {} and {p} cannot have been born in it",
            self.sid(p),
            if self.t.procs.contains_key(&s) { format!("process {s}, not a child of {p}") } else { "gone, its helper already serving another parent".into() }
        )))
    }

    /// The leader of session `s` is made below p, where it makes p's children
    /// of s, and is lifted to its own parent (above p) by a dying helper
    /// afterwards. None when that does not apply.
    fn lift_into(&mut self, p: i32, s: i32) -> Option<Result<(), String>> {
        if let Some(l) = self.t.procs.get(&s) {
            let pl = l.ppid;
            if (self.strategy.lift_leaders || self.strategy.lift_first)
                && self.final_below(p, pl)
                && !self.born_in.contains_key(&s)
                && self.table_of(s).len() == 1
            {
                match self.lead_below.get(&s).copied() {
                    None => {
                        self.lead_below.insert(s, p);
                    }
                    Some(q) if q == p => {}
                    Some(q) if self.final_below(p, q) => {
                        self.lead_below.insert(s, p);
                        self.reparent_via.insert((q, s), s);
                    }
                    Some(q) if self.final_below(q, p) => {
                        self.reparent_via.insert((p, s), s);
                        return Some(Ok(()));
                    }
                    Some(_) => {
                        return Some(Err(unsupported(format!(
                            "session {s} has members under {p} and under another branch"
                        ))))
                    }
                }
                self.reparent_via.insert((p, s), s);
                self.reparent_via.insert((pl, s), s);
                return Some(Ok(()));
            }
        }
        None
    }

    /// Leader `p` is born in session `s`, if its parent can give it that
    /// birth; nothing changes otherwise.
    fn born_there(&mut self, p: i32, s: i32) -> bool {
        let saved = (
            self.born_in.clone(),
            self.session_helper.clone(),
            self.reparent_via.clone(),
        );
        self.born_in.insert(p, s);
        let pp = self.t.procs[&p].ppid;
        if self.provide(pp, s, p).is_ok() {
            return true;
        }
        (self.born_in, self.session_helper, self.reparent_via) = saved;
        false
    }

    /// A process that ends in session `s` and is a descendant of `p` in
    /// the final tree, outside the subtree of `x`.
    fn below_in_session(&self, p: i32, s: i32, x: i32) -> Option<i32> {
        self.t
            .procs
            .values()
            .filter(|a| a.sid == s && a.pid != x)
            .map(|a| a.pid)
            .find(|&a| {
                // The path up from a to p, and the child of p it enters by:
                // not x's subtree, and not a child of p that itself needs a
                // way into s from p.
                let (mut up, mut below) = (self.t.procs[&a].ppid, a);
                while up != 0 {
                    if up == x || below == x {
                        return false;
                    }
                    if up == p {
                        return self.sid(below) != s || self.is_leader(below);
                    }
                    below = up;
                    up = self.t.procs[&up].ppid;
                }
                false
            })
    }

    /// The processes that share x's fd table while the plan runs: the
    /// target's sharers, and the zombie leader that carried it into its
    /// session.
    fn table_of(&self, x: i32) -> Vec<i32> {
        let key = self.adopted.get(&x).copied().unwrap_or(x);
        let mut v = self.t.table_of(key);
        if v.len() > 1 || key != x {
            let zs: Vec<i32> = self
                .adopted
                .iter()
                .filter(|(_, m)| v.contains(m))
                .map(|(&z, _)| z)
                .collect();
            v.extend(zs);
            v.sort_unstable();
        }
        v
    }

    /// A table with members outside session Z that cannot have received it
    /// (their session's leader is alive and outside the table, or it is
    /// session 1) and a member in session Z, whose leader Z is a zombie:
    /// the table began outside Z, and only Z's setsid can have brought it
    /// in. Z was in the table while alive.
    /// Whether `o` can be the first of `table`: a process of a table
    /// makes processes only below its own parent, so the first lies below
    /// every parent of a member that is outside the table.
    fn can_start(&self, table: &[i32], o: i32) -> bool {
        table.iter().all(|&m| {
            let pm = self.t.procs[&m].ppid;
            table.contains(&pm) || self.final_below(o, pm)
        })
    }

    /// Whether session `s`'s leader is a zombie that carries no table yet.
    fn free_zombie_leader(&self, s: i32) -> bool {
        self.t.procs.get(&s).is_some_and(|l| l.zombie) && !self.adopted.contains_key(&s)
    }

    fn adopt(&mut self) {
        for table in &self.t.tables {
            let closed = |s: i32| {
                s == 1
                    || self
                        .t
                        .procs
                        .get(&s)
                        .is_some_and(|l| !l.zombie && !table.contains(&s))
            };
            let outside: BTreeSet<i32> = table
                .iter()
                .filter_map(|&m| self.birth(m))
                .filter(|&s| closed(s))
                .collect();
            // By origin: the table starts with a member below every
            // outside parent of the others, in that one's session; every
            // other session of the table led by a zombie got it from its
            // leader.
            if self.strategy.adopt_origin {
                let origin = |o: i32| self.can_start(table, o);
                // A zombie leader of one of its sessions that lies below
                // all those parents can have started it itself.
                let zombie_origin = table
                    .iter()
                    .filter_map(|&m| self.birth(m))
                    .filter(|&z| self.free_zombie_leader(z) && origin(z))
                    .max_by_key(|&z| self.depth(z));
                if let Some(z) = zombie_origin {
                    self.adopted.insert(z, table[0]);
                    continue;
                }
                let b0 = table
                    .iter()
                    .copied()
                    .filter(|&o| origin(o))
                    .find_map(|o| self.birth(o));
                if let Some(b0) = b0 {
                    let zs: BTreeSet<i32> = table
                        .iter()
                        .filter_map(|&m| self.birth(m))
                        .filter(|&z| z != b0 && self.free_zombie_leader(z))
                        .collect();
                    for z in zs {
                        self.adopted.insert(z, table[0]);
                    }
                    continue;
                }
            }
            // Wider: any table that also has members in other sessions
            // (their leaders may have been born in Z's session).
            if outside.is_empty() && !self.strategy.adopt_wide {
                continue;
            }
            let sessions: BTreeSet<i32> = table.iter().map(|&m| self.sid(m)).collect();
            let z = table.iter().filter_map(|&m| self.birth(m)).find(|&s| {
                !outside.contains(&s) && sessions.len() > 1 && self.free_zombie_leader(s)
            });
            if let Some(z) = z {
                self.adopted.insert(z, table[0]);
            }
        }
    }

    fn prepass(&mut self) -> Result<(), String> {
        // Non-leaders first: a leader has the born-in way out, others not.
        let mut needs: Vec<(bool, i32, i32, i32)> = vec![];
        for x in self.t.procs.values() {
            if x.pid == 1 || x.sid == x.pid {
                continue;
            }
            let p = x.ppid;
            if self.sid(p) != x.sid {
                needs.push((self.is_leader(p), p, x.sid, x.pid));
            }
        }
        needs.sort();
        needs.dedup_by_key(|n| (n.1, n.2));
        for (_, p, s, why) in needs {
            self.provide(p, s, why)?;
        }
        // After the births above: a leader's birth session counts.
        if self.strategy.adopt || self.strategy.adopt_wide || self.strategy.adopt_origin {
            self.adopt();
        }
        // A leader sharing its fd table with an orphan of another session
        // (its parent above the leader) made it through a dying helper
        // before its setsid: it was born in that session.
        let leaders: Vec<i32> = self
            .t
            .procs
            .values()
            .filter(|x| x.pid != 1 && x.sid == x.pid && !self.born_in.contains_key(&x.pid))
            .map(|x| x.pid)
            // Not a carrier of its own session for its siblings: its
            // birth must not wait for anything then.
            .filter(|&x| {
                let pp = self.t.procs[&x].ppid;
                // (A zombie that carries a table in must be born with it.)
                self.adopted.contains_key(&x)
                    || self.strategy.carriers_born_in
                    || !self
                        .children
                        .get(&pp)
                        .into_iter()
                        .flatten()
                        .any(|&y| y != x && self.sid(y) == x)
            })
            .collect();
        for x in leaders {
            let table = self.table_of(x);
            // Rather one whose session no leader of the table can bring it.
            // Leaders bound to a birth session count too, after the rest.
            let orphan = table
                .iter()
                .copied()
                .filter_map(|m| Some((m, self.birth(m)?)))
                .filter(|&(m, b)| {
                    m != x
                        && b != x
                        // Not a session whose leader is born in x's: each
                        // would have to exist before the other.
                        && self.born_in.get(&b) != Some(&x)
                        && (!self.is_leader(m) || self.strategy.adopt_wide)
                        && self.final_below(x, self.t.procs[&m].ppid)
                })
                .min_by_key(|&(m, b)| (self.is_leader(m), table.contains(&b), m));
            if let Some((_, s)) = orphan {
                let saved = (
                    self.born_in.clone(),
                    self.session_helper.clone(),
                    self.reparent_via.clone(),
                );
                self.born_in.insert(x, s);
                if self.provide(self.t.procs[&x].ppid, s, x).is_err() {
                    (self.born_in, self.session_helper, self.reparent_via) = saved;
                }
            }
        }
        Ok(())
    }

    /// Creates `x` as a child of `p`, then its subtree.
    fn spawn(&mut self, p: i32, x: i32) -> Result<(), String> {
        if let Some(l) = self.birth(x) {
            if self.lead_below.get(&l) == Some(&p) && !self.cur.contains_key(&l) {
                self.lead_from(p, l)?;
            }
        }
        let table = self.table_of(x);
        let want = self.birth(x);
        let mate = self.mate(x);
        let fits = |pl: &Self, c: i32| pl.can_create(x, c);
        let in_table = self
            .carrier_table(p, x)
            .filter(|m| self.cur.contains_key(m));
        let creator = if let Some(m) = in_table {
            Some(m)
        } else if fits(self, p) {
            Some(p)
        } else {
            self.live_children(p).into_iter().find(|&c| fits(self, c))
        };
        if creator.is_none() {
            if let Some(a) = self.dying_helper_source(p, x) {
                return self.via_dying_helper(p, x, a, mate.is_some());
            }
        }
        let creator = match creator {
            Some(c) => c,
            None => {
                let s = want.unwrap_or(self.cur[&p]);
                let h = self.session_carrier(p, s, x)?;
                if !fits(self, h) {
                    return Err(unsupported(format!(
                        "process {x} shares its fd table with {table:?} but must be born in session {s}, which no process of that table under {p} is in"
                    )));
                }
                h
            }
        };
        // A zombie's or helper's fd table does not outlive it: sharing its
        // creator's lets it make children that share that table.
        // One that carries a table of its own into its session starts it.
        let share = mate.is_some() || self.t.procs[&x].zombie && !self.adopted.contains_key(&x);
        let s = self.cur[&creator];
        if creator == p {
            self.push(
                p,
                Op::Fork {
                    pid: x,
                    share_files: share,
                },
            );
        } else {
            self.push(
                creator,
                Op::CloneParent {
                    pid: x,
                    share_files: share,
                },
            );
        }
        self.cur.insert(x, s);
        let alias = if share { self.table_group(creator) } else { x };
        self.table_alias.insert(x, alias);
        self.build(x)
    }

    /// Makes leader `l` below `p` through a helper that stays until
    /// [`Planner::lift`] hands `l` to its own parent.
    fn lead_from(&mut self, p: i32, l: i32) -> Result<(), String> {
        let s = self.cur[&p];
        let d = self.fork_through(p, l, false);
        self.cur.insert(d, s);
        self.cur.insert(l, s);
        self.helper_parent.insert(d, p);
        self.lifted.insert(l, d);
        self.table_alias.insert(l, l);
        self.build(l)
    }

    /// The helpers holding leaders made below deeper parents exit: each
    /// leader goes to its own parent, the nearest subreaper then.
    fn lift(&mut self) {
        let lifted = std::mem::take(&mut self.lifted);
        for (l, d) in lifted {
            let pl = self.t.procs[&l].ppid;
            self.drop_helper(d, self.helper_parent[&d], pl);
        }
    }

    /// `a` forks a helper with a fresh pid, which forks `x`; the helper's
    /// pid.
    fn fork_through(&mut self, a: i32, x: i32, share: bool) -> i32 {
        let d = self.fresh;
        self.fresh += 1;
        let fork = |pid| Op::Fork {
            pid,
            share_files: share,
        };
        self.push(a, fork(d));
        self.push(d, fork(x));
        d
    }

    /// Helper `d` exits while `p` is the nearest subreaper above it (pid 1
    /// always is one), so that its children go to `p`; `reaper` reaps it.
    fn drop_helper(&mut self, d: i32, reaper: i32, p: i32) {
        if p != 1 {
            self.push(p, Op::Subreaper { on: true });
        }
        self.push(d, Op::Exit);
        self.push(reaper, Op::Wait { pid: d });
        if p != 1 {
            self.push(p, Op::Subreaper { on: false });
        }
    }

    /// `a` (in x's session, below p) forks a helper that forks x; the
    /// helper exits and x goes to p, the nearest subreaper for that
    /// moment.
    fn via_dying_helper(&mut self, p: i32, x: i32, a: i32, share: bool) -> Result<(), String> {
        let s = self.cur[&a];
        let d = self.fork_through(a, x, share);
        self.drop_helper(d, a, p);
        self.cur.insert(x, s);
        let alias = if share { self.table_group(a) } else { x };
        self.table_alias.insert(x, alias);
        self.build(x)
    }

    /// A made process below `p` that can fork the dying helper for `x`:
    /// in x's birth session, and in its fd table when x shares one with
    /// a process already made.
    fn dying_helper_source(&self, p: i32, x: i32) -> Option<i32> {
        let want = self.birth(x);
        let mate = self
            .table_of(x)
            .into_iter()
            .find(|m| *m != x && self.cur.contains_key(m));
        if mate.is_none() {
            if let Some(&a) = want.and_then(|s| self.reparent_via.get(&(p, s))) {
                return (self.cur.get(&a) == want.as_ref()).then_some(a);
            }
        }
        let m = mate?;
        let g = self.table_group(m);
        let mut cands: Vec<i32> = self
            .cur
            .keys()
            .copied()
            .filter(|&a| self.table_group(a) == g && want.is_none_or(|s| self.cur[&a] == s))
            .collect();
        cands.sort_unstable();
        cands.into_iter().find(|&a| self.is_below(a, p))
    }

    /// How far `a` is below pid 1 in the target's tree.
    fn depth(&self, a: i32) -> usize {
        let (mut d, mut up) = (0, self.t.procs[&a].ppid);
        while up != 0 {
            d += 1;
            up = self.t.procs[&up].ppid;
        }
        d
    }

    /// Whether `a` is a descendant of `p` in the target's tree.
    fn final_below(&self, a: i32, p: i32) -> bool {
        let mut up = self.t.procs[&a].ppid;
        while up != 0 {
            if up == p {
                return true;
            }
            up = self.t.procs[&up].ppid;
        }
        false
    }

    /// Whether made process `a` is a descendant of `p` now.
    fn is_below(&self, a: i32, p: i32) -> bool {
        let parent = |q: i32| {
            self.helper_parent
                .get(&q)
                .or_else(|| self.lifted.get(&q))
                .copied()
                .or_else(|| self.t.procs.get(&q).map(|t| t.ppid))
        };
        let mut up = parent(a);
        while let Some(u) = up {
            if u == p {
                return true;
            }
            if u == 0 {
                return false;
            }
            up = parent(u);
        }
        false
    }

    /// For a zombie session leader `k` (child of `p`) that will carry
    /// siblings into its session: a sibling outside the session whose fd
    /// table one of them shares, so that `k` is made in that table.
    fn carrier_table(&self, p: i32, k: i32) -> Option<i32> {
        if !self.t.procs[&k].zombie || !self.is_leader(k) {
            return None;
        }
        let kids = self.children.get(&p)?;
        // Those it carries: its siblings of its session, and the orphans
        // it makes through dying helpers for parents above.
        let carries_orphans = self.reparent_via.values().any(|&a| a == k);
        let orphans = self
            .t
            .procs
            .values()
            .filter(|_| carries_orphans)
            .filter(|y| y.sid == k && y.pid != k && self.reparent_via.get(&(y.ppid, k)) == Some(&k))
            .map(|y| y.pid);
        kids.iter()
            .copied()
            .filter(|&y| {
                y != k
                    && (self.strategy.carry_leaders || !self.is_leader(y))
                    && self.birth(y) == Some(k)
            })
            .chain(orphans)
            .flat_map(|y| self.table_of(y))
            .find(|m| kids.contains(m) && self.birth(*m) != Some(k) && *m != k)
    }

    /// The fd table `p` uses now (helpers share their parent's).
    fn table_group(&self, p: i32) -> i32 {
        self.table_alias.get(&p).copied().unwrap_or(p)
    }

    /// Children of `p` made so far and alive, helpers included.
    fn live_children(&self, p: i32) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .children
            .get(&p)
            .into_iter()
            .flatten()
            .copied()
            .filter(|c| self.cur.contains_key(c) && !self.lifted.contains_key(c))
            .collect();
        v.extend(
            self.helpers
                .iter()
                .copied()
                .filter(|h| self.helper_parent[h] == p),
        );
        v
    }

    /// The helper that carries session `s` under `p`, made on first use.
    /// It shares `p`'s fd table, so that it can make children that share
    /// it too.
    fn session_carrier(&mut self, p: i32, s: i32, x: i32) -> Result<i32, String> {
        if self.session_helper.get(&s) != Some(&p) {
            return Err(unsupported(format!(
                "no child of {p} is in session {s} to create its child {x} there"
            )));
        }
        if !self.cur.contains_key(&s) {
            // x shares a table p is not in: a process of that table below
            // p makes the helper through a dying one, which hands it to p.
            // Or the table another child of p that it will make needs:
            // the helper can join one table only.
            let src = self.table_source(p, x).or_else(|| {
                self.children
                    .get(&p)
                    .into_iter()
                    .flatten()
                    .filter(|&&y| !self.cur.contains_key(&y) && self.birth(y) == Some(s))
                    .find_map(|&y| self.table_source(p, y))
            });
            let g = match src {
                Some(a) => {
                    let d = self.fork_through(a, s, true);
                    self.drop_helper(d, a, p);
                    self.table_group(a)
                }
                None => {
                    self.push(
                        p,
                        Op::Fork {
                            pid: s,
                            share_files: true,
                        },
                    );
                    self.table_group(p)
                }
            };
            self.push(s, Op::Setsid);
            self.cur.insert(s, s);
            self.table_alias.insert(s, g);
            self.helpers.push(s);
            self.helper_parent.insert(s, p);
        }
        Ok(s)
    }

    /// Whether the helper of session `s` under `p` must wait before it is
    /// made: a child it will make shares a table that comes from outside
    /// the session and that no process has yet, and the helper can only
    /// join a table when it is made.
    fn helper_waits(&self, p: i32, s: i32) -> bool {
        self.children.get(&p).into_iter().flatten().any(|&y| {
            let table = self.table_of(y);
            !self.cur.contains_key(&y)
                && self.birth(y) == Some(s)
                && table.len() > 1
                && table.iter().all(|m| !self.cur.contains_key(m))
                && table
                    .iter()
                    .any(|&m| self.sid(m) != s && !self.is_leader(m))
        })
    }

    /// A made process below `p` in the fd table `x` must share, when `p`
    /// itself is not in it.
    fn table_source(&self, p: i32, x: i32) -> Option<i32> {
        let g = self.table_group(self.mate(x)?);
        if self.table_group(p) == g {
            return None;
        }
        let mut cands: Vec<i32> = self
            .cur
            .keys()
            .copied()
            .filter(|&a| self.table_group(a) == g && self.is_below(a, p))
            .collect();
        cands.sort_unstable();
        cands.first().copied()
    }

    /// Creates the children of `x` (just created).
    fn build(&mut self, x: i32) -> Result<(), String> {
        let kids = self.children.get(&x).cloned().unwrap_or_default();
        if self.is_leader(x) && x != 1 {
            if let Some(&b) = self.born_in.get(&x) {
                // Still in session b: its children of b first.
                let (first, rest): (Vec<i32>, Vec<i32>) = kids
                    .iter()
                    .copied()
                    .partition(|&k| self.birth(k) == Some(b));
                self.create_kids(x, first, &kids)?;
                // Siblings that share its fd table and can be born in b
                // are made by it now (CLONE_PARENT | CLONE_FILES): after
                // its setsid nobody in b is in that table.
                let p = self.t.procs[&x].ppid;
                let sibs: Vec<i32> = self
                    .children
                    .get(&p)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|&m| {
                        m != x
                            && !self.cur.contains_key(&m)
                            && self.table_of(m).contains(&x)
                            && self.birth(m).is_none_or(|s| s == b)
                    })
                    .collect();
                for m in sibs {
                    if !self.cur.contains_key(&m) {
                        self.spawn(p, m)?;
                    }
                }
                // Processes of its table and of b whose parent is above it
                // (orphans of a helper it forked): made through a dying
                // helper now, for the same reason.
                let orphans: Vec<i32> = self
                    .table_of(x)
                    .into_iter()
                    .filter(|&m| {
                        m != x
                            && !self.cur.contains_key(&m)
                            && self.birth(m).is_none_or(|s| s == b)
                            && self.final_below(x, self.t.procs[&m].ppid)
                    })
                    .collect();
                for m in orphans {
                    if !self.cur.contains_key(&m) {
                        let pm = self.t.procs[&m].ppid;
                        self.via_dying_helper(pm, m, x, true)?;
                    }
                }
                self.push(x, Op::Setsid);
                self.cur.insert(x, x);
                return self.create_kids(x, rest, &kids);
            }
            self.push(x, Op::Setsid);
            self.cur.insert(x, x);
        }
        self.create_kids(x, kids.clone(), &kids)
    }

    /// Creates `batch`, some of the children `kids` of `x`, in an order
    /// that lets each find its creator.
    fn create_kids(&mut self, x: i32, batch: Vec<i32>, kids: &[i32]) -> Result<(), String> {
        // Leaders before the rest: they may carry their sessions. Among
        // leaders, those some other child's birth needs come first. A
        // child that cannot be made yet (its fd table's mate is not there)
        // waits for one that can.
        let mut order: Vec<i32> = batch;
        let needed: BTreeSet<i32> = order.iter().filter_map(|&k| self.birth(k)).collect();
        // A free leader sharing an fd table with a sibling comes after it:
        // the sibling, bound to its session, makes it (CLONE_PARENT |
        // CLONE_FILES) before it leaves with setsid.
        let kidset: BTreeSet<i32> = kids.iter().copied().collect();
        let follows = |k: i32| {
            self.carrier_table(x, k).is_some()
                || self.is_leader(k)
                    && self.table_of(k).iter().any(|&m| {
                        m != k
                            && kidset.contains(&m)
                            && self.birth(k).is_none_or(|b| self.birth(m) == Some(b))
                    })
        };
        order.sort_by_key(|&k| {
            (
                follows(k),
                !self.is_leader(k),
                !needed.contains(&k),
                self.birth(k).is_none(),
                k,
            )
        });
        // Children waiting for a process of their session that another
        // child's subtree will make.
        let waits = |pl: &Self, k: i32| {
            pl.lead_below.contains_key(&k)
                || pl.birth(k)
                .and_then(|s| pl.reparent_via.get(&(x, s)))
                .is_some_and(|a| !pl.cur.contains_key(a))
                // Or its fd table's first member is deeper in the tree:
                // then a dying helper under that one makes it.
                || pl.table_of(k).iter().any(|&m| {
                    m != k && !pl.cur.contains_key(&m) && pl.final_below(m, x) && !pl.final_below(m, k)
                })
        };
        let mut deferred = vec![];
        loop {
            // Some may have been made meanwhile, by a sibling's build.
            order.retain(|k| !self.cur.contains_key(k));
            if order.is_empty() {
                break;
            }
            // A zombie carrier waits for the sibling whose table it must
            // join, when that sibling comes in this batch.
            let blocked = |pl: &Self, k: i32, order: &[i32]| {
                pl.carrier_table(x, k)
                    .is_some_and(|m| !pl.cur.contains_key(&m) && order.contains(&m))
            };
            let i = match order.iter().position(|&k| {
                !blocked(self, k, &order) && !self.must_wait(x, k) && self.feasible(x, k)
            }) {
                Some(i) => i,
                None => match order.iter().position(|&k| waits(self, k)) {
                    Some(i) => {
                        deferred.push(order.remove(i));
                        continue;
                    }
                    // Nothing can be made now: a child that waited goes
                    // first when one can (it may be what the rest need).
                    None => match deferred
                        .iter()
                        .position(|&k| self.strategy.deferred_first && self.feasible(x, k))
                    {
                        Some(j) => {
                            let k = deferred.remove(j);
                            self.spawn(x, k)?;
                            continue;
                        }
                        None => 0,
                    },
                },
            };
            let k = order.remove(i);
            self.spawn(x, k)?;
        }
        for k in deferred {
            if !self.cur.contains_key(&k) {
                self.spawn(x, k)?;
            }
        }
        Ok(())
    }

    /// A process already made that shares x's fd table: x's creator must
    /// be in that table too (CLONE_FILES). Without one, x's table starts
    /// as a copy of its creator's, which is still empty.
    fn mate(&self, x: i32) -> Option<i32> {
        self.table_of(x)
            .into_iter()
            .find(|m| *m != x && self.cur.contains_key(m))
    }

    /// Whether made process `c` can create `x` now: it is in x's birth
    /// session and in the fd table x shares.
    fn can_create(&self, x: i32, c: i32) -> bool {
        self.birth(x).is_none_or(|s| self.cur[&c] == s)
            && self
                .mate(x)
                .is_none_or(|m| self.table_group(c) == self.table_group(m))
    }

    /// Whether child `k` of `x` must wait for a deeper member `m` of its
    /// fd table: m's parent has no process of that table near it to make
    /// m from, so k has to be made from m's side (a dying helper m forks).
    fn must_wait(&self, x: i32, k: i32) -> bool {
        let table = self.table_of(k);
        // A member that cannot start its table waits for one that can.
        if table.len() > 1 && self.mate(k).is_none() {
            let origin = |o: i32| self.can_start(&table, o);
            if !origin(k) && table.iter().any(|&o| o != k && origin(o)) {
                return true;
            }
        }
        let bk = self.birth(k);
        table.iter().any(|&m| {
            if m == k
                || self.cur.contains_key(&m)
                || !self.final_below(m, x)
                || self.final_below(m, k)
                // A sibling: the order among x's children handles it.
                || self.t.procs[&m].ppid == x
            {
                return false;
            }
            let pm = self.t.procs[&m].ppid;
            let reachable = !self.strategy.wait_for_deeper_mates
                && table.iter().any(|&o| {
                    o != m && (o == pm || self.t.procs[&o].ppid == pm || self.final_below(o, pm))
                });
            // A helper m forks is in m's session then: k must be able to
            // be born there (a leader free of any birth session always can).
            let same_birth = bk.is_none_or(|b| {
                self.birth(m) == Some(b)
                    || (self.is_leader(m) && self.born_in.get(&m).copied() == Some(b))
            });
            !reachable && same_birth
        })
    }

    /// Whether `spawn(p, x)` can succeed now.
    fn feasible(&self, p: i32, x: i32) -> bool {
        if self.lead_below.contains_key(&x) {
            return false;
        }
        let want = self.birth(x);
        let mate = self.mate(x);
        let fits = |c: i32| self.can_create(x, c);
        if fits(p) || self.live_children(p).into_iter().any(fits) {
            return true;
        }
        if self.dying_helper_source(p, x).is_some() {
            return true;
        }
        let s = want.unwrap_or(self.cur[&p]);
        self.session_helper.get(&s) == Some(&p)
            && !self.cur.contains_key(&s)
            && !self.helper_waits(p, s)
            && mate.is_none_or(|m| {
                self.table_group(p) == self.table_group(m) || self.table_source(p, x).is_some()
            })
    }

    fn groups(&mut self) -> Result<(), String> {
        let mut groups: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in self.t.procs.values() {
            groups.entry(p.pgid).or_default().push(p.pid);
        }
        let mut pgid: HashMap<i32, i32> = HashMap::new();
        // Current groups: what each process inherited, from a replay of
        // the steps so far.
        let mut sim = super::sim::Sim::new();
        for s in &self.steps {
            sim.apply(s)
                .map_err(|e| unsupported(format!("internal: step {s}: {e}")))?;
        }
        for (pid, p) in &sim.procs {
            pgid.insert(*pid, p.pgid);
        }
        for (&g, members) in &groups {
            let s = self.sid(members[0]);
            if g == s {
                // Made by the session's setsid: its leader's or its helper's.
                if !self.t.procs.contains_key(&g) && !self.cur.contains_key(&g) {
                    return Err(unsupported(format!("group {g} of session {g} needs the session's creator, which the plan does not make")));
                }
                continue;
            }
            if self.t.procs.contains_key(&g) {
                if pgid[&g] != g {
                    self.push(g, Op::Setpgid { pid: g, pgid: g });
                    pgid.insert(g, g);
                }
            } else {
                // A helper with the group's pid stands in for its leader.
                let by = *self
                    .cur
                    .iter()
                    .filter(|(_, cs)| **cs == s)
                    .map(|(p, _)| p)
                    .min()
                    .ok_or_else(|| {
                        unsupported(format!("no process of session {s} to make group {g} in"))
                    })?;
                self.push(
                    by,
                    Op::Fork {
                        pid: g,
                        share_files: false,
                    },
                );
                self.push(g, Op::Setpgid { pid: g, pgid: g });
                self.cur.insert(g, s);
                pgid.insert(g, g);
                self.helpers.push(g);
                self.helper_parent.insert(g, by);
            }
        }
        for (&g, members) in &groups {
            for &m in members {
                // Group leaders move after their groups are joined.
                if m != g && pgid[&m] != g && !self.is_leader(m) && !groups.contains_key(&m) {
                    self.push(m, Op::Setpgid { pid: m, pgid: g });
                    pgid.insert(m, g);
                }
            }
        }
        // Leaders that moved to another group. A move needs its group to
        // exist, and a leader's leaving ends its own group unless someone
        // else is in it: each goes once its group is there and leaving
        // strands no one still to join it.
        let mut moved: BTreeMap<i32, i32> = groups
            .iter()
            .flat_map(|(&g, ms)| ms.iter().map(move |&m| (m, g)))
            .filter(|&(m, g)| m != g && pgid[&m] != g)
            .collect();
        while !moved.is_empty() {
            let count =
                |g: i32, pgid: &HashMap<i32, i32>| pgid.values().filter(|&&v| v == g).count();
            let next = moved
                .iter()
                .map(|(&m, &g)| (m, g))
                .filter(|&(_, g)| count(g, &pgid) > 0)
                .find(|&(m, _)| {
                    !moved.values().any(|&g| g == m) || count(m, &pgid) > 1 || pgid[&m] != m
                })
                .or_else(|| {
                    moved
                        .iter()
                        .map(|(&m, &g)| (m, g))
                        .find(|&(_, g)| count(g, &pgid) > 0)
                });
            let Some((m, g)) = next else {
                return Err(unsupported(format!(
                    "the groups of {:?} cannot all be made",
                    moved.keys().collect::<Vec<_>>()
                )));
            };
            self.push(m, Op::Setpgid { pid: m, pgid: g });
            pgid.insert(m, g);
            moved.remove(&m);
        }
        Ok(())
    }

    fn files(&mut self) {
        let t = self.t;
        // One fd table per group of sharers: install through its first.
        let mut tables: BTreeMap<i32, i32> = BTreeMap::new();
        for (&pid, p) in &t.procs {
            if !p.zombie {
                tables.insert(pid, t.table_of(pid)[0]);
            }
        }
        let top = t
            .fds
            .values()
            .flat_map(|m| m.keys().copied())
            .max()
            .unwrap_or(0);
        let mut scratch = top + 1;
        let mut holders: BTreeMap<&str, Vec<(i32, u32)>> = BTreeMap::new();
        for (&pid, m) in &t.fds {
            if tables.get(&pid) != Some(&pid) {
                continue;
            }
            for (&fd, id) in m {
                holders.entry(id.as_str()).or_default().push((pid, fd));
            }
        }
        let mut made: BTreeSet<&str> = BTreeSet::new();
        for (&id, hs) in &holders {
            if made.contains(id) {
                continue;
            }
            let f = &t.files[id];
            let owner = hs[0].0;
            // Each description is made at the owner's own fd for it when
            // the owner holds it, else at a scratch fd closed afterwards.
            let own_fd = |name: &str| {
                holders
                    .get(name)
                    .and_then(|v| v.iter().find(|(p, _)| *p == owner))
                    .map(|&(_, fd)| fd)
            };
            let at = |name: &str, scratch: &mut u32| match own_fd(name) {
                Some(fd) => (fd, false),
                None => {
                    *scratch += 1;
                    (*scratch - 1, true)
                }
            };
            let mut local: Vec<(&str, u32, bool)> = vec![];
            match f.kind {
                Kind::Reg => {
                    let (fd, tmp) = at(id, &mut scratch);
                    self.push(
                        owner,
                        Op::Open {
                            file: id.to_string(),
                            fd,
                        },
                    );
                    local.push((id, fd, tmp));
                }
                Kind::Pipe | Kind::Socket => {
                    let peer = f.peer.as_deref().unwrap();
                    let (r, w) = if f.end == Some(super::target::End::Write) {
                        (peer, id)
                    } else {
                        (id, peer)
                    };
                    let (rf, rt) = at(r, &mut scratch);
                    let (wf, wt) = at(w, &mut scratch);
                    let files = [r.to_string(), w.to_string()];
                    let fds = [rf, wf];
                    self.push(
                        owner,
                        if f.kind == Kind::Pipe {
                            Op::Pipe { files, fds }
                        } else {
                            Op::Socketpair { files, fds }
                        },
                    );
                    local.push((r, rf, rt));
                    local.push((w, wf, wt));
                }
            }
            for (name, sfd, tmp) in local {
                made.insert(name);
                for &(pid, fd) in holders.get(name).map(|v| v.as_slice()).unwrap_or(&[]) {
                    if pid == owner {
                        if fd != sfd {
                            self.push(owner, Op::Dup2 { from: sfd, to: fd });
                        }
                    } else {
                        self.push(
                            owner,
                            Op::SendFd {
                                fd: sfd,
                                to: pid,
                                as_fd: fd,
                            },
                        );
                    }
                }
                if tmp {
                    self.push(owner, Op::Close { fd: sfd });
                }
            }
        }
    }

    fn finish(&mut self) {
        for p in self.t.procs.values() {
            if p.subreaper {
                self.push(p.pid, Op::Subreaper { on: true });
            }
        }
        // Group helpers before session helpers (they may be the latter's
        // children), each reaped by its parent.
        let mut hs = self.helpers.clone();
        hs.sort_by_key(|h| (self.t.procs.values().any(|p| p.sid == *h), *h));
        for h in hs {
            self.push(h, Op::Exit);
            self.push(self.helper_parent[&h], Op::Wait { pid: h });
        }
        for p in self.t.procs.values() {
            if p.zombie {
                self.push(p.pid, Op::Exit);
            }
        }
    }
}

/// The steps that build `t` from pid 1, or why they cannot be found (the
/// reason the first strategy met).
pub fn plan(t: &Target) -> Result<Plan, String> {
    let mut first = None;
    // A refusal costs one attempt per strategy: fewer for big targets, so
    // that refusing 10,000 processes takes seconds, not a minute.
    let attempts = (200_000 / t.procs.len().max(1)).clamp(4, 256);
    for s in Strategy::all().take(attempts) {
        match plan_with(t, s) {
            Ok(p) => return Ok(p),
            Err(e) => {
                if std::env::var_os("DUMPER_PLAN_DEBUG").is_some() {
                    eprintln!("  strategy {s:?}: {e}");
                }
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap())
}

fn plan_with(t: &Target, strategy: Strategy) -> Result<Plan, String> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in t.procs.values() {
        if p.pid != 1 {
            children.entry(p.ppid).or_default().push(p.pid);
        }
    }
    let mut pl = Planner {
        t,
        children,
        steps: vec![],
        helpers: vec![],
        helper_parent: BTreeMap::new(),
        cur: HashMap::from([(1, 1)]),
        born_in: HashMap::new(),
        session_helper: HashMap::new(),
        table_alias: HashMap::new(),
        reparent_via: HashMap::new(),
        adopted: HashMap::new(),
        lead_below: HashMap::new(),
        lifted: BTreeMap::new(),
        fresh: t
            .procs
            .values()
            .flat_map(|p| [p.pid, p.pgid, p.sid])
            .max()
            .unwrap_or(1)
            + 1,
        strategy,
    };
    pl.prepass()?;
    if let Err(e) = pl.build(1).and_then(|()| {
        pl.lift();
        pl.groups()
    }) {
        // DUMPER_PLAN_DEBUG=1: what was made before the refusal.
        if std::env::var_os("DUMPER_PLAN_DEBUG").is_some() {
            for st in &pl.steps {
                eprintln!("  so far: {st}");
            }
            eprintln!(
                "  born_in {:?} helpers {:?} via {:?} adopted {:?} lead_below {:?}",
                pl.born_in, pl.session_helper, pl.reparent_via, pl.adopted, pl.lead_below
            );
        }
        return Err(e);
    }
    pl.files();
    pl.finish();
    let plan = Plan {
        steps: pl.steps,
        helpers: pl.helpers,
    };
    // Never hand out a plan the simulator does not accept.
    let end = super::sim::Sim::run(&plan.steps).map_err(|(i, e)| {
        unsupported(format!(
            "the construction fails at step {} ({}): {e}",
            i + 1,
            plan.steps[i]
        ))
    })?;
    end.matches(t)
        .map_err(|e| unsupported(format!("the construction does not reach the target: {e}")))?;
    Ok(plan)
}
