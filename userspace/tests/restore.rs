//! `dumper restore` end to end: real programs reach a known state, are
//! dumped (and killed by the dump), restored, and checked to go on from
//! where they were, with both collectors; and restores that cannot be
//! done are refused with one line and leave nothing behind. Needs root.

mod common;

use common::{exe, root_or_skip};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn dumper(args: &[&str]) -> Output {
    Command::new(exe()).args(args).output().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("dumper-rtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    let _ = std::fs::remove_file(&p);
    p
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn workload(args: &[&str]) -> Child {
    Command::new(exe())
        .arg("workload")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The counter's file holds 1, 2, 3, ... n with nothing else; n.
fn consecutive(p: &Path) -> u64 {
    let l = lines(p);
    for (i, x) in l.iter().enumerate() {
        assert_eq!(x, &(i + 1).to_string(), "line {} of {}", i + 1, p.display());
    }
    l.len() as u64
}

fn collect_json(pid: i32) -> Value {
    let o = dumper(&[
        "collect",
        "-t",
        &pid.to_string(),
        "--collect",
        "proc",
        "--json",
    ]);
    ok(&o, "collect");
    serde_json::from_slice(&o.stdout).unwrap()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
}

/// The layout and files a process has, as `collect --json` shows them,
/// less what moves while it runs (file positions).
fn shape(task: &Value) -> (Vec<String>, Vec<String>) {
    let vmas = task["vmas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["path"] != "[vsyscall]")
        .map(|v| {
            format!(
                "{:x}-{:x} {} {} {} {}",
                v["start"].as_u64().unwrap(),
                v["end"].as_u64().unwrap(),
                v["prot"],
                v["shared"],
                v["pgoff"],
                v["path"]
            )
        })
        .collect();
    let fds = task["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {} {} {}", f["fd"], f["type"], f["flags"], f["path"]))
        .collect();
    (vmas, fds)
}

/// A counter dumped with `collector` and restored: it goes on from the
/// dumped count at the same pid, with the same layout, files, session and
/// group.
fn counter_round_trip(collector: &str) {
    let out = scratch(&format!("count-{collector}"));
    let dir = scratch(&format!("img-count-{collector}"));
    let mut c = workload(&["counter", out.to_str().unwrap()]);
    let pid = c.id() as i32;
    wait_for("the counter to count", || lines(&out).len() >= 20);
    let before = collect_json(pid);
    let o = dumper(&[
        "dump",
        "-t",
        &pid.to_string(),
        "-D",
        dir.to_str().unwrap(),
        "--collect",
        collector,
    ]);
    ok(&o, "dump");
    // The dump killed it; reap it so its pid is free.
    c.wait().unwrap();
    let dumped = consecutive(&out);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        consecutive(&out),
        dumped,
        "the counter ran on after the dump"
    );

    let o = dumper(&["restore", "-D", dir.to_str().unwrap(), "--detach", "--json"]);
    ok(&o, "restore");
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["root"], pid);
    assert_eq!(report["processes"], 1);
    wait_for("the restored counter to count on", || {
        lines(&out).len() as u64 >= dumped + 20
    });
    let after = collect_json(pid);
    let n = consecutive(&out);
    assert!(n >= dumped + 20);
    let (b, a) = (&before["tasks"][0], &after["tasks"][0]);
    for k in [
        "pid", "ppid", "pgid", "sid", "comm", "uid", "gid", "caps", "cwd", "exe",
    ] {
        if k != "ppid" {
            assert_eq!(a[k], b[k], "{k} after the restore");
        }
    }
    let ((bv, bf), (av, af)) = (shape(b), shape(a));
    assert_eq!(av, bv, "mappings after the restore");
    assert_eq!(af, bf, "fds after the restore");
    // SAFETY: killing the restored counter.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("the restored counter to die", || !alive(pid));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&out);
}

#[test]
fn a_counter_counts_on_from_where_it_was_dumped_bpf_root() {
    if root_or_skip("a_counter_counts_on_from_where_it_was_dumped_bpf_root") {
        counter_round_trip("bpf");
    }
}

#[test]
fn a_counter_counts_on_from_where_it_was_dumped_proc_root() {
    if root_or_skip("a_counter_counts_on_from_where_it_was_dumped_proc_root") {
        counter_round_trip("proc");
    }
}
