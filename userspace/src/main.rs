//! The `dumper` command line. Errors end here as one line and exit 1.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dumper::collect::{self, Collector, Target};
use dumper::compare;
use dumper::freeze::Frozen;
use dumper::model::Snapshot;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "dumper",
    version,
    about = "Checkpoint tool for Linux process trees"
)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// `dumper -t PID -D DIR [--collect=bpf|proc]`: the same as `dumper dump`.
    #[command(flatten)]
    dump: Option<DumpArgs>,
    /// Log verbosity, CRIU's numbers: 0 nothing, 1 errors, 2 warnings,
    /// 3 information, 4 every step (the default: it costs next to nothing).
    #[arg(short = 'v', global = true, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=4))]
    verbosity: Option<u8>,
    /// Log file, binary (read it with `dumper log decode FILE`). Default:
    /// DIR.log beside a dump's image directory; none for other commands.
    #[arg(short = 'o', long = "log-file", global = true, value_name = "FILE")]
    log_file: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
struct DumpArgs {
    /// Root of the tree to dump: this process, its descendants, their threads.
    #[arg(short = 't', long = "tree", value_name = "PID", required = true)]
    tree: Option<i32>,
    /// Image directory to create (must not exist, or be empty).
    #[arg(short = 'D', long = "images-dir", value_name = "DIR", required = true)]
    dir: Option<std::path::PathBuf>,
    /// Collector: bpf (kernel structures, nothing runs in the tree) or proc.
    #[arg(long, default_value = "bpf")]
    collect: String,
    /// Collect the frozen tree with the other collector too and write
    /// nothing if the two disagree.
    #[arg(long)]
    verify: bool,
    /// Let the tree run on after the dump (default: killed once the images
    /// are on disk).
    #[arg(long)]
    leave_running: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Freeze a tree, collect everything a restore needs, write a verified
    /// image directory; then kill the tree (or --leave-running).
    Dump(DumpArgs),
    /// Bring a dumped tree back at its own pids, from a verified image
    /// directory; wait for its root and exit with its status (or --detach).
    Restore {
        #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
        dir: std::path::PathBuf,
        /// Return once the tree runs instead of waiting for its root.
        #[arg(long)]
        detach: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decode an image directory for people, or with --json for programs.
    Show {
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Plan the system calls that build a process tree from pid 1, proven
    /// by simulating Linux's rules (docs/plan.md); or check a plan.
    Plan {
        /// The target tree as JSON (docs/plan.md).
        #[arg(long, value_name = "FILE", required_unless_present = "images_dir")]
        tree: Option<std::path::PathBuf>,
        /// The target from a dump's images instead.
        #[arg(
            short = 'D',
            long = "images-dir",
            value_name = "DIR",
            conflicts_with = "tree"
        )]
        images_dir: Option<std::path::PathBuf>,
        /// Check this plan (JSON, as --json prints it) against the target
        /// instead of planning: exit 0 only if it is valid and reaches it.
        #[arg(long, value_name = "PLAN")]
        check: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Removes DIR once stdin closes (dumper's guard for its temporary
    /// image directory).
    #[command(hide = true)]
    Janitor { dir: std::path::PathBuf },
    /// Collect the state of a process tree (or the whole system) and print it.
    Collect {
        /// Root of the tree: this process, its descendants and their threads.
        #[arg(
            short = 't',
            long = "tree",
            value_name = "PID",
            required_unless_present = "all"
        )]
        tree: Option<i32>,
        /// Every process on the system instead of one tree.
        #[arg(long, conflicts_with = "tree")]
        all: bool,
        /// Collector: proc or bpf.
        #[arg(long, default_value = "bpf")]
        collect: String,
        /// Print the full snapshot as JSON (docs/snapshot-json.md).
        #[arg(long)]
        json: bool,
        /// Freeze the tree and collect what a dump needs besides (signal
        /// handlers, mm fields, limits, per-thread signal state, rseq).
        #[arg(long, conflicts_with = "all")]
        detail: bool,
    },
    /// Freeze a tree, collect it with each collector, release it, and
    /// report agreement field by field. Exit 0 only when all agree.
    Compare {
        #[arg(short = 't', long = "tree", value_name = "PID")]
        tree: i32,
        /// Collectors to compare, comma separated.
        #[arg(long, default_value = "proc,bpf", value_delimiter = ',')]
        collect: Vec<String>,
        /// Also compare what a dump collects beyond the snapshot: signal
        /// handlers, mm fields, limits, per-thread signal state, rseq.
        #[arg(long)]
        detail: bool,
        #[arg(long)]
        json: bool,
    },
    /// Freeze a tree and hold it until stdin closes or dumper is killed
    /// (for debugging and for tests of the freezer).
    #[command(hide = true)]
    Freeze {
        #[arg(short = 't', long = "tree", value_name = "PID")]
        tree: i32,
    },
    /// Run the built-in sample tree (used by `cargo xtask demo` and the
    /// tests): prints its manifest as JSON, lives until stdin closes.
    #[command(hide = true)]
    Sample,
    /// Run a program of the restore tests (src/workload.rs).
    #[command(hide = true)]
    Workload { name: String, args: Vec<String> },
    /// Read dumper's binary logs.
    Log {
        #[command(subcommand)]
        cmd: LogCmd,
    },
}

