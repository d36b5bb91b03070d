//! `cargo xtask kernel build|test`: the batch(2) series in kernel-patches/
//! on Debian's linux-source-6.12, built with ccache and booted in QEMU.
//!
//! Everything lives under target/kernel/: `linux/` (the source as a git
//! tree: the package's contents committed as `base`, the series applied on
//! top with git am), `build/` (O= build dir), `ccache/`, `initramfs/` and
//! the guest's results. Each step is skipped when its inputs are unchanged.

use crate::{have, output, root, run};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SOURCE_PKG: &str = "linux-source-6.12";
const TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
/// What the series was written on and its cover letter names.
const BASE: &str = "6.12.118";

/// Debian packages: (a file that tells it is installed, package).
const PACKAGES: &[(&str, &str)] = &[
    (TARBALL, SOURCE_PKG),
    ("/usr/bin/gcc", "build-essential"),
    ("/usr/bin/bc", "bc"),
    ("/usr/bin/bison", "bison"),
    ("/usr/bin/flex", "flex"),
    ("/usr/include/libelf.h", "libelf-dev"),
    ("/usr/include/openssl/ssl.h", "libssl-dev"),
    ("/usr/bin/pahole", "dwarves"),
    ("/usr/bin/cpio", "cpio"),
    ("/usr/bin/rsync", "rsync"),
    ("/usr/bin/ccache", "ccache"),
    ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    ("/bin/busybox", "busybox-static"),
];

fn dir() -> PathBuf {
    root().join("target/kernel")
}

fn src() -> PathBuf {
    dir().join("linux")
}

fn build_dir() -> PathBuf {
    dir().join("build")
}

fn patches_dir() -> PathBuf {
    root().join("kernel-patches")
}

/// The series' patches in order (the cover letter is not one).
fn patches() -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(patches_dir())
        .context("kernel-patches/")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.ends_with(".patch") && !n.starts_with("0000-")
        })
        .collect();
    v.sort();
    if v.is_empty() {
        bail!("kernel-patches/ holds no patches");
    }
    Ok(v)
}

/// A digest of files' contents: the stamp that tells a step is current.
fn digest(files: &[PathBuf]) -> Result<String> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        let bytes = std::fs::read(f).with_context(|| f.display().to_string())?;
        for b in f
            .file_name()
            .unwrap()
            .as_encoded_bytes()
            .iter()
            .chain(&bytes)
        {
            h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    Ok(format!("{h:016x}"))
}

fn stamp_is(path: &Path, value: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.trim() == value)
}

fn install_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(f, _)| !Path::new(f).exists())
        .map(|(_, p)| *p)
        .collect();
    crate::apt_install(&missing)
}

fn git(args: &[&str]) -> Command {
    let mut c = Command::new("git");
    c.current_dir(src())
        .args([
            "-c",
            "user.name=dumper xtask",
            "-c",
            "user.email=xtask@dumper.invalid",
        ])
        .args(args);
    c
}

/// The package's tree, committed as `base`, once.
fn unpack() -> Result<()> {
    if src().join(".git").exists() {
        return Ok(());
    }
    let tmp = dir().join("unpack");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    eprintln!("unpacking {TARBALL}");
    run(Command::new("tar")
        .arg("xf")
        .arg(TARBALL)
        .arg("-C")
        .arg(&tmp))?;
    let top = tmp.join(SOURCE_PKG);
    let version = output(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&top)
            .arg("kernelversion"),
    )?;
    if version.trim() != BASE {
        eprintln!(
            "note: {SOURCE_PKG} now holds Linux {}, the series was written on {BASE}",
            version.trim()
        );
    }
    std::fs::rename(&top, src())?;
    let _ = std::fs::remove_dir_all(&tmp);
    run(&mut git(&["init", "-q"]))?;
    // Debian's top-level .gitignore ignores everything: -f.
    run(&mut git(&["add", "-f", "-A", "."]))?;
    let msg = format!("Linux {} ({SOURCE_PKG})", version.trim());
    run(&mut git(&["commit", "-q", "-m", &msg]))?;
    run(&mut git(&["tag", "base"]))
}

