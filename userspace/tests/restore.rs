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

/// Two tests of `NAME`, `NAME::bpf_root` and `NAME::proc_root`: the
/// round trip `f` (with `extra` arguments) dumped with each collector.
macro_rules! each_collector {
    ($name:ident, $f:ident $(, $extra:expr)*) => {
        mod $name {
            #[test]
            fn bpf_root() {
                if super::root_or_skip(concat!(stringify!($name), "::bpf_root")) {
                    super::$f("bpf" $(, $extra)*);
                }
            }

            #[test]
            fn proc_root() {
                if super::root_or_skip(concat!(stringify!($name), "::proc_root")) {
                    super::$f("proc" $(, $extra)*);
                }
            }
        }
    };
}

/// Kills these processes when dropped, so that a failing test leaves no
/// restored tree running.
struct Kill(Vec<i32>);

impl Drop for Kill {
    fn drop(&mut self) {
        for &p in &self.0 {
            // SAFETY: killing a process the test restored.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

/// Dumps the tree rooted at `root` (the workload `c`) with `collector`
/// into `dir`; the dump kills it, and `c` is reaped so its pid is free.
fn dump_killed(c: &mut Child, root: i32, dir: &Path, collector: &str) {
    let o = dumper(&[
        "dump",
        "-t",
        &root.to_string(),
        "-D",
        dir.to_str().unwrap(),
        "--collect",
        collector,
    ]);
    ok(&o, "dump");
    c.wait().unwrap();
}

/// Restores `dir` with --detach; the guard kills `pids` (the restored
/// tree) when the test ends, whether it passes or not.
fn restore_detached(dir: &Path, pids: Vec<i32>) -> Kill {
    let o = dumper(&["restore", "-D", dir.to_str().unwrap(), "--detach"]);
    let kill = Kill(pids);
    ok(&o, "restore");
    kill
}

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
    let _kill = Kill(vec![pid]);
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
    drop(_kill);
    wait_for("the restored counter to die", || !alive(pid));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&out);
}

each_collector!(
    a_counter_counts_on_from_where_it_was_dumped,
    counter_round_trip
);

/// (ppid, pgid, sid, state, exit_code) from /proc/PID/stat.
fn ids(pid: i32) -> Option<(i32, i32, i32, char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
    Some((
        f[1].parse().ok()?,
        f[2].parse().ok()?,
        f[3].parse().ok()?,
        f[0].chars().next()?,
        f[49].parse().ok()?,
    ))
}

/// Every process of the tree rooted at `root` (children files).
fn tree_pids(root: i32) -> Vec<i32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        for t in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(c.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
        }
        i += 1;
    }
    out.sort();
    out
}

