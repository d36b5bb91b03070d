//! The rest of a process's state, set from inside it once its memory is
//! back: close-on-exec flags, signal handlers, sigaltstack, rseq,
//! personality, limits, cwd and root, name, queued signals, credentials;
//! then, at the exit of the call that unmaps the hole, its registers,
//! extended state and signal mask.

use super::tracee::{terr, Batch, TraceError, Tracee};
use super::RestoreError;
use crate::image::read::Image;
use crate::image::{ThreadState, NREGS};
use crate::model::{SigAction, Task, ThreadDetail};
use crate::ptrace::SIGINFO_SIZE;

fn run_all(tr: &Tracee, b: Batch) -> Result<(), TraceError> {
    if !b.is_empty() {
        tr.run(&b)?;
    }
    Ok(())
}

/// A thread's own state, from inside it: sigaltstack, rseq, the
/// clear-child-tid address, its queued signals (left pending under the
/// still full mask).
fn thread_state(b: &mut Batch, pid: i32, th: Option<&ThreadDetail>, ts: &ThreadState) {
    if let Some(th) = th {
        let mut ss = [0u8; 24];
        ss[0..8].copy_from_slice(&th.altstack.sp.to_le_bytes());
        ss[8..12].copy_from_slice(&th.altstack.flags.to_le_bytes());
        ss[16..24].copy_from_slice(&th.altstack.size.to_le_bytes());
        let at = b.data(&ss);
        b.call("sigaltstack", libc::SYS_sigaltstack, &[at, 0]);
        if th.rseq.addr != 0 {
            b.call(
                "rseq",
                libc::SYS_rseq,
                &[th.rseq.addr, th.rseq.len as u64, 0, th.rseq.sig as u64],
            );
        }
        b.call(
            "set_tid_address",
            libc::SYS_set_tid_address,
            &[th.clear_child_tid],
        );
    }
    for rec in ts.siginfo.chunks_exact(SIGINFO_SIZE) {
        let sig = i32::from_le_bytes(rec[0..4].try_into().unwrap()) as u64;
        let at = b.data(rec);
        b.call(
            "rt_tgsigqueueinfo",
            libc::SYS_rt_tgsigqueueinfo,
            &[pid as u64, ts.tid as u64, sig, at],
        );
    }
}

/// The registers an image holds for a thread.
fn regs_of(ts: &ThreadState) -> Result<crate::ptrace::Regs, RestoreError> {
    let words: [u64; NREGS] = ts.regs.clone().try_into().map_err(|_| {
        RestoreError::from(terr(
            ts.tid,
            "registers",
            "the image has a wrong register count",
        ))
    })?;
    // SAFETY: user_regs_struct is NREGS u64s, in the image's order.
    Ok(unsafe { std::mem::transmute::<[u64; NREGS], crate::ptrace::Regs>(words) })
}

const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;

