//! dumper: checkpoint/restore for Linux process trees.
//!
//! Data flow: a collector ([`collect`]) fills the [`model`]; [`compare`]
//! diffs two snapshots; [`freeze`] holds a tree still meanwhile.

pub mod collect;
pub mod compare;
pub mod freeze;
pub mod model;
pub mod sample;