/// A tree with two sessions, several groups and a zombie comes back with
/// the same pids, parents, groups and sessions, the zombie with its exit
/// status, and every counter in it counts on.
fn tree_round_trip(collector: &str) {
    let out = scratch(&format!("tree-{collector}"));
    std::fs::create_dir_all(&out).unwrap();
    let dir = scratch(&format!("img-tree-{collector}"));
    let mut c = workload(&["tree", out.to_str().unwrap()]);
    let root = c.id() as i32;
    let names = ["R", "A", "B", "C", "D"];
    wait_for("the tree's counters", || {
        names.iter().all(|n| lines(&out.join(n)).len() >= 20)
    });
    let pids = tree_pids(root);
    assert_eq!(pids.len(), 6, "{pids:?}");
    let before: Vec<_> = pids.iter().map(|&p| (p, ids(p).unwrap())).collect();
    assert!(
        before.iter().any(|(_, i)| i.3 == 'Z' && i.4 == 7 << 8),
        "{before:?}"
    );
    dump_killed(&mut c, root, &dir, collector);
    let dumped: Vec<u64> = names.iter().map(|n| consecutive(&out.join(n))).collect();

    let _kill = restore_detached(&dir, before.iter().map(|b| b.0).collect());
    wait_for("the restored counters", || {
        names
            .iter()
            .zip(&dumped)
            .all(|(n, d)| lines(&out.join(n)).len() as u64 >= d + 20)
    });
    for (p, want) in &before {
        let got = ids(*p).unwrap_or_else(|| panic!("process {p} was not restored"));
        // The root's parent is whoever restored it.
        let (want, got) = if *p == root {
            (
                (0, want.1, want.2, want.3, want.4),
                (0, got.1, got.2, got.3, got.4),
            )
        } else {
            (*want, got)
        };
        // Live processes may be running or sleeping.
        let norm = |i: (i32, i32, i32, char, i32)| (i.0, i.1, i.2, i.3 == 'Z', i.4);
        assert_eq!(
            norm(got),
            norm(want),
            "process {p}: (ppid, pgid, sid, zombie, exit code)"
        );
    }
    for n in names {
        consecutive(&out.join(n));
    }
    // The subreaper flag (B's) is not in /proc: dumper's own detail has it.
    let o = dumper(&[
        "collect",
        "-t",
        &root.to_string(),
        "--detail",
        "--json",
        "--collect",
        "bpf",
    ]);
    ok(&o, "collect --detail");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let subreapers: Vec<i64> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["detail"]["subreaper"] == true)
        .map(|t| t["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(subreapers.len(), 1, "{subreapers:?}");
    let b = subreapers[0] as i32;
    assert!(
        before.iter().any(|(p, i)| *p == b && i.2 == b),
        "the subreaper is B, a session leader"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}

each_collector!(
    a_tree_of_sessions_groups_and_a_zombie_comes_back,
    tree_round_trip
);

/// A writer into a pipe (or a unix socket pair) whose reader is another
/// process of the tree: the bytes buffered at the dump (the pipe's 64 KiB,
/// or the socket's queue) are there after the restore, and the reader
/// reads on without a gap or a repeat.
fn pipe_round_trip(collector: &str, kind: &str) {
    let out = scratch(&format!("{kind}-{collector}"));
    let dir = scratch(&format!("img-{kind}-{collector}"));
    let mut c = workload(&[kind, out.to_str().unwrap()]);
    let root = c.id() as i32;
    wait_for("the reader", || lines(&out).len() >= 50);
    let pids = tree_pids(root);
    dump_killed(&mut c, root, &dir, collector);
    let show = dumper(&["show", "--json", dir.to_str().unwrap()]);
    ok(&show, "show");
    let v: Value = serde_json::from_slice(&show.stdout).unwrap();
    // A pipe holds 64 KiB; a stream socket's queue is bounded by the
    // writer's send buffer in skbs (a few hundred bytes of short lines).
    let (held, full) = if kind == "socket" {
        let s = v["sockets"].as_array().unwrap();
        let n: usize = s.iter().map(|x| x["data"].as_array().unwrap().len()).sum();
        (n, 100)
    } else {
        (v["pipes"][0]["data"].as_str().unwrap().len() / 2, 60_000)
    };
    assert!(
        held > full,
        "the {kind} held {held} bytes at the dump, not full"
    );
    let dumped = consecutive(&out);
    let _kill = restore_detached(&dir, pids);
    wait_for("the reader to read on", || {
        lines(&out).len() as u64 >= dumped + 100
    });
    let n = consecutive(&out);
    assert!(n >= dumped + 100);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&out);
}

each_collector!(
    a_pipe_between_two_processes_keeps_its_bytes,
    pipe_round_trip,
    "pipe"
);
each_collector!(
    a_socket_pair_between_two_processes_keeps_its_bytes,
    pipe_round_trip,
    "socket"
);

fn status_kib(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A 64 MiB heap and a modified private file mapping come back byte for
/// byte (the program checks them itself, forever), the file itself
/// untouched, in no more resident memory than before the dump.
fn memory_round_trip(collector: &str) {
    let out = scratch(&format!("mem-{collector}"));
    let file = scratch(&format!("mem-file-{collector}"));
    let dir = scratch(&format!("img-mem-{collector}"));
    let mut c = workload(&[
        "memory",
        out.to_str().unwrap(),
        file.to_str().unwrap(),
        "64",
    ]);
    let pid = c.id() as i32;
    let oks = |p: &Path| {
        let l = lines(p);
        assert!(!l.iter().any(|x| x.starts_with("BAD")), "{l:?}");
        l.len()
    };
    wait_for("the memory workload", || oks(&out) >= 2);
    let rss = status_kib(pid, "VmRSS:");
    dump_killed(&mut c, pid, &dir, collector);
    let dumped = oks(&out);
    let _kill = restore_detached(&dir, vec![pid]);
    wait_for("the restored workload to check its memory", || {
        oks(&out) >= dumped + 3
    });
    let after = status_kib(pid, "VmRSS:");
    assert!(
        after <= rss + rss / 10,
        "resident {after} KiB after the restore, {rss} KiB before the dump"
    );
    let l = lines(&out);
    assert_eq!(l.last().unwrap(), &format!("ok {}", l.len()));
    let f = std::fs::read(&file).unwrap();
    assert!(
        f.iter().all(|&b| b == b'f'),
        "the private mapping's writes reached the file"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&file);
}

each_collector!(memory_comes_back_byte_for_byte, memory_round_trip);

fn pss_kib(pids: &[i32]) -> u64 {
    pids.iter()
        .map(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap();
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap()
        })
        .sum()
}

/// A forked tree whose four processes share a 32 MiB heap copy-on-write
/// shares it again after the restore: the tree's proportional set size
/// (PSS, each shared page counted once in all) is what it was.
fn forked_round_trip(collector: &str) {
    let out = scratch(&format!("forked-{collector}"));
    std::fs::create_dir_all(&out).unwrap();
    let dir = scratch(&format!("img-forked-{collector}"));
    let mut c = workload(&["forked", out.to_str().unwrap(), "32"]);
    let root = c.id() as i32;
    let names = ["R", "A", "B", "C"];
    let oks = |n: &str| {
        let l = lines(&out.join(n));
        assert!(!l.iter().any(|x| x.starts_with("BAD")), "{n}: {l:?}");
        l.len()
    };
    wait_for("the forked tree", || names.iter().all(|n| oks(n) >= 2));
    let pids = tree_pids(root);
    assert_eq!(pids.len(), 4);
    let before = pss_kib(&pids);
    dump_killed(&mut c, root, &dir, collector);
    let dumped: Vec<usize> = names.iter().map(|n| oks(n)).collect();
    let _kill = restore_detached(&dir, pids.clone());
    wait_for("the restored tree to check its memory", || {
        names.iter().zip(&dumped).all(|(n, d)| oks(n) >= d + 2)
    });
    let after = pss_kib(&pids);
    assert!(
        after <= before + before / 10,
        "the tree's PSS is {after} KiB after the restore, {before} KiB before the dump"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}

each_collector!(a_forked_tree_shares_its_memory_again, forked_round_trip);

fn error_line(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "succeeded: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// A dumped tree (the `tree` workload), dead, its image in `dir`: its pids.
fn dumped_tree(name: &str) -> (PathBuf, PathBuf, Vec<i32>) {
    let out = scratch(&format!("{name}-out"));
    std::fs::create_dir_all(&out).unwrap();
    let dir = scratch(&format!("{name}-img"));
    let mut c = workload(&["tree", out.to_str().unwrap()]);
    let root = c.id() as i32;
    wait_for("the tree's counters", || {
        ["R", "A", "B", "C", "D"]
            .iter()
            .all(|n| lines(&out.join(n)).len() >= 5)
    });
    let pids = tree_pids(root);
    let o = dumper(&["dump", "-t", &root.to_string(), "-D", dir.to_str().unwrap()]);
    ok(&o, "dump");
    c.wait().unwrap();
    wait_for("the dumped tree to be reaped", || {
        pids.iter().all(|p| ids(*p).is_none())
    });
    (out, dir, pids)
}

/// Restores that cannot be done are refused in one line naming what is
/// wrong, before anything is created: a pid that is taken, a file that
/// changed since the dump, a corrupt image, a missing directory.
#[test]
fn restores_that_cannot_be_done_are_refused_in_one_line_root() {
    if !root_or_skip("restores_that_cannot_be_done_are_refused_in_one_line_root") {
        return;
    }
    let (out, dir, pids) = dumped_tree("refuse");
    let d = dir.to_str().unwrap();

    // The pids taken: by a first restore of the same image.
    let root = pids[0];
    let o = dumper(&["restore", "-D", d, "--detach"]);
    ok(&o, "first restore");
    let first = Kill(pids.clone());
    let e = error_line(&dumper(&["restore", "-D", d, "--detach"]));
    assert!(e.contains(&format!("pid {root} is taken")), "{e}");
    drop(first);
    wait_for("the restored tree to be reaped", || {
        pids.iter().all(|p| ids(*p).is_none())
    });

    // A file replaced since the dump (another inode at the path: made
    // before the old one goes, so it cannot reuse its number).
    let a = out.join("A");
    let new = out.join("A.new");
    std::fs::write(&new, "new\n").unwrap();
    std::fs::rename(&new, &a).unwrap();
    let e = error_line(&dumper(&["restore", "-D", d, "--detach"]));
    assert!(
        e.contains(a.to_str().unwrap()) && e.contains("another file"),
        "{e}"
    );
    std::fs::remove_file(&a).unwrap();
    let e = error_line(&dumper(&["restore", "-D", d, "--detach"]));
    assert!(
        e.contains(a.to_str().unwrap()) && e.contains("No such file"),
        "{e}"
    );
    assert!(
        pids.iter().all(|p| ids(*p).is_none()),
        "a refused restore created processes"
    );

    // A corrupt image.
    let inv = dir.join("inventory.img");
    let mut b = std::fs::read(&inv).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&inv, &b).unwrap();
    let e = error_line(&dumper(&["restore", "-D", d, "--detach"]));
    assert!(e.contains("inventory.img") && e.contains("checksum"), "{e}");
    let e = error_line(&dumper(&["restore", "-D", "/nonexistent/dumper-images"]));
    assert!(e.contains("no such image directory"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}

/// A restore that fails half-way, or whose dumper is killed half-way,
/// leaves none of the processes it created.
#[test]
fn a_restore_that_fails_half_way_leaves_nothing_root() {
    if !root_or_skip("a_restore_that_fails_half_way_leaves_nothing_root") {
        return;
    }
    let (out, dir, pids) = dumped_tree("halfway");
    let d = dir.to_str().unwrap();
    let gone = || pids.iter().all(|p| ids(*p).is_none_or(|i| i.3 == 'Z'));
    // Step 6: after the root, its session and some children exist.
    let o = Command::new(exe())
        .args(["restore", "-D", d])
        .env("DUMPER_FAULT", "fail:6")
        .output()
        .unwrap();
    let e = error_line(&o);
    assert!(
        e.contains("DUMPER_FAULT") && !e.contains("with 0 processes"),
        "{e}"
    );
    wait_for("the half-restored processes to go", || {
        pids.iter().all(|p| ids(*p).is_none())
    });

    let mut r = Command::new(exe())
        .args(["restore", "-D", d])
        .env("DUMPER_FAULT", "hang:6")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(r.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.contains("hanging"), "{line}");
    assert!(
        pids.iter().any(|p| ids(*p).is_some()),
        "nothing was created before step 6"
    );
    r.kill().unwrap();
    r.wait().unwrap();
    wait_for("the half-restored processes to die with dumper", &gone);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}

/// An interpreter in the middle of a loop: python3 counts into a file
/// and, restored, counts on.
fn python_round_trip(collector: &str) {
    use std::os::unix::process::CommandExt;
    let out = scratch(&format!("py-{collector}"));
    let dir = scratch(&format!("img-py-{collector}"));
    let prog = "import sys, time\n\
                f = open(sys.argv[1], 'w')\n\
                i = 0\n\
                while True:\n    i += 1\n    f.write('%d\\n' % i)\n    f.flush()\n    time.sleep(0.005)\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", prog, out.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid between fork and exec: its own session, so the tree
    // owns its session and group.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut c = cmd.spawn().expect("python3");
    let pid = c.id() as i32;
    wait_for("python to count", || lines(&out).len() >= 20);
    dump_killed(&mut c, pid, &dir, collector);
    let dumped = consecutive(&out);
    let _kill = restore_detached(&dir, vec![pid]);
    wait_for("python to count on", || {
        lines(&out).len() as u64 >= dumped + 20
    });
    consecutive(&out);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&out);
}

each_collector!(python_counts_on_in_its_loop, python_round_trip);

/// Without --detach, dumper waits for the restored root and exits with
/// its status, as the root's parent would see it (128 + a signal's
/// number when a signal ended it).
#[test]
fn restore_waits_for_its_root_and_passes_on_its_status_root() {
    if !root_or_skip("restore_waits_for_its_root_and_passes_on_its_status_root") {
        return;
    }
    let out = scratch("wait-count");
    let dir = scratch("wait-img");
    let mut c = workload(&["counter", out.to_str().unwrap()]);
    let pid = c.id() as i32;
    wait_for("the counter", || lines(&out).len() >= 5);
    ok(
        &dumper(&["dump", "-t", &pid.to_string(), "-D", dir.to_str().unwrap()]),
        "dump",
    );
    c.wait().unwrap();
    let mut r = Command::new(exe())
        .args(["restore", "-D", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _kill = Kill(vec![pid]);
    let n = lines(&out).len();
    wait_for("the restored counter", || lines(&out).len() >= n + 5);
    assert!(
        r.try_wait().unwrap().is_none(),
        "restore returned while its root ran"
    );
    // SAFETY: ending the restored root.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let st = r.wait().unwrap();
    assert_eq!(st.code(), Some(128 + libc::SIGTERM));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&out);
}

/// Threads come back at their tids, each with its own signal mask, and
/// count on; a thread that exits after the restore is joined (its tid
/// word is cleared and woken, as set_tid_address asked).
fn threads_round_trip(collector: &str) {
    let out = scratch(&format!("threads-{collector}"));
    std::fs::create_dir_all(&out).unwrap();
    let dir = scratch(&format!("img-threads-{collector}"));
    let mut c = workload(&["threads", out.to_str().unwrap()]);
    let pid = c.id() as i32;
    let names = ["M", "T1", "T2"];
    wait_for("the threads", || {
        names.iter().all(|n| lines(&out.join(n)).len() >= 20)
    });
    let tids = |p: i32| {
        let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{p}/task"))
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        v.sort();
        v
    };
    let masks = |p: i32| -> Vec<String> {
        tids(p)
            .iter()
            .map(|t| {
                let s = std::fs::read_to_string(format!("/proc/{p}/task/{t}/status")).unwrap();
                s.lines()
                    .find(|l| l.starts_with("SigBlk:"))
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let (before, mask_before) = (tids(pid), masks(pid));
    assert_eq!(before.len(), 4);
    dump_killed(&mut c, pid, &dir, collector);
    let dumped: Vec<u64> = names.iter().map(|n| consecutive(&out.join(n))).collect();
    let _kill = restore_detached(&dir, vec![pid]);
    assert_eq!(tids(pid), before, "thread ids after the restore");
    assert_eq!(
        masks(pid),
        mask_before,
        "per-thread signal masks after the restore"
    );
    wait_for("the restored threads to count on", || {
        names
            .iter()
            .zip(&dumped)
            .all(|(n, d)| lines(&out.join(n)).len() as u64 >= d + 20)
    });
    for n in names {
        consecutive(&out.join(n));
    }
    std::fs::write(out.join("stop"), "").unwrap();
    wait_for("the main thread to join the one that exits", || {
        std::fs::read_to_string(out.join("J")).is_ok_and(|j| j == "joined\n")
    });
    assert_eq!(tids(pid).len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}

each_collector!(
    threads_come_back_each_with_its_own_state,
    threads_round_trip
);

/// A program reading a file goes on at the same offset.
fn reader_round_trip(collector: &str) {
    let input = scratch(&format!("reader-in-{collector}"));
    let out = scratch(&format!("reader-out-{collector}"));
    let dir = scratch(&format!("img-reader-{collector}"));
    let text: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let mut c = workload(&["reader", input.to_str().unwrap(), out.to_str().unwrap()]);
    let pid = c.id() as i32;
    wait_for("the reader", || lines(&out).len() >= 30);
    dump_killed(&mut c, pid, &dir, collector);
    let dumped = consecutive(&out);
    let _kill = restore_detached(&dir, vec![pid]);
    wait_for("the reader to read on", || {
        lines(&out).len() as u64 >= dumped + 30
    });
    consecutive(&out);
    for p in [&input, &out] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

each_collector!(a_reader_reads_on_at_its_offset, reader_round_trip);

/// The same through a FIFO: its buffered bytes are there after the
/// restore, and each side opens it again as it had.
fn fifo_round_trip(collector: &str) {
    let out = scratch(&format!("fifo-{collector}"));
    let fifo = scratch(&format!("fifo-node-{collector}"));
    let dir = scratch(&format!("img-fifo-{collector}"));
    let mut c = workload(&["fifo", out.to_str().unwrap(), fifo.to_str().unwrap()]);
    let root = c.id() as i32;
    wait_for("the reader", || lines(&out).len() >= 50);
    let pids = tree_pids(root);
    dump_killed(&mut c, root, &dir, collector);
    let show = dumper(&["show", "--json", dir.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&show.stdout).unwrap();
    let held = v["pipes"][0]["data"].as_str().unwrap().len() / 2;
    assert!(
        held > 60_000,
        "the FIFO held {held} bytes at the dump, not full"
    );
    let dumped = consecutive(&out);
    let _kill = restore_detached(&dir, pids);
    wait_for("the reader to read on", || {
        lines(&out).len() as u64 >= dumped + 100
    });
    consecutive(&out);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&fifo);
}

each_collector!(
    a_fifo_between_two_processes_keeps_its_bytes,
    fifo_round_trip
);

/// An eventfd comes back with its counter: the program takes exactly what
/// was left in it after the restore, then blocks.
fn eventfd_round_trip(collector: &str) {
    let out = scratch(&format!("eventfd-{collector}"));
    let dir = scratch(&format!("img-eventfd-{collector}"));
    let mut c = workload(&["eventfd", out.to_str().unwrap()]);
    let pid = c.id() as i32;
    wait_for("the program to take from its eventfd", || {
        lines(&out).len() >= 30
    });
    dump_killed(&mut c, pid, &dir, collector);
    let _kill = restore_detached(&dir, vec![pid]);
    wait_for("the eventfd to be empty", || lines(&out).len() >= 300);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        consecutive(&out),
        300,
        "the counter after the restore was not what was left"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&out);
}

each_collector!(an_eventfd_keeps_its_counter, eventfd_round_trip);

/// Shared anonymous memory and a memfd come back with their contents and
/// shared again: the root sees the child's increments go on from where
/// they were.
fn shared_round_trip(collector: &str) {
    let out = scratch(&format!("shared-{collector}"));
    let dir = scratch(&format!("img-shared-{collector}"));
    let mut c = workload(&["shared", out.to_str().unwrap()]);
    let root = c.id() as i32;
    // The last whole line (a line is written in pieces: the last one may
    // be cut short).
    let pair = |x: &str| -> Option<(u64, u64)> {
        let (a, b) = x.split_once(' ')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let last = |p: &Path| -> (u64, u64) {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        text.split_inclusive('\n')
            .rfind(|l| l.ends_with('\n'))
            .and_then(|l| pair(l.trim_end()))
            .unwrap_or((0, 0))
    };
    wait_for("the child to count in shared memory", || last(&out).0 >= 20);
    let pids = tree_pids(root);
    dump_killed(&mut c, root, &dir, collector);
    let dumped = last(&out);
    let n = lines(&out).len();
    let _kill = restore_detached(&dir, pids);
    wait_for("the counts to go on", || {
        let now = last(&out);
        now.0 >= dumped.0 + 20 && now.1 >= dumped.1 + 20
    });
    // Not from zero: the first line after the restore is where it was.
    let first = pair(&lines(&out)[n]).unwrap();
    assert!(
        first.0 >= dumped.0 && first.1 >= dumped.1,
        "{first:?} after {dumped:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&out);
}

each_collector!(shared_memory_is_shared_again, shared_round_trip);

/// Two processes sharing one fd table share one again after the restore
/// (kcmp KCMP_FILES says so), and both count on.
fn shared_fds_round_trip(collector: &str) {
    let out = scratch(&format!("shared-fds-{collector}"));
    std::fs::create_dir_all(&out).unwrap();
    let dir = scratch(&format!("img-shared-fds-{collector}"));
    let mut c = workload(&["shared-fds", out.to_str().unwrap()]);
    let root = c.id() as i32;
    wait_for("both to count", || {
        ["R", "C"].iter().all(|n| lines(&out.join(n)).len() >= 20)
    });
    let pids = tree_pids(root);
    assert_eq!(pids.len(), 2);
    // SAFETY: kcmp with integer arguments.
    let shared = |a: i32, b: i32| unsafe { libc::syscall(libc::SYS_kcmp, a, b, 2, 0, 0) } == 0;
    assert!(shared(pids[0], pids[1]));
    dump_killed(&mut c, root, &dir, collector);
    let dumped: Vec<u64> = ["R", "C"]
        .iter()
        .map(|n| consecutive(&out.join(n)))
        .collect();
    let _kill = restore_detached(&dir, pids.clone());
    assert!(
        shared(pids[0], pids[1]),
        "the two do not share their fd table after the restore"
    );
    wait_for("both to count on", || {
        ["R", "C"]
            .iter()
            .zip(&dumped)
            .all(|(n, d)| lines(&out.join(n)).len() as u64 >= d + 20)
    });
    for n in ["R", "C"] {
        consecutive(&out.join(n));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}

each_collector!(
    processes_sharing_an_fd_table_share_one_again,
    shared_fds_round_trip
);

/// A session whose leader is gone, its member orphaned under a subreaper:
/// it comes back in the same session and group under the same parent
/// (the plan makes the session with a helper at the dead leader's pid and
/// the member with clone_parent from it).
fn orphan_round_trip(collector: &str) {
    let out = scratch(&format!("orphan-{collector}"));
    std::fs::create_dir_all(&out).unwrap();
    let dir = scratch(&format!("img-orphan-{collector}"));
    let mut c = workload(&["orphan", out.to_str().unwrap()]);
    let root = c.id() as i32;
    wait_for("both to count", || {
        ["R", "C"].iter().all(|n| lines(&out.join(n)).len() >= 20)
    });
    let pids = tree_pids(root);
    assert_eq!(pids.len(), 2, "{pids:?}");
    let member = pids[1];
    let before = ids(member).unwrap();
    assert_eq!(before.0, root, "C is R's child");
    assert!(
        before.2 != root && before.2 != member,
        "C is in the gone leader's session"
    );
    dump_killed(&mut c, root, &dir, collector);
    let n = consecutive(&out.join("C"));
    let _kill = restore_detached(&dir, pids.clone());
    let after = ids(member).unwrap();
    assert_eq!(
        (after.0, after.1, after.2),
        (before.0, before.1, before.2),
        "C's (ppid, pgid, sid)"
    );
    wait_for("C to count on", || {
        lines(&out.join("C")).len() as u64 >= n + 20
    });
    consecutive(&out.join("C"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}

each_collector!(a_session_whose_leader_is_gone_comes_back, orphan_round_trip);
