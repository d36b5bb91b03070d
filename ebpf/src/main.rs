//! dumper's iterator programs. Each walks one kind of kernel object and
//! streams fixed-size records (dumper-common) with bpf_seq_write.
//!
//! Rust eBPF has no CO-RE, so every kernel field is read at the offset that
//! userspace/build.rs resolved from the target kernel's BTF
//! (`kernel_offsets.rs`), and the size of every field read is checked
//! against the Rust type at compile time. The object carries that BTF's
//! digest in section `.dumper.btf`; the loader refuses other kernels.
#![no_std]
#![no_main]
// Program entry points take the kernel's context pointer, which the kernel
// guarantees valid; they cannot be `unsafe fn`.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use aya_ebpf::{
    bindings::seq_file,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, generated::bpf_seq_write},
    macros::map,
    maps::{Array, PerCpuArray},
};
use core::ffi::c_void;
use dumper_common::*;

#[allow(dead_code)]
mod k {
    include!(env!("DUMPER_KERNEL_OFFSETS"));
}

#[used]
#[no_mangle]
#[link_section = ".dumper.btf"]
static DUMPER_BTF_DIGEST: [u8; 8] = k::BTF_DIGEST.to_le_bytes();

#[map]
static FILTER: Array<TgidFilter> = Array::with_max_entries(1, 0);

/// Records are larger than is wise on the 512-byte BPF stack: build them in
/// per-CPU scratch space (iterator programs do not migrate while running).
#[map]
static TASK_BUF: PerCpuArray<TaskScratch> = PerCpuArray::with_max_entries(1, 0);
#[map]
static FILE_BUF: PerCpuArray<FileScratch> = PerCpuArray::with_max_entries(1, 0);

/// The file program's scratch: the record, and what consecutive fds of one
/// iterator session share: the task (filter decision, fd table), the
/// close-on-exec word of 64 fds, the mount of the last file.
#[repr(C)]
pub struct FileScratch {
    rec: FileRecord,
    task: TaskCache,
    close_on_exec: u64,
    word_index: u64,
    word: u64,
    mnt: u64,
    mnt_id: i32,
    internal: u32,
}
#[map]
static VMA_BUF: PerCpuArray<VmaScratch> = PerCpuArray::with_max_entries(1, 0);

/// The vma program's scratch: the record, and what it can reuse from the
/// previous vma of the same iterator session. Consecutive vmas mostly
/// belong to one process, and often map one file (a library's text, data
/// and relro): the tree filter is looked up once per task, and the file's
/// inode, device, path and name, each a cache miss away, once per file.
#[repr(C)]
pub struct VmaScratch {
    rec: VmaRecord,
    task: TaskCache,
    file_session: u64,
    file: u64,
    file_ino: u64,
    file_dev: u32,
    file_internal: u32,
    file_path: [u64; 2],
    file_name: [u64; NAME_WORDS],
}

const NAME_WORDS: usize = NAME_LEN / 8;
const _: () =
    assert!(NAME_LEN.is_multiple_of(8) && core::mem::offset_of!(VmaRecord, name).is_multiple_of(8));

#[inline(always)]
fn copy_words(dst: *mut u64, src: *const u64, n: usize) {
    let mut i = 0;
    while i < n {
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
        i += 1;
    }
}

const _: () = assert!((k::K_SIGACTION_SIZE as usize) * NSIG <= ACTION_BYTES);
const _: () = assert!(k::MM_STRUCT__SAVED_AUXV.1 <= AUXV_WORDS * 8);
const _: () = assert!(k::SIGNAL_STRUCT__RLIM.1 == RLIMITS * 16);

#[repr(C)]
pub struct TaskScratch {
    rec: TaskRecord,
    /// Also where the leader's action table is read to (for the ignored
    /// and caught masks), whether or not the extension is emitted.
    ext: TaskExtRecord,
}

