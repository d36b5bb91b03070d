//! What a run measures: the headline workload and one sweep per dimension,
//! each with the other dimensions fixed.

use crate::workload::Spec;

/// The collectors a run measures, in report order. A collector that
/// cannot be loaded here (`batch` without its kernel patch) is reported
/// as skipped, with the reason.
pub const COLLECTORS: &[&str] = &[
    "proc",
    "proc-tuned",
    "procmap-query",
    "bpf",
    "bpf-null",
    "batch",
];

/// The workload the headline table and the goal figures are about.
pub const HEADLINE: Spec = Spec {
    processes: 500,
    fds_per_process: 20,
    vmas_per_process: 30,
    threads_per_process: 1,
    resident_kib: 0,
    restorable: false,
};

/// The tree the dump goal is about: state collection under 10% of the
/// frozen time of 100 processes × 50 fds × 50 mappings, 100 MiB resident.
pub const DUMP_GOAL: Spec = Spec {
    processes: 100,
    fds_per_process: 50,
    vmas_per_process: 50,
    threads_per_process: 1,
    resident_kib: 1024,
    restorable: false,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    Processes,
    Fds,
    Vmas,
    Threads,
}

impl Dimension {
    pub const ALL: [Dimension; 4] = [
        Dimension::Processes,
        Dimension::Fds,
        Dimension::Vmas,
        Dimension::Threads,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dimension::Processes => "processes",
            Dimension::Fds => "fds_per_process",
            Dimension::Vmas => "vmas_per_process",
            Dimension::Threads => "threads_per_process",
        }
    }

    pub fn of(self, s: &Spec) -> usize {
        match self {
            Dimension::Processes => s.processes,
            Dimension::Fds => s.fds_per_process,
            Dimension::Vmas => s.vmas_per_process,
            Dimension::Threads => s.threads_per_process,
        }
    }

    fn with(self, mut s: Spec, v: usize) -> Spec {
        match self {
            Dimension::Processes => s.processes = v,
            Dimension::Fds => s.fds_per_process = v,
            Dimension::Vmas => s.vmas_per_process = v,
            Dimension::Threads => s.threads_per_process = v,
        }
        s
    }
}

pub struct Sweep {
    pub dim: Dimension,
    pub points: Vec<Spec>,
}

/// A tree the dump section measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpTree {
    /// A benchmark population.
    Population(Spec),
    /// `n` python3 processes forked from one: copy-on-write sharing.
    ForkedPython(usize),
}

pub struct Plan {
    pub quick: bool,
    pub sweeps: Vec<Sweep>,
    /// Trees of the dump section, and dumps per tree and collector.
    pub dump_trees: Vec<DumpTree>,
    pub dump_reps: usize,
    /// Trees of the restore section (dumped, then restored, each time).
    pub restore_trees: Vec<Spec>,
    /// Warm repetitions: as many as fit in this many seconds, within bounds.
    pub warm_budget_s: f64,
    pub min_reps: u64,
    pub max_reps: u64,
    /// One-shot runs (a fresh collector, programs loaded and verified).
    pub cold_reps: u64,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        // The base of the fd, mapping and thread sweeps.
        let base = Spec {
            processes: if quick { 20 } else { 50 },
            fds_per_process: 20,
            vmas_per_process: 30,
            threads_per_process: 1,
            resident_kib: 0,
            restorable: false,
        };
        let values: [(Dimension, &[usize]); 4] = if quick {
            [
                (Dimension::Processes, &[10, 100, 500]),
                (Dimension::Fds, &[1, 20, 200]),
                (Dimension::Vmas, &[1, 30, 300]),
                (Dimension::Threads, &[1, 10]),
            ]
        } else {
            [
                (Dimension::Processes, &[10, 100, 500, 1000, 5000]),
                (Dimension::Fds, &[1, 10, 100, 1000, 10000]),
                (Dimension::Vmas, &[1, 10, 100, 1000, 20000]),
                (Dimension::Threads, &[1, 10, 100, 500]),
            ]
        };
        let sweeps = values
            .iter()
            .map(|&(dim, vs)| {
                let from = if dim == Dimension::Processes {
                    HEADLINE
                } else {
                    base
                };
                Sweep {
                    dim,
                    points: vs.iter().map(|&v| dim.with(from, v)).collect(),
                }
            })
            .collect();
        let dump_trees = if quick {
            vec![
                DumpTree::Population(Spec {
                    processes: 20,
                    fds_per_process: 20,
                    vmas_per_process: 20,
                    threads_per_process: 1,
                    resident_kib: 1024,
                    restorable: false,
                }),
                DumpTree::ForkedPython(10),
            ]
        } else {
            vec![
                // The goal tree: 100 MiB resident.
                DumpTree::Population(DUMP_GOAL),
                DumpTree::Population(HEADLINE),
                DumpTree::ForkedPython(100),
            ]
        };
        // The restore goal: 100 × 50 × 50 with 1 MiB each, well
        // under a second.
        let restore_goal = Spec {
            restorable: true,
            ..DUMP_GOAL
        };
        let restore_trees = if quick {
            vec![Spec {
                processes: 20,
                fds_per_process: 20,
                vmas_per_process: 20,
                ..restore_goal
            }]
        } else {
            vec![restore_goal]
        };
        Plan {
            quick,
            sweeps,
            dump_trees,
            restore_trees,
            dump_reps: if quick { 2 } else { 5 },
            warm_budget_s: if quick { 0.25 } else { 3.0 },
            min_reps: if quick { 3 } else { 5 },
            max_reps: if quick { 30 } else { 1000 },
            cold_reps: if quick { 2 } else { 3 },
        }
    }

    /// Every distinct population of the plan, in order of first use.
    pub fn specs(&self) -> Vec<Spec> {
        let mut out: Vec<Spec> = vec![];
        for s in self.sweeps.iter().flat_map(|s| &s.points) {
            if !out.contains(s) {
                out.push(*s);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_hold_the_other_dimensions() {
        for quick in [true, false] {
            let p = Plan::new(quick);
            assert!(
                p.specs().contains(&HEADLINE),
                "the headline workload is measured"
            );
            for s in &p.sweeps {
                for d in Dimension::ALL.iter().filter(|&&d| d != s.dim) {
                    let v: Vec<usize> = s.points.iter().map(|p| d.of(p)).collect();
                    assert!(
                        v.windows(2).all(|w| w[0] == w[1]),
                        "{:?} varies in the {:?} sweep",
                        d,
                        s.dim
                    );
                }
                assert!(s
                    .points
                    .windows(2)
                    .all(|w| s.dim.of(&w[0]) < s.dim.of(&w[1])));
            }
        }
    }
}
