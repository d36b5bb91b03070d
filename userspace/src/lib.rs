//! dumper: checkpoint/restore for Linux process trees.
//!
//! Data flow: a collector ([`collect`]) fills the [`model`]; [`compare`]
//! diffs two snapshots; [`freeze`] holds a tree still meanwhile.

pub mod collect;
pub mod compare;
pub mod freeze;
pub mod model;
pub mod sample;

/// The build script's BTF reader, included here so its unit tests run with
/// the library's.
#[cfg(test)]
#[path = "../build/btf.rs"]
#[allow(dead_code)]
mod build_btf;