#[derive(Subcommand)]
enum LogCmd {
    /// Print a log as text (time since the start, thread, level, source
    /// location, message), or with --json one object with every entry.
    /// A log whose writer died reads up to its last whole record.
    Decode {
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn summary(s: &Snapshot, c: &dyn Collector, ns: u128) {
    let (tasks, fds, vmas) = s.counts();
    let threads: usize = s.tasks.iter().map(|t| t.threads.len()).sum();
    let links = c
        .readlinks()
        .map(|n| format!(", {n} readlinks"))
        .unwrap_or_default();
    println!(
        "{tasks} processes, {threads} threads, {fds} fds, {vmas} mappings ({} collector, {:.3} ms{links})",
        c.name(),
        ns as f64 / 1e6
    );
    println!(
        "{:>7} {:>7} {:>7} {:>7} {:1} {:>4} {:>4} {:>5}  COMM",
        "PID", "PPID", "PGID", "SID", "S", "THR", "FDS", "VMAS"
    );
    for t in &s.tasks {
        println!(
            "{:>7} {:>7} {:>7} {:>7} {:1} {:>4} {:>4} {:>5}  {}",
            t.pid,
            t.ppid,
            t.pgid,
            t.sid,
            t.state,
            t.threads.len(),
            t.fds.len(),
            t.vmas.len(),
            t.comm
        );
    }
}

fn run_collect(tree: Option<i32>, collector: &str, json: bool, detail: bool) -> Result<()> {
    let mut c = collect::by_name(collector)?;
    let target = tree.map_or(Target::System, Target::Tree);
    let t0 = Instant::now();
    let snap = match (detail, tree) {
        (true, Some(root)) => {
            let mut frozen = Frozen::freeze(root)?;
            let t0 = Instant::now();
            let s = c.collect_frozen(&mut frozen, true);
            let ns = t0.elapsed().as_nanos();
            frozen.thaw();
            (s?, ns)
        }
        _ => {
            let s = c.collect(target)?;
            (s, t0.elapsed().as_nanos())
        }
    };
    let (snap, ns) = snap;
    for (pid, why) in c.skipped() {
        eprintln!("dumper: warning: left out process {pid}: {why}");
    }
    if json {
        serde_json::to_writer(std::io::stdout().lock(), &snap)?;
        println!();
    } else {
        summary(&snap, c.as_ref(), ns);
    }
    Ok(())
}

fn run_compare(tree: i32, names: &[String], detail: bool, json: bool) -> Result<bool> {
    if names.len() < 2 {
        bail!("compare needs at least two collectors, e.g. --collect proc,bpf");
    }
    if let Some(dup) = names
        .iter()
        .enumerate()
        .find_map(|(i, n)| names[..i].contains(n).then_some(n))
    {
        bail!("collector {dup:?} named twice in --collect");
    }
    // Load every collector before freezing: program load and verification
    // must not lengthen the time the tree is stopped.
    let mut collectors: Vec<Box<dyn Collector>> = names
        .iter()
        .map(|n| collect::by_name(n))
        .collect::<Result<_, _>>()?;
    let mut frozen = Frozen::freeze(tree)?;
    let mut snaps = vec![];
    let mut timings = serde_json::Map::new();
    let mut counts = serde_json::Map::new();
    let mut readlinks = serde_json::Map::new();
    for c in &mut collectors {
        let t0 = Instant::now();
        let s = c
            .collect_frozen(&mut frozen, detail)
            .with_context(|| format!("{} collector", c.name()))?;
        timings.insert(c.name().into(), (t0.elapsed().as_nanos() as u64).into());
        let (t, f, v) = s.counts();
        counts.insert(
            c.name().into(),
            serde_json::json!({"tasks": t, "fds": f, "vmas": v}),
        );
        if let Some(n) = c.readlinks() {
            readlinks.insert(c.name().into(), n.into());
        }
        snaps.push(s);
    }
    let threads = frozen.threads();
    let frozen_for = frozen.thaw();
    let mut mismatches = vec![];
    for (i, s) in snaps.iter().enumerate().skip(1) {
        for mut m in compare::diff(&snaps[0], s) {
            // With more than two collectors, say which pair disagrees.
            if names.len() > 2 {
                m.path = format!("{} [{} vs {}]", m.path, names[0], names[i]);
            }
            mismatches.push((m, names[0].clone(), names[i].clone()));
        }
    }
    let (tasks, fds, vmas) = snaps[0].counts();
    let agree = mismatches.is_empty();
    if json {
        let ms: Vec<serde_json::Value> = mismatches
            .iter()
            .map(|(m, a, b)| serde_json::json!({"path": m.path, a.as_str(): m.values[0], b.as_str(): m.values[1]}))
            .collect();
        let out = serde_json::json!({
            "agree": agree, "tasks": tasks, "fds": fds, "vmas": vmas,
            "mismatches": ms, "timings": timings, "counts": counts, "readlinks": readlinks,
            "frozen_ns": frozen_for.as_nanos() as u64, "frozen_threads": threads,
        });
        println!("{out}");
    } else {
        for (m, a, b) in &mismatches {
            println!("{}: {a}={} {b}={}", m.path, m.values[0], m.values[1]);
        }
        let verdict = if agree { "agree" } else { "DISAGREE" };
        if snaps.iter().all(|s| s.counts() == snaps[0].counts()) {
            println!(
                "{}: {verdict} on {tasks} tasks, {fds} fds, {vmas} mappings ({} mismatches)",
                names.join(" vs "),
                mismatches.len()
            );
        } else {
            let each: Vec<String> = names
                .iter()
                .zip(&snaps)
                .map(|(n, s)| {
                    let (t, f, v) = s.counts();
                    format!("{n} {t} tasks, {f} fds, {v} mappings")
                })
                .collect();
            println!(
                "{}: {verdict} ({}; {} mismatches)",
                names.join(" vs "),
                each.join("; "),
                mismatches.len()
            );
        }
        let t: Vec<String> = timings
            .iter()
            .map(|(k, v)| {
                let links = readlinks
                    .get(k)
                    .map(|n| format!(" ({n} readlinks)"))
                    .unwrap_or_default();
                format!("{k} {:.3} ms{links}", v.as_u64().unwrap_or(0) as f64 / 1e6)
            })
            .collect();
        println!(
            "timings: {}; tree frozen {:.3} ms ({threads} threads)",
            t.join(", "),
            frozen_for.as_secs_f64() * 1e3
        );
    }
    Ok(agree)
}

/// Ok(false) when the root did not exit with 0 (its status is passed on).
fn run_restore(dir: &std::path::Path, detach: bool, json: bool) -> Result<bool> {
    let r = dumper::restore::restore(&dumper::restore::Options { dir, detach })?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let ms = |n: u64| n as f64 / 1e6;
        println!(
            "restored {} processes ({} zombies) from {}, root {}: {} plan steps, {} helpers, {} pages written; {:.1} ms (tree {:.1}, memory {:.1}, state {:.1})",
            r.processes,
            r.zombies,
            dir.display(),
            r.root,
            r.steps,
            r.helpers,
            r.pages_written,
            ms(r.total_ns),
            ms(r.tree_ns),
            ms(r.memory_ns),
            ms(r.state_ns)
        );
    }
    if let Some(st) = r.exit_status {
        dumper::log::close();
        if libc::WIFSIGNALED(st) {
            std::process::exit(128 + libc::WTERMSIG(st));
        }
        let code = libc::WEXITSTATUS(st);
        if code != 0 {
            std::process::exit(code);
        }
    }
    Ok(true)
}

fn run_dump(a: DumpArgs) -> Result<()> {
    let (Some(root), Some(dir)) = (a.tree, a.dir.as_deref()) else {
        bail!("dump needs -t PID and -D DIR");
    };
    let opts = dumper::dump::Options {
        root,
        dir,
        collector: &a.collect,
        verify: a.verify,
        leave_running: a.leave_running,
    };
    let json = a.json;
    let r = dumper::dump::dump(&opts, |m| {
        eprintln!(
            "dumper: mismatch: {}: {}",
            m.path,
            serde_json::Value::from(m.values.clone())
        );
    })?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let ms = |n: u64| n as f64 / 1e6;
        println!(
            "dumped {} processes, {} threads, {} fds, {} mappings to {} ({} collector{})",
            r.processes,
            r.threads,
            r.fds,
            r.vmas,
            r.dir.display(),
            r.collector,
            if r.verified {
                ", verified against the other"
            } else {
                ""
            }
        );
        println!(
            "memory: {} pages saved ({:.1} MiB), {} pages shared copy-on-write saved once, {} shared memory objects; image {:.1} MiB",
            r.pages_written, r.pages_written as f64 / 256.0, r.pages_shared, r.shmem_objects,
            r.image_bytes as f64 / (1 << 20) as f64
        );
        println!(
            "tree frozen {:.3} ms (collection {:.3} ms, memory {:.3} ms, writing {:.3} ms); {}; total {:.3} ms",
            ms(r.frozen_ns), ms(r.collect_ns), ms(r.memory_ns), ms(r.write_ns),
            if r.left_running { "left running" } else { "tree killed after the images were synced" },
            ms(r.total_ns)
        );
    }
    Ok(())
}

