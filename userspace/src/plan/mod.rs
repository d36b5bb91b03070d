//! The restore planner: from a target graph of processes, sessions,
//! groups and files to the system calls that build it (`planner.rs`),
//! proven by simulating Linux's rules (`sim.rs`). `dumper plan` is its
//! command line; the restore runs its plans.

pub mod from_image;
pub mod gen;
pub mod ops;
pub mod planner;
pub mod sim;
pub mod target;

pub use ops::{Op, Step};
pub use planner::{plan, Plan};
pub use target::{validate, Target, TreeFile};

/// A target from `--tree` JSON text: parsed, then validated.
pub fn target_from_json(text: &str) -> Result<Target, String> {
    let f: TreeFile = serde_json::from_str(text).map_err(|e| format!("not a tree file: {e}"))?;
    validate(&f)
}
