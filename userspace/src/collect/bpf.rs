//! The fast collector: three iterator programs (ebpf/) stream task, file
//! and vma records; this module loads them, checks they were built for the
//! running kernel, reads the streams and turns records into the model.
//!
//! Kernel addresses in the records (struct file, vfsmount, dentry) are used
//! as identities here and replaced by dense ids or paths: none leaves this
//! module.

use super::{classify, paths::PathCache, tree_members, CollectError, Collector, Target};
use crate::freeze::Frozen;
use crate::model::{
    kdev_to_dev, state_letter, Fd, FileType, Prot, SigMasks, Snapshot, Task, VmFlags, Vma,
    PF_KTHREAD,
};
use aya::programs::Iter;
use aya::{Btf, Ebpf, EbpfLoader, Endianness};
use dumper_common::*;
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

mod build {
    include!(concat!(env!("OUT_DIR"), "/build_info.rs"));
}

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dumper.bpf.o"));

/// Which programs a collector runs on the three walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Programs {
    /// The real ones: records for the model.
    Full,
    /// Programs that emit nothing: the cost of the kernel's walk alone,
    /// the benchmark's floor (`bpf-null`).
    Null,
}

const ITER_TYPES: [&str; 3] = ["task", "task_file", "task_vma"];

impl Programs {
    fn names(self) -> [&'static str; 3] {
        match self {
            Programs::Full => ["dumper_task", "dumper_task_file", "dumper_task_vma"],
            Programs::Null => [
                "dumper_null_task",
                "dumper_null_task_file",
                "dumper_null_task_vma",
            ],
        }
    }
}
const VM_READ: u64 = 0x1;
const VM_WRITE: u64 = 0x2;
const VM_EXEC: u64 = 0x4;
const VM_MAYSHARE: u64 = 0x80;
const PAGE_SHIFT: u32 = 12;
const REBUILD: &str = "rebuild dumper on this machine (`cargo build --release`, or `cargo xtask build-ebpf --btf PATH` for another kernel)";

/// aya-log's records (formatted by aya-log from the programs' format
/// strings) into dumper's log, with the program's source location.
struct ToLog;

impl log::Log for ToLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        let msg = r.args().to_string();
        let at = r.module_path().unwrap_or("bpf");
        let line = r.line().unwrap_or(0);
        match r.level() {
            log::Level::Error => log_error!("bpf {}:{}: {}", at, line, msg),
            log::Level::Warn => log_warn!("bpf {}:{}: {}", at, line, msg),
            log::Level::Info => log_info!("bpf {}:{}: {}", at, line, msg),
            _ => log_debug!("bpf {}:{}: {}", at, line, msg),
        }
    }
    fn flush(&self) {}
}

pub struct BpfCollector {
    programs: Programs,
    /// The programs' log lines, read after each walk.
    logger: Option<aya_log::EbpfLogger<ToLog>>,
    // Field order is drop order: links before the programs they hold.
    links: Vec<OwnedFd>,
    ebpf: Ebpf,
    buf: Vec<u8>,
    /// The fd records, decoded on a second thread while the mapping walk
    /// fills `buf` (kept for its capacity).
    files: Vec<u8>,
    /// readlink calls the last collection made (paths completed from /proc).
    last_path_lookups: usize,
    /// Collect [`crate::model::TaskDetail`]s too.
    detail: bool,
}

/// The digest of the BTF the embedded object was built for, from the
/// object's own `.dumper.btf` section.
pub fn object_btf_digest(obj: &[u8]) -> Option<u64> {
    use object::{Object, ObjectSection};
    let elf = object::File::parse(obj).ok()?;
    let data = elf.section_by_name(BTF_DIGEST_SECTION)?.data().ok()?;
    Some(u64::from_le_bytes(data.get(..8)?.try_into().ok()?))
}

fn has_cap(cap_eff: u64, cap: u32) -> bool {
    cap_eff & (1 << cap) != 0
}

