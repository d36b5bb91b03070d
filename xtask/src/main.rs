//! Developer workflows: `cargo xtask <setup|build-ebpf|test|demo|bench|fuzz|kernel>`.
//!
//! Every command that needs the eBPF toolchain runs `setup` first, so the
//! README's two commands work on a fresh machine with nothing installed by
//! hand.

use anyhow::{bail, ensure, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod kernel;

/// bpf-linker release built by setup (features select the LLVM major).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The toolchain that builds ebpf/: the channel pinned in
/// ebpf/rust-toolchain.toml, the one place that names it.
fn ebpf_toolchain() -> Result<String> {
    let path = root().join("ebpf/rust-toolchain.toml");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("channel")?
                .trim()
                .strip_prefix('=')?
                .trim()
                .strip_prefix('"')?
                .strip_suffix('"')
                .map(str::to_string)
        })
        .with_context(|| format!("no channel = \"...\" in {}", path.display()))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn data_dir() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".local/share/dumper")
}

fn cargo_bin() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cargo/bin")
}

/// Debian packages: a C toolchain (bpf-linker's build, -sys crates) and
/// util-linux's setpriv (the privilege tests).
fn setup_apt() -> Result<()> {
    let missing: Vec<&str> = [("cc", "build-essential"), ("setpriv", "util-linux")]
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    apt_install(&missing)
}

/// apt-get install of `missing` (after an update), if any.
fn apt_install(missing: &[&str]) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(missing))
}

fn setup_rustup() -> Result<()> {
    let tc = ebpf_toolchain()?;
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with(&tc)) {
        run(Command::new("rustup").args(["toolchain", "install", &tc, "--profile", "minimal"]))?;
    }
    run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "rustfmt",
        "clippy",
        "--toolchain",
        &tc,
    ]))?;
    run(Command::new("rustup")
        .args(["component", "add", "rustfmt", "clippy"])
        .current_dir(root()))
}

/// bpf-linker must be built against the nightly's own LLVM (there is no
/// system LLVM >= 21 here): a prefix whose lib/ links to the sysroot's
/// libLLVM, and the llvm-NN feature for its major version. A stamp records
/// which nightly it was built for; a nightly update rebuilds it.
fn setup_bpf_linker() -> Result<()> {
    let tc = ebpf_toolchain()?;
    let vv = output(Command::new("rustc").arg(format!("+{tc}")).arg("-vV"))?;
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc -vV shows no LLVM version")?;
    let major = llvm.split('.').next().unwrap_or_default();
    let stamp = data_dir().join("bpf-linker.stamp");
    let want = format!("{BPF_LINKER_VERSION} {vv}");
    let linker = cargo_bin().join("bpf-linker");
    let works = Command::new(&linker)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works && std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }
    let sysroot = output(
        Command::new("rustc")
            .arg(format!("+{tc}"))
            .args(["--print", "sysroot"]),
    )?;
    let syslib = Path::new(sysroot.trim()).join("lib");
    let prefix = data_dir().join("llvm-prefix");
    let lib = prefix.join("lib");
    let _ = std::fs::remove_dir_all(&prefix);
    std::fs::create_dir_all(&lib)?;
    let mut versioned = None;
    for e in std::fs::read_dir(&syslib)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM") && name.contains(".so") {
            std::os::unix::fs::symlink(e.path(), lib.join(&name))?;
            if name.starts_with("libLLVM.so.") {
                versioned = Some(e.path());
            }
        }
    }
    let versioned =
        versioned.with_context(|| format!("no libLLVM.so.* in {}", syslib.display()))?;
    std::os::unix::fs::symlink(&versioned, lib.join("libLLVM.so"))?;
    eprintln!("building bpf-linker {BPF_LINKER_VERSION} against the {tc} toolchain's LLVM {llvm} (about a minute)");
    run(Command::new("cargo")
        .arg(format!("+{tc}"))
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTUP_TOOLCHAIN"))?;
    std::fs::create_dir_all(data_dir())?;
    std::fs::write(stamp, want)?;
    Ok(())
}

fn setup() -> Result<()> {
    setup_apt()?;
    setup_rustup()?;
    setup_bpf_linker()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn build_ebpf(args: &[String]) -> Result<()> {
    let mut btf = None;
    let mut release = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--btf" => {
                btf = Some(
                    it.next()
                        .context("--btf needs a path (a BTF blob or a vmlinux with .BTF)")?,
                )
            }
            "--debug" => release = false,
            other => bail!("build-ebpf: unknown argument {other:?} (takes --btf PATH, --debug)"),
        }
    }
    setup()?;
    let mut c = cargo();
    c.args(["build", "-p", "dumper"]);
    if release {
        c.arg("--release");
    }
    if let Some(b) = btf {
        let b = std::fs::canonicalize(b).with_context(|| format!("BTF {b}"))?;
        c.env("DUMPER_BTF", b);
    }
    run(&mut c)?;
    let dir = if release { "release" } else { "debug" };
    eprintln!(
        "built {}/target/{dir}/dumper with the eBPF programs embedded",
        root().display()
    );
    Ok(())
}