/// Compile-time check that kernel field `k::$f` has the size of `$t`: the
/// offsets come from the target kernel's BTF, the types from this file.
macro_rules! check_size {
    ($f:ident, $t:ty) => {
        const _: () = assert!(
            k::$f.1 == core::mem::size_of::<$t>(),
            concat!(
                "kernel field size differs from the type read: ",
                stringify!($f)
            )
        );
    };
}

/// Reads kernel field `k::$f` of type `$t` at `$base` with
/// bpf_probe_read_kernel. For what plain loads cannot reach: memory behind
/// `void *` or at a variable or negative offset. A failed read yields zero.
macro_rules! rd {
    ($base:expr, $f:ident, $t:ty) => {{
        check_size!($f, $t);
        read::<$t>(($base) + k::$f.0)
    }};
}

/// Loads kernel field `k::$f` of type `$t` from `$base` with a plain load
/// instruction. `$base` must be a pointer the verifier knows the BTF type
/// of (from the iterator context, or loaded from such a pointer's struct
/// pointer member): the verifier then checks the offset against the
/// kernel's own BTF and turns the load into a fault-safe PROBE_MEM load,
/// which costs a fraction of a bpf_probe_read_kernel call.
macro_rules! ld {
    ($base:expr, $f:ident, $t:ty) => {{
        check_size!($f, $t);
        unsafe {
            core::ptr::read_volatile((($base) as *const u8).add(k::$f.0 as usize) as *const $t)
        }
    }};
}

/// Offset of `k::$f` (for fields read in parts: arrays, embedded structs).
macro_rules! off {
    ($f:ident) => {
        k::$f.0
    };
}

/// Zeroes a record with 8-byte stores. (`*r = zeroed()` becomes a call to
/// a byte-wise memset subprogram on BPF, which showed up as a tenth of the
/// collection's time in perf.)
#[inline(always)]
fn zero<T>(r: &mut T) {
    const { assert!(core::mem::size_of::<T>().is_multiple_of(8) && core::mem::align_of::<T>() == 8) };
    let p = r as *mut T as *mut u64;
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
        i += 1;
    }
}

#[inline(always)]
fn read<T: Copy + Default>(addr: u64) -> T {
    if addr < 4096 {
        return T::default();
    }
    unsafe { bpf_probe_read_kernel(addr as *const T) }.unwrap_or_default()
}

#[inline(always)]
fn read_str(addr: u64, dst: &mut [u8]) {
    if addr >= 4096 {
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(addr as *const u8, dst) };
    }
}

/// Copies `len` bytes of kernel memory at `src` to `dst`; false on a
/// fault (the bytes are then unspecified).
#[inline(always)]
fn read_block(dst: *mut u8, len: usize, src: u64) -> bool {
    src >= 4096
        && unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                dst as *mut c_void,
                len as u32,
                src as *const c_void,
            )
        } == 0
}

#[inline(always)]
fn detail_wanted() -> bool {
    FILTER.get(0).is_some_and(|f| f.detail != 0)
}

