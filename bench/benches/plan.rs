//! The restore planner's cost against tree size: 10 fds per process (nine
//! files of their own, a pipe to the parent), planning and the
//! simulator's proof of the plan included (the planner proves every plan
//! it returns).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dumper::plan::{gen, plan};

fn planner(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    g.sample_size(10);
    for n in [1000usize, 3000, 10000] {
        let t = gen::large(n, 9, 1);
        let p = plan(&t).expect("the large targets are planned");
        println!(
            "plan/{n}: {} steps ({:.2} per process), {} helpers, {} fds sent",
            p.steps.len(),
            p.steps.len() as f64 / n as f64,
            p.helpers.len(),
            p.send_fds()
        );
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &t, |b, t| {
            b.iter(|| plan(t).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, planner);
criterion_main!(benches);
