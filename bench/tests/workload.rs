//! The population is built as asked and nothing of it outlives its driver:
//! not when dropped, not when its root is killed.

use dumper::collect::{self, Target};
use dumper_bench::workload::{Population, Spec};
use std::path::Path;
use std::time::{Duration, Instant};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dumper-bench"))
}

/// Members of process group `pgid` still alive (zombies count as gone).
fn alive(pgid: i32) -> Vec<i32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        if f[2].parse::<i32>() == Ok(pgid) && f[0] != "Z" && f[0] != "X" {
            out.push(pid);
        }
    }
    out
}

fn gone_soon(pgid: i32) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if alive(pgid).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

const SPEC: Spec = Spec {
    processes: 6,
    fds_per_process: 30,
    vmas_per_process: 40,
    threads_per_process: 3,
    resident_kib: 64,
    restorable: false,
};

#[test]
fn builds_what_was_asked_and_drop_kills_it_all_root() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let pop = Population::spawn(exe(), SPEC).unwrap();
    let root = pop.root;
    assert_eq!(alive(root).len(), SPEC.processes);
    let s = collect::by_name("proc")
        .unwrap()
        .collect(Target::Tree(root))
        .unwrap();
    assert_eq!(s.tasks.len(), SPEC.processes);
    for t in &s.tasks {
        assert_eq!(
            t.threads.len(),
            SPEC.threads_per_process,
            "threads of {}",
            t.pid
        );
        // stdin, stdout and stderr come on top.
        assert_eq!(t.fds.len(), SPEC.fds_per_process + 3, "fds of {}", t.pid);
        // The binary's own mappings and thread stacks come on top.
        assert!(
            t.vmas.len() >= SPEC.vmas_per_process,
            "vmas of {}: {}",
            t.pid,
            t.vmas.len()
        );
    }
    drop(pop);
    assert!(gone_soon(root), "left behind: {:?}", alive(root));
}

#[test]
fn killing_the_root_kills_the_members_root() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let pop = Population::spawn(exe(), SPEC).unwrap();
    let root = pop.root;
    // As if the root crashed: PR_SET_PDEATHSIG takes the members with it.
    unsafe { libc::kill(root, libc::SIGKILL) };
    assert!(gone_soon(root), "left behind: {:?}", alive(root));
    drop(pop);
}
