//! ns per log call, side by side in one run: dumper's log against
//! `tracing` (fmt layer into `tracing-appender`'s non-blocking file writer),
//! `log` with a buffered file logger, and `quicklog` (deferred formatting,
//! flushed to a file between samples). Integer arguments 0, 2, 4 and 6;
//! strings 2; the level on and off. Every logger writes to a file on the
//! same file system (the target directory's), as dumper's log does.
//!
//! Each sample starts a fresh log (dumper's, so that its file does not
//! hit its size cap); the time is only that of the calls. What a logger
//! defers (quicklog's flush, tracing-appender's worker thread) is not in
//! the time, as it is not in the caller's.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

fn dir() -> std::path::PathBuf {
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("log-bench");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `iters` calls of `f` with dumper's log open at verbosity `v`, in
/// logs of 100,000 calls each (a dump of 500 processes writes about
/// 43,000 at -v4), each log's pages faulted in before the calls: this
/// measures the call. What faulting costs is measured by the end-to-end
/// dump, where dumper's prefaulter thread does it on the side.
fn ours(iters: u64, v: u8, f: impl Fn(u64)) -> Duration {
    let path = dir().join("dumper.log");
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let k = (iters - done).min(100_000);
        dumper::log::open(&path, v).unwrap();
        // Records of up to 64 bytes, whole chunks, and one to spare.
        dumper::log::write::populate(k * 64 / 65_536 + 2).unwrap();
        let t = Instant::now();
        for i in done..done + k {
            f(black_box(i));
        }
        total += t.elapsed();
        dumper::log::close();
        let _ = std::fs::remove_file(&path);
        done += k;
    }
    total
}

/// A `log` backend: a mutex around a buffered file, formatting at the call
/// (what `log` with a file logger such as simplelog's WriteLogger does).
struct Buffered(std::sync::Mutex<std::io::BufWriter<std::fs::File>>);

impl log::Log for Buffered {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        let mut w = self.0.lock().unwrap();
        let _ = writeln!(
            w,
            "{} {}:{} {}",
            r.level(),
            r.file().unwrap_or(""),
            r.line().unwrap_or(0),
            r.args()
        );
    }
    fn flush(&self) {
        let _ = self.0.lock().unwrap().flush();
    }
}

/// Five cases for a logger measured by a runner of its own (`$run(iters,
/// call)`: the time of the calls alone), `$on` its debug macro.
macro_rules! deferred {
    ($g:expr, $name:literal, $run:ident, $($on:ident)::+) => {{
        $g.bench_function(concat!($name, "/int0"), |b| {
            b.iter_custom(|n| $run(n, |_| { $($on)::+!("a call without arguments"); }))
        });
        $g.bench_function(concat!($name, "/int2"), |b| {
            b.iter_custom(|n| $run(n, |i| { $($on)::+!("fd {} pos {}", i, i + 1); }))
        });
        $g.bench_function(concat!($name, "/int4"), |b| {
            b.iter_custom(|n| $run(n, |i| { $($on)::+!("task {} fd {} flags {:#x} pos {}", i, i + 1, i + 2, i + 3); }))
        });
        $g.bench_function(concat!($name, "/int6"), |b| {
            b.iter_custom(|n| $run(n, |i| { $($on)::+!("a {} b {} c {} d {} e {} f {}", i, i + 1, i + 2, i + 3, i + 4, i + 5); }))
        });
        $g.bench_function(concat!($name, "/str2"), |b| {
            b.iter_custom(|n| $run(n, |_| { $($on)::+!("open {} as {}", "/usr/lib/x86_64-linux-gnu/libc.so.6", "reg"); }))
        });
    }};
}

/// dumper's log at -v4.
fn ours4(iters: u64, f: impl Fn(u64)) -> Duration {
    ours(iters, 4, f)
}