/// `git patch-id --stable` of each patch in `input` (patches or `git log
/// -p` output), in order: equal ids, equal changes.
fn patch_ids(input: &[u8]) -> Result<Vec<String>> {
    let mut c = git(&["patch-id", "--stable"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = c.spawn().context("git patch-id")?;
    child.stdin.take().unwrap().write_all(input)?;
    let o = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// The series on top of `base`, unless that is what the tree holds (so
/// that an unchanged series touches no file and make rebuilds nothing).
fn apply(patches: &[PathBuf]) -> Result<bool> {
    let mut series = vec![];
    for p in patches {
        series.extend(std::fs::read(p)?);
    }
    let want = patch_ids(&series)?;
    let log = git(&["log", "-p", "--reverse", "--format=commit %H", "base..HEAD"]).output()?;
    let clean = git(&["status", "--porcelain", "--untracked-files=no"]).output()?;
    if clean.stdout.is_empty() && patch_ids(&log.stdout)? == want {
        return Ok(false);
    }
    let _ = git(&["am", "--abort"]).stderr(Stdio::null()).status();
    run(&mut git(&["reset", "-q", "--hard", "base"]))?;
    let mut am = git(&["am", "-q", "--3way"]);
    am.args(patches);
    let o = am.output().context("git am")?;
    if !o.status.success() {
        let _ = git(&["am", "--abort"]).status();
        bail!(
            "the series in kernel-patches/ does not apply to the tree of {SOURCE_PKG}: {}\nrebase it on that tree (target/kernel/linux, tag base)",
            String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("git am failed")
        );
    }
    Ok(true)
}

/// tinyconfig plus the fragment, each of whose options must hold.
fn configure() -> Result<()> {
    let fragment = patches_dir().join("guest.config");
    let stamp = dir().join("config.stamp");
    let want = digest(std::slice::from_ref(&fragment))?;
    let config = build_dir().join(".config");
    if config.exists() && stamp_is(&stamp, &want) {
        return Ok(());
    }
    std::fs::create_dir_all(build_dir())?;
    let make = |target: &str| {
        let mut c = Command::new("make");
        c.current_dir(src())
            .arg("O=../build")
            .arg(target)
            .stdout(Stdio::null());
        c
    };
    run(&mut make("tinyconfig"))?;
    run(Command::new("scripts/kconfig/merge_config.sh")
        .current_dir(src())
        .args(["-m", "-O", "../build", "../build/.config"])
        .arg(&fragment)
        .stdout(Stdio::null()))?;
    run(&mut make("olddefconfig"))?;
    // olddefconfig drops options whose dependencies are missing.
    let got = std::fs::read_to_string(&config)?;
    let text = std::fs::read_to_string(&fragment)?;
    let lost: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("CONFIG_") || l.starts_with("# CONFIG_"))
        .filter(|l| !got.lines().any(|g| g == *l))
        .collect();
    if !lost.is_empty() {
        bail!(
            "kernel-patches/guest.config: olddefconfig did not keep {}",
            lost.join(", ")
        );
    }
    std::fs::write(&stamp, want)?;
    Ok(())
}

fn jobs() -> String {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string()
}

/// `cargo xtask kernel build`.
pub fn build() -> Result<()> {
    let t0 = Instant::now();
    install_packages()?;
    std::fs::create_dir_all(dir())?;
    unpack()?;
    let patches = patches()?;
    if apply(&patches)? {
        eprintln!("applied {} patches on base", patches.len());
    }
    configure()?;
    let ccache = dir().join("ccache");
    run(Command::new("make")
        .current_dir(src())
        .env("CCACHE_DIR", &ccache)
        .args(["O=../build", "CC=ccache gcc", "-s", "-j"])
        .arg(jobs())
        .args(["bzImage", "headers"]))?;
    // The selftest, static, against the series' own uapi headers.
    let test = src().join("tools/testing/selftests/batch/batch_test.c");
    let bin = build_dir().join("batch_test");
    let fresh = |out: &Path, input: &Path| -> bool {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        matches!((m(out), m(input)), (Some(o), Some(i)) if o >= i)
    };
    if !fresh(&bin, &test) || !fresh(&bin, &build_dir().join("usr/include/linux/batch.h")) {
        run(Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-Werror", "-isystem"])
            .arg(build_dir().join("usr/include"))
            .arg(&test)
            .arg("-o")
            .arg(&bin))?;
    }
    eprintln!(
        "kernel: {} ({:.0} s); selftest: {}",
        build_dir().join("arch/x86/boot/bzImage").display(),
        t0.elapsed().as_secs_f64(),
        bin.display()
    );
    Ok(())
}

/// The guest's /init: the selftest, `dumper compare` on the sample tree
/// with all three collectors, the guest bench; each step's exit status on
/// a line of its own for the host to read.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# The sample tree listens on loopback.
ifconfig lo 127.0.0.1 up
echo "GUEST-KERNEL $(uname -r)"
/batch_test
echo "GUEST-STEP selftest rc=$?"
mkfifo /tmp/hold
/dumper sample < /tmp/hold > /tmp/sample.json &
exec 3> /tmp/hold
for i in $(seq 100); do [ -s /tmp/sample.json ] && break; sleep 0.2; done
root=$(sed -n 's/^{"root":\([0-9]*\),.*/\1/p' /tmp/sample.json)
/dumper compare -t "$root" --collect proc,bpf,batch
echo "GUEST-STEP compare rc=$?"
exec 3>&-
/dumper-bench guest
echo "GUEST-STEP bench rc=$?"
poweroff -f
"#;

/// Shared libraries of `bin` (ldd), to copy into the initramfs.
fn libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let text = output(Command::new("ldd").arg(bin))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let p = l.split("=>").last()?.split_whitespace().next()?;
            p.starts_with('/').then(|| PathBuf::from(p))
        })
        .collect())
}