fn test() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the suite collects real processes with ptrace, kcmp and BPF: run it as root (sudo -E cargo xtask test)");
    }
    setup()?;
    let tc = ebpf_toolchain()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(Command::new("cargo")
        .arg(format!("+{tc}"))
        .args(["fmt", "--check"])
        .current_dir(root().join("ebpf"))
        .env_remove("RUSTUP_TOOLCHAIN"))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crate needs the offsets the userspace build generated.
    let offsets = newest(
        &root().join("target/debug/build"),
        "dumper-",
        "out/kernel_offsets.rs",
    )
    .context("no kernel_offsets.rs under target/debug/build after building dumper")?;
    run(Command::new("cargo")
        .arg(format!("+{tc}"))
        .args(["clippy", "--release", "--target-dir"])
        .arg(root().join("target/ebpf-clippy"))
        .args(["--", "-D", "warnings"])
        .current_dir(root().join("ebpf"))
        .env("DUMPER_KERNEL_OFFSETS", offsets)
        .env(
            "PATH",
            format!(
                "{}:{}",
                cargo_bin().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("RUSTUP_TOOLCHAIN"))?;
    cargo_test()
}

/// The most recently written `DIR/PREFIX*/FILE`.
fn newest(dir: &Path, prefix: &str, file: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path().join(file))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
}

/// `cargo test --workspace`, passing its output through and closing with
/// one total line: cargo's own last line is a doc-test run of 0 tests.
fn cargo_test() -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["test", "--workspace"]).stdout(Stdio::piped());
    eprintln!("+ {cmd:?}");
    let mut child = cmd.spawn().context("cannot run cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |what: &str| {
                rest.split(';')
                    .find_map(|p| {
                        p.trim()
                            .strip_suffix(what)?
                            .trim()
                            .rsplit(' ')
                            .next()?
                            .parse::<u64>()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
            ignored += count("ignored");
        }
    }
    let st = child.wait()?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !st.success() {
        bail!("cargo test failed ({st})");
    }
    Ok(())
}

/// `cargo xtask bench [--quick] [--out DIR]`: every collector side by side
/// (bench/), then a check that the results folder is complete.
fn bench(args: &[String]) -> Result<()> {
    let mut quick = false;
    let mut out = root().join("target/bench");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = PathBuf::from(it.next().context("--out needs a directory")?),
            other => bail!("bench: unknown argument {other:?} (takes --quick, --out DIR)"),
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads BPF programs and reads other processes' /proc: run it as root");
    }
    setup()?;
    // dumper itself too: the restore section runs `dumper restore`.
    run(cargo().args(["build", "--release", "-p", "dumper-bench", "-p", "dumper"]))?;
    let exe = root().join("target/release/dumper-bench");
    let mut cmd = Command::new(&exe);
    cmd.arg("run").arg("--out").arg(&out);
    if quick {
        cmd.arg("--quick");
    }
    run(&mut cmd)?;
    run(Command::new(&exe).arg("check").arg(&out))
}

fn demo() -> Result<()> {
    setup()?;
    run(cargo().args(["build", "--release", "-p", "dumper"]))?;
    let dumper = root().join("target/release/dumper");
    let mut sample = Command::new(&dumper)
        .arg("sample")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the sample tree")?;
    let mut line = String::new();
    BufReader::new(sample.stdout.take().unwrap()).read_line(&mut line)?;
    let manifest: serde_json::Value = serde_json::from_str(&line).context("sample manifest")?;
    let pid = manifest["root"].to_string();
    println!("\nsample tree at pid {pid}: every fd type and mapping kind dumper models\n");
    println!("$ dumper collect -t {pid} --collect bpf");
    let r1 = run(Command::new(&dumper).args(["collect", "-t", &pid, "--collect", "bpf"]));
    println!("\n$ dumper compare -t {pid} --detail");
    let r2 = run(Command::new(&dumper).args(["compare", "-t", &pid, "--detail"]));
    let images = root().join("target/demo-images");
    let _ = std::fs::remove_dir_all(&images);
    println!(
        "\n$ dumper dump -t {pid} -D {} --verify --leave-running",
        images.display()
    );
    let r3 = run(Command::new(&dumper)
        .args(["dump", "-t", &pid, "-D"])
        .arg(&images)
        .args(["--verify", "--leave-running"]));
    println!("\n$ dumper show {} | head -20", images.display());
    let r4 = output(Command::new(&dumper).arg("show").arg(&images)).map(|text| {
        for l in text.lines().take(20) {
            println!("{l}");
        }
    });
    drop(sample.stdin.take());
    let _ = sample.kill();
    let _ = sample.wait();
    r1.and(r2).and(r3).and(r4)?;
    demo_restore(&dumper)
}