/// The per-thread part of the extension record.
#[inline(always)]
fn thread_ext(t: u64, e: &mut TaskExtRecord, pid: i32, tgid: i32) {
    zero(e);
    e.hdr = RecordHeader::new(KIND_TASK_EXT, core::mem::size_of::<TaskExtRecord>());
    e.pid = pid;
    e.tgid = tgid;
    e.pending = ld!(t, TASK_STRUCT__PENDING__SIGNAL, u64);
    // restore_sigmask is a bitfield: its byte, then its bit.
    let flags = unsafe {
        core::ptr::read_volatile((t as *const u8).add(k::TASK_STRUCT__RESTORE_SIGMASK.0 as usize))
    };
    e.blocked = if flags & k::TASK_STRUCT__RESTORE_SIGMASK.1 != 0 {
        ld!(t, TASK_STRUCT__SAVED_SIGMASK, u64)
    } else {
        ld!(t, TASK_STRUCT__BLOCKED, u64)
    };
    e.sas_ss_sp = ld!(t, TASK_STRUCT__SAS_SS_SP, u64);
    e.sas_ss_size = ld!(t, TASK_STRUCT__SAS_SS_SIZE, u64);
    e.sas_ss_flags = ld!(t, TASK_STRUCT__SAS_SS_FLAGS, u32);
    e.personality = ld!(t, TASK_STRUCT__PERSONALITY, u32);
    e.rseq = ld!(t, TASK_STRUCT__RSEQ, u64);
    e.rseq_len = ld!(t, TASK_STRUCT__RSEQ_LEN, u32);
    e.rseq_sig = ld!(t, TASK_STRUCT__RSEQ_SIG, u32);
    e.exit_code = ld!(t, TASK_STRUCT__EXIT_CODE, i32);
    e.clear_child_tid = ld!(t, TASK_STRUCT__CLEAR_CHILD_TID, u64);
}

/// The process-wide part, for a leader (after [`thread_ext`]).
#[inline(always)]
fn proc_ext(e: &mut TaskExtRecord, signal: u64, mm: u64) {
    if signal != 0 {
        e.shared_pending = ld!(signal, SIGNAL_STRUCT__SHARED_PENDING__SIGNAL, u64);
        // is_child_subreaper is a bitfield: its byte, then its bit.
        let b = unsafe {
            core::ptr::read_volatile(
                (signal as *const u8).add(k::SIGNAL_STRUCT__IS_CHILD_SUBREAPER.0 as usize),
            )
        };
        e.subreaper = (b & k::SIGNAL_STRUCT__IS_CHILD_SUBREAPER.1 != 0) as u32;
        read_block(
            e.rlim.as_mut_ptr() as *mut u8,
            k::SIGNAL_STRUCT__RLIM.1,
            signal + off!(SIGNAL_STRUCT__RLIM),
        );
    }
    if mm != 0 {
        e.has_mm = 1;
        e.mm = [
            ld!(mm, MM_STRUCT__START_CODE, u64),
            ld!(mm, MM_STRUCT__END_CODE, u64),
            ld!(mm, MM_STRUCT__START_DATA, u64),
            ld!(mm, MM_STRUCT__END_DATA, u64),
            ld!(mm, MM_STRUCT__START_BRK, u64),
            ld!(mm, MM_STRUCT__BRK, u64),
            ld!(mm, MM_STRUCT__START_STACK, u64),
            ld!(mm, MM_STRUCT__ARG_START, u64),
            ld!(mm, MM_STRUCT__ARG_END, u64),
            ld!(mm, MM_STRUCT__ENV_START, u64),
            ld!(mm, MM_STRUCT__ENV_END, u64),
        ];
        read_block(
            e.auxv.as_mut_ptr() as *mut u8,
            k::MM_STRUCT__SAVED_AUXV.1,
            mm + off!(MM_STRUCT__SAVED_AUXV),
        );
    }
}

/// Loads a pointer-sized iterator-context field with a plain load, so the
/// verifier keeps its BTF type (bpf_seq_write needs a typed seq_file).
#[inline(always)]
unsafe fn ctx_ptr(ctx: *const c_void, off: u64) -> u64 {
    unsafe { core::ptr::read_volatile((ctx as *const u8).add(off as usize) as *const u64) }
}

#[inline(always)]
unsafe fn seq_of(ctx: *const c_void) -> *mut seq_file {
    // Every bpf_iter__* context starts with its bpf_iter_meta pointer.
    let meta = unsafe { ctx_ptr(ctx, 0) };
    unsafe { ctx_ptr(meta as *const c_void, off!(BPF_ITER_META__SEQ)) as *mut seq_file }
}

