//! Warm collections in a loop, for profiling one collector:
//! `cargo run --release -p dumper-bench --example warm -- PID [proc|bpf] [N]`.
//! (The side-by-side measurements are `cargo xtask bench`'s job.)

use dumper::collect::{self, Target};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pid: i32 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .expect("usage: warm PID [proc|bpf] [N]");
    let name = args.get(2).map(String::as_str).unwrap_or("bpf");
    let n: usize = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(1);
    let mut c = collect::by_name(name).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let mut times = vec![];
    for _ in 0..n {
        let t0 = Instant::now();
        let s = c.collect(Target::Tree(pid)).expect("collect");
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(s);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{name}: median {:.3} ms over {n} warm collections (min {:.3}, max {:.3})",
        times[n / 2],
        times[0],
        times[n - 1]
    );
}
