//! `dumper dump` and `dumper show` on real trees: what the images hold,
//! that both collectors write the same images, that a tree left running
//! runs on unaffected, and that a dump killed at any point leaves neither
//! a stopped tree nor an image directory. Needs root (see tests/collect.rs).

mod common;

use common::{exe, root_or_skip};
use dumper::image::read::open;
use dumper::image::{show::range_bytes, REG_NAMES};
use dumper::sample::{pattern_word, SampleTree, PATTERN_PAGES, PRIVATE_WORD, SYSV_WORD};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn dumper(args: &[&str]) -> Output {
    Command::new(exe()).args(args).output().unwrap()
}

/// A fresh directory name under the system's temporary directory; the
/// directory itself is not created (dump creates it).
fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("dumper-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn dump(root: i32, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["dump", "-t", &*Box::leak(root.to_string().into_boxed_str())];
    args.extend(["-D", dir.to_str().unwrap()]);
    args.extend(extra);
    let o = dumper(&args);
    assert!(
        o.status.success(),
        "dump {extra:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn show_json(dir: &Path) -> Value {
    let o = dumper(&["show", "--json", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn states(pid: i32) -> Vec<char> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
                .map(|s| s[s.rfind(')').unwrap() + 2..].chars().next().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn reg(thread: &Value, name: &str) -> u64 {
    assert!(REG_NAMES.contains(&name));
    thread["regs"][name].as_u64().unwrap()
}

/// (a): the image of the sample tree holds its processes, sessions and
/// groups, every fd type, registers, handlers and the pattern written into
/// anonymous memory, with either collector.
#[test]
fn images_hold_what_the_tree_has_root() {
    if !root_or_skip("images_hold_what_the_tree_has_root") {
        return;
    }
    let t = SampleTree::start(exe()).unwrap();
    let m = &t.manifest;
    for collector in ["bpf", "proc"] {
        let dir = scratch(&format!("show-{collector}"));
        dump(
            m.root,
            &dir,
            &["--collect", collector, "--leave-running", "--verify"],
        );
        let j = show_json(&dir);
        assert_eq!(j["manifest"]["collector"], collector);
        let tasks = j["snapshot"]["tasks"].as_array().unwrap();
        let task = |pid: i32| {
            tasks
                .iter()
                .find(|x| x["pid"] == pid)
                .unwrap_or_else(|| panic!("{collector}: no task {pid}"))
        };
        assert_eq!(tasks.len(), 6, "{collector}");
        assert_eq!(task(m.b)["sid"], m.b);
        assert_eq!(
            (task(m.c)["pgid"].clone(), task(m.c)["sid"].clone()),
            (m.c.into(), m.b.into())
        );
        assert_eq!(task(m.a)["pgid"], m.a);
        assert_eq!(task(m.d)["pgid"], m.root);
        assert_eq!(task(m.zombie)["state"], "Z");
        assert_eq!(task(m.zombie)["detail"]["exit_code"], 0);

        let root = task(m.root);
        let fds = root["fds"].as_array().unwrap();
        for (name, fd) in &m.fds {
            let f = fds
                .iter()
                .find(|f| f["fd"] == *fd)
                .unwrap_or_else(|| panic!("fd {name}"));
            let kind = f["type"].as_str().unwrap();
            let want = match name.as_str() {
                "append" | "nonblock" | "dup" | "cloexec" => "reg",
                "pipe_r" | "pipe_w" => "pipe",
                "pidfd" => "anon",
                "unix_peer" => "unix",
                other => other,
            };
            assert_eq!(kind, want, "{collector}: fd {name}");
        }

        // Handlers: SIGHUP caught, SIGUSR2 ignored.
        let acts = root["detail"]["sigactions"].as_array().unwrap();
        assert!(acts[libc::SIGHUP as usize - 1]["handler"].as_u64().unwrap() > 1);
        assert_eq!(acts[libc::SIGUSR2 as usize - 1]["handler"], 1);
        let mm = &root["detail"]["mm"];
        assert!(mm["brk"].as_u64() > mm["start_brk"].as_u64(), "{mm}");
        assert_eq!(
            root["detail"]["threads"].as_array().unwrap().len(),
            m.root_threads
        );
        // The thread in ppoll is saved with the mask it resumes with, not
        // the call's temporary one (which also has SIGPROF).
        let waiting = root["detail"]["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["tid"] == m.ppoll_tid)
            .unwrap();
        assert_eq!(
            waiting["blocked"].as_u64().unwrap(),
            1 << (libc::SIGUSR1 - 1),
            "{collector}: {waiting}"
        );

        // Registers of every thread; the root's main thread sits in
        // read(0, buf, 64) and is saved set up to restart it.
        let threads = j["threads"].as_array().unwrap();
        assert_eq!(threads.len(), 8, "{collector}");
        let main = threads.iter().find(|x| x["tid"] == m.root).unwrap();
        assert_eq!(reg(main, "rax"), libc::SYS_read as u64);
        assert_eq!(reg(main, "rdi"), 0);
        assert_eq!(reg(main, "orig_rax"), u64::MAX);
        let rip = reg(main, "rip");
        let insn = dumper::ptrace::read_mem(m.root, rip, 2).unwrap();
        assert_eq!(insn, [0x0f, 0x05], "rip {rip:#x} is not at a syscall");
        assert!(reg(main, "fs_base") != 0);
        assert!(main["xstate"].as_str().unwrap().len() >= 2 * 576);

        // Memory: the pattern, saved once though the children share it.
        let img = open(&dir).unwrap();
        let at = m.maps["pattern"];
        let mut bytes = vec![];
        let len = PATTERN_PAGES as u64 * 4096;
        // (page address, page index in pages.img) of pid in [at, at+len).
        let pages = |pid: i32, at: u64, len: u64| -> Vec<(u64, u64)> {
            img.memory
                .processes
                .iter()
                .find(|p| p.pid == pid)
                .unwrap()
                .ranges
                .iter()
                .flat_map(|r| (0..r.pages).map(move |i| (r.addr + i * 4096, r.at + i)))
                .filter(|&(a, _)| a >= at && a < at + len)
                .collect()
        };
        for (_, i) in pages(m.root, at, len) {
            bytes.extend_from_slice(&img.pages[i as usize * 4096..(i as usize + 1) * 4096]);
        }
        let want: Vec<u8> = (0..PATTERN_PAGES * 512)
            .flat_map(|i| pattern_word(i).to_le_bytes())
            .collect();
        assert!(
            bytes == want,
            "{collector}: the pattern ({} bytes saved)",
            bytes.len()
        );
        // Child d was forked after the pattern was written and never
        // touched it: its page map points at the root's copy.
        assert_eq!(
            pages(m.d, at, len),
            pages(m.root, at, len),
            "{collector}: the shared pattern saved once"
        );
        assert!(img.memory.pages_shared >= PATTERN_PAGES as u64);
        // The clean private file mapping is not saved; memfd and shared
        // anonymous memory are, once each.
        assert!(pages(m.root, m.maps["private_file"], 4096).is_empty());
        // A written private file page is saved, its clean neighbour not.
        let w = m.maps["private_file_written"];
        let saved = pages(m.root, w, 4096);
        assert_eq!(saved.len(), 1, "{collector}: the written private file page");
        let i = saved[0].1 as usize * 4096;
        assert_eq!(img.pages[i..i + 8], PRIVATE_WORD.to_le_bytes());
        assert!(pages(m.root, w + 4096, 4096).is_empty());
        assert_eq!(
            img.memory.shmem.len(),
            3,
            "{collector}: memfd, shared anon and SysV"
        );
        // The SysV segment's word, in one of them.
        assert!(
            img.memory.shmem.iter().any(|o| o.ranges.iter().any(|r| {
                let i = r.at as usize * 4096;
                r.addr == 0 && img.pages[i..i + 8] == SYSV_WORD.to_le_bytes()
            })),
            "{collector}: the SysV segment's contents"
        );
        if m.fds.contains_key("sock") {
            let f = fds.iter().find(|f| f["fd"] == m.fds["sock"]).unwrap();
            assert_eq!(f["type"], "sock", "{collector}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// (b): the bpf and proc collectors write the same images of one tree.
#[test]
fn both_collectors_write_the_same_image_root() {
    if !root_or_skip("both_collectors_write_the_same_image_root") {
        return;
    }
    let t = SampleTree::start(exe()).unwrap();
    let (da, db) = (scratch("same-bpf"), scratch("same-proc"));
    dump(
        t.manifest.root,
        &da,
        &["--collect", "bpf", "--leave-running"],
    );
    dump(
        t.manifest.root,
        &db,
        &["--collect", "proc", "--leave-running"],
    );
    let (a, b) = (open(&da).unwrap(), open(&db).unwrap());
    let diffs = dumper::compare::diff(&a.inventory.snapshot, &b.inventory.snapshot);
    assert!(diffs.is_empty(), "{diffs:?}");
    assert_eq!(a.inventory.snapshot, b.inventory.snapshot);
    assert_eq!(a.inventory.threads, b.inventory.threads, "registers");
    // The same pages with the same contents (where in pages.img they sit
    // may differ), but for each thread's rseq area: the kernel updates its
    // cpu and concurrency ids whenever the thread returns to user space.
    let rseq: Vec<(u64, u64)> = a
        .inventory
        .snapshot
        .tasks
        .iter()
        .filter_map(|t| t.detail.as_ref())
        .flat_map(|d| {
            d.threads
                .iter()
                .map(|x| (x.rseq.addr, x.rseq.addr + x.rseq.len as u64))
        })
        .collect();
    let masked = |addr: u64, b: &[u8]| {
        let mut b = b.to_vec();
        for &(s, e) in &rseq {
            for x in s.max(addr)..e.min(addr + b.len() as u64) {
                b[(x - addr) as usize] = 0;
            }
        }
        b
    };
    let contents = |img: &dumper::image::read::Image| {
        let mut v: Vec<(i32, u64, Vec<u8>)> = img
            .memory
            .processes
            .iter()
            .flat_map(|p| {
                // Page by page: how pages group into ranges depends on
                // which are shared, and the proc collector's system calls
                // give a stack page shared copy-on-write its own copy.
                p.ranges
                    .iter()
                    .flat_map(|r| {
                        let b = masked(r.addr, range_bytes(img, r));
                        b.chunks(4096)
                            .enumerate()
                            .map(|(i, c)| (p.pid, r.addr + i as u64 * 4096, c.to_vec()))
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort();
        v
    };
    let (ca, cb) = (contents(&a), contents(&b));
    let differ: Vec<String> = ca
        .iter()
        .zip(&cb)
        .filter(|(x, y)| x != y)
        .map(|(x, y)| {
            format!(
                "pid {} {:#x}/{:#x} ({}/{} bytes)",
                x.0,
                x.1,
                y.1,
                x.2.len(),
                y.2.len()
            )
        })
        .collect();
    assert!(
        ca.len() == cb.len() && differ.is_empty(),
        "memory differs: {} vs {} pages; {differ:?}",
        ca.len(),
        cb.len()
    );
    assert_eq!(a.memory.shmem.len(), b.memory.shmem.len());
    for d in [da, db] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A counting tree: a shell writing consecutive numbers to a file, through
/// an fd opened without O_APPEND (its offset is the shell's own).
struct Counter {
    child: std::process::Child,
    file: PathBuf,
}

impl Counter {
    fn start(name: &str) -> Counter {
        let file = scratch(name);
        let child = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec 3>{f}; n=0; while :; do n=$((n+1)); echo $n >&3; sleep 0.002; done",
                f = file.display()
            ))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let c = Counter { child, file };
        while c.last() < 5 {
            std::thread::sleep(Duration::from_millis(5));
        }
        c
    }

    fn numbers(&self) -> Vec<u64> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    fn last(&self) -> u64 {
        self.numbers().last().copied().unwrap_or(0)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// (c): with --leave-running the tree runs on as before: it keeps
/// counting without a gap or a repeat, and writes where it wrote.
#[test]
fn a_tree_left_running_runs_on_unaffected_root() {
    if !root_or_skip("a_tree_left_running_runs_on_unaffected_root") {
        return;
    }
    for collector in ["bpf", "proc"] {
        let c = Counter::start(&format!("count-{collector}"));
        let dir = scratch(&format!("running-{collector}"));
        dump(c.pid(), &dir, &["--collect", collector, "--leave-running"]);
        let before = c.last();
        let t0 = Instant::now();
        while c.last() < before + 20 && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let n = c.numbers();
        assert!(
            *n.last().unwrap() >= before + 20,
            "{collector}: stopped counting at {before}"
        );
        assert!(
            n.iter().enumerate().all(|(i, &x)| x == i as u64 + 1),
            "{collector}: the count has a gap or a repeat"
        );
        // fd 3 (not O_APPEND) is where the count ends: had the dump moved
        // it, the shell would have written over its numbers or left a hole.
        let len = std::fs::metadata(&c.file).unwrap().len();
        let pos = |pid: i32| -> u64 {
            let s = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/3")).unwrap();
            s.lines()
                .find_map(|l| l.strip_prefix("pos:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let p = pos(c.pid());
        assert!(
            p <= len && len - p < 64,
            "{collector}: fd at {p}, file {len} bytes"
        );
        assert!(states(c.pid()).iter().all(|&s| s != 't' && s != 'T'));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A dump's log (DIR.log, -v4 by default) has every step: the tree's
/// threads seized, every task and mapping saved, the system calls run in
/// its threads (proc) or the eBPF programs' own lines (bpf), the images
/// committed; -v0 writes none.
#[test]
fn a_dump_logs_every_step_root() {
    if !root_or_skip("a_dump_logs_every_step_root") {
        return;
    }
    for collector in ["bpf", "proc"] {
        let c = Counter::start(&format!("logged-{collector}"));
        let dir = scratch(&format!("logged-img-{collector}"));
        let log_path = PathBuf::from(format!("{}.log", dir.display()));
        let _ = std::fs::remove_file(&log_path);
        dump(c.pid(), &dir, &["--collect", collector, "--leave-running"]);
        let b = std::fs::read(&log_path).unwrap();
        let l = dumper::log::decode::decode("dump log", &b).unwrap();
        assert!(l.closed && l.undefined == 0);
        let has = |s: &str| l.entries.iter().any(|e| e.msg.contains(s));
        let threads: Vec<i32> = std::fs::read_dir(format!("/proc/{}/task", c.pid()))
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        for t in &threads {
            assert!(
                has(&format!("thread {t} seized")),
                "{collector}: thread {t}"
            );
        }
        assert!(has(&format!("task {} ppid", c.pid())), "{collector}");
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", c.pid())).unwrap();
        let first = maps.split('-').next().unwrap();
        assert!(
            has(&format!("vma 0x{first}-")),
            "{collector}: mapping {first}"
        );
        assert!(has("images committed"), "{collector}");
        match collector {
            "proc" => assert!(has("remote syscall 13("), "proc: rt_sigaction"),
            _ => assert!(
                has("bpf dumper_ebpf:") && has("iter/task: pass done"),
                "bpf"
            ),
        }
        // Time goes forward, and the first line is the start.
        assert!(l.entries[0].msg.contains("started"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::remove_file(&log_path).unwrap();
        dump(
            c.pid(),
            &dir,
            &["--collect", collector, "--leave-running", "-v0"],
        );
        assert!(!log_path.exists(), "{collector}: -v0 wrote a log");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Without --leave-running the tree is gone once its images are.
#[test]
fn a_dump_kills_the_tree_after_its_images_are_written_root() {
    if !root_or_skip("a_dump_kills_the_tree_after_its_images_are_written_root") {
        return;
    }
    let mut c = Counter::start("count-kill");
    let dir = scratch("killed");
    let o = dump(c.pid(), &dir, &["--json"]);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["left_running"], false);
    assert!(r["frozen_ns"].as_u64().unwrap() >= r["collect_ns"].as_u64().unwrap());
    let status = c.child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(open(&dir).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The value of `key` (with its colon) in /proc/PID/status.
fn status_value(pid: i32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap()
        .trim()
        .to_string()
}

/// The signal state of every thread of `pids`, as /proc shows it: what a
/// remote call that went wrong would leave changed.
fn signal_lines(pids: &[i32]) -> Vec<String> {
    let mut out = vec![];
    for pid in pids {
        let mut tids: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        tids.sort();
        for t in tids {
            let st = std::fs::read_to_string(t.join("status")).unwrap();
            out.extend(
                st.lines()
                    .filter(|l| {
                        ["SigBlk", "SigIgn", "SigCgt", "SigPnd", "ShdPnd"]
                            .iter()
                            .any(|k| l.starts_with(k))
                    })
                    .map(|l| format!("{}: {l}", t.display())),
            );
        }
    }
    out
}

/// (d), at exact points: a `--collect=proc` dump SIGKILLed while a thread
/// of the tree is running its system calls (before the first, at every
/// kind of syscall stop, after the last, in the leader and in other
/// threads) leaves the tree running as before: counting, not stopped,
/// with the same signal masks and handlers (the sample tree's, which
/// stay still). dumper is held at a point by
/// DUMPER_FAULT=remote-stop:N (see remote.rs).
#[test]
fn a_proc_dump_killed_inside_its_remote_calls_leaves_the_tree_running_root() {
    if !root_or_skip("a_proc_dump_killed_inside_its_remote_calls_leaves_the_tree_running_root") {
        return;
    }
    use std::io::BufRead;
    let c = Counter::start("count-remote");
    let t = SampleTree::start(exe()).unwrap();
    let m = &t.manifest;
    let dir = scratch("remote-kill");
    // The counter's shell is one thread with 68 calls (137 points); the
    // sample's root has three threads (137 + 7 + 7), then come its
    // children.
    let cases: [(i32, Vec<i32>, &[usize]); 2] = [
        (c.pid(), vec![c.pid()], &[0, 1, 2, 3, 4, 69, 70, 135, 136]),
        (
            m.root,
            vec![m.root, m.a, m.b, m.c, m.d],
            &[137, 138, 143, 144, 150, 160, 300],
        ),
    ];
    for (root, pids, points) in cases {
        let before = signal_lines(&pids);
        for &n in points {
            let mut d = Command::new(exe())
                .args(["dump", "-t", &root.to_string(), "-D"])
                .arg(&dir)
                .args(["--leave-running", "--collect", "proc"])
                .env("DUMPER_FAULT", format!("remote-stop:{n}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut err = std::io::BufReader::new(d.stderr.take().unwrap());
            // Everything dumper says up to its waiting line.
            let mut said = String::new();
            while err.read_line(&mut said).unwrap() > 0 && !said.contains("waiting at remote stop")
            {
            }
            assert!(
                said.ends_with(&format!("remote stop {n}\n")),
                "point {n}: dumper said {said:?}"
            );
            unsafe { libc::kill(d.id() as i32, libc::SIGKILL) };
            d.wait().unwrap();
            let t1 = Instant::now();
            while pids.iter().any(|&p| states(p).contains(&'t'))
                && t1.elapsed() < Duration::from_secs(2)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            for &p in &pids {
                let st = states(p);
                assert!(
                    !st.is_empty() && !st.contains(&'t'),
                    "point {n}: {p} is {st:?}"
                );
            }
            if root == m.root {
                // Settled first: the ppoll thread shows the call's
                // temporary mask only once it is back inside the call.
                let t1 = Instant::now();
                while pids.iter().any(|&p| states(p).iter().any(|&s| s != 'S'))
                    && t1.elapsed() < Duration::from_secs(2)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                // (The shell's masks change by themselves as it forks.)
                assert_eq!(signal_lines(&pids), before, "point {n}");
            } else {
                let last = c.last();
                let t1 = Instant::now();
                while c.last() <= last && t1.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                assert!(c.last() > last, "point {n}: stopped counting at {last}");
            }
            let t1 = Instant::now();
            while dir.exists() && t1.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(!dir.exists(), "point {n}");
        }
    }
    // The sample tree still dumps, and its image still holds its pattern.
    dump(
        m.root,
        &dir,
        &["--leave-running", "--collect", "proc", "--verify"],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let n = c.numbers();
    assert!(
        n.iter().enumerate().all(|(i, &x)| x == i as u64 + 1),
        "a gap in the count"
    );
}

/// (d): dumper killed at random points of a dump (SIGKILL, SIGINT,
/// SIGTERM), with either collector, never leaves the tree stopped or
/// broken, nor an image directory or a temporary one behind. (The exact
/// points inside the proc collector's remote calls are the next test's.)
#[test]
fn a_dump_killed_anywhere_leaves_no_trace_root() {
    if !root_or_skip("a_dump_killed_anywhere_leaves_no_trace_root") {
        return;
    }
    let c = Counter::start("count-interrupted");
    let dir = scratch("interrupted");
    let parent = dir.parent().unwrap().to_path_buf();
    let leftovers = || {
        std::fs::read_dir(&parent)
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                // The log stays beside the image directory on purpose.
                n.contains(dir.file_name().unwrap().to_str().unwrap()) && !n.ends_with(".log")
            })
            .map(|e| e.path())
            .collect::<Vec<_>>()
    };
    // A dump's length here with each collector (the shortest of three:
    // the first one loads everything from disk), to spread the kills over
    // it: a proc dump has no eBPF programs to load and is the shorter.
    let full = |collector: &str| {
        (0..3)
            .map(|_| {
                let t0 = Instant::now();
                dump(c.pid(), &dir, &["--leave-running", "--collect", collector]);
                std::fs::remove_dir_all(&dir).unwrap();
                t0.elapsed()
            })
            .min()
            .unwrap()
    };
    let fulls = [full("bpf"), full("proc")];
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ std::process::id() as u64;
    let mut kept = 0;
    for i in 0..24 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Over the whole of a dump: a few land after its commit, which
        // must leave a complete image.
        let sig = [libc::SIGKILL, libc::SIGINT, libc::SIGTERM][i % 3];
        let collector = ["bpf", "proc"][(i / 3) % 2];
        let full = fulls[(i / 3) % 2];
        let delay = Duration::from_nanos(seed % (full.as_nanos() as u64 + 1));
        let mut d = Command::new(exe())
            .args(["dump", "-t", &c.pid().to_string(), "-D"])
            .arg(&dir)
            .args(["--leave-running", "--collect", collector])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        unsafe { libc::kill(d.id() as i32, sig) };
        let st = d.wait().unwrap();
        // Finished before the signal, or killed after its commit (the
        // rename): either way a complete, valid image.
        if st.success() || dir.exists() {
            open(&dir)
                .unwrap_or_else(|e| panic!("kill {i} ({sig} after {delay:?}, {collector}): {e}"));
            std::fs::remove_dir_all(&dir).unwrap();
            kept += 1;
        }
        // Its log, however it ended, decodes: everything up to the kill,
        // starting with the first line.
        let log_path = parent.join(format!(
            "{}.log",
            dir.file_name().unwrap().to_str().unwrap()
        ));
        // (Killed between creating it and writing its header: all zeros.)
        if let Some(b) = std::fs::read(&log_path)
            .ok()
            .filter(|b| b.iter().any(|&x| x != 0))
        {
            let l = dumper::log::decode::decode("dump log", &b)
                .unwrap_or_else(|e| panic!("kill {i} ({sig} after {delay:?}, {collector}): {e}"));
            assert!(
                l.entries.first().is_none_or(|e| e.msg.contains("started")),
                "kill {i}: the log lost its first line"
            );
        }
        let _ = std::fs::remove_file(&log_path);
        // The janitor removes a temporary directory once dumper is gone.
        let t1 = Instant::now();
        while !leftovers().is_empty() && t1.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            leftovers().is_empty(),
            "kill {i} ({sig} after {delay:?}, {collector}): {:?}",
            leftovers()
        );
        let t1 = Instant::now();
        while states(c.pid()).contains(&'t') && t1.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !states(c.pid()).is_empty() && !states(c.pid()).contains(&'t'),
            "kill {i} ({sig} after {delay:?}, {collector}): tree {:?}",
            states(c.pid())
        );
        // And it runs on: the count moves.
        let last = c.last();
        let t1 = Instant::now();
        while c.last() <= last && t1.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            c.last() > last,
            "kill {i} ({sig} after {delay:?}, {collector}): stopped counting at {last}, tree {:?}",
            states(c.pid())
        );
    }
    // Still counting, without a gap.
    let before = c.last();
    let t1 = Instant::now();
    while c.last() < before + 5 && t1.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let n = c.numbers();
    assert!(n.iter().enumerate().all(|(i, &x)| x == i as u64 + 1));
    assert!(*n.last().unwrap() >= before + 5);
    eprintln!("{kept} of 24 dumps committed before their signal");
    // The kills must land inside dumps, or this tests nothing.
    assert!(
        kept <= 12,
        "{kept} of 24 dumps committed before their signal"
    );
}

fn error_line(o: &Output) -> String {
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(e.trim_end().lines().count(), 1, "want one line, got {e:?}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// Damaged images get one line naming the file and what is wrong.
#[test]
fn damaged_images_are_refused_in_one_line_root() {
    if !root_or_skip("damaged_images_are_refused_in_one_line_root") {
        return;
    }
    let t = SampleTree::start(exe()).unwrap();
    let dir = scratch("damaged");
    dump(t.manifest.root, &dir, &["--leave-running"]);
    let copy = scratch("damaged-copy");
    let fresh = || {
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir(&copy).unwrap();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
    };
    let show = || dumper(&["show", copy.to_str().unwrap()]);
    let cases: [(&str, &dyn Fn(), &str); 5] = [
        (
            "truncated pages",
            &|| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(copy.join("pages.img"))
                    .unwrap();
                f.set_len(4096).unwrap();
            },
            "pages.img",
        ),
        (
            "flipped byte",
            &|| {
                let p = copy.join("inventory.img");
                let mut b = std::fs::read(&p).unwrap();
                let n = b.len() / 2;
                b[n] ^= 0x40;
                std::fs::write(&p, b).unwrap();
            },
            "checksum",
        ),
        (
            "no manifest",
            &|| std::fs::remove_file(copy.join("manifest.img")).unwrap(),
            "manifest.img",
        ),
        (
            "foreign manifest",
            &|| std::fs::write(copy.join("manifest.img"), b"{\"json\": true}").unwrap(),
            "not a dumper image",
        ),
        (
            "newer format",
            &|| {
                let p = copy.join("manifest.img");
                let mut b = std::fs::read(&p).unwrap();
                b[8] = 99;
                std::fs::write(&p, b).unwrap();
            },
            "version 99",
        ),
    ];
    for (what, damage, want) in cases {
        fresh();
        damage();
        let e = error_line(&show());
        assert!(e.contains(want), "{what}: {e}");
    }
    for d in [dir, copy] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Bad input to dump: one line, non-zero exit, nothing written, and the
/// short form behaves as `dump`.
#[test]
fn dump_refuses_bad_input_in_one_line_root() {
    if !root_or_skip("dump_refuses_bad_input_in_one_line_root") {
        return;
    }
    let dir = scratch("bad");
    let e = error_line(&dumper(&[
        "dump",
        "-t",
        "999999999",
        "-D",
        dir.to_str().unwrap(),
    ]));
    assert!(e.contains("no process"), "{e}");
    assert!(!dir.exists());
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("x"), b"x").unwrap();
    let e = error_line(&dumper(&["dump", "-t", "1", "-D", dir.to_str().unwrap()]));
    assert!(e.contains("not empty"), "{e}");
    let e = error_line(&dumper(&[
        "dump",
        "-t",
        "2",
        "-D",
        "/tmp/x",
        "--collect",
        "procmap-query",
    ]));
    assert!(e.contains("bpf or proc"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();

    // The short form.
    let c = Counter::start("short");
    let o = dumper(&[
        "--collect=proc",
        "-t",
        &c.pid().to_string(),
        "-D",
        dir.to_str().unwrap(),
        "--leave-running",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(open(&dir).unwrap().manifest.collector, "proc");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// --verify writes nothing when the collectors disagree. A real
/// disagreement: the tree's fd shares a file description with a process
/// outside the tree that keeps writing through it, so its position moves
/// between the two collections of the frozen tree.
#[test]
fn verify_refuses_to_write_when_collectors_disagree_root() {
    if !root_or_skip("verify_refuses_to_write_when_collectors_disagree_root") {
        return;
    }
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let path = scratch("shared-pos");
    let file = std::fs::File::create(&path).unwrap();
    let fd = file.as_raw_fd();
    // The child inherits the description as its fd 3.
    let mut child = unsafe {
        use std::os::unix::process::CommandExt;
        Command::new("sleep")
            .arg("60")
            .pre_exec(move || {
                // dup2 clears close-on-exec, except onto itself.
                let r = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
            .spawn()
            .unwrap()
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut f = file.try_clone().unwrap();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = f.write_all(b"x");
            }
        })
    };
    while std::fs::metadata(&path).unwrap().len() < 4096 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The writer must run between the two collections of one dump; on a
    // loaded machine it may not, and that dump rightly succeeds. Each
    // attempt checks what it did; one must be refused.
    let dir = scratch("verify-refused");
    let mut refused = 0;
    for _ in 0..10 {
        let o = dumper(&[
            "--collect=proc",
            "-t",
            &child.id().to_string(),
            "-D",
            dir.to_str().unwrap(),
            "--verify",
            "--leave-running",
        ]);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        if o.status.success() {
            assert!(open(&dir).is_ok());
            std::fs::remove_dir_all(&dir).unwrap();
            continue;
        }
        assert!(err.contains("fd 3 pos"), "{err}");
        assert!(
            err.lines().last().unwrap().contains("no image was written"),
            "{err}"
        );
        assert!(!dir.exists());
        refused += 1;
        break;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(refused, 1, "no dump of 10 saw the position move");
    assert!(states(child.id() as i32).iter().all(|&s| s != 't'));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
}

/// A process in a job-control stop is dumped as stopped, and stays
/// stopped after a dump that leaves it running, with either collector.
#[test]
fn a_stopped_process_is_saved_and_left_stopped_root() {
    if !root_or_skip("a_stopped_process_is_saved_and_left_stopped_root") {
        return;
    }
    let mut child = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    while states(pid) != ['T'] {
        std::thread::sleep(Duration::from_millis(2));
    }
    for collector in ["bpf", "proc"] {
        let dir = scratch(&format!("stopped-{collector}"));
        dump(pid, &dir, &["--collect", collector, "--leave-running"]);
        let img = open(&dir).unwrap();
        assert_eq!(
            img.inventory.job_stopped,
            vec![(pid, libc::SIGSTOP)],
            "{collector}"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(states(pid), ['T'], "{collector}: no longer stopped");
        let _ = std::fs::remove_dir_all(&dir);
    }
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let t0 = Instant::now();
    // Running again, then asleep in its restarted nanosleep (R between).
    while states(pid) != ['S'] && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(states(pid), ['S']);
    let _ = child.kill();
    let _ = child.wait();
}

/// A process under a seccomp filter that refuses rt_sigaction is dumped by
/// the proc collector all the same (its filter is suspended while dumper
/// runs calls in it) and keeps its filter.
#[test]
fn a_process_under_seccomp_is_dumped_by_proc_root() {
    if !root_or_skip("a_process_under_seccomp_is_dumped_by_proc_root") {
        return;
    }
    use std::os::unix::process::CommandExt;
    #[repr(C)]
    struct Insn(u16, u8, u8, u32);
    // rt_sigaction → EPERM, anything else allowed.
    let prog = [
        Insn(0x20, 0, 0, 0),
        Insn(0x15, 0, 1, libc::SYS_rt_sigaction as u32),
        Insn(0x06, 0, 0, 0x0005_0000 | libc::EPERM as u32),
        Insn(0x06, 0, 0, 0x7fff_0000),
    ];
    #[repr(C)]
    struct Fprog(u16, *const Insn);
    let fprog = Fprog(prog.len() as u16, prog.as_ptr());
    let fprog_addr = &fprog as *const Fprog as usize;
    let mut child = unsafe {
        Command::new("sleep")
            .arg("60")
            .pre_exec(move || {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::prctl(libc::PR_SET_SECCOMP, 2, fprog_addr, 0, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
            .spawn()
            .unwrap()
    };
    let pid = child.id() as i32;
    let seccomp = || format!("Seccomp:\t{}", status_value(pid, "Seccomp:"));
    while states(pid) != ['S'] {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(seccomp(), "Seccomp:\t2");
    let dir = scratch("seccomp");
    dump(
        pid,
        &dir,
        &["--collect", "proc", "--leave-running", "--verify"],
    );
    let j = show_json(&dir);
    let acts = j["snapshot"]["tasks"][0]["detail"]["sigactions"]
        .as_array()
        .unwrap();
    assert_eq!(acts.len(), 64);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(states(pid), ['S']);
    assert_eq!(seccomp(), "Seccomp:\t2");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = child.kill();
    let _ = child.wait();
}

/// A signal that is pending when the tree is frozen is in the image once,
/// with its siginfo (sender included), with either collector, though the
/// proc collector's system calls take it off the queue; and the process
/// still gets it when it runs on.
#[test]
fn a_signal_pending_at_the_freeze_is_in_the_image_root() {
    if !root_or_skip("a_signal_pending_at_the_freeze_is_in_the_image_root") {
        return;
    }
    let mark = scratch("got-usr1");
    // Debian's own: a python3 found on PATH may be a shim that forks.
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(format!(
            "import signal, time\n\
             signal.signal(signal.SIGUSR1, lambda *a: open({:?}, 'a').write('got\\n'))\n\
             time.sleep(600)",
            mark.display()
        ))
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let caught = || u64::from_str_radix(&status_value(pid, "SigCgt:"), 16).unwrap();
    let t0 = Instant::now();
    while caught() & (1 << (libc::SIGUSR1 - 1)) == 0 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        caught() & (1 << (libc::SIGUSR1 - 1)) != 0,
        "no SIGUSR1 handler"
    );
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let t0 = Instant::now();
    while states(pid) != ['T'] && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(2));
    }
    // Pending: a stopped process runs no handler.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let me = std::process::id() as i32;
    for collector in ["bpf", "proc"] {
        let dir = scratch(&format!("pending-{collector}"));
        dump(pid, &dir, &["--collect", collector, "--leave-running"]);
        let img = open(&dir).unwrap();
        let records: Vec<Vec<u8>> = img
            .inventory
            .threads
            .iter()
            .flat_map(|t| {
                t.siginfo
                    .chunks(128)
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .chain(img.inventory.shared_siginfo.iter().flat_map(|q| {
                q.siginfo
                    .chunks(128)
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>()
            }))
            .collect();
        let i32_at = |r: &[u8], o: usize| i32::from_le_bytes(r[o..o + 4].try_into().unwrap());
        let usr1: Vec<&Vec<u8>> = records
            .iter()
            .filter(|r| i32_at(r, 0) == libc::SIGUSR1)
            .collect();
        assert_eq!(usr1.len(), 1, "{collector}: {} records", records.len());
        if collector == "bpf" {
            // Sent by kill(2) from here: SI_USER, and our pid.
            assert_eq!(
                (i32_at(usr1[0], 8), i32_at(usr1[0], 16)),
                (0, me),
                "{collector}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(states(pid), ['T'], "{collector}");
    }
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let t0 = Instant::now();
    while !mark.exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(std::fs::read_to_string(&mark).unwrap_or_default(), "got\n");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&mark);
}

// An rseq critical section that spins forever; its abort handler counts
// and enters it again. rdi: the thread's rseq area, rsi: the counter.
std::arch::global_asm!(
    ".pushsection .data.rseq_test, \"aw\"",
    ".balign 32",
    "rseq_test_cs:",
    ".long 0",
    ".long 0",
    ".quad rseq_test_start",
    ".quad rseq_test_end - rseq_test_start",
    ".quad rseq_test_abort",
    ".popsection",
    ".pushsection .text.rseq_test, \"ax\"",
    ".globl rseq_test_spin",
    "rseq_test_spin:",
    "lea rax, [rip + rseq_test_cs]",
    "mov [rdi + 8], rax",
    ".globl rseq_test_start",
    "rseq_test_start:",
    "jmp rseq_test_start",
    ".globl rseq_test_end",
    "rseq_test_end:",
    // RSEQ_SIG, x86.
    ".long 0x53053053",
    ".globl rseq_test_abort",
    "rseq_test_abort:",
    "lock inc qword ptr [rsi]",
    "jmp rseq_test_spin",
    ".popsection",
);

extern "C" {
    static __rseq_offset: isize;
    static __rseq_size: u32;
    fn rseq_test_spin(area: *mut u8, counter: *mut u64) -> !;
    static rseq_test_start: u8;
    static rseq_test_end: u8;
    static rseq_test_abort: u8;
}

/// A thread stopped inside an rseq critical section is saved at the
/// section's abort handler (where the kernel sends it on its way back
/// anyway), with either collector, and after a proc dump, which runs
/// system calls in it, it really goes there.
#[test]
fn a_thread_inside_an_rseq_critical_section_is_saved_at_its_abort_handler_root() {
    if !root_or_skip("a_thread_inside_an_rseq_critical_section_is_saved_at_its_abort_handler_root")
    {
        return;
    }
    if unsafe { __rseq_size } == 0 {
        eprintln!("skipped: glibc did not register rseq");
        return;
    }
    let counter = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        ) as *mut u64
    };
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // Only the spin from here: no allocation in a fork of a
        // multithreaded process. It dies with the test.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let tp: *mut u8;
            std::arch::asm!("mov {}, fs:0", out(reg) tp);
            rseq_test_spin(tp.offset(__rseq_offset), counter);
        }
    }
    let (start, end, abort) = (
        &raw const rseq_test_start as u64,
        &raw const rseq_test_end as u64,
        &raw const rseq_test_abort as u64,
    );
    // Killed however the test ends: a spinning child left behind takes a
    // core from everything after it.
    struct Reap(i32);
    impl Drop for Reap {
        fn drop(&mut self) {
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
                libc::waitpid(self.0, std::ptr::null_mut(), 0);
            }
        }
    }
    let _reap = Reap(pid);
    let count = || unsafe { std::ptr::read_volatile(counter) };
    std::thread::sleep(Duration::from_millis(50));
    for collector in ["bpf", "proc"] {
        let dir = scratch(&format!("rseq-{collector}"));
        let before = count();
        dump(pid, &dir, &["--collect", collector, "--leave-running"]);
        let img = open(&dir).unwrap();
        let rip =
            img.inventory.threads[0].regs[REG_NAMES.iter().position(|&n| n == "rip").unwrap()];
        assert!(
            rip == abort || !(start..end).contains(&rip),
            "{collector}: saved at {rip:#x}, inside [{start:#x}, {end:#x})"
        );
        if collector == "proc" {
            assert!(count() > before, "{collector}: the section was not aborted");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(states(pid), ['R']);
}
