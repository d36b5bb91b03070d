//! The cost of one log call at -v4, for profiling: `cargo run --release
//! -p dumper-bench --example logcost [DIR] [CALLS]`.
use std::time::Instant;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp".into());
    let n: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let path = std::path::Path::new(&dir).join("logcost.log");
    for round in 0..5 {
        dumper::log::open(&path, 4).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let t = Instant::now();
        for i in 0..n {
            dumper::log_debug!("task {} fd {} flags {:#x} pos {}", i, i + 1, i + 2, i + 3);
        }
        let d = t.elapsed();
        dumper::log::close();
        let _ = std::fs::remove_file(&path);
        println!(
            "round {round}: {:.1} ns per call",
            d.as_nanos() as f64 / n as f64
        );
    }
}
