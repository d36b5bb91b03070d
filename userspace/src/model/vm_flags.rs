//! The vm flags a restore must reproduce, by the two-letter names that
//! /proc/PID/smaps prints (fs/proc/task_mmu.c, show_smap_vma_flags) and the
//! bit each has in `vm_area_struct::vm_flags` on x86_64 (include/linux/mm.h).
//!
//! rd/wr/ex and sh are left out: they are `prot` and `shared`. Flags the
//! kernel sets on its own and a restore cannot ask for (soft-dirty, arch,
//! uffd registration, shadow stack, sealing, pkeys, 6.18.y's guard-region
//! `gu`) are left out too.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// (name, bit), in the order smaps prints them (by bit).
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
    ("lf", 0x80000),
    ("ac", 0x100000),
    ("nr", 0x200000),
    ("ht", 0x400000),
    ("wf", 0x2000000),
    ("dd", 0x4000000),
    ("mm", 0x10000000),
    ("hg", 0x20000000),
    ("nh", 0x40000000),
    ("mg", 0x80000000),
];

const MASK: u64 = {
    let mut m = 0;
    let mut i = 0;
    while i < RESTORE_FLAGS.len() {
        m |= RESTORE_FLAGS[i].1;
        i += 1;
    }
    m
};

/// The restore-relevant subset of a vma's `vm_flags`, as kernel bits.
/// Serialized as the list of smaps names: `["mr", "mw", "me", "gd"]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VmFlags(u64);

impl VmFlags {
    /// From raw `vm_flags`; bits outside [`RESTORE_FLAGS`] are dropped.
    pub fn from_kernel(raw: u64) -> Self {
        VmFlags(raw & MASK)
    }

    /// From smaps's `VmFlags:` words; words outside [`RESTORE_FLAGS`] are
    /// dropped.
    pub fn from_smaps<'a>(words: impl IntoIterator<Item = &'a str>) -> Self {
        VmFlags(words.into_iter().filter_map(bit_of).fold(0, |a, b| a | b))
    }

    /// The kernel bits kept.
    pub fn bits(self) -> u64 {
        self.0
    }

    pub fn has(self, name: &str) -> bool {
        bit_of(name).is_some_and(|b| self.0 & b != 0)
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        RESTORE_FLAGS
            .iter()
            .filter(move |(_, b)| self.0 & b != 0)
            .map(|(n, _)| *n)
    }
}

fn bit_of(name: &str) -> Option<u64> {
    RESTORE_FLAGS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
}

/// Names in JSON; the raw bits in binary formats (the image).
impl Serialize for VmFlags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_seq(self.names().collect::<Vec<_>>())
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for VmFlags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            let bits = u64::deserialize(d)?;
            if bits & !MASK != 0 {
                return Err(de::Error::custom(format!(
                    "unknown vm flag bits {:#x}",
                    bits & !MASK
                )));
            }
            return Ok(VmFlags(bits));
        }
        let names = Vec::<String>::deserialize(d)?;
        let mut bits = 0;
        for n in &names {
            bits |= bit_of(n).ok_or_else(|| de::Error::custom(format!("unknown vm flag {n:?}")))?;
        }
        Ok(VmFlags(bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_agree() {
        // A stack: rd wr mr mw me gd ac (rd and wr are prot, not flags).
        let raw = 0x1 | 0x2 | 0x10 | 0x20 | 0x40 | 0x100 | 0x100000;
        let smaps = VmFlags::from_smaps("rd wr mr mw me gd ac".split(' '));
        assert_eq!(VmFlags::from_kernel(raw), smaps);
        assert_eq!(
            smaps.names().collect::<Vec<_>>(),
            ["mr", "mw", "me", "gd", "ac"]
        );
        assert!(smaps.has("gd") && !smaps.has("lo") && !smaps.has("rd"));
    }

    #[test]
    fn json_round_trip() {
        let f = VmFlags::from_smaps(["lo", "dd"]);
        let j = serde_json::to_string(&f).unwrap();
        assert_eq!(j, r#"["lo","dd"]"#);
        assert_eq!(serde_json::from_str::<VmFlags>(&j).unwrap(), f);
        assert!(serde_json::from_str::<VmFlags>(r#"["zz"]"#).is_err());
    }

    #[test]
    fn table_is_in_bit_order() {
        assert!(RESTORE_FLAGS.windows(2).all(|w| w[0].1 < w[1].1));
    }
}
