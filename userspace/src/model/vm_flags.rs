//! The vm flags a restore must reproduce, by the two-letter names that
//! /proc/PID/smaps prints (fs/proc/task_mmu.c, show_smap_vma_flags) and the
//! bit each has in `vm_area_struct::vm_flags` on x86_64 (include/linux/mm.h).
//!
//! rd/wr/ex and sh are left out: they are `prot` and `shared`. Flags the
//! kernel sets on its own and a restore cannot ask for (soft-dirty, arch,
//! uffd registration, shadow stack, sealing, pkeys, 6.18.y's guard-region
//! `gu`) are left out too.

/// (name, bit), in the order smaps prints them.
pub const RESTORE_FLAGS: &[(&str, u64)] = &[
    ("mr", 0x10),
    ("mw", 0x20),
    ("me", 0x40),
    ("ms", 0x80),
    ("gd", 0x100),
    ("pf", 0x400),
    ("lo", 0x2000),
    ("io", 0x4000),
    ("sr", 0x8000),
    ("rr", 0x10000),
    ("dc", 0x20000),
    ("de", 0x40000),
    ("ac", 0x100000),
    ("nr", 0x200000),
    ("ht", 0x400000),
    ("wf", 0x2000000),
    ("dd", 0x4000000),
    ("mm", 0x10000000),
    ("hg", 0x20000000),
    ("nh", 0x40000000),
    ("mg", 0x80000000),
    ("lf", 0x80000),
];

/// The restore-relevant names set in raw `vm_flags`, in table order.
pub fn vm_flag_names(flags: u64) -> Vec<String> {
    RESTORE_FLAGS
        .iter()
        .filter(|(_, bit)| flags & bit != 0)
        .map(|(n, _)| n.to_string())
        .collect()
}

/// The restore-relevant names among smaps's `VmFlags:` words, in table
/// order, so both collectors produce the same list.
pub fn smaps_flag_names<'a>(words: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: Vec<&str> = words.collect();
    RESTORE_FLAGS
        .iter()
        .filter(|(n, _)| set.contains(n))
        .map(|(n, _)| n.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_agree() {
        // A stack: rd wr mr mw me gd ac.
        let raw = 0x1 | 0x2 | 0x10 | 0x20 | 0x40 | 0x100 | 0x100000;
        let smaps = "rd wr mr mw me gd ac".split(' ');
        assert_eq!(vm_flag_names(raw), smaps_flag_names(smaps));
        assert_eq!(vm_flag_names(raw), ["mr", "mw", "me", "gd", "ac"]);
    }
}
