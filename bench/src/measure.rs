//! One collector on one population: warm collections in a loop (wall time
//! of each into an HDR histogram; CPU, system calls and bytes read per
//! collection over the loop), and cold ones (a fresh collector each time:
//! BTF read, object load and verification included, as a one-shot `dumper`
//! run pays them).

use dumper::collect::syscall_count::{gettid, SyscallCounter};
use dumper::collect::{self, Collector, Target};
use dumper::model::Snapshot;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

use crate::plan::Plan;
use crate::workload::Spec;

/// One line of results.json and results.csv.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub collector: String,
    pub processes: usize,
    pub fds_per_process: usize,
    pub vmas_per_process: usize,
    pub threads_per_process: usize,
    pub cold: bool,
    pub median_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub reps: u64,
    /// CPU time of the collecting thread per collection.
    pub user_ns: u64,
    pub sys_ns: u64,
    /// System calls the collecting thread issued per collection.
    pub syscalls: u64,
    /// Bytes read(2) returned to the collecting thread per collection
    /// (/proc/thread-self/io rchar).
    pub bytes: u64,
    /// Tasks + threads + fds + mappings in the snapshot.
    pub records: u64,
    pub records_per_s: f64,
}

impl Row {
    pub fn spec(&self) -> Spec {
        Spec {
            processes: self.processes,
            fds_per_process: self.fds_per_process,
            vmas_per_process: self.vmas_per_process,
            threads_per_process: self.threads_per_process,
            resident_kib: 0,
            restorable: false,
        }
    }
}

fn thread_cpu() -> (u64, u64) {
    // SAFETY: getrusage into a zeroed struct.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut r) };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    (ns(r.ru_utime), ns(r.ru_stime))
}

/// (rchar, bytes this read itself returned).
fn rchar() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/io").unwrap_or_default();
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (v, text.len() as u64)
}

/// Counters around a piece of work, less their own cost.
pub struct Meter {
    counter: SyscallCounter,
    /// System calls the metering itself issues.
    own_syscalls: u64,
}

struct Reading {
    syscalls: u64,
    rchar: (u64, u64),
    cpu: (u64, u64),
}

impl Meter {
    pub fn new() -> anyhow::Result<Meter> {
        let mut counter = SyscallCounter::load()?;
        counter.watch(gettid())?;
        let mut m = Meter {
            counter,
            own_syscalls: 0,
        };
        // Calibrate: a reading pair around nothing.
        let a = m.start()?;
        let (calls, _, _, _) = m.stop(a)?;
        m.own_syscalls = calls;
        Ok(m)
    }

    fn start(&self) -> anyhow::Result<Reading> {
        let syscalls = self.counter.count()?;
        let rchar = rchar();
        let cpu = thread_cpu();
        Ok(Reading {
            syscalls,
            rchar,
            cpu,
        })
    }

    /// (syscalls, bytes, user ns, sys ns) since `a`.
    fn stop(&self, a: Reading) -> anyhow::Result<(u64, u64, u64, u64)> {
        let cpu = thread_cpu();
        let rc = rchar();
        let calls = self.counter.count()? - a.syscalls;
        let bytes = rc.0.saturating_sub(a.rchar.0 + a.rchar.1);
        Ok((
            calls.saturating_sub(self.own_syscalls),
            bytes,
            cpu.0 - a.cpu.0,
            cpu.1 - a.cpu.1,
        ))
    }
}

fn records(s: &Snapshot) -> u64 {
    let (t, f, v) = s.counts();
    let threads: usize = s.tasks.iter().map(|t| t.threads.len()).sum();
    (t + threads + f + v) as u64
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds")
}

fn row(
    name: &str,
    spec: Spec,
    cold: bool,
    h: &Histogram<u64>,
    per: (u64, u64, u64, u64),
    records: u64,
) -> Row {
    let median = h.value_at_quantile(0.5);
    Row {
        collector: name.to_string(),
        processes: spec.processes,
        fds_per_process: spec.fds_per_process,
        vmas_per_process: spec.vmas_per_process,
        threads_per_process: spec.threads_per_process,
        cold,
        median_ns: median,
        p90_ns: h.value_at_quantile(0.9),
        p99_ns: h.value_at_quantile(0.99),
        max_ns: h.max(),
        reps: h.len(),
        syscalls: per.0,
        bytes: per.1,
        user_ns: per.2,
        sys_ns: per.3,
        records,
        records_per_s: if median > 0 {
            records as f64 * 1e9 / median as f64
        } else {
            0.0
        },
    }
}

/// The warm and cold rows of collector `name` on the population rooted at
/// `root`, or why it could not be measured.
pub fn measure(
    meter: &Meter,
    plan: &Plan,
    name: &str,
    spec: Spec,
    root: i32,
) -> anyhow::Result<[Row; 2]> {
    let target = Target::Tree(root);
    // Cold: a fresh collector each time.
    let mut cold = histogram();
    let mut cold_sum = (0, 0, 0, 0);
    let mut n_records = 0;
    for _ in 0..plan.cold_reps {
        let a = meter.start()?;
        let t0 = Instant::now();
        let mut c = collect::by_name(name)?;
        let s = c.collect(target)?;
        let ns = t0.elapsed().as_nanos() as u64;
        let m = meter.stop(a)?;
        n_records = records(&s);
        cold.record(ns.max(1))?;
        cold_sum = (
            cold_sum.0 + m.0,
            cold_sum.1 + m.1,
            cold_sum.2 + m.2,
            cold_sum.3 + m.3,
        );
    }
    let k = plan.cold_reps.max(1);
    let cold_row = row(
        name,
        spec,
        true,
        &cold,
        (
            cold_sum.0 / k,
            cold_sum.1 / k,
            cold_sum.2 / k,
            cold_sum.3 / k,
        ),
        n_records,
    );

    // Warm: one collector, one collection to warm it, then the loop.
    let mut c: Box<dyn Collector> = collect::by_name(name)?;
    let t0 = Instant::now();
    std::hint::black_box(c.collect(target)?);
    let first = t0.elapsed().max(Duration::from_micros(1));
    let reps =
        ((plan.warm_budget_s / first.as_secs_f64()) as u64).clamp(plan.min_reps, plan.max_reps);
    let mut warm = histogram();
    let a = meter.start()?;
    for _ in 0..reps {
        let t0 = Instant::now();
        let s = c.collect(target)?;
        warm.record((t0.elapsed().as_nanos() as u64).max(1))?;
        n_records = records(&s);
        drop(std::hint::black_box(s));
    }
    let m = meter.stop(a)?;
    let warm_row = row(
        name,
        spec,
        false,
        &warm,
        (m.0 / reps, m.1 / reps, m.2 / reps, m.3 / reps),
        n_records,
    );
    Ok([warm_row, cold_row])
}
