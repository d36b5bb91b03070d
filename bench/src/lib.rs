//! Benchmarks live here (workload generator and `cargo xtask bench`).
