//! The `dumper` command line on real processes: outputs, exit codes, and
//! one-line errors for bad input. Needs root (see tests/collect.rs).

mod common;

use common::{exe, root_or_skip};
use dumper::sample::SampleTree;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

fn dumper(args: &[&str]) -> Output {
    Command::new(exe()).args(args).output().unwrap()
}

/// dumper run as nobody, with no capabilities (util-linux's setpriv).
fn dumper_as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(exe())
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

fn stderr_line(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        e.trim_end().lines().count(),
        1,
        "want one line of error, got {e:?}"
    );
    assert!(!e.contains("panicked"), "{e}");
    e
}

fn states(pid: i32) -> Vec<char> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| {
            let s = std::fs::read_to_string(t.path().join("stat")).unwrap();
            s[s.rfind(')').unwrap() + 2..].chars().next().unwrap()
        })
        .collect()
}

#[test]
fn compare_agrees_on_the_sample_tree_root() {
    if !root_or_skip("compare_agrees_on_the_sample_tree_root") {
        return;
    }
    let t = SampleTree::start(exe()).unwrap();
    let o = dumper(&["compare", "-t", &t.manifest.root.to_string(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["agree"], true);
    assert_eq!(v["tasks"], 6);
    assert!(v["fds"].as_u64().unwrap() > 100 && v["vmas"].as_u64().unwrap() > 100);
    assert_eq!(v["mismatches"].as_array().unwrap().len(), 0);
    assert!(
        v["timings"]["proc"].as_u64().unwrap() > 0 && v["timings"]["bpf"].as_u64().unwrap() > 0
    );
    // Released: nothing left in tracing stop.
    assert!(!states(t.manifest.root).contains(&'t'));
    // And on what a dump collects besides (the proc side runs system
    // calls in the stopped threads).
    let o = dumper(&[
        "compare",
        "-t",
        &t.manifest.root.to_string(),
        "--detail",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["agree"], true, "{v}");
    let human = dumper(&["compare", "-t", &t.manifest.root.to_string()]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.status.success() && text.contains("proc vs bpf: agree on 6 tasks"),
        "{text}"
    );
}

#[test]
fn collect_json_has_the_documented_shape_root() {
    if !root_or_skip("collect_json_has_the_documented_shape_root") {
        return;
    }
    let t = SampleTree::start(exe()).unwrap();
    for c in ["proc", "bpf"] {
        let o = dumper(&[
            "collect",
            "-t",
            &t.manifest.root.to_string(),
            "--collect",
            c,
            "--json",
        ]);
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let task = &v["tasks"][0];
        for k in [
            "pid", "tgid", "ppid", "pgid", "sid", "comm", "state", "threads", "fds", "vmas",
        ] {
            assert!(!task[k].is_null(), "{c}: task.{k}");
        }
        for k in [
            "fd", "type", "flags", "pos", "path", "ino", "dev", "file_id",
        ] {
            assert!(!task["fds"][0][k].is_null(), "{c}: fd.{k}");
        }
        for k in [
            "start", "end", "prot", "shared", "pgoff", "path", "ino", "dev",
        ] {
            assert!(task["vmas"][0].get(k).is_some(), "{c}: vma.{k}");
        }
        let types: Vec<&str> = task["fds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["type"].as_str().unwrap())
            .collect();
        assert!(
            types.contains(&"eventfd") && types.contains(&"reg"),
            "{types:?}"
        );
        let human = dumper(&[
            "collect",
            "-t",
            &t.manifest.root.to_string(),
            "--collect",
            c,
        ]);
        assert!(String::from_utf8_lossy(&human.stdout).starts_with("6 processes, 9 threads"));
    }
}

#[test]
fn bad_input_gets_one_line_and_nonzero_exit_root() {
    if !root_or_skip("bad_input_gets_one_line_and_nonzero_exit_root") {
        return;
    }
    // A pid that does not exist (beyond pid_max).
    for c in ["proc", "bpf"] {
        let o = dumper(&["collect", "-t", "999999999", "--collect", c]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr_line(&o).contains("no process 999999999"));
    }
    let o = dumper(&["compare", "-t", "999999999"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_line(&o).contains("no process 999999999"));
    let o = dumper(&["collect", "-t", "1", "--collect", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_line(&o).contains("unknown collector \"nope\""));
    let o = dumper(&["compare", "-t", "1", "--collect", "proc"]);
    assert!(stderr_line(&o).contains("at least two collectors"));
}

#[test]
fn without_privilege_bpf_says_what_is_missing_root() {
    if !root_or_skip("without_privilege_bpf_says_what_is_missing_root") {
        return;
    }
    let me = std::process::id().to_string();
    let o = dumper_as_nobody(&["collect", "-t", &me, "--collect", "bpf"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr_line(&o);
    assert!(
        e.contains("needs CAP_BPF and CAP_PERFMON") && e.contains("--collect=proc"),
        "{e}"
    );
    // /proc of another user's process: its fds are not readable, and that
    // is an error, not an empty fd table.
    let t = SampleTree::start(exe()).unwrap();
    let root = t.manifest.root.to_string();
    let o = dumper_as_nobody(&["collect", "-t", &root, "--collect", "proc"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr_line(&o);
    assert!(
        e.contains("permission denied") && e.contains("run dumper as root"),
        "{e}"
    );
}

/// The freezer never leaves the tree stopped: not when released, and not
/// when dumper is killed while holding it (SIGINT, SIGTERM, SIGKILL).
#[test]
fn freezing_always_releases_the_tree_root() {
    if !root_or_skip("freezing_always_releases_the_tree_root") {
        return;
    }
    let t = SampleTree::start(exe()).unwrap();
    let root = t.manifest.root;
    for sig in [0, libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
        let mut f = Command::new(exe())
            .args(["freeze", "-t", &root.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(f.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("\"frozen_threads\": 8"), "{line}");
        for pid in [root, t.manifest.a, t.manifest.c] {
            assert!(
                states(pid).iter().all(|&s| s == 't'),
                "pid {pid} not frozen: {:?}",
                states(pid)
            );
        }
        if sig == 0 {
            drop(f.stdin.take());
        } else {
            unsafe { libc::kill(f.id() as i32, sig) };
        }
        f.wait().unwrap();
        // The kernel detaches a dead tracer's tracees synchronously; woken,
        // they may still be running on their way back to pause().
        for pid in [root, t.manifest.a, t.manifest.b, t.manifest.c, t.manifest.d] {
            let s = states(pid);
            assert!(
                s.iter().all(|&s| s == 'S' || s == 'R'),
                "signal {sig}: pid {pid} left {s:?}"
            );
        }
    }
}

/// `dumper plan`: a plan for people and for programs, `--check` on a good
/// and a broken plan, and a one-line refusal of an impossible tree.
#[test]
fn plan_and_check_through_the_command_line() {
    let dir = std::env::temp_dir().join(format!("dumper-plan-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tree = dir.join("tree.json");
    std::fs::write(
        &tree,
        r#"{"processes": [
            {"pid": 1, "ppid": 0, "pgid": 1, "sid": 1, "state": "alive"},
            {"pid": 10, "ppid": 1, "pgid": 11, "sid": 5, "state": "alive"},
            {"pid": 11, "ppid": 1, "pgid": 11, "sid": 5, "state": "zombie"},
            {"pid": 12, "ppid": 10, "pgid": 12, "sid": 12, "state": "alive", "subreaper": true}],
           "files": [{"id": 1, "kind": "reg"}], "fds": {"10": {"3": 1}, "12": {"4": 1}}}"#,
    )
    .unwrap();
    let t = tree.to_str().unwrap();
    let o = dumper(&["plan", "--tree", t, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["helpers"], serde_json::json!([5]), "{v}");
    assert_eq!(v["stats"]["send_fd"], 1);
    let plan = dir.join("plan.json");
    std::fs::write(&plan, &o.stdout).unwrap();
    let ok = dumper(&["plan", "--tree", t, "--check", plan.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Without the helper's fork, its setsid has no process to run in.
    let mut steps = v["steps"].as_array().unwrap().clone();
    let i = steps
        .iter()
        .position(|s| s["op"] == "fork" && s["pid"] == 5)
        .unwrap();
    steps.remove(i);
    std::fs::write(&plan, serde_json::json!({ "steps": steps }).to_string()).unwrap();
    let bad = dumper(&["plan", "--tree", t, "--check", plan.to_str().unwrap()]);
    let e = stderr_line(&bad);
    assert!(
        !bad.status.success() && e.contains("step 1 (5: setsid) fails: process 5 does not exist"),
        "{e}"
    );
    std::fs::write(
        &tree,
        r#"{"processes": [{"pid": 2, "ppid": 0, "pgid": 2, "sid": 2, "state": "alive"}]}"#,
    )
    .unwrap();
    let e = stderr_line(&dumper(&["plan", "--tree", t]));
    assert!(e.contains("pid 1 is missing"), "{e}");
    let human = dumper(&["plan", "--tree", "/nonexistent.json"]);
    assert!(!human.status.success());
    stderr_line(&human);
    let _ = std::fs::remove_dir_all(&dir);
}
