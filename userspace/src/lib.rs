//! dumper: checkpoint/restore for Linux process trees.
//!
//! Data flow: a collector ([`collect`]) fills the [`model`]; [`compare`]
//! diffs two snapshots; [`freeze`] holds a tree still meanwhile.

// The vm flag bits, the page size and the syscall numbers used are x86_64's.
#[cfg(not(target_arch = "x86_64"))]
compile_error!("dumper supports x86_64 only so far");

// First: its macros are used by the modules below.
#[macro_use]
pub mod log;
pub mod collect;
pub mod compare;
pub mod dump;
pub mod freeze;
pub mod image;
pub mod model;
pub mod pagemap;
pub mod plan;
pub mod ptrace;
pub mod remote;
pub mod restore;
pub mod sample;
pub mod workload;

/// The build script's BTF reader, included here so its unit tests run with
/// the library's.
#[cfg(test)]
#[path = "../build/btf.rs"]
#[allow(dead_code)]
mod build_btf;
