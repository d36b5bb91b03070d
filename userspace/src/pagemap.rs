//! /proc/PID/pagemap: one 64-bit entry per virtual page
//! (Documentation/admin-guide/mm/pagemap.rst).

use std::fs::File;
use std::os::unix::fs::FileExt;

pub const PAGE: u64 = 4096;
pub const PRESENT: u64 = 1 << 63;
pub const SWAP: u64 = 1 << 62;
/// File-backed (or shared anonymous) and not copied on write.
pub const FILE: u64 = 1 << 61;
pub const EXCLUSIVE: u64 = 1 << 56;
/// The frame number (zero without CAP_SYS_ADMIN).
pub const PFN_MASK: u64 = (1 << 55) - 1;

/// The entries of the pages in `[start, end)` (page-aligned), from an open
/// pagemap file.
pub fn entries(pm: &File, start: u64, end: u64) -> std::io::Result<Vec<u64>> {
    let n = ((end - start) / PAGE) as usize;
    let mut buf = vec![0u8; n * 8];
    pm.read_exact_at(&mut buf, start / PAGE * 8)?;
    Ok(buf
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect())
}
