//! Shared by the integration tests.

#![allow(dead_code)]

use std::path::Path;

/// The dumper binary under test.
pub fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dumper"))
}

/// The tests need root (ptrace, kcmp, BPF): without it they say so and pass.
/// CI runs as root, so there they all run.
pub fn root_or_skip(test: &str) -> bool {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{test}: skipped, needs root (ptrace, kcmp, BPF)");
        return false;
    }
    true
}