#[inline(always)]
fn selected(tgid: i32) -> bool {
    let Some(f) = FILTER.get(0) else { return false };
    if f.all != 0 {
        return true;
    }
    // The mask (FILTER_WORDS is a power of two) is what the verifier sees
    // as the bound. The volatile read keeps LLVM from proving the mask
    // redundant and bounds-checking a register the verifier cannot follow.
    const _: () = assert!(FILTER_WORDS.is_power_of_two());
    let t = unsafe { core::ptr::read_volatile(&(tgid as u32 as usize)) };
    let w = (t >> 6) & (FILTER_WORDS - 1);
    (f.bits[w] >> (t & 63)) & 1 == 1
}

/// The global pid number of `task`'s pid of type `ty` (PGID, SID).
#[inline(always)]
fn signal_pid_nr(signal: u64, ty: u64) -> i32 {
    // A constant index into the pids[] array of struct pid pointers.
    let pid = unsafe {
        core::ptr::read_volatile((signal + off!(SIGNAL_STRUCT__PIDS) + ty * 8) as *const u64)
    };
    if pid == 0 {
        return 0;
    }
    ld!(pid + off!(PID__NUMBERS), UPID__NR, i32)
}

#[inline(always)]
fn path_pair(path: u64) -> [u64; 2] {
    [ld!(path, PATH__MNT, u64), ld!(path, PATH__DENTRY, u64)]
}

#[no_mangle]
#[link_section = "iter/task"]
pub fn dumper_task(ctx: *mut c_void) -> i32 {
    unsafe { task(ctx) };
    0
}