fn initramfs(dumper: &Path, bench: &Path) -> Result<PathBuf> {
    let d = dir().join("initramfs");
    let _ = std::fs::remove_dir_all(&d);
    for sub in ["bin", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(d.join(sub))?;
    }
    std::fs::copy("/bin/busybox", d.join("bin/busybox"))?;
    std::fs::copy(build_dir().join("batch_test"), d.join("batch_test"))?;
    std::fs::copy(dumper, d.join("dumper"))?;
    std::fs::copy(bench, d.join("dumper-bench"))?;
    let mut all = libs(dumper)?;
    all.extend(libs(bench)?);
    all.sort();
    all.dedup();
    for l in all {
        let to = d.join(l.strip_prefix("/")?);
        std::fs::create_dir_all(to.parent().unwrap())?;
        std::fs::copy(&l, &to).with_context(|| l.display().to_string())?;
    }
    let init = d.join("init");
    std::fs::write(&init, INIT)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    let img = dir().join("initrd.gz");
    run(Command::new("sh").current_dir(&d).arg("-c").arg(format!(
        "find . -print0 | cpio --null -o -H newc --quiet | gzip -1 > {}",
        img.display()
    )))?;
    Ok(img)
}

/// `cargo xtask kernel test`.
pub fn test() -> Result<()> {
    build()?;
    crate::setup()?;
    // dumper with its eBPF objects for the guest kernel's BTF, in a target
    // dir of its own so that the host build stays as it is.
    let guest_target = root().join("target/guest");
    run(crate::cargo()
        .args([
            "build",
            "--release",
            "-p",
            "dumper",
            "-p",
            "dumper-bench",
            "--target-dir",
        ])
        .arg(&guest_target)
        .env("DUMPER_BTF", build_dir().join("vmlinux")))?;
    let rel = guest_target.join("release");
    let img = initramfs(&rel.join("dumper"), &rel.join("dumper-bench"))?;
    if !have("qemu-system-x86_64") {
        bail!("qemu-system-x86_64 is missing: apt-get install qemu-system-x86");
    }
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "2G",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(build_dir().join("arch/x86/boot/bzImage"))
    .arg("-initrd")
    .arg(&img)
    .args(["-append", "console=ttyS0 panic=-1 quiet"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    eprintln!("+ {qemu:?}");
    let t0 = Instant::now();
    let mut child = qemu.spawn().context("starting qemu-system-x86_64")?;
    let out = child.stdout.take().unwrap();
    // A guest that hangs is killed: the whole run takes minutes.
    let pid = child.id();
    let limit = Duration::from_secs(40 * 60);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        // SAFETY: kill of a pid we spawned.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let log_path = dir().join("guest.log");
    let mut log = std::fs::File::create(&log_path)?;
    let mut steps: Vec<(String, i32)> = vec![];
    let mut bench_json = None;
    let mut table = String::new();
    let mut in_table = false;
    for line in BufReader::new(out).lines() {
        let line = line?;
        let line = line.trim_end_matches('\r').to_string();
        writeln!(log, "{line}")?;
        if let Some(json) = line.strip_prefix("GUEST-BENCH-JSON ") {
            bench_json = Some(json.to_string());
            continue;
        }
        println!("{line}");
        if let Some(rest) = line.strip_prefix("GUEST-STEP ") {
            if let Some((name, rc)) = rest.split_once(" rc=") {
                steps.push((name.to_string(), rc.trim().parse().unwrap_or(-1)));
            }
        }
        match line.as_str() {
            "GUEST-BENCH-BEGIN" => in_table = true,
            "GUEST-BENCH-END" => in_table = false,
            _ if in_table => {
                table.push_str(&line);
                table.push('\n');
            }
            _ => {}
        }
    }
    let st = child.wait()?;
    eprintln!(
        "guest ran {:.0} s ({st}); its console is in {}",
        t0.elapsed().as_secs_f64(),
        log_path.display()
    );
    if let Some(j) = &bench_json {
        std::fs::write(dir().join("guest-bench.json"), j)?;
        std::fs::write(dir().join("guest-bench.md"), &table)?;
    }
    let want = ["selftest", "compare", "bench"];
    let mut failed = vec![];
    for w in want {
        match steps.iter().find(|(n, _)| n == w) {
            Some((_, 0)) => {}
            Some((_, rc)) => failed.push(format!("{w} exited {rc}")),
            None => failed.push(format!("{w} did not finish")),
        }
    }
    println!("\nguest results:");
    for (n, rc) in &steps {
        println!(
            "  {n}: {}",
            if *rc == 0 {
                "ok".to_string()
            } else {
                format!("FAILED (exit {rc})")
            }
        );
    }
    if !failed.is_empty() {
        bail!(
            "in the guest: {} (console: {})",
            failed.join(", "),
            log_path.display()
        );
    }
    println!("bench table: {}", dir().join("guest-bench.md").display());
    Ok(())
}
