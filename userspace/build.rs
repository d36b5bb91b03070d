//! Builds the eBPF iterator programs for the kernel whose BTF is named by
//! `DUMPER_BTF` (default: the running kernel's /sys/kernel/btf/vmlinux; a
//! vmlinux ELF, e.g. a QEMU guest's, works too), and embeds the object.
//!
//! Steps: read the BTF, resolve the kernel struct offsets the programs use
//! into `kernel_offsets.rs`, build `ebpf/` with the nightly toolchain and
//! bpf-linker, and record the BTF digest both in the object (a section the
//! loader checks) and in `build_info.rs`.

#[path = "build/btf.rs"]
mod btf;

use std::{env, fmt::Write as _, fs, path::PathBuf, process::Command};

/// (struct, dotted member path): every kernel field the programs read.
const FIELDS: &[(&str, &str)] = &[
    ("task_struct", "pid"),
    ("task_struct", "tgid"),
    ("task_struct", "real_parent"),
    ("task_struct", "signal"),
    ("task_struct", "sighand"),
    ("task_struct", "real_cred"),
    ("task_struct", "__state"),
    ("task_struct", "exit_state"),
    ("task_struct", "exit_signal"),
    ("task_struct", "static_prio"),
    ("task_struct", "comm"),
    ("task_struct", "blocked"),
    ("task_struct", "saved_sigmask"),
    ("task_struct", "mm"),
    ("task_struct", "fs"),
    ("task_struct", "files"),
    ("task_struct", "flags"),
    ("task_struct", "pending.signal"),
    ("task_struct", "sas_ss_sp"),
    ("task_struct", "sas_ss_size"),
    ("task_struct", "sas_ss_flags"),
    ("task_struct", "personality"),
    ("task_struct", "rseq"),
    ("task_struct", "rseq_len"),
    ("task_struct", "rseq_sig"),
    ("task_struct", "exit_code"),
    ("task_struct", "clear_child_tid"),
    ("signal_struct", "shared_pending.signal"),
    ("signal_struct", "rlim"),
    ("signal_struct", "pids"),
    ("pid", "numbers"),
    ("upid", "nr"),
    ("sighand_struct", "action"),
    ("k_sigaction", "sa.sa_handler"),
    ("k_sigaction", "sa.sa_flags"),
    ("k_sigaction", "sa.sa_restorer"),
    ("k_sigaction", "sa.sa_mask"),
    ("cred", "uid"),
    ("cred", "euid"),
    ("cred", "suid"),
    ("cred", "fsuid"),
    ("cred", "gid"),
    ("cred", "egid"),
    ("cred", "sgid"),
    ("cred", "fsgid"),
    ("cred", "cap_inheritable"),
    ("cred", "cap_permitted"),
    ("cred", "cap_effective"),
    ("cred", "cap_bset"),
    ("cred", "cap_ambient"),
    ("cred", "group_info"),
    ("group_info", "ngroups"),
    ("group_info", "gid"),
    ("mm_struct", "start_code"),
    ("mm_struct", "end_code"),
    ("mm_struct", "start_data"),
    ("mm_struct", "end_data"),
    ("mm_struct", "arg_start"),
    ("mm_struct", "arg_end"),
    ("mm_struct", "env_start"),
    ("mm_struct", "env_end"),
    ("mm_struct", "saved_auxv"),
    ("mm_struct", "start_brk"),
    ("mm_struct", "brk"),
    ("mm_struct", "start_stack"),
    ("mm_struct", "exe_file"),
    ("fs_struct", "pwd"),
    ("fs_struct", "root"),
    ("path", "mnt"),
    ("path", "dentry"),
    ("file", "f_flags"),
    ("file", "f_pos"),
    ("file", "f_inode"),
    ("file", "f_path"),
    ("inode", "i_mode"),
    ("inode", "i_ino"),
    ("inode", "i_sb"),
    ("inode", "i_rdev"),
    ("super_block", "s_dev"),
    ("super_block", "s_magic"),
    ("dentry", "d_name"),
    ("qstr", "name"),
    ("mount", "mnt"),
    ("mount", "mnt_id"),
    ("mount", "mnt_ns"),
    ("files_struct", "fdt"),
    ("fdtable", "close_on_exec"),
    ("vm_area_struct", "vm_start"),
    ("vm_area_struct", "vm_end"),
    ("vm_area_struct", "vm_flags"),
    ("vm_area_struct", "vm_pgoff"),
    ("vm_area_struct", "vm_file"),
    ("vm_area_struct", "vm_ops"),
    ("vm_area_struct", "vm_private_data"),
    ("vm_operations_struct", "name"),
    ("vm_special_mapping", "name"),
    ("bpf_iter_meta", "seq"),
    ("bpf_iter_meta", "session_id"),
    ("bpf_iter__task", "task"),
    ("bpf_iter__task_file", "task"),
    ("bpf_iter__task_file", "fd"),
    ("bpf_iter__task_file", "file"),
    ("bpf_iter__task_vma", "task"),
    ("bpf_iter__task_vma", "vma"),
];
/// (struct, member): one-bit bitfields the programs test.
const FLAG_BITS: &[(&str, &str)] = &[
    ("task_struct", "restore_sigmask"),
    ("signal_struct", "is_child_subreaper"),
];
const SIZES: &[&str] = &["k_sigaction"];
const ENUMS: &[&str] = &["PIDTYPE_PGID", "PIDTYPE_SID"];