#[inline(always)]
unsafe fn task(ctx: *const c_void) {
    let t = unsafe { ctx_ptr(ctx, off!(BPF_ITER__TASK__TASK)) };
    if t == 0 {
        // The last call of a pass: the kernel's way of saying it is done.
        aya_log_ebpf::info!(&ctx, "iter/task: pass done");
        return;
    }
    let Some(s) = TASK_BUF.get_ptr_mut(0) else {
        return;
    };
    let s = unsafe { &mut *s };
    let r = &mut s.rec;
    zero(r);
    r.hdr = RecordHeader::new(KIND_TASK, core::mem::size_of::<TaskRecord>());
    r.pid = ld!(t, TASK_STRUCT__PID, i32);
    r.tgid = ld!(t, TASK_STRUCT__TGID, i32);
    let parent = ld!(t, TASK_STRUCT__REAL_PARENT, u64);
    r.ppid = if parent != 0 {
        ld!(parent, TASK_STRUCT__TGID, i32)
    } else {
        0
    };
    let signal = ld!(t, TASK_STRUCT__SIGNAL, u64);
    if signal != 0 {
        r.pgid = signal_pid_nr(signal, k::PIDTYPE_PGID);
        r.sid = signal_pid_nr(signal, k::PIDTYPE_SID);
    }
    r.state = ld!(t, TASK_STRUCT____STATE, u32);
    r.exit_state = ld!(t, TASK_STRUCT__EXIT_STATE, i32);
    r.exit_signal = ld!(t, TASK_STRUCT__EXIT_SIGNAL, i32);
    r.static_prio = ld!(t, TASK_STRUCT__STATIC_PRIO, i32);
    r.flags = ld!(t, TASK_STRUCT__FLAGS, u32);
    r.comm = rd!(t, TASK_STRUCT__COMM, [u8; COMM_LEN]);
    r.sig_blocked = ld!(t, TASK_STRUCT__BLOCKED, u64);

    // What threads share with their group (creds aside, which are per
    // thread but read only for the leader as /proc/PID/status shows them)
    // is read once per process.
    let detail = detail_wanted() && selected(r.tgid);
    if r.pid != r.tgid {
        let (pid, tgid) = (r.pid, r.tgid);
        unsafe { emit_rec(ctx, r) };
        if detail {
            thread_ext(t, &mut s.ext, pid, tgid);
            unsafe { emit_rec(ctx, &s.ext) };
        }
        return;
    }
    let cred = ld!(t, TASK_STRUCT__REAL_CRED, u64);
    if cred != 0 {
        r.ids = [
            ld!(cred, CRED__UID, u32),
            ld!(cred, CRED__EUID, u32),
            ld!(cred, CRED__SUID, u32),
            ld!(cred, CRED__FSUID, u32),
            ld!(cred, CRED__GID, u32),
            ld!(cred, CRED__EGID, u32),
            ld!(cred, CRED__SGID, u32),
            ld!(cred, CRED__FSGID, u32),
        ];
        r.caps = [
            ld!(cred, CRED__CAP_INHERITABLE, u64),
            ld!(cred, CRED__CAP_PERMITTED, u64),
            ld!(cred, CRED__CAP_EFFECTIVE, u64),
            ld!(cred, CRED__CAP_BSET, u64),
            ld!(cred, CRED__CAP_AMBIENT, u64),
        ];
        let gi = ld!(cred, CRED__GROUP_INFO, u64);
        if gi != 0 {
            let n = ld!(gi, GROUP_INFO__NGROUPS, i32);
            r.ngroups = n as u32;
            let base = gi + off!(GROUP_INFO__GID);
            let mut i = 0;
            while i < MAX_GROUPS {
                if i as i32 >= n {
                    break;
                }
                r.groups[i] = read::<u32>(base + (i as u64) * 4);
                i += 1;
            }
        }
    }
    if detail {
        thread_ext(t, &mut s.ext, r.pid, r.tgid);
    }
    let sighand = ld!(t, TASK_STRUCT__SIGHAND, u64);
    if sighand != 0 {
        // One copy of the whole action table, then a scan of it: 64 helper
        // calls per process would cost more than the rest of the record.
        let len = (k::K_SIGACTION_SIZE as usize) * NSIG;
        let ok = read_block(
            s.ext.actions.as_mut_ptr(),
            len,
            sighand + off!(SIGHAND_STRUCT__ACTION),
        );
        if ok {
            let mut i = 0usize;
            while i < NSIG {
                let o =
                    i * k::K_SIGACTION_SIZE as usize + off!(K_SIGACTION__SA__SA_HANDLER) as usize;
                if o + 8 > ACTION_BYTES {
                    break;
                }
                let a = &s.ext.actions;
                let h = u64::from_le_bytes([
                    a[o],
                    a[o + 1],
                    a[o + 2],
                    a[o + 3],
                    a[o + 4],
                    a[o + 5],
                    a[o + 6],
                    a[o + 7],
                ]);
                if h == 1 {
                    s.rec.sig_ignored |= 1 << i;
                } else if h != 0 {
                    s.rec.sig_caught |= 1 << i;
                }
                i += 1;
            }
        }
    }
    let r = &mut s.rec;
    let mm = ld!(t, TASK_STRUCT__MM, u64);
    if mm != 0 {
        r.mm_start_brk = ld!(mm, MM_STRUCT__START_BRK, u64);
        r.mm_brk = ld!(mm, MM_STRUCT__BRK, u64);
        r.mm_start_stack = ld!(mm, MM_STRUCT__START_STACK, u64);
        let exe = ld!(mm, MM_STRUCT__EXE_FILE, u64);
        if exe != 0 {
            r.exe = path_pair(exe + off!(FILE__F_PATH));
        }
    }
    r.files = ld!(t, TASK_STRUCT__FILES, u64);
    let fs = ld!(t, TASK_STRUCT__FS, u64);
    if fs != 0 {
        r.cwd = path_pair(fs + off!(FS_STRUCT__PWD));
        r.root = path_pair(fs + off!(FS_STRUCT__ROOT));
    }
    unsafe { emit_rec(ctx, r) };
    if detail {
        proc_ext(&mut s.ext, signal, mm);
        unsafe { emit_rec(ctx, &s.ext) };
    }
}