fn run_show(dir: &std::path::Path, json: bool) -> Result<()> {
    let img = dumper::image::read::open(dir)?;
    if json {
        println!("{}", dumper::image::show::json(&img));
    } else {
        print!("{}", dumper::image::show::text(&img));
    }
    Ok(())
}

fn run_plan(
    tree: Option<&std::path::Path>,
    images: Option<&std::path::Path>,
    check: Option<&std::path::Path>,
    json: bool,
) -> Result<bool> {
    use dumper::plan;
    let target = match (tree, images) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f).with_context(|| f.display().to_string())?;
            plan::target_from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
        }
        (None, Some(d)) => {
            let img = dumper::image::read::open(d)?;
            plan::from_image::target(&img).map_err(|e| anyhow::anyhow!("{}: {e}", d.display()))?
        }
        (None, None) => bail!("plan needs --tree FILE or -D DIR"),
    };
    if let Some(c) = check {
        let text = std::fs::read_to_string(c).with_context(|| c.display().to_string())?;
        #[derive(serde::Deserialize)]
        struct Wrapped {
            steps: Vec<plan::Step>,
        }
        let steps: Vec<plan::Step> = serde_json::from_str::<Wrapped>(&text)
            .map(|w| w.steps)
            .or_else(|_| serde_json::from_str(&text))
            .map_err(|e| anyhow::anyhow!("{}: not a plan: {e}", c.display()))?;
        let end = plan::sim::Sim::run(&steps).map_err(|(i, e)| {
            anyhow::anyhow!("{}: step {} ({}) fails: {e}", c.display(), i + 1, steps[i])
        })?;
        end.matches(&target).map_err(|e| {
            anyhow::anyhow!("{}: the plan does not reach the target: {e}", c.display())
        })?;
        println!(
            "{}: valid, {} steps, reaches the target",
            c.display(),
            steps.len()
        );
        return Ok(true);
    }
    let p = plan::plan(&target).map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        let out = serde_json::json!({
            "steps": p.steps,
            "helpers": p.helpers,
            "stats": {"steps": p.steps.len(), "helpers": p.helpers.len(), "send_fd": p.send_fds()},
        });
        println!("{out}");
    } else {
        for s in &p.steps {
            println!("{s}");
        }
        println!(
            "# {} steps, {} helpers, {} fds sent; proven by simulation",
            p.steps.len(),
            p.helpers.len(),
            p.send_fds()
        );
    }
    Ok(true)
}

