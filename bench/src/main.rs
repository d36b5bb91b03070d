//! `dumper-bench`: `run [--quick] [--out DIR]` measures every collector on
//! every population of the plan and writes the results folder; `check DIR`
//! validates one; `workload P F V T` is the population's own entry point.

use anyhow::{bail, Context, Result};
use dumper_bench::dump::{self, DumpRow, Running};
use dumper_bench::measure::{measure, Meter, Row};
use dumper_bench::plan::{Plan, COLLECTORS};
use dumper_bench::workload::{self, Population, Spec};
use dumper_bench::{check, report};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

fn run(quick: bool, out: PathBuf) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads BPF programs and reads other processes' /proc files: run it as root");
    }
    let plan = Plan::new(quick);
    let exe = std::env::current_exe()?;
    let meter = Meter::new().context("loading the system-call counter")?;
    let specs = plan.specs();
    let bar = ProgressBar::new((specs.len() * COLLECTORS.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut rows: Vec<Row> = vec![];
    let mut skipped: Vec<(String, String)> = vec![];
    for spec in specs {
        bar.set_message(format!(
            "building {} processes × {} fds × {} mappings × {} threads",
            spec.processes, spec.fds_per_process, spec.vmas_per_process, spec.threads_per_process
        ));
        let pop = Population::spawn(&exe, spec)
            .with_context(|| format!("starting the population {spec:?}"))?;
        for name in COLLECTORS {
            bar.set_message(format!("{name} on {} processes", spec.processes));
            if skipped.iter().any(|(n, _)| n == name) {
                // Cannot run here at all (batch without its kernel patch).
                bar.inc(1);
                continue;
            }
            match measure(&meter, &plan, name, spec, pop.root) {
                Ok(r) => rows.extend(r),
                // A collector this machine cannot run (batch without its
                // kernel patch) is reported, not fatal.
                Err(e) if rows.iter().all(|r| r.collector != *name) => {
                    skipped.push((name.to_string(), format!("{e:#}")));
                }
                // A failure at one point is reported with the results of
                // every other point, not lost with them.
                Err(e) => {
                    let why = format!("{e:#}");
                    eprintln!("{name} on {spec:?}: {why}");
                    skipped.push((
                        format!(
                            "{name} at {} processes × {} fds × {} mappings × {} threads",
                            spec.processes,
                            spec.fds_per_process,
                            spec.vmas_per_process,
                            spec.threads_per_process
                        ),
                        why,
                    ));
                }
            }
            bar.inc(1);
        }
        drop(pop);
    }
    bar.finish_and_clear();
    let dumps = dump_section(&plan, &exe, &out)?;
    let restores = restore_section(&plan, &exe, &out)?;
    eprintln!("restore planner");
    let plans = dumper_bench::planner::measure(quick);
    let seconds = started.elapsed().as_secs_f64();
    report::write(
        &out,
        &plan,
        &rows,
        report::Sections {
            dumps: &dumps,
            restores: &restores,
            plans: &plans,
        },
        &skipped,
        seconds,
    )?;
    println!(
        "{}: {} rows in {seconds:.0} s; report {}",
        out.display(),
        rows.len(),
        out.join("report.md").display()
    );
    Ok(())
}

/// Whole dumps of each dump tree with each collector.
fn dump_section(plan: &Plan, exe: &std::path::Path, out: &std::path::Path) -> Result<Vec<DumpRow>> {
    let scratch = out.join("dump-scratch");
    let mut rows = vec![];
    for t in &plan.dump_trees {
        eprintln!("dump: {}", dump::tree_name(t));
        let running = Running::start(exe, t)?;
        for c in dump::DUMP_COLLECTORS {
            rows.push(dump::measure(
                t,
                running.root(),
                c,
                plan.dump_reps,
                &scratch,
            )?);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(rows)
}

/// Dump-and-restore cycles of each restore tree; `dumper restore` is the
/// dumper binary beside this one.
fn restore_section(
    plan: &Plan,
    exe: &std::path::Path,
    out: &std::path::Path,
) -> Result<Vec<dumper_bench::restore::RestoreRow>> {
    let scratch = out.join("restore-scratch");
    let dumper = exe.with_file_name("dumper");
    let mut rows = vec![];
    for &t in &plan.restore_trees {
        eprintln!("restore: {}", dumper_bench::restore::tree_name(&t));
        rows.extend(dumper_bench::restore::measure(
            exe,
            &dumper,
            t,
            plan.dump_reps,
            &scratch,
        )?);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(rows)
}

/// The run time a report states, kept when it is re-rendered.
fn seconds_of(dir: &std::path::Path) -> f64 {
    std::fs::read_to_string(dir.join("report.md"))
        .ok()
        .and_then(|m| {
            let rest = m.split("`, ").nth(1)?;
            rest.split(" s;").next()?.trim().parse().ok()
        })
        .unwrap_or(0.0)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("workload") => {
            let spec = Spec::from_args(&args[1..]).context("workload P F V T")?;
            workload::serve(spec)
        }
        Some("run") => {
            let mut quick = false;
            let mut out = PathBuf::from("target/bench");
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--quick" => quick = true,
                    "--out" => out = it.next().context("--out needs a directory")?.into(),
                    other => bail!("run: unknown argument {other:?} (takes --quick, --out DIR)"),
                }
            }
            run(quick, out)
        }
        // Regenerates report.md and the plots from results.json.
        Some("render") => {
            let dir = PathBuf::from(args.get(1).context("render DIR [--quick]")?);
            let quick = args.get(2).is_some_and(|a| a == "--quick");
            let rows: Vec<Row> = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json"))?)?;
            let plan = Plan::new(quick);
            let seconds = seconds_of(&dir);
            let skipped = vec![("batch".to_string(), "needs the batch(2) kernel series: measured in its QEMU guest by cargo xtask kernel test".to_string())];
            let dumps: Vec<DumpRow> = std::fs::read_to_string(dir.join("dump.json"))
                .ok()
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default();
            let restores: Vec<dumper_bench::restore::RestoreRow> = std::fs::read_to_string(dir.join("restore.json"))
                .ok()
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default();
            let plans: Vec<dumper_bench::planner::PlanRow> = std::fs::read_to_string(dir.join("plan.json"))
                .ok()
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_else(|| dumper_bench::planner::measure(quick));
            report::write(
                &dir,
                &plan,
                &rows,
                report::Sections {
                    dumps: &dumps,
                    restores: &restores,
                    plans: &plans,
                },
                &skipped,
                seconds,
            )?;
            println!("{}", check::check(&dir)?);
            Ok(())
        }
        // Inside the kernel series' QEMU guest (cargo xtask kernel test).
        Some("guest") => {
            let (table, rows) = dumper_bench::guest::run()?;
            println!("GUEST-BENCH-BEGIN\n{table}\nGUEST-BENCH-END");
            println!("GUEST-BENCH-JSON {}", serde_json::to_string(&rows)?);
            Ok(())
        }
        Some("check") => {
            let dir = args.get(1).context("check DIR")?;
            println!("{}", check::check(std::path::Path::new(dir))?);
            Ok(())
        }
        _ => bail!("usage: dumper-bench run [--quick] [--out DIR] | render DIR [--quick] | check DIR | guest | workload P F V T"),
    }
}