/// The rest of a live process's state, its threads (created here, at their
/// tids), and last its registers: it stays stopped, ready to run, as do
/// its threads (returned, to be released with it).
pub fn restore(tr: &Tracee, task: &Task, img: &Image) -> Result<Vec<Tracee>, RestoreError> {
    let pid = tr.pid;
    let d = task.detail.as_ref().unwrap();
    let state = |tid: i32| {
        img.inventory
            .threads
            .iter()
            .find(|t| t.tid == tid)
            .ok_or_else(|| {
                RestoreError::Plan(format!("the image has no registers for thread {tid}"))
            })
    };
    let detail = |tid: i32| d.threads.iter().find(|t| t.tid == tid);
    super::files::cloexec(tr, &task.fds)?;

    run_all(tr, sigactions(tr, &d.sigactions))?;

    let ts = state(pid)?;
    let mut b = tr.batch();
    thread_state(&mut b, pid, detail(pid), ts);
    b.call(
        "personality",
        libc::SYS_personality,
        &[d.personality as u64],
    );
    b.call(
        "setpriority",
        libc::SYS_setpriority,
        &[libc::PRIO_PROCESS as u64, 0, task.nice as i64 as u64],
    );
    if let Some(cwd) = &task.cwd {
        let at = b.cstr(cwd);
        b.call("chdir", libc::SYS_chdir, &[at]);
    }
    if let Some(root) = task.root.as_deref().filter(|r| *r != "/") {
        let at = b.cstr(root);
        b.call("chroot", libc::SYS_chroot, &[at]);
    }
    let mut comm = task.comm.as_bytes().to_vec();
    comm.truncate(15);
    comm.push(0);
    let at = b.data(&comm);
    b.call(
        "prctl PR_SET_NAME",
        libc::SYS_prctl,
        &[libc::PR_SET_NAME as u64, at],
    );
    if let Some(q) = img.inventory.shared_siginfo.iter().find(|q| q.tgid == pid) {
        for rec in q.siginfo.chunks_exact(SIGINFO_SIZE) {
            let sig = i32::from_le_bytes(rec[0..4].try_into().unwrap()) as u64;
            let at = b.data(rec);
            b.call(
                "rt_sigqueueinfo",
                libc::SYS_rt_sigqueueinfo,
                &[pid as u64, sig, at],
            );
        }
    }
    run_all(tr, b)?;

    // Limits where allowed: raising a hard limit needs CAP_SYS_RESOURCE.
    let mut b = tr.batch();
    for (i, r) in d.rlimits.iter().enumerate() {
        let mut l = [0u8; 16];
        l[..8].copy_from_slice(&r.cur.to_le_bytes());
        l[8..].copy_from_slice(&r.max.to_le_bytes());
        let at = b.data(&l);
        b.call("prlimit64", libc::SYS_prlimit64, &[0, i as u64, at, 0]);
    }
    let ran = tr.run_raw(&b)?;
    for (i, r) in ran.results.iter().enumerate() {
        if *r < 0 {
            log_warn!(
                "process {}: limit {} left as it was ({}): raising it needs CAP_SYS_RESOURCE",
                pid,
                i as u64,
                *r
            );
        }
    }

    // The other threads, made by the leader at their tids (while it still
    // has the privilege clone3's set_tid needs); each sets its own state.
    let mut threads = vec![];
    for &tid in task.threads.iter().filter(|&&t| t != pid) {
        let t = tr.clone(tid, CLONE_THREAD_FLAGS, 0)?;
        let mut b = t.batch();
        thread_state(&mut b, pid, detail(tid), state(tid)?);
        run_all(&t, b)?;
        threads.push(t);
    }

    // Credentials are per thread.
    for t in threads.iter().chain(std::iter::once(tr)) {
        creds(t, task)?;
    }
    for t in &threads {
        let ts = state(t.pid)?;
        let blocked = detail(t.pid).map_or(task.signals.blocked, |x| x.blocked);
        t.set_final(&regs_of(ts)?, &ts.xstate, blocked)?;
    }
    let blocked = detail(pid).map_or(task.signals.blocked, |t| t.blocked);
    let trap = d
        .sigactions
        .get(libc::SIGTRAP as usize - 1)
        .map(k_sigaction);
    tr.finish(&regs_of(ts)?, &ts.xstate, blocked, trap)?;
    Ok(threads)
}