#[inline(always)]
unsafe fn emit_rec<T>(ctx: *const c_void, rec: &T) {
    unsafe {
        emit(
            ctx,
            rec as *const T as *const c_void,
            core::mem::size_of::<T>(),
        )
    };
}

#[inline(always)]
unsafe fn emit(ctx: *const c_void, rec: *const c_void, len: usize) {
    let seq = unsafe { seq_of(ctx) };
    let r = unsafe { bpf_seq_write(seq, rec, len as u32) };
    // A full seq buffer: the kernel runs the program again for this
    // object once it is read; worth knowing in a trace.
    if r != 0 {
        aya_log_ebpf::debug!(&ctx, "bpf_seq_write of {} bytes: {}", len as u32, r);
    }
}

const TMPFS_MAGIC: u64 = 0x0102_1994;
const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;
const SOCKFS_MAGIC: u64 = 0x534F_434B;
const HUGETLBFS_MAGIC: u64 = 0x9584_58f6;
/// `ERR_PTR(-EINVAL)`: what kern_mount() puts in `mount->mnt_ns`.
const MNT_NS_INTERNAL: u64 = -22i64 as u64;

/// What a run of one task's records share, per iterator session: the
/// task's ids and the tree filter's decision, looked up once per task.
#[repr(C)]
pub struct TaskCache {
    session: u64,
    task: u64,
    tgid: i32,
    pid: i32,
    selected: u64,
}

impl TaskCache {
    /// Brings the cache to task `t` of this session; true when it moved
    /// to another task (so per-task state must be refreshed too).
    #[inline(always)]
    fn at(&mut self, ctx: *const c_void, t: u64) -> bool {
        let meta = unsafe { ctx_ptr(ctx, 0) };
        let session = ld!(meta, BPF_ITER_META__SESSION_ID, u64);
        if self.session == session && self.task == t {
            return false;
        }
        self.session = session;
        self.task = t;
        self.tgid = ld!(t, TASK_STRUCT__TGID, i32);
        self.pid = ld!(t, TASK_STRUCT__PID, i32);
        self.selected = selected(self.tgid) as u64;
        true
    }
}

#[no_mangle]
#[link_section = "iter/task_file"]
pub fn dumper_task_file(ctx: *mut c_void) -> i32 {
    unsafe { task_file(ctx) };
    0
}

