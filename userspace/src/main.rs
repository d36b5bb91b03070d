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
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
    },
    /// Freeze a tree, collect it with each collector, release it, and
    /// report agreement field by field. Exit 0 only when all agree.
    Compare {
        #[arg(short = 't', long = "tree", value_name = "PID")]
        tree: i32,
        /// Collectors to compare, comma separated.
        #[arg(long, default_value = "proc,bpf", value_delimiter = ',')]
        collect: Vec<String>,
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

fn run_collect(tree: Option<i32>, collector: &str, json: bool) -> Result<()> {
    let mut c = collect::by_name(collector)?;
    let target = tree.map_or(Target::System, Target::Tree);
    let t0 = Instant::now();
    let snap = c.collect(target)?;
    let ns = t0.elapsed().as_nanos();
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

fn run_compare(tree: i32, names: &[String], json: bool) -> Result<bool> {
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
    let frozen = Frozen::freeze(tree)?;
    let mut snaps = vec![];
    let mut timings = serde_json::Map::new();
    let mut counts = serde_json::Map::new();
    let mut readlinks = serde_json::Map::new();
    for c in &mut collectors {
        let t0 = Instant::now();
        let s = c
            .collect(Target::Tree(tree))
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
    let r = match cli.cmd {
        Cmd::Collect {
            tree,
            all: _,
            collect,
            json,
        } => run_collect(tree, &collect, json).map(|_| true),
        Cmd::Compare {
            tree,
            collect,
            json,
        } => run_compare(tree, &collect, json),
        Cmd::Freeze { tree } => run_freeze(tree).map(|_| true),
        Cmd::Sample => dumper::sample::run(),
    };
    match r {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("dumper: {e:#}");
            std::process::exit(1);
        }
    }
}