/// The kernel's `struct k_sigaction` bytes for `a` (rt_sigaction's).
fn k_sigaction(a: &SigAction) -> [u8; 32] {
    let mut k = [0u8; 32];
    for (j, w) in [a.handler, a.flags, a.restorer, a.mask].iter().enumerate() {
        k[j * 8..j * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    k
}

/// Every disposition, dumper's own (SIGPIPE ignored, its stack overflow
/// handlers) replaced.
pub fn sigactions(tr: &Tracee, acts: &[SigAction]) -> Batch {
    let mut b = tr.batch();
    for (i, a) in acts.iter().enumerate() {
        let sig = i as u64 + 1;
        if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
            continue;
        }
        let at = b.data(&k_sigaction(a));
        b.call("rt_sigaction", libc::SYS_rt_sigaction, &[sig, at, 0, 8]);
    }
    b
}

/// A zombie's signal state as it died with it: its dispositions are set
/// now; SIGTRAP's (which each batch's `int3` may reset) and the mask go in
/// the batch returned, the one that ends in its exit.
///
/// A dump has no handler addresses for a zombie, only which signals it
/// ignored and caught: ignored ones get SIG_IGN, caught ones a handler
/// address that is never called (a zombie runs nothing), the rest SIG_DFL.
pub fn before_exit(tr: &Tracee, task: &Task) -> Result<Batch, TraceError> {
    let from_masks: Vec<SigAction> = (0..64)
        .map(|i| SigAction {
            handler: if task.signals.ignored & (1 << i) != 0 {
                1
            } else if task.signals.caught & (1 << i) != 0 {
                tr.hole()
            } else {
                0
            },
            ..Default::default()
        })
        .collect();
    let acts = match &task.detail {
        Some(d) if !d.sigactions.is_empty() => &d.sigactions,
        _ => &from_masks,
    };
    run_all(tr, sigactions(tr, acts))?;
    let mut b = tr.batch();
    if let Some(a) = acts.get(libc::SIGTRAP as usize - 1) {
        let at = b.data(&k_sigaction(a));
        b.call(
            "rt_sigaction SIGTRAP",
            libc::SYS_rt_sigaction,
            &[libc::SIGTRAP as u64, at, 0, 8],
        );
    }
    let m = b.data(&task.signals.blocked.to_le_bytes());
    b.call(
        "rt_sigprocmask",
        libc::SYS_rt_sigprocmask,
        &[libc::SIG_SETMASK as u64, m, 0, 8],
    );
    Ok(b)
}

/// uid, gid and groups, then capabilities, when they are not dumper's.
fn creds(tr: &Tracee, t: &Task) -> Result<(), TraceError> {
    // SAFETY: plain queries of dumper's own ids.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let same = |i: &crate::model::Ids, v: u32| {
        i.real == v && i.effective == v && i.saved == v && i.fs == v
    };
    let mine = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let my_caps = mine
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    let full_caps = my_caps == Some(t.caps.effective)
        && t.caps.permitted == t.caps.effective
        && t.caps.ambient == 0
        && t.caps.bounding == t.caps.effective;
    let my_groups = {
        // SAFETY: getgroups into a buffer of the size it reports.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let mut g = vec![0; n.max(0) as usize];
        let n = unsafe { libc::getgroups(n, g.as_mut_ptr()) };
        g.truncate(n.max(0) as usize);
        g
    };
    if same(&t.uid, uid) && same(&t.gid, gid) && full_caps && my_groups == t.groups {
        return Ok(());
    }
    let mut b = tr.batch();
    // Bounding set first (it needs CAP_SETPCAP, gone after setresuid).
    for cap in 0..64u64 {
        if t.caps.bounding & (1 << cap) == 0 && my_caps.unwrap_or(0) & (1 << cap) != 0 {
            b.call(
                "prctl PR_CAPBSET_DROP",
                libc::SYS_prctl,
                &[libc::PR_CAPBSET_DROP as u64, cap],
            );
        }
    }
    let gs: Vec<u8> = t.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
    let at = b.data(&gs);
    b.call(
        "setgroups",
        libc::SYS_setgroups,
        &[t.groups.len() as u64, at],
    );
    b.call(
        "setresgid",
        libc::SYS_setresgid,
        &[
            t.gid.real as u64,
            t.gid.effective as u64,
            t.gid.saved as u64,
        ],
    );
    b.call("setfsgid", libc::SYS_setfsgid, &[t.gid.fs as u64]);
    b.call(
        "prctl PR_SET_KEEPCAPS",
        libc::SYS_prctl,
        &[libc::PR_SET_KEEPCAPS as u64, 1],
    );
    b.call(
        "setresuid",
        libc::SYS_setresuid,
        &[
            t.uid.real as u64,
            t.uid.effective as u64,
            t.uid.saved as u64,
        ],
    );
    b.call("setfsuid", libc::SYS_setfsuid, &[t.uid.fs as u64]);
    // A uid change clears the dumpable flag (with suid_dumpable 0): the
    // restored process's owner could no longer ptrace it or read its /proc.
    b.call(
        "prctl PR_SET_DUMPABLE",
        libc::SYS_prctl,
        &[libc::PR_SET_DUMPABLE as u64, 1],
    );
    // capset: version 3 header, two data words of (effective, permitted,
    // inheritable).
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&0x2008_0522u32.to_le_bytes());
    let h = b.data(&hdr);
    let mut data = [0u8; 24];
    for (i, w) in [t.caps.effective, t.caps.permitted, t.caps.inheritable]
        .iter()
        .enumerate()
    {
        data[i * 4..i * 4 + 4].copy_from_slice(&(*w as u32).to_le_bytes());
        data[12 + i * 4..12 + i * 4 + 4].copy_from_slice(&((*w >> 32) as u32).to_le_bytes());
    }
    let dat = b.data(&data);
    b.call("capset", libc::SYS_capset, &[h, dat]);
    b.call(
        "prctl PR_SET_KEEPCAPS",
        libc::SYS_prctl,
        &[libc::PR_SET_KEEPCAPS as u64, 0],
    );
    for cap in 0..64u64 {
        if t.caps.ambient & (1 << cap) != 0 {
            b.call(
                "prctl PR_CAP_AMBIENT_RAISE",
                libc::SYS_prctl,
                &[
                    libc::PR_CAP_AMBIENT as u64,
                    libc::PR_CAP_AMBIENT_RAISE as u64,
                    cap,
                    0,
                    0,
                ],
            );
        }
    }
    tr.run(&b).map(|_| ())
}