/// What --collect=bpf needs: loading tracing programs (CAP_BPF and
/// CAP_PERFMON), reading other processes' fd links (CAP_SYS_PTRACE) and
/// their map_files links (CAP_CHECKPOINT_RESTORE). CAP_SYS_ADMIN covers the
/// first and the last.
fn check_privilege() -> Result<(), CollectError> {
    let status = procfs::process::Process::myself()
        .and_then(|p| p.status())
        .map_err(|e| CollectError::Privilege(format!("cannot read own capabilities: {e}")))?;
    const CAP_SYS_PTRACE: u32 = 19;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    const CAP_CHECKPOINT_RESTORE: u32 = 40;
    let eff = status.capeff;
    let admin = has_cap(eff, CAP_SYS_ADMIN);
    let mut missing = vec![];
    let can_load = admin || (has_cap(eff, CAP_BPF) && has_cap(eff, CAP_PERFMON));
    if !can_load {
        missing.push("CAP_BPF and CAP_PERFMON");
    }
    if !has_cap(eff, CAP_SYS_PTRACE) {
        missing.push("CAP_SYS_PTRACE");
    }
    if !admin && !has_cap(eff, CAP_CHECKPOINT_RESTORE) {
        missing.push("CAP_CHECKPOINT_RESTORE");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(CollectError::Privilege(format!(
        "--collect=bpf needs {} (or CAP_SYS_ADMIN): run as root, or use --collect=proc",
        missing.join(", ")
    )))
}

fn bpf_syscall<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: attr is a properly sized, initialized bpf_attr prefix.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// BPF_LINK_CREATE for an iterator program: the link stays ours, so each
/// collection creates a new stream from it without re-attaching. (aya's
/// IterLink lends no fd and its into_file consumes the link; getting an fd
/// back by link id would need CAP_SYS_ADMIN.)
fn link_create(prog: &Iter) -> std::io::Result<OwnedFd> {
    #[repr(C)]
    struct Attr {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
        iter_info: u64,
        iter_info_len: u32,
        _pad: u32,
    }
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_TRACE_ITER: u32 = 28;
    let fd = prog.fd().map_err(std::io::Error::other)?;
    let mut attr = Attr {
        prog_fd: fd.as_fd().as_raw_fd() as u32,
        target_fd: 0,
        attach_type: BPF_TRACE_ITER,
        flags: 0,
        iter_info: 0,
        iter_info_len: 0,
        _pad: 0,
    };
    let link = bpf_syscall(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(link as i32) })
}