/// The whole cycle on a tree the restore brings back (the sample's
/// threads and sockets are not restored yet): two sessions, groups, a
/// zombie, every live process counting into a file. Compared, dumped
/// (which kills it), restored (which checks the stopped tree against the
/// image before it runs), and seen counting on.
fn demo_restore(dumper: &Path) -> Result<()> {
    let out = root().join("target/demo-tree");
    let images = root().join("target/demo-tree-images");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&images);
    std::fs::create_dir_all(&out)?;
    // The dump kills the tree; its orphans come here to be reaped at once
    // (init may take a second or two), so that the restore finds its pids
    // free without waiting.
    // SAFETY: prctl on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut tree = Command::new(dumper)
        .arg("workload")
        .arg("tree")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting the restore demo's tree")?;
    let pid = tree.id().to_string();
    let count = |n: &str| {
        std::fs::read_to_string(out.join(n))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let started = std::time::Instant::now();
    while ["R", "A", "B", "C", "D"].iter().any(|n| count(n) < 20) {
        if started.elapsed().as_secs() > 20 {
            let _ = tree.kill();
            bail!("the demo tree did not start counting");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pids = tree_pids(tree.id() as i32);
    println!("\nrestore cycle: a tree of two sessions, groups and a zombie at pid {pid}, each live process counting into {}/NAME\n", out.display());
    let list = pids
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let ps = || run(Command::new("ps").args(["-o", "pid,ppid,pgid,sid,stat", "-p", &list]));
    println!("$ ps -o pid,ppid,pgid,sid,stat -p {list}");
    let _ = ps();
    println!("\n$ dumper compare -t {pid}");
    let r = run(Command::new(dumper).args(["compare", "-t", &pid]));
    println!("\n$ dumper dump -t {pid} -D {}", images.display());
    let r = r.and(run(Command::new(dumper)
        .args(["dump", "-t", &pid, "-D"])
        .arg(&images)));
    let _ = tree.wait();
    let t0 = std::time::Instant::now();
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
        && t0.elapsed().as_secs() < 10
    {
        // SAFETY: reaping this process's dead children.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::__WALL | libc::WNOHANG) } > 0 {
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let counted = count("R");
    println!("\n(the tree is gone; R had counted to {counted})");
    // The dumped zombie and the tree's other processes were reparented
    // and are reaped by init; the restore waits for their pids.
    println!("\n$ dumper restore -D {} --detach", images.display());
    let r = r.and(run(Command::new(dumper)
        .args(["restore", "--detach", "-D"])
        .arg(&images)));
    std::thread::sleep(std::time::Duration::from_millis(300));
    println!("\n$ ps -o pid,ppid,pgid,sid,stat -p {list}");
    let _ = ps();
    let now = count("R");
    println!("\n(R counts on: {counted} at the dump, {now} now, no number lost or repeated)");
    let lines = std::fs::read_to_string(out.join("R")).unwrap_or_default();
    let ok = lines
        .lines()
        .enumerate()
        .all(|(i, l)| l == (i + 1).to_string());
    for p in &pids {
        // SAFETY: ending the restored demo tree.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    r?;
    ensure!(
        ok && now > counted,
        "the restored tree did not count on from where it was"
    );
    Ok(())
}

/// `root` and its descendants now, from /proc's children files.
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
    out
}

/// cargo fuzz on the image decoders, with the nightly the eBPF programs
/// build with; the seeds are fuzz/corpus/image_entries.
fn fuzz(args: &[String]) -> Result<()> {
    let secs: u64 = match args {
        [] => 60,
        [s] => s.parse().context("fuzz takes a number of seconds")?,
        _ => bail!("fuzz takes at most one argument: seconds to run (default 60)"),
    };
    setup()?;
    let tc = ebpf_toolchain()?;
    if !cargo_bin().join("cargo-fuzz").exists() {
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    run(Command::new("rustup")
        .args(["run", &tc, "cargo", "fuzz", "run", "--fuzz-dir"])
        .arg(root().join("fuzz"))
        .arg("image_entries")
        // New inputs go to a working corpus under target/; the seeds in the
        // repository (a real dump's entries) are read, not added to.
        .arg(root().join("target/fuzz-corpus"))
        .arg(root().join("fuzz/corpus/image_entries"))
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .current_dir(root()))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("build-ebpf") => build_ebpf(&args[1..]),
        Some("test") => test(),
        Some("demo") => demo(),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("kernel") => match args.get(1).map(String::as_str) {
            Some("build") => kernel::build(),
            Some("test") => kernel::test(),
            _ => bail!("usage: cargo xtask kernel build|test"),
        },
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\
                 \n  setup                 install what building needs (apt packages, rustup pieces, bpf-linker)\
                 \n  build-ebpf [--btf P]  build dumper with eBPF programs for the kernel whose BTF is P\
                 \n                        (default /sys/kernel/btf/vmlinux; a vmlinux ELF works too)\
                 \n  test                  the whole suite: fmt, clippy, unit and integration tests\
                 \n  demo                  start the sample tree and run `dumper compare` on it\
                 \n  bench [--quick] [--out DIR]\
                 \n                        every collector side by side: report, JSON, CSV, plots (default DIR target/bench)\
                 \n  fuzz [SECONDS]        cargo fuzz on the image decoders (default 60 s)\
                 \n  kernel build          the batch(2) series (kernel-patches/) on linux-source-6.12, with ccache\
                 \n  kernel test           boot it in QEMU: the selftest, dumper compare proc,bpf,batch, the guest bench"
            );
            std::process::exit(2);
        }
    }
}