fn const_name(s: &str, path: &str) -> String {
    format!("{s}__{path}").replace('.', "__").to_uppercase()
}

fn read_btf(path: &str) -> Result<Vec<u8>, String> {
    let data = fs::read(path).map_err(|e| format!("cannot read BTF {path}: {e}"))?;
    if !data.starts_with(b"\x7fELF") {
        return Ok(data);
    }
    use object::{Object, ObjectSection};
    let elf = object::File::parse(&*data).map_err(|e| format!("{path}: {e}"))?;
    let sec = elf.section_by_name(".BTF").ok_or_else(|| {
        format!("{path} has no .BTF section (build it with CONFIG_DEBUG_INFO_BTF=y)")
    })?;
    Ok(sec.data().map_err(|e| format!("{path}: {e}"))?.to_vec())
}

fn generate(btf_path: &str, out: &std::path::Path) -> Result<u64, String> {
    let raw = read_btf(btf_path)?;
    let digest = xxhash_rust::xxh3::xxh3_64(&raw);
    let btf = btf::Btf::parse(&raw).map_err(|e| format!("{btf_path}: {e}"))?;
    let mut s = format!(
        "// Generated by userspace/build.rs from {btf_path}; do not edit.\n\
         pub const BTF_DIGEST: u64 = {digest:#018x};\n"
    );
    for (st, path) in FIELDS {
        let (off, size) = btf
            .field(st, path)
            .map_err(|e| format!("{btf_path}: {e}"))?;
        let n = const_name(st, path);
        // (byte offset, byte size): the programs check the size against
        // the Rust type they read, at compile time.
        writeln!(s, "pub const {n}: (u64, usize) = ({off}, {size});").unwrap();
    }
    for (st, name) in FLAG_BITS {
        let (byte, mask) = btf
            .flag_bit(st, name)
            .map_err(|e| format!("{btf_path}: {e}"))?;
        // (byte offset, mask of the bit in that byte).
        let n = const_name(st, name);
        writeln!(s, "pub const {n}: (u64, u8) = ({byte}, {mask:#04x});").unwrap();
    }
    for st in SIZES {
        let size = btf.struct_size(st)?;
        writeln!(s, "pub const {}_SIZE: u64 = {size};", st.to_uppercase()).unwrap();
    }
    for e in ENUMS {
        writeln!(s, "pub const {e}: u64 = {};", btf.enum_value(e)?).unwrap();
    }
    fs::write(out.join("kernel_offsets.rs"), s).map_err(|e| e.to_string())?;
    Ok(digest)
}

/// The channel pinned in ebpf/rust-toolchain.toml (xtask reads the same).
fn ebpf_toolchain(root: &std::path::Path) -> Result<String, String> {
    let path = root.join("ebpf/rust-toolchain.toml");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .find_map(|l| {
            let v = l
                .trim()
                .strip_prefix("channel")?
                .trim()
                .strip_prefix('=')?
                .trim();
            Some(v.strip_prefix('"')?.strip_suffix('"')?.to_string())
        })
        .ok_or_else(|| format!("no channel = \"...\" in {}", path.display()))
}

fn fail(msg: &str) -> ! {
    // One readable line instead of a build-script backtrace.
    eprintln!("error: {msg}");
    println!("cargo::error={msg}");
    std::process::exit(1);
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let btf_path = env::var("DUMPER_BTF").unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".into());
    println!("cargo::rerun-if-env-changed=DUMPER_BTF");
    println!("cargo::rerun-if-changed={btf_path}");
    for dir in [
        "ebpf/src",
        "ebpf/Cargo.toml",
        "ebpf/Cargo.lock",
        "common/src",
    ] {
        println!("cargo::rerun-if-changed={}", root.join(dir).display());
    }

    let digest = generate(&btf_path, &out).unwrap_or_else(|e| fail(&e));

    let ebpf_target = out.join("ebpf-target");
    let home = env::var("HOME").unwrap_or_default();
    let path = format!("{home}/.cargo/bin:{}", env::var("PATH").unwrap_or_default());
    let toolchain = ebpf_toolchain(&root).unwrap_or_else(|e| fail(&e));
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root.join("ebpf"))
        .args(["run", &toolchain, "cargo", "build", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&ebpf_target)
        .env("PATH", path)
        .env("DUMPER_KERNEL_OFFSETS", out.join("kernel_offsets.rs"));
    // The outer cargo's settings are for the host build; the nested one
    // must not inherit them.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTUP_TOOLCHAIN",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(_) => fail(&format!("building the eBPF programs with {toolchain} failed (see above); if that toolchain, its rust-src or bpf-linker is missing, run `cargo xtask setup`")),
        Err(e) => fail(&format!("cannot run rustup to build the eBPF programs ({e}); run `cargo xtask setup`")),
    }
    let obj = ebpf_target.join("bpfel-unknown-none/release/dumper-ebpf");
    let dest = out.join("dumper.bpf.o");
    fs::copy(&obj, &dest).unwrap_or_else(|e| fail(&format!("{}: {e}", obj.display())));
    fs::write(
        out.join("build_info.rs"),
        format!(
            "/// Digest (xxh3-64) of the BTF the embedded eBPF object was built for.\n\
             pub const BTF_DIGEST: u64 = {digest:#018x};\n\
             /// Where that BTF was read from at build time.\n\
             pub const BTF_PATH: &str = {btf_path:?};\n"
        ),
    )
    .unwrap();
}