/// BPF_ITER_CREATE on a link we keep: each collection gets a new stream
/// without re-attaching.
fn iter_create(link: &OwnedFd) -> std::io::Result<File> {
    #[repr(C)]
    struct Attr {
        link_fd: u32,
        flags: u32,
    }
    const BPF_ITER_CREATE: libc::c_long = 33;
    let mut attr = Attr {
        link_fd: link.as_raw_fd() as u32,
        flags: 0,
    };
    let fd = bpf_syscall(BPF_ITER_CREATE, &mut attr)?;
    // SAFETY: the kernel just gave us this fd.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// Refuses an object built for another kernel: without CO-RE its field
/// offsets would silently read the wrong fields.
fn check_btf(in_object: Option<u64>, running: u64) -> Result<(), CollectError> {
    let built = in_object.ok_or_else(|| {
        CollectError::Kernel(format!(
            "the embedded eBPF object carries no BTF digest: {REBUILD}"
        ))
    })?;
    if built != running || build::BTF_DIGEST != built {
        return Err(CollectError::Kernel(format!(
            "the eBPF programs were built for another kernel (BTF {} digest {built:016x}, running kernel {running:016x}): {REBUILD}",
            build::BTF_PATH
        )));
    }
    Ok(())
}

/// Checks privilege and that the embedded object was built for this
/// kernel, then loads it (maps created, no program loaded yet).
pub(super) fn open_object() -> Result<(Ebpf, Btf), CollectError> {
    check_privilege()?;
    let raw = std::fs::read("/sys/kernel/btf/vmlinux").map_err(|e| {
        CollectError::Kernel(format!(
            "this kernel has no BTF at /sys/kernel/btf/vmlinux ({e}): --collect=bpf needs CONFIG_DEBUG_INFO_BTF=y; use --collect=proc"
        ))
    })?;
    check_btf(object_btf_digest(OBJECT), xxhash_rust::xxh3::xxh3_64(&raw))?;
    let btf = Btf::parse(&raw, Endianness::default())
        .map_err(|e| CollectError::Kernel(format!("cannot parse the kernel's BTF: {e}")))?;
    // The programs' own log statements run only when dumper logs debug.
    let level: u8 = if crate::log::enabled(crate::log::DEBUG) {
        0xff
    } else {
        0
    };
    let ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("AYA_LOG_LEVEL", &level, false)
        .load(OBJECT)
        .map_err(|e| CollectError::Kernel(format!("loading the eBPF object failed: {e}")))?;
    Ok((ebpf, btf))
}

impl BpfCollector {
    /// Loads and verifies the programs: the cold cost of this collector.
    pub fn load() -> Result<Self, CollectError> {
        Self::load_programs(Programs::Full)
    }

    /// The same walks with programs that emit nothing (`bpf-null`): its
    /// collections return an empty snapshot.
    pub fn load_null() -> Result<Self, CollectError> {
        Self::load_programs(Programs::Null)
    }

    fn load_programs(programs: Programs) -> Result<Self, CollectError> {
        let (mut ebpf, btf) = open_object()?;
        let mut links = vec![];
        for (name, iter_type) in programs.names().into_iter().zip(ITER_TYPES) {
            let prog: &mut Iter = ebpf
                .program_mut(name)
                .ok_or_else(|| {
                    CollectError::Kernel(format!(
                        "program {name} missing from the eBPF object: {REBUILD}"
                    ))
                })?
                .try_into()
                .map_err(|e| CollectError::Kernel(format!("program {name}: {e}")))?;
            prog.load(iter_type, &btf).map_err(|e| {
                CollectError::Kernel(format!(
                    "the kernel refused the iter/{iter_type} program (needs Linux >= 5.8 with BPF iterators): {}",
                    verifier_context(&e)
                ))
            })?;
            links.push(
                link_create(prog).map_err(|e| {
                    CollectError::Kernel(format!("attaching iter/{iter_type}: {e}"))
                })?,
            );
            log_debug!(
                "bpf: iter/{} program {} loaded and attached",
                iter_type,
                name
            );
        }
        // Without the map (it is always there) the programs just log
        // nowhere.
        let logger = if crate::log::enabled(crate::log::DEBUG) {
            aya_log::EbpfLogger::init_with_logger(&mut ebpf, ToLog).ok()
        } else {
            None
        };
        Ok(BpfCollector {
            programs,
            logger,
            links,
            ebpf,
            buf: Vec::with_capacity(1 << 20),
            files: Vec::new(),
            last_path_lookups: 0,
            detail: false,
        })
    }

    fn read_stream(&mut self, which: usize) -> Result<(), CollectError> {
        let what = ITER_TYPES[which];
        let f = iter_create(&self.links[which])
            .map_err(|e| CollectError::io(format!("creating the {what} iterator"), e))?;
        self.buf.clear();
        loop {
            if self.buf.capacity() - self.buf.len() < 64 * 1024 {
                self.buf.reserve(self.buf.capacity().max(1 << 20));
            }
            let spare = self.buf.spare_capacity_mut();
            // SAFETY: read into the spare capacity; only what it filled is
            // made part of the vector.
            let n = unsafe { libc::read(f.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
            if n > 0 {
                unsafe { self.buf.set_len(self.buf.len() + n as usize) };
                continue;
            }
            if n == 0 {
                log_debug!("bpf: iter/{} read, {} bytes", what, self.buf.len());
                if let Some(l) = self.logger.as_mut() {
                    l.flush();
                }
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // bpf_seq_read gives up after a million objects that
                // produced no output in one read (kernel/bpf/bpf_iter.c,
                // MAX_ITER_OBJECTS): a small tree in a large system, or
                // bpf-null. The walk goes on where it stopped.
                Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                _ => return Err(CollectError::io(format!("reading the {what} iterator"), e)),
            }
        }
    }

    fn set_filter(&mut self, tgids: Option<&[i32]>) -> Result<(), CollectError> {
        // 512 KiB: built on the heap, never on the stack.
        // SAFETY: TgidFilter is integers only; all zeroes is valid.
        let mut filter: Box<TgidFilter> = unsafe { Box::new_zeroed().assume_init() };
        filter.all = tgids.is_none() as u64;
        filter.detail = self.detail as u64;
        for &t in tgids.unwrap_or(&[]) {
            let t = t as usize;
            if t < PID_LIMIT {
                filter.bits[t / 64] |= 1 << (t % 64);
            }
        }
        let map = self.ebpf.map("FILTER").ok_or_else(|| {
            CollectError::Kernel(format!(
                "map FILTER missing from the eBPF object: {REBUILD}"
            ))
        })?;
        let aya::maps::Map::Array(data) = map else {
            return Err(CollectError::Kernel("map FILTER is not an array".into()));
        };
        #[repr(C)]
        struct Attr {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let key = 0u32;
        let mut attr = Attr {
            map_fd: data.fd().as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &*filter as *const TgidFilter as u64,
            flags: 0,
        };
        const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
        bpf_syscall(BPF_MAP_UPDATE_ELEM, &mut attr)
            .map_err(|e| CollectError::io("setting the tree filter", e))?;
        Ok(())
    }
}

fn verifier_context(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            // The verifier's verdict is the last line before its statistics.
            let log = verifier_log.to_string();
            if std::env::var_os("DUMPER_VERIFIER_LOG").is_some() {
                eprintln!("{log}");
            }
            let verdict = log
                .lines()
                .rev()
                .skip_while(|l| !l.starts_with("verification time"))
                .nth(1)
                .unwrap_or("(no log)");
            format!("{io_error}; verifier: {verdict} (set DUMPER_VERIFIER_LOG=1 for the whole log)")
        }
        other => other.to_string(),
    }
}

/// A record type of dumper-common: plain old data, any bit pattern valid.
///
/// # Safety
/// Only for `#[repr(C)]` structs of integers and integer arrays.
pub unsafe trait Record: Copy {
    const KIND: u32;
}
// SAFETY: all three are #[repr(C)] structs of integers and integer arrays.
unsafe impl Record for TaskRecord {
    const KIND: u32 = KIND_TASK;
}
unsafe impl Record for FileRecord {
    const KIND: u32 = KIND_FILE;
}
unsafe impl Record for VmaRecord {
    const KIND: u32 = KIND_VMA;
}

/// Splits a stream into records of type `T`, checking each header.
pub fn decode<T: Record>(buf: &[u8]) -> Result<Vec<T>, CollectError> {
    let mut out = Vec::with_capacity(buf.len() / std::mem::size_of::<T>());
    each::<T>(buf, |r| {
        out.push(*r);
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` on each record of a stream, checking each header.
fn each<T: Record>(
    buf: &[u8],
    mut f: impl FnMut(&T) -> Result<(), CollectError>,
) -> Result<(), CollectError> {
    let size = std::mem::size_of::<T>();
    if !buf.len().is_multiple_of(size) {
        return Err(torn(buf.len(), size));
    }
    for c in buf.chunks_exact(size) {
        f(&record::<T>(c)?)?;
    }
    Ok(())
}

fn torn(len: usize, size: usize) -> CollectError {
    CollectError::Decode(format!(
        "iterator stream of {len} bytes is not a whole number of {size}-byte records: {REBUILD}"
    ))
}

/// One record from exactly `size_of::<T>()` bytes, its header checked.
pub(super) fn record<T: Record>(c: &[u8]) -> Result<T, CollectError> {
    let size = std::mem::size_of::<T>();
    // SAFETY: c holds size bytes; RecordHeader and T are plain old data.
    let hdr: RecordHeader = unsafe { std::ptr::read_unaligned(c.as_ptr().cast()) };
    if hdr != RecordHeader::new(T::KIND, size) {
        return Err(CollectError::Decode(format!(
            "record header {:#x}/{} where {:#x}/{size} was expected: userspace and eBPF object disagree, {REBUILD}",
            hdr.magic,
            hdr.size,
            magic(T::KIND)
        )));
    }
    Ok(unsafe { std::ptr::read_unaligned(c.as_ptr().cast()) })
}

/// The snapshot index of the task a run of records belongs to. Only the
/// leader's fd table and mm count (a thread with its own fd table is
/// visited too; /proc/PID/fd shows the leader's).
#[derive(Default)]
struct Run {
    tgid: i32,
    pid: i32,
    index: Option<usize>,
}

impl Run {
    fn index(&mut self, tgid: i32, pid: i32, all: &HashMap<i32, usize>) -> Option<usize> {
        if (tgid, pid) != (self.tgid, self.pid) {
            *self = Run {
                tgid,
                pid,
                index: if pid == tgid {
                    all.get(&tgid).copied()
                } else {
                    None
                },
            };
        }
        self.index
    }
}

/// FxHash (rustc's): kernel addresses are already well spread, and SipHash
/// showed in profiles.
#[derive(Clone, Copy, Default)]
struct Fx;

#[derive(Default)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::BuildHasher for Fx {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl Collector for BpfCollector {
    fn name(&self) -> &'static str {
        match self.programs {
            Programs::Full => "bpf",
            Programs::Null => "bpf-null",
        }
    }

    fn readlinks(&self) -> Option<usize> {
        Some(self.last_path_lookups)
    }

    fn collect_frozen(
        &mut self,
        frozen: &mut Frozen,
        detail: bool,
    ) -> Result<Snapshot, CollectError> {
        if detail && self.programs == Programs::Null {
            return Err(CollectError::Kernel(
                "bpf-null collects nothing: use --collect=bpf".into(),
            ));
        }
        self.detail = detail;
        let r = self.collect(Target::Tree(frozen.root()));
        self.detail = false;
        r
    }

    fn collect(&mut self, target: Target) -> Result<Snapshot, CollectError> {
        if self.programs == Programs::Null {
            for i in 0..3 {
                self.read_stream(i)?;
            }
            return Ok(Snapshot::default());
        }
        self.read_stream(0)?;
        let tasks: Vec<TaskRecord> = decode(&self.buf)?;
        let leaders: HashMap<i32, &TaskRecord> = tasks
            .iter()
            .filter(|t| t.pid == t.tgid)
            .map(|t| (t.tgid, t))
            .collect();
        let selected: Vec<i32> = match target {
            Target::System => leaders.keys().copied().collect(),
            Target::Tree(root) => {
                let root = tasks
                    .iter()
                    .find(|t| t.pid == root)
                    .map(|t| t.tgid)
                    .ok_or(CollectError::NoSuchProcess(root))?;
                tree_members(root, leaders.values().map(|t| (t.tgid, t.ppid)))
                    .into_iter()
                    .filter(|p| leaders.contains_key(p))
                    .collect()
            }
        };
        self.set_filter(match target {
            Target::System => None,
            Target::Tree(_) => Some(&selected),
        })?;
        let mut paths = PathCache::default();
        let mut snap = Snapshot::default();
        let mut index: HashMap<i32, usize> = HashMap::new();
        // fd tables by task->files, to dense ids (canonicalize renumbers).
        let mut tables: HashMap<u64, u32> = HashMap::new();
        for &tgid in &selected {
            index.insert(tgid, snap.tasks.len());
            let r = leaders[&tgid];
            let mut t = task_from(r, &mut paths)?;
            if r.files != 0 && !t.kthread && t.state != "Z" {
                let next = tables.len() as u32;
                t.fd_table = Some(*tables.entry(r.files).or_insert(next));
            }
            snap.tasks.push(t);
        }
        for t in &tasks {
            if let Some(&i) = index.get(&t.tgid) {
                snap.tasks[i].threads.push(t.pid);
            }
        }
        // The fd records are decoded on a second thread while the mapping
        // walk runs in the kernel on this one: the two cores overlap.
        self.read_stream(1)?;
        let files = std::mem::replace(&mut self.buf, std::mem::take(&mut self.files));
        let (fds, vmas) = std::thread::scope(|sc| {
            let fds = sc.spawn(|| decode_fds(&files, &index));
            let vmas = (|| {
                self.read_stream(2)?;
                // Records come grouped by task: one index lookup per run.
                let mut at = Run::default();
                each::<VmaRecord>(&self.buf, |v| {
                    let Some(i) = at.index(v.tgid, v.pid, &index) else {
                        return Ok(());
                    };
                    let leader = leaders[&v.tgid];
                    snap.tasks[i].vmas.push(vma_from(v, leader, &mut paths)?);
                    Ok(())
                })
            })();
            (fds.join(), vmas)
        });
        self.files = files;
        vmas?;
        let (fds, lookups) =
            fds.map_err(|_| CollectError::Decode("the fd decoder panicked".into()))??;
        paths.lookups += lookups;
        for (i, fd) in fds {
            snap.tasks[i].fds.push(fd);
        }
        if self.detail {
            // The first walk chose the tree; this one, with the filter
            // set, adds the extension records of its tasks.
            self.read_stream(0)?;
            let mut details = super::bpf_detail::from_stream(&self.buf)?;
            for t in &mut snap.tasks {
                t.detail = details.remove(&t.pid).filter(|_| !t.kthread);
                if t.state == "Z" {
                    // What a zombie keeps is its exit status.
                    t.detail = t.detail.take().map(|d| crate::model::TaskDetail {
                        exit_code: d.exit_code,
                        ..Default::default()
                    });
                }
            }
        }
        self.last_path_lookups = paths.lookups;
        snap.canonicalize();
        Ok(snap)
    }
}

/// The fds of the selected tasks (by index into the snapshot) from a
/// stream of fd records, with the readlinks its own path cache made.
fn decode_fds(
    buf: &[u8],
    index: &HashMap<i32, usize>,
) -> Result<(Vec<(usize, Fd)>, usize), CollectError> {
    let mut paths = PathCache::default();
    let mut at = Run::default();
    let mut file_ids: HashMap<u64, u32, Fx> = HashMap::with_hasher(Fx);
    let mut out = vec![];
    each::<FileRecord>(buf, |f| {
        let Some(i) = at.index(f.tgid, f.pid, index) else {
            return Ok(());
        };
        let next = file_ids.len() as u32;
        let id = *file_ids.entry(f.file).or_insert(next);
        if let Some(fd) = fd_from(f, id, &mut paths)? {
            out.push((i, fd));
        }
        Ok(())
    })?;
    Ok((out, paths.lookups))
}

fn task_from(r: &TaskRecord, paths: &mut PathCache) -> Result<Task, CollectError> {
    let pid = r.tgid;
    let link = |name: &'static str| move || format!("/proc/{pid}/{name}").into();
    let mut groups: Vec<u32> = r.groups[..(r.ngroups as usize).min(MAX_GROUPS)].to_vec();
    if r.ngroups as usize > MAX_GROUPS {
        // More than the record carries: complete from /proc (rare).
        if let Ok(s) = procfs::process::Process::new(pid).and_then(|p| p.status()) {
            groups = s.groups.iter().map(|&g| g as u32).collect();
        }
    }
    let [uid, euid, suid, fsuid, gid, egid, sgid, fsgid] = r.ids;
    Ok(Task {
        pid,
        tgid: r.tgid,
        ppid: r.ppid,
        pgid: r.pgid,
        sid: r.sid,
        comm: cstr(&r.comm),
        state: state_letter(r.state, r.exit_state).to_string(),
        threads: vec![],
        uid: [uid, euid, suid, fsuid].into(),
        gid: [gid, egid, sgid, fsgid].into(),
        groups,
        caps: r.caps.into(),
        signals: SigMasks {
            blocked: r.sig_blocked,
            ignored: r.sig_ignored,
            caught: r.sig_caught,
        },
        exit_signal: r.exit_signal,
        nice: r.static_prio - 120,
        kthread: r.flags & PF_KTHREAD != 0,
        cwd: paths.resolve(r.cwd, link("cwd"))?.map(|p| p.to_string()),
        root: paths.resolve(r.root, link("root"))?.map(|p| p.to_string()),
        exe: paths.resolve(r.exe, link("exe"))?.map(|p| p.to_string()),
        fd_table: None,
        fds: vec![],
        vmas: vec![],
        detail: None,
    })
}

fn fd_from(r: &FileRecord, id: u32, paths: &mut PathCache) -> Result<Option<Fd>, CollectError> {
    let dname = cstr(&r.name);
    let kind = classify::from_kernel(r.i_mode as u32, r.s_magic, &dname, r.internal_mount != 0);
    let path =
        match classify::pseudo_link(r.s_magic, r.ino, &dname, r.internal_mount != 0, NAME_LEN) {
            Some(p) => p.into(),
            // None: the fd was closed after the walk; /proc would not list it.
            None => {
                match paths.resolve(r.path, || format!("/proc/{}/fd/{}", r.tgid, r.fd).into())? {
                    Some(p) => p,
                    None => return Ok(None),
                }
            }
        };
    Ok(Some(Fd {
        fd: r.fd,
        kind,
        flags: r.f_flags
            | if r.cloexec != 0 {
                libc::O_CLOEXEC as u32
            } else {
                0
            },
        pos: r.pos,
        mnt_id: r.mnt_id,
        dev: kdev_to_dev(r.s_dev),
        ino: r.ino,
        rdev: if matches!(kind, FileType::Chr | FileType::Blk) {
            kdev_to_dev(r.rdev)
        } else {
            0
        },
        path,
        file_id: id,
        eventfd: if kind == FileType::Eventfd {
            // The counter behind private_data is eventfd_ctx's, a type
            // the program cannot tell from the others there: fdinfo has
            // it, one read per eventfd.
            let p = format!("/proc/{}/fdinfo/{}", r.tgid, r.fd);
            match std::fs::read(&p) {
                Ok(b) => super::fdinfo::parse_file(r.tgid, r.fd, &b)?.eventfd,
                // Closed since the walk, as above.
                Err(_) => return Ok(None),
            }
        } else {
            None
        },
    }))
}

fn vma_from(r: &VmaRecord, mm: &TaskRecord, paths: &mut PathCache) -> Result<Vma, CollectError> {
    let has_file = r.path != [0, 0];
    let name = cstr(&r.name);
    // fs/proc/task_mmu.c get_vma_name(): file, special mapping, then the
    // initial heap and stack by the mm's brk and start_stack.
    let internal = (r.internal_mount != 0)
        .then(|| classify::pseudo_link(classify::TMPFS_MAGIC, r.ino, &name, true, NAME_LEN))
        .flatten();
    let path = if let Some(p) = internal {
        Some(p.into())
    } else if has_file {
        paths.resolve(r.path, || {
            format!("/proc/{}/map_files/{:x}-{:x}", r.tgid, r.start, r.end).into()
        })?
    } else if !name.is_empty() {
        Some(name.into())
    } else if r.start < mm.mm_brk && r.end > mm.mm_start_brk {
        Some("[heap]".into())
    } else if r.start <= mm.mm_start_stack && r.end >= mm.mm_start_stack {
        Some("[stack]".into())
    } else {
        None
    };
    Ok(Vma {
        start: r.start,
        end: r.end,
        prot: Prot {
            read: r.flags & VM_READ != 0,
            write: r.flags & VM_WRITE != 0,
            exec: r.flags & VM_EXEC != 0,
        },
        shared: r.flags & VM_MAYSHARE != 0,
        flags: VmFlags::from_kernel(r.flags),
        pgoff: if has_file { r.pgoff << PAGE_SHIFT } else { 0 },
        dev: if has_file { kdev_to_dev(r.s_dev) } else { 0 },
        ino: if has_file { r.ino } else { 0 },
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_records_the_btf_it_was_built_for() {
        assert_eq!(object_btf_digest(OBJECT), Some(build::BTF_DIGEST));
    }

    #[test]
    fn refuses_another_kernels_btf() {
        let e = check_btf(Some(build::BTF_DIGEST), build::BTF_DIGEST ^ 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("built for another kernel") && e.contains("cargo xtask build-ebpf"),
            "{e}"
        );
        assert!(check_btf(None, 1).is_err());
        assert!(check_btf(Some(build::BTF_DIGEST), build::BTF_DIGEST).is_ok());
    }

    #[test]
    fn decode_checks_headers() {
        let mut rec: VmaRecord = unsafe { std::mem::zeroed() };
        rec.hdr = RecordHeader::new(KIND_VMA, std::mem::size_of::<VmaRecord>());
        rec.start = 0x1000;
        let bytes = unsafe {
            std::slice::from_raw_parts(
                &rec as *const VmaRecord as *const u8,
                std::mem::size_of::<VmaRecord>(),
            )
        }
        .to_vec();
        let v: Vec<VmaRecord> = decode(&bytes).unwrap();
        assert_eq!(v[0].start, 0x1000);
        let mut other = bytes.clone();
        other[..4].copy_from_slice(&magic(KIND_FILE).to_le_bytes());
        assert!(decode::<VmaRecord>(&other).is_err(), "wrong kind");
        assert!(decode::<VmaRecord>(&bytes[1..]).is_err(), "torn stream");
    }
}
