//! The log's cost end to end: a 500-process tree (20 fds, 20 mappings
//! each) dumped with `--leave-running`, at -v0 and -v4 in turn, medians
//! of the total and frozen times. As root, after `cargo build --release`:
//! `cargo run --release -p dumper-bench --example log_e2e [REPS]`.

use dumper_bench::workload::{Population, Spec};
use std::process::Command;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let bin = std::env::current_exe()?
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let spec = Spec {
        processes: 500,
        fds_per_process: 20,
        vmas_per_process: 20,
        threads_per_process: 1,
        resident_kib: 0,
        restorable: false,
    };
    let pop = Population::spawn(&bin.join("dumper-bench"), spec)?;
    let tmp = std::env::temp_dir().join(format!("dumper-log-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut times: [(Vec<u64>, Vec<u64>); 2] = Default::default();
    let mut records = 0;
    for _ in 0..reps {
        for (k, v) in ["-v0", "-v4"].iter().enumerate() {
            let dir = tmp.join(format!("img{k}"));
            let _ = std::fs::remove_dir_all(&dir);
            let out = Command::new(bin.join("dumper"))
                .args(["dump", "-t", &pop.root.to_string(), "-D"])
                .arg(&dir)
                .args(["--leave-running", "--json", v])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "dump failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            times[k].0.push(r["total_ns"].as_u64().unwrap_or(0));
            times[k].1.push(r["frozen_ns"].as_u64().unwrap_or(0));
            if k == 1 {
                let b = std::fs::read(tmp.join("img1.log"))?;
                records = dumper::log::decode::decode("log", &b)?.entries.len();
            }
        }
    }
    let ms = |n: u64| n as f64 / 1e6;
    let (t0, f0) = (median(times[0].0.clone()), median(times[0].1.clone()));
    let (t4, f4) = (median(times[1].0.clone()), median(times[1].1.clone()));
    println!("{reps} dumps each of 500 processes, alternating; -v4 logged {records} records");
    println!(
        "total:  -v0 {:.1} ms, -v4 {:.1} ms ({:+.1}%)",
        ms(t0),
        ms(t4),
        (t4 as f64 / t0 as f64 - 1.0) * 100.0
    );
    println!(
        "frozen: -v0 {:.1} ms, -v4 {:.1} ms ({:+.1}%)",
        ms(f0),
        ms(f4),
        (f4 as f64 / f0 as f64 - 1.0) * 100.0
    );
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}