#[inline(always)]
unsafe fn task_file(ctx: *const c_void) {
    let t = unsafe { ctx_ptr(ctx, off!(BPF_ITER__TASK_FILE__TASK)) };
    let file = unsafe { ctx_ptr(ctx, off!(BPF_ITER__TASK_FILE__FILE)) };
    if t == 0 || file == 0 {
        return;
    }
    let Some(s) = FILE_BUF.get_ptr_mut(0) else {
        return;
    };
    let s = unsafe { &mut *s };
    if s.task.at(ctx, t) {
        // fdinfo reports O_CLOEXEC from the fd table's close_on_exec bitmap.
        let files = ld!(t, TASK_STRUCT__FILES, u64);
        let fdt = ld!(files, FILES_STRUCT__FDT, u64);
        s.close_on_exec = ld!(fdt, FDTABLE__CLOSE_ON_EXEC, u64);
        s.word_index = u64::MAX;
        s.mnt = 0;
    }
    if s.task.selected == 0 {
        return;
    }
    let fd = unsafe {
        core::ptr::read_volatile(
            (ctx as *const u8).add(off!(BPF_ITER__TASK_FILE__FD) as usize) as *const u32,
        )
    };
    if s.close_on_exec != 0 && s.word_index != fd as u64 / 64 {
        s.word_index = fd as u64 / 64;
        s.word = read(s.close_on_exec + s.word_index * 8);
    }
    let cloexec = ((s.word >> (fd % 64)) & 1) as u32;
    let r = &mut s.rec;
    zero(r);
    r.hdr = RecordHeader::new(KIND_FILE, core::mem::size_of::<FileRecord>());
    r.tgid = s.task.tgid;
    r.pid = s.task.pid;
    r.fd = fd;
    r.file = file;
    r.cloexec = cloexec;
    r.f_flags = ld!(file, FILE__F_FLAGS, u32);
    r.pos = ld!(file, FILE__F_POS, i64);
    let inode = ld!(file, FILE__F_INODE, u64);
    r.i_mode = ld!(inode, INODE__I_MODE, u16);
    r.ino = ld!(inode, INODE__I_INO, u64);
    r.rdev = ld!(inode, INODE__I_RDEV, u32);
    let sb = ld!(inode, INODE__I_SB, u64);
    r.s_dev = ld!(sb, SUPER_BLOCK__S_DEV, u32);
    r.s_magic = ld!(sb, SUPER_BLOCK__S_MAGIC, u64);
    r.path = path_pair(file + off!(FILE__F_PATH));
    // struct vfsmount is embedded in struct mount: container_of, so a
    // probe read; once per mount in a row of fds.
    if r.path[0] != s.mnt {
        s.mnt = r.path[0];
        s.mnt_id = rd!(s.mnt - off!(MOUNT__MNT), MOUNT__MNT_ID, i32);
        // memfd files live on the kernel's internal shm mount; a tmpfs
        // file named "memfd:x" in /dev/shm does not.
        s.internal = (rd!(s.mnt - off!(MOUNT__MNT), MOUNT__MNT_NS, u64) == MNT_NS_INTERNAL) as u32;
    }
    let r = &mut s.rec;
    r.mnt_id = s.mnt_id;
    let m = r.s_magic;
    let shmem = m == TMPFS_MAGIC || m == HUGETLBFS_MAGIC;
    if shmem {
        r.internal_mount = s.internal as u16;
    }
    // The name says what an anonymous inode or a socket is, and names a
    // memfd; other files do not need it.
    if shmem || m == ANON_INODE_FS_MAGIC || m == SOCKFS_MAGIC {
        // From the register, not the record: what was stored in the map is
        // a plain number to the verifier, no longer a typed pointer.
        let dentry = ld!(file + off!(FILE__F_PATH), PATH__DENTRY, u64);
        let name = ld!(dentry + off!(DENTRY__D_NAME), QSTR__NAME, u64);
        read_str(name, &mut r.name);
    }
    unsafe {
        emit(
            ctx,
            r as *const FileRecord as *const c_void,
            core::mem::size_of::<FileRecord>(),
        )
    };
}

#[no_mangle]
#[link_section = "iter/task_vma"]
pub fn dumper_task_vma(ctx: *mut c_void) -> i32 {
    unsafe { task_vma(ctx) };
    0
}