/// The six cases for a logger whose macros format at the call: `$on` a
/// debug-level macro, `$off` a level the logger leaves out.
macro_rules! formatting_at_the_call {
    ($g:expr, $name:literal, $($on:ident)::+, $($off:ident)::+) => {{
        $g.bench_function(concat!($name, "/int0"), |b| b.iter(|| $($on)::+!("a call without arguments")));
        $g.bench_function(concat!($name, "/int2"), |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                $($on)::+!("fd {} pos {}", black_box(i), i + 1)
            })
        });
        $g.bench_function(concat!($name, "/int4"), |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                $($on)::+!("task {} fd {} flags {:#x} pos {}", black_box(i), i + 1, i + 2, i + 3)
            })
        });
        $g.bench_function(concat!($name, "/int6"), |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                $($on)::+!("a {} b {} c {} d {} e {} f {}", black_box(i), i + 1, i + 2, i + 3, i + 4, i + 5)
            })
        });
        $g.bench_function(concat!($name, "/str2"), |b| {
            b.iter(|| $($on)::+!("open {} as {}", black_box("/usr/lib/x86_64-linux-gnu/libc.so.6"), "reg"))
        });
        $g.bench_function(concat!($name, "/int4-off"), |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                $($off)::+!("task {} fd {} flags {:#x} pos {}", black_box(i), i + 1, i + 2, i + 3)
            })
        });
    }};
}

fn calls(c: &mut Criterion) {
    // No prefaulter: each log is faulted in before its calls (see ours).
    std::env::set_var("DUMPER_LOG_AHEAD", "0");
    let mut g = c.benchmark_group("log");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));

    // dumper, level on.
    deferred!(g, "dumper", ours4, dumper::log_debug);
    // Level off: -v3 leaves debug calls out.
    g.bench_function("dumper/int4-off", |b| {
        b.iter_custom(|n| {
            ours(n, 3, |i| {
                dumper::log_debug!("task {} fd {} flags {:#x} pos {}", i, i + 1, i + 2, i + 3)
            })
        })
    });

    // tracing: fmt layer, non-blocking file writer.
    {
        use tracing_subscriber::prelude::*;
        let appender = tracing_appender::rolling::never(dir(), "tracing.log");
        let (nb, _guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .finish(appender);
        let sub = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(nb)
                .with_ansi(false)
                .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
        );
        tracing::subscriber::with_default(sub, || {
            formatting_at_the_call!(g, "tracing", tracing::debug, tracing::trace);
        });
    }

    // log, buffered file logger.
    {
        let f = std::fs::File::create(dir().join("log.log")).unwrap();
        let logger: &'static Buffered = Box::leak(Box::new(Buffered(std::sync::Mutex::new(
            std::io::BufWriter::with_capacity(1 << 16, f),
        ))));
        let _ = log::set_logger(logger);
        log::set_max_level(log::LevelFilter::Debug);
        formatting_at_the_call!(g, "log", log::debug, log::trace);
        log::logger().flush();
    }

    // quicklog: calls queue their arguments; flushed to a file outside the
    // timed part, in batches (its queue is bounded).
    {
        quicklog::init!();
        let path: &'static str = Box::leak(
            dir()
                .join("quicklog.log")
                .to_string_lossy()
                .into_owned()
                .into_boxed_str(),
        );
        quicklog::with_flush!(quicklog_flush::file_flusher::FileFlusher::new(path));
        fn batched(n: u64, f: impl Fn(u64)) -> Duration {
            let mut total = Duration::ZERO;
            let mut left = n;
            while left > 0 {
                let k = left.min(512);
                let t = Instant::now();
                for i in 0..k {
                    f(black_box(i));
                }
                total += t.elapsed();
                left -= k;
                while quicklog::try_flush!().is_ok() {}
            }
            total
        }
        deferred!(g, "quicklog", batched, quicklog::debug);
    }
    g.finish();
}

criterion_group!(benches, calls);
criterion_main!(benches);
