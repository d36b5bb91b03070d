//! `dumper show`: an image directory for people (text) or programs (JSON),
//! like CRIU's crit. Byte blobs (extended state, siginfo) are hex in JSON.

use super::read::Image;
use super::{PageRange, REG_NAMES};
use serde_json::{json, Value};
use std::fmt::Write;

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

pub fn json(img: &Image) -> Value {
    let threads: Vec<Value> = img
        .inventory
        .threads
        .iter()
        .map(|t| {
            let regs: serde_json::Map<String, Value> = REG_NAMES
                .iter()
                .zip(&t.regs)
                .map(|(n, v)| (n.to_string(), json!(v)))
                .collect();
            json!({
                "tid": t.tid, "regs": regs, "xstate": hex(&t.xstate),
                "siginfo": t.siginfo.chunks(128).map(hex).collect::<Vec<_>>(),
            })
        })
        .collect();
    let shared: Vec<Value> = img
        .inventory
        .shared_siginfo
        .iter()
        .map(|q| json!({"tgid": q.tgid, "siginfo": q.siginfo.chunks(128).map(hex).collect::<Vec<_>>()}))
        .collect();
    json!({
        "manifest": img.manifest,
        "snapshot": img.inventory.snapshot,
        "threads": threads,
        "shared_siginfo": shared,
        "job_stopped": img.inventory.job_stopped,
        "sockets": img.inventory.sockets,
        "pipes": img.inventory.pipes.iter().map(|p| json!({"ino": p.ino, "capacity": p.capacity, "data": hex(&p.data)})).collect::<Vec<_>>(),
        "memory": img.memory,
    })
}

/// The bytes a range of pages.img holds (for tests and `show --pages`).
pub fn range_bytes<'a>(img: &'a Image, r: &PageRange) -> &'a [u8] {
    let s = (r.at * super::PAGE_SIZE) as usize;
    &img.pages[s..s + (r.pages * super::PAGE_SIZE) as usize]
}

pub fn text(img: &Image) -> String {
    let m = &img.manifest;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "image of tree {} by dumper {} ({} collector) on Linux {}",
        m.root, m.dumper, m.collector, m.kernel
    );
    for f in &m.files {
        let _ = writeln!(
            o,
            "  {:<14} {:>12} bytes  xxh3-128 {}",
            f.name, f.size, f.xxh3_128
        );
    }
    let mem = &img.memory;
    let _ = writeln!(
        o,
        "memory: {} pages saved, {} more referred to by more than one process, {} shared memory objects",
        mem.pages_written,
        mem.pages_shared,
        mem.shmem.len()
    );
    for t in &img.inventory.snapshot.tasks {
        let _ = writeln!(
            o,
            "\nprocess {} ({}) ppid {} pgid {} sid {} state {} threads {:?} uid {} gid {}",
            t.pid, t.comm, t.ppid, t.pgid, t.sid, t.state, t.threads, t.uid.real, t.gid.real
        );
        let _ = writeln!(
            o,
            "  cwd {} root {} exe {}",
            t.cwd.as_deref().unwrap_or("-"),
            t.root.as_deref().unwrap_or("-"),
            t.exe.as_deref().unwrap_or("-")
        );
        if let Some(d) = &t.detail {
            if let Some(mm) = &d.mm {
                let _ = writeln!(
                    o,
                    "  mm code {:#x}-{:#x} data {:#x}-{:#x} brk {:#x}-{:#x} stack {:#x} args {:#x}-{:#x} env {:#x}-{:#x} auxv {} words",
                    mm.start_code, mm.end_code, mm.start_data, mm.end_data, mm.start_brk, mm.brk,
                    mm.start_stack, mm.arg_start, mm.arg_end, mm.env_start, mm.env_end, mm.auxv.len()
                );
            }
            let _ = writeln!(
                o,
                "  exit code {} personality {:#x} shared pending {:#x}",
                d.exit_code, d.personality, d.shared_pending
            );
            for (i, a) in d.sigactions.iter().enumerate() {
                if a.handler != 0 || a.flags != 0 || a.mask != 0 {
                    let _ = writeln!(
                        o,
                        "  signal {:>2}: handler {:#x} flags {:#x} restorer {:#x} mask {:#x}",
                        i + 1,
                        a.handler,
                        a.flags,
                        a.restorer,
                        a.mask
                    );
                }
            }
            for (i, l) in d.rlimits.iter().enumerate() {
                let v = |x: u64| {
                    if x == u64::MAX {
                        "unlimited".to_string()
                    } else {
                        x.to_string()
                    }
                };
                let _ = writeln!(o, "  rlimit {i:>2}: {} / {}", v(l.cur), v(l.max));
            }
            for th in &d.threads {
                let _ = writeln!(
                    o,
                    "  thread {}: blocked {:#x} pending {:#x} altstack {:#x}+{:#x} flags {} rseq {:#x}/{} sig {:#x}",
                    th.tid, th.blocked, th.pending, th.altstack.sp, th.altstack.size,
                    th.altstack.flags, th.rseq.addr, th.rseq.len, th.rseq.sig
                );
            }
        }
        for (tid, sig) in img
            .inventory
            .job_stopped
            .iter()
            .filter(|x| t.threads.contains(&x.0))
        {
            let _ = writeln!(o, "  thread {tid}: stopped by signal {sig} (job control)");
        }
        for th in img
            .inventory
            .threads
            .iter()
            .filter(|x| t.threads.contains(&x.tid))
        {
            let r = |n: &str| {
                REG_NAMES
                    .iter()
                    .position(|x| *x == n)
                    .map_or(0, |i| th.regs[i])
            };
            let _ = writeln!(
                o,
                "  regs {}: rip {:#x} rsp {:#x} rax {:#x} orig_rax {:#x} fs_base {:#x}; xstate {} bytes; {} queued signals",
                th.tid, r("rip"), r("rsp"), r("rax"), r("orig_rax") as i64, r("fs_base"),
                th.xstate.len(), th.siginfo.len() / 128
            );
        }
        for f in &t.fds {
            let _ = writeln!(
                o,
                "  fd {:>3} {:<8} file {:<3} flags {:#o} pos {} {}",
                f.fd,
                f.kind.name(),
                f.file_id,
                f.flags,
                f.pos,
                f.path
            );
        }
        let pages = mem.processes.iter().find(|p| p.pid == t.pid);
        for v in &t.vmas {
            let saved: u64 = pages
                .map(|p| {
                    p.ranges
                        .iter()
                        .filter(|r| r.addr >= v.start && r.addr < v.end)
                        .map(|r| r.pages)
                        .sum()
                })
                .unwrap_or(0);
            let _ = writeln!(
                o,
                "  vma {:#x}-{:#x} {}{} pgoff {:#x} {} ({} pages saved)",
                v.start,
                v.end,
                v.prot,
                if v.shared { "s" } else { "p" },
                v.pgoff,
                v.path.as_deref().unwrap_or("[anon]"),
                saved
            );
        }
    }
    o
}