#[inline(always)]
unsafe fn task_vma(ctx: *const c_void) {
    let t = unsafe { ctx_ptr(ctx, off!(BPF_ITER__TASK_VMA__TASK)) };
    let vma = unsafe { ctx_ptr(ctx, off!(BPF_ITER__TASK_VMA__VMA)) };
    if t == 0 || vma == 0 {
        return;
    }
    let Some(s) = VMA_BUF.get_ptr_mut(0) else {
        return;
    };
    let s = unsafe { &mut *s };
    s.task.at(ctx, t);
    let session = s.task.session;
    if s.task.selected == 0 {
        return;
    }
    let r = &mut s.rec;
    zero(r);
    r.hdr = RecordHeader::new(KIND_VMA, core::mem::size_of::<VmaRecord>());
    r.tgid = s.task.tgid;
    r.pid = s.task.pid;
    r.start = ld!(vma, VM_AREA_STRUCT__VM_START, u64);
    r.end = ld!(vma, VM_AREA_STRUCT__VM_END, u64);
    r.flags = ld!(vma, VM_AREA_STRUCT__VM_FLAGS, u64);
    r.pgoff = ld!(vma, VM_AREA_STRUCT__VM_PGOFF, u64);
    let file = ld!(vma, VM_AREA_STRUCT__VM_FILE, u64);
    let name_words = r.name.as_mut_ptr() as *mut u64;
    if file != 0 && s.file == file && s.file_session == session {
        r.ino = s.file_ino;
        r.s_dev = s.file_dev;
        r.internal_mount = s.file_internal;
        r.path = s.file_path;
        copy_words(name_words, s.file_name.as_ptr(), NAME_WORDS);
    } else if file != 0 {
        let inode = ld!(file, FILE__F_INODE, u64);
        r.ino = ld!(inode, INODE__I_INO, u64);
        let sb = ld!(inode, INODE__I_SB, u64);
        r.s_dev = ld!(sb, SUPER_BLOCK__S_DEV, u32);
        r.path = path_pair(file + off!(FILE__F_PATH));
        // memfd and shared anonymous memory: their path is "/" + the dentry
        // name + " (deleted)", spelled by userspace without a readlink.
        let magic = ld!(sb, SUPER_BLOCK__S_MAGIC, u64);
        if (magic == TMPFS_MAGIC || magic == HUGETLBFS_MAGIC)
            && rd!(r.path[0] - off!(MOUNT__MNT), MOUNT__MNT_NS, u64) == MNT_NS_INTERNAL
        {
            r.internal_mount = 1;
            let dentry = ld!(file + off!(FILE__F_PATH), PATH__DENTRY, u64);
            let name = ld!(dentry + off!(DENTRY__D_NAME), QSTR__NAME, u64);
            read_str(name, &mut r.name);
        }
        s.file_session = session;
        s.file = file;
        s.file_ino = r.ino;
        s.file_dev = r.s_dev;
        s.file_internal = r.internal_mount;
        s.file_path = r.path;
        copy_words(s.file_name.as_mut_ptr(), name_words, NAME_WORDS);
    } else {
        // /proc/PID/maps names a file-less mapping by vm_ops->name; the only
        // such ops are the special mappings, whose name is in private data.
        let ops = ld!(vma, VM_AREA_STRUCT__VM_OPS, u64);
        if ops != 0 && ld!(ops, VM_OPERATIONS_STRUCT__NAME, u64) != 0 {
            let sm = ld!(vma, VM_AREA_STRUCT__VM_PRIVATE_DATA, u64);
            let name = rd!(sm, VM_SPECIAL_MAPPING__NAME, u64);
            read_str(name, &mut r.name);
        }
    }
    unsafe {
        emit(
            ctx,
            r as *const VmaRecord as *const c_void,
            core::mem::size_of::<VmaRecord>(),
        )
    };
}

// The floor for the benchmark (`bpf-null`): the same three walks with
// programs that emit nothing, so a stream costs only the kernel's iteration.

#[no_mangle]
#[link_section = "iter/task"]
pub fn dumper_null_task(_ctx: *mut c_void) -> i32 {
    0
}

#[no_mangle]
#[link_section = "iter/task_file"]
pub fn dumper_null_task_file(_ctx: *mut c_void) -> i32 {
    0
}

#[no_mangle]
#[link_section = "iter/task_vma"]
pub fn dumper_null_task_vma(_ctx: *mut c_void) -> i32 {
    0
}

/// The thread whose system calls [`dumper_count_syscalls`] counts.
#[map]
static COUNT_TID: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static SYSCALLS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Counts the system calls of one thread (raw_syscalls:sys_enter), for the
/// benchmark's "system calls per collection": counted, not estimated.
#[no_mangle]
#[link_section = "raw_tracepoint/sys_enter"]
pub fn dumper_count_syscalls(_ctx: *mut c_void) -> i32 {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    if COUNT_TID.get(0).is_some_and(|&t| t == tid && t != 0) {
        if let Some(n) = SYSCALLS.get_ptr_mut(0) {
            unsafe { *n += 1 };
        }
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
