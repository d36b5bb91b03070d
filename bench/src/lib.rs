//! `cargo xtask bench`: every collector measured side by side on the same
//! population, in one run (see README "Benchmarks").
//!
//! - [`workload`]: the population (P processes × F fds × V mappings × T
//!   threads) and its reliable teardown;
//! - [`plan`]: the headline workload and the scaling sweeps;
//! - [`measure`]: one collector on one population: wall-time histogram,
//!   CPU, system calls (counted by a BPF program), bytes read;
//! - [`dump`], [`restore`]: whole dumps and restores of populations;
//! - [`report`]: JSON, CSV, markdown and SVG plots; [`check`] validates them.

pub mod check;
pub mod dump;
pub mod guest;
pub mod measure;
pub mod plan;
pub mod planner;
pub mod plot;
pub mod report;
pub mod restore;
pub mod workload;
