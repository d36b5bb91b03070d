//! Random reachable states: random operations run in the simulator from
//! pid 1, whatever it accepts kept. What comes out is reachable by
//! construction, so the planner must plan it.

use super::ops::{Op, Step};
use super::sim::Sim;
use super::target::Target;

/// Numbers from a list, in order (then zeros).
struct Replay(Vec<u64>, usize);

impl Replay {
    fn next(&mut self) -> u64 {
        let v = self.0.get(self.1).copied().unwrap_or(0);
        self.1 += 1;
        v
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> Option<T> {
        (!v.is_empty()).then(|| v[self.below(v.len())])
    }
}

/// A small deterministic generator (xorshift64*), so a failing seed can
/// be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// A reachable state after up to `ops` random operations, and the steps
/// that made it.
pub fn reachable(seed: u64, ops: usize) -> (Target, Vec<Step>) {
    let mut r = Rng::new(seed);
    let choices: Vec<u64> = (0..ops * 4).map(|_| r.next_u64()).collect();
    reachable_from(&choices)
}

/// The same from explicit random numbers, four per operation (what
/// proptest shrinks).
pub fn reachable_from(choices: &[u64]) -> (Target, Vec<Step>) {
    let mut r = Replay(choices.to_vec(), 0);
    let ops = choices.len() / 4;
    let mut sim = Sim::new();
    let mut steps = vec![];
    let mut next_pid = 2;
    let mut next_file = 0;
    for _ in 0..ops {
        let live: Vec<i32> = sim
            .procs
            .values()
            .filter(|p| !p.zombie)
            .map(|p| p.pid)
            .collect();
        let by = r.pick(&live).unwrap();
        let fd = r.below(6) as u32;
        let op = match r.below(16) {
            0..=3 => {
                next_pid += 1 + r.below(2) as i32;
                Op::Fork {
                    pid: next_pid,
                    share_files: r.below(5) == 0,
                }
            }
            4 => {
                next_pid += 1;
                Op::CloneParent {
                    pid: next_pid,
                    share_files: r.below(5) == 0,
                }
            }
            5 => Op::Setsid,
            6 | 7 => {
                let groups: Vec<i32> = sim.procs.values().map(|p| p.pgid).collect();
                let kids: Vec<i32> = sim
                    .procs
                    .values()
                    .filter(|p| p.ppid == by)
                    .map(|p| p.pid)
                    .collect();
                let t = if r.below(2) == 0 {
                    by
                } else {
                    r.pick(&kids).unwrap_or(by)
                };
                let g = if r.below(3) == 0 {
                    t
                } else {
                    r.pick(&groups).unwrap()
                };
                Op::Setpgid { pid: t, pgid: g }
            }
            8 => Op::Subreaper {
                on: r.below(2) == 0,
            },
            9 => Op::Exit,
            10 => {
                let z: Vec<i32> = sim
                    .procs
                    .values()
                    .filter(|p| p.zombie && p.ppid == by)
                    .map(|p| p.pid)
                    .collect();
                match r.pick(&z) {
                    Some(pid) => Op::Wait { pid },
                    None => continue,
                }
            }
            11 => {
                next_file += 1;
                Op::Open {
                    file: format!("f{next_file}"),
                    fd,
                }
            }
            12 => {
                next_file += 2;
                let files = [format!("f{}", next_file - 1), format!("f{next_file}")];
                let fds = [fd, fd + 1 + r.below(3) as u32];
                if r.below(2) == 0 {
                    Op::Pipe { files, fds }
                } else {
                    Op::Socketpair { files, fds }
                }
            }
            13 => Op::Dup2 {
                from: r.below(6) as u32,
                to: fd,
            },
            14 => Op::Close { fd },
            _ => Op::SendFd {
                fd: r.below(6) as u32,
                to: r.pick(&live).unwrap(),
                as_fd: fd,
            },
        };
        let s = Step { by, op };
        if sim.apply(&s).is_ok() {
            steps.push(s);
        }
    }
    (sim.to_target(), steps)
}

/// A large target for the scale benchmark: `n` processes in a random tree
/// (parents chosen among earlier ones), one session leader in fifty with
/// its descendants in its session, groups of ten, `fds` fds per process
/// (files of their own, and pipes shared with the parent).
pub fn large(n: usize, fds: usize, seed: u64) -> Target {
    use super::target::{File, Kind, Proc};
    let mut r = Rng::new(seed);
    let mut t = Target::default();
    t.procs.insert(1, Proc::INIT);
    for i in 2..=n as i32 {
        let ppid = 1 + r.below((i - 1) as usize) as i32;
        let parent = t.procs[&ppid];
        let (pgid, sid) = if r.below(50) == 0 {
            (i, i)
        } else if r.below(10) == 0 {
            (i, parent.sid)
        } else {
            (parent.pgid, parent.sid)
        };
        t.procs.insert(
            i,
            Proc {
                pid: i,
                ppid,
                pgid,
                sid,
                zombie: false,
                subreaper: r.below(100) == 0,
            },
        );
    }
    for i in 1..=n as i32 {
        let mut m = std::collections::BTreeMap::new();
        for k in 0..fds as u32 {
            let id = format!("r{i}.{k}");
            t.files.insert(id.clone(), File::REG);
            m.insert(k + 3, id);
        }
        t.fds.insert(i, m);
    }
    // A pipe between each process and its parent: read end in the child.
    for i in 2..=n as i32 {
        let (a, b) = (format!("p{i}r"), format!("p{i}w"));
        t.files.extend(File::pair(Kind::Pipe, &a, &b));
        t.fds.get_mut(&i).unwrap().insert(0, a);
        let pp = t.procs[&i].ppid;
        let fd = 1000 + i as u32;
        t.fds.get_mut(&pp).unwrap().insert(fd, b);
    }
    t
}