fn run_log_decode(file: &std::path::Path, json: bool) -> Result<()> {
    use dumper::log::decode;
    use std::io::Write;
    let b = std::fs::read(file).with_context(|| file.display().to_string())?;
    let log = decode::decode(&file.display().to_string(), &b)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let v = serde_json::json!({
            "pid": log.pid, "build": log.build, "opened_ns": log.opened_ns,
            "closed": log.closed, "undefined": log.undefined, "entries": log.entries,
        });
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "# log of dumper pid {} ({}), {} entries{}",
            log.pid,
            log.build,
            log.entries.len(),
            if log.closed {
                ""
            } else {
                "; not closed: the writer died or still runs, this is all it finished"
            }
        )?;
        for e in &log.entries {
            writeln!(out, "{}", decode::text_line(e))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Opens the log the command line asks for: -o FILE, or DIR.log beside a
/// dump's image directory; at -v N (default 4). Whether one is open.
fn open_log(cli: &Cli) -> Result<bool> {
    let (dump_dir, suffix) = match &cli.cmd {
        Some(Cmd::Dump(a)) => (a.dir.as_deref(), ".log"),
        Some(Cmd::Restore { dir, .. }) => (Some(dir.as_path()), ".restore.log"),
        None => (cli.dump.as_ref().and_then(|a| a.dir.as_deref()), ".log"),
        _ => (None, ""),
    };
    let v = cli.verbosity.unwrap_or(4);
    let path = match (&cli.log_file, dump_dir) {
        (Some(f), _) => f.clone(),
        (None, Some(d)) => {
            // The dump creates DIR's parents; one it cannot create, it
            // reports itself, naming DIR.
            let parent = d
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if std::fs::create_dir_all(parent).is_err() {
                return Ok(false);
            }
            let mut p = d.as_os_str().to_owned();
            p.push(suffix);
            std::path::PathBuf::from(p)
        }
        (None, None) => return Ok(false),
    };
    if v == 0 {
        return Ok(false);
    }
    dumper::log::open(&path, v)
        .with_context(|| format!("log file {} (choose another with -o FILE)", path.display()))?;
    dumper::log_info!("{} started, verbosity {}", dumper::log::BUILD, v);
    Ok(true)
}

fn run_freeze(tree: i32) -> Result<()> {
    let frozen = Frozen::freeze(tree)?;
    println!("{{\"frozen_threads\": {}}}", frozen.threads());
    let mut sink = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)?;
    frozen.thaw();
    Ok(())
}

