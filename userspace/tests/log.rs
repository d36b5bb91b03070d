//! The log engine on real files: what is logged is decoded, from every
//! thread, in order; levels filter; a writer killed with SIGKILL leaves a
//! log that decodes up to its last record; cut and foreign files get clear
//! errors or partial reads, never a panic.

use dumper::log::{self, decode, Hex};
use std::sync::Mutex;

/// One log is open at a time in a process.
static ONE: Mutex<()> = Mutex::new(());

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dumper-log-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn read(path: &std::path::Path) -> decode::Log {
    let b = std::fs::read(path).unwrap();
    decode::decode("test", &b).unwrap()
}

#[test]
fn every_thread_is_decoded_in_order_with_its_arguments() {
    let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let path = tmp("threads.log");
    log::open(&path, 4).unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let name = format!("thread-{t}");
                for i in 0..5000u64 {
                    dumper::log_debug!(
                        "t {} i {} name {} addr {:#x} neg {}",
                        t,
                        i,
                        name,
                        Hex(i * 4096),
                        -(i as i64)
                    );
                }
                unsafe { libc::gettid() as u32 }
            })
        })
        .collect();
    let tids: Vec<u32> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(log::close(), 0);
    let l = read(&path);
    assert!(l.closed);
    assert_eq!(l.undefined, 0);
    assert_eq!(l.entries.len(), 20_000);
    for (t, tid) in tids.iter().enumerate() {
        let mine: Vec<&decode::Entry> = l.entries.iter().filter(|e| e.tid == *tid).collect();
        assert_eq!(mine.len(), 5000, "thread {t}");
        for (i, e) in mine.iter().enumerate() {
            assert_eq!(
                e.msg,
                format!(
                    "t {t} i {i} name thread-{t} addr {:#x} neg {}",
                    i * 4096,
                    -(i as i64)
                )
            );
            assert_eq!(e.level, "debug");
            assert!(e.file.ends_with("tests/log.rs"), "{}", e.file);
        }
        // Time order within the thread.
        assert!(mine.windows(2).all(|w| w[0].t_ns <= w[1].t_ns));
    }
}

#[test]
fn verbosity_filters_levels() {
    let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let path = tmp("levels.log");
    log::open(&path, 2).unwrap();
    dumper::log_error!("an error {}", 1);
    dumper::log_warn!("a warning {}", 2);
    dumper::log_info!("information {}", 3);
    dumper::log_debug!("detail {}", 4);
    log::close();
    // Closed: nothing more is recorded.
    dumper::log_error!("after the close");
    let msgs: Vec<String> = read(&path).entries.into_iter().map(|e| e.msg).collect();
    assert_eq!(msgs, ["an error 1", "a warning 2"]);
    assert!(!log::enabled(log::ERROR));
}

/// The child half of the SIGKILL test: logs, says so, and is killed.
#[test]
fn child_writer() {
    let Some(path) = std::env::var_os("DUMPER_LOG_CHILD") else {
        return;
    };
    log::open(std::path::Path::new(&path), 4).unwrap();
    for i in 0..30_000u64 {
        dumper::log_info!("record {} of {}", i, "the child");
    }
    // SAFETY: ends this process at once, as a SIGKILL from outside would.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

#[test]
fn a_writer_killed_with_sigkill_leaves_every_record_it_finished() {
    let path = tmp("killed.log");
    let st = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env("DUMPER_LOG_CHILD", &path)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st:?}");
    let l = read(&path);
    assert!(!l.closed);
    assert_eq!(l.entries.len(), 30_000);
    for (i, e) in l.entries.iter().enumerate() {
        assert_eq!(e.msg, format!("record {i} of the child"));
    }
}

#[test]
fn cut_and_foreign_files_are_read_or_refused_clearly() {
    let _g = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let path = tmp("cut.log");
    log::open(&path, 4).unwrap();
    for i in 0..10_000u64 {
        dumper::log_debug!("n {} {}", i, "some text to fill chunks");
    }
    log::close();
    let full = std::fs::read(&path).unwrap();
    let all = decode::decode("full", &full).unwrap().entries.len();
    assert_eq!(all, 10_000);
    // Cut in the middle of a chunk and of a record: a prefix decodes.
    for cut in [4096 + 100_000 + 13, 4096 + 65_536 * 3 + 777] {
        let l = decode::decode("cut", &full[..cut]).unwrap();
        assert!(
            l.entries.len() < all && !l.entries.is_empty(),
            "cut at {cut}"
        );
        for (i, e) in l.entries.iter().enumerate() {
            assert_eq!(e.msg, format!("n {i} some text to fill chunks"));
        }
    }
    // Another format version: refused, naming the version and the build.
    let mut other = full.clone();
    other[8] = 9;
    let e = decode::decode("x.log", &other).err().unwrap().to_string();
    assert!(e.contains("version 9") && e.contains("dumper 0."), "{e}");
    // Not a log; too short.
    assert!(decode::decode("x", &vec![7u8; 8192])
        .err()
        .unwrap()
        .to_string()
        .contains("not a dumper log"));
    assert!(decode::decode("x", &full[..100])
        .err()
        .unwrap()
        .to_string()
        .contains("shorter than a log header"));
}

#[test]
fn formats_render_like_rust_formatting() {
    use decode::{render, Value};
    let s = render(
        "a {} b {:x} c {:#x} d {:?} {{literal}} {} {}",
        &[
            Value::U(10),
            Value::U(255),
            Value::X(4096),
            Value::S("q".into()),
            Value::I(-3),
            Value::B(true),
        ],
    );
    assert_eq!(s, "a 10 b ff c 0x1000 d \"q\" {literal} -3 true");
    assert_eq!(render("{} {}", &[Value::U(1)]), "1 <missing>");
}