fn main() {
    // Die quietly on a closed pipe (`dumper collect | head`), as CLI tools do.
    // SAFETY: restoring a default signal disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print as clap prints them; a malformed
        // command line gets one line, like every other error.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty())
                .collect();
            eprintln!(
                "dumper: {} (see dumper --help)",
                first.join(" ").trim_start_matches("error: ")
            );
            std::process::exit(2);
        }
    };
    let log = if matches!(
        cli.cmd,
        Some(Cmd::Janitor { .. } | Cmd::Sample | Cmd::Workload { .. } | Cmd::Log { .. })
    ) {
        false
    } else {
        match open_log(&cli) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("dumper: {e:#}");
                std::process::exit(1);
            }
        }
    };
    // Every error ends in the log too, then the log is closed.
    let finish = |r: &Result<bool>| {
        if let Err(e) = r {
            dumper::log_error!("failed: {}", format!("{e:#}"));
        }
        if log && dumper::log::close() > 0 {
            eprintln!("dumper: warning: the log filled up (1 GiB); its last records were dropped");
        }
    };
    let Some(cmd) = cli.cmd else {
        let r = match cli.dump {
            Some(a) => run_dump(a),
            None => Err(anyhow::anyhow!(
                "name a command or -t PID -D DIR (see dumper --help)"
            )),
        };
        let r = r.map(|()| true);
        finish(&r);
        if let Err(e) = r {
            eprintln!("dumper: {e:#}");
            std::process::exit(1);
        }
        return;
    };
    let r = match cmd {
        Cmd::Dump(a) => run_dump(a).map(|_| true),
        Cmd::Show { dir, json } => run_show(&dir, json).map(|_| true),
        Cmd::Restore { dir, detach, json } => run_restore(&dir, detach, json),
        Cmd::Plan {
            tree,
            images_dir,
            check,
            json,
        } => run_plan(
            tree.as_deref(),
            images_dir.as_deref(),
            check.as_deref(),
            json,
        ),
        Cmd::Janitor { dir } => {
            dumper::image::write::janitor(&dir);
            Ok(true)
        }
        Cmd::Collect {
            tree,
            all: _,
            collect,
            json,
            detail,
        } => run_collect(tree, &collect, json, detail).map(|_| true),
        Cmd::Compare {
            tree,
            collect,
            detail,
            json,
        } => run_compare(tree, &collect, detail, json),
        Cmd::Freeze { tree } => run_freeze(tree).map(|_| true),
        Cmd::Sample => dumper::sample::run(),
        Cmd::Workload { name, args } => dumper::workload::run(&name, &args),
        Cmd::Log {
            cmd: LogCmd::Decode { file, json },
        } => run_log_decode(&file, json).map(|_| true),
    };
    finish(&r);
    match r {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("dumper: {e:#}");
            std::process::exit(1);
        }
    }
}
