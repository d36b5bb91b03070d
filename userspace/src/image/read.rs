//! Reading an image directory: the manifest first, then every file it
//! lists checked against its size and checksum before anything is decoded.

use super::*;
use std::path::Path;
use xxhash_rust::xxh3::xxh3_128;

pub struct Image {
    pub manifest: Manifest,
    pub inventory: Inventory,
    pub memory: Memory,
    /// pages.img, verified.
    pub pages: Vec<u8>,
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, ImageError> {
    let p = dir.join(name);
    std::fs::read(&p).map_err(|e| ImageError::io(p.display(), e))
}

/// Opens and verifies the image directory `dir`.
pub fn open(dir: &Path) -> Result<Image, ImageError> {
    if !dir.is_dir() {
        return Err(ImageError::bad(
            dir.display(),
            "no such image directory (dumper dump -D DIR writes one)",
        ));
    }
    let shown = |n: &str| dir.join(n).display().to_string();
    let manifest: Manifest = decode(&shown(MANIFEST), Kind::Manifest, &read(dir, MANIFEST)?)?;
    let mut files = std::collections::HashMap::new();
    for f in &manifest.files {
        if f.name.contains('/') || f.name.starts_with('.') {
            return Err(ImageError::bad(
                shown(MANIFEST),
                format!("lists a bad file name {:?}", f.name),
            ));
        }
        let b = read(dir, &f.name)?;
        if b.len() as u64 != f.size {
            return Err(ImageError::bad(
                shown(&f.name),
                format!(
                    "{} bytes where the manifest says {}: truncated or replaced",
                    b.len(),
                    f.size
                ),
            ));
        }
        if checksum_hex(xxh3_128(&b)) != f.xxh3_128 {
            return Err(ImageError::bad(
                shown(&f.name),
                "checksum does not match the manifest: the file is corrupt",
            ));
        }
        files.insert(f.name.clone(), b);
    }
    let mut take = |name: &str| {
        files
            .remove(name)
            .ok_or_else(|| ImageError::bad(shown(MANIFEST), format!("does not list {name}")))
    };
    let inventory: Inventory = decode(&shown(INVENTORY), Kind::Inventory, &take(INVENTORY)?)?;
    let memory: Memory = decode(&shown(MEMORY), Kind::Memory, &take(MEMORY)?)?;
    let pages = take(PAGES)?;
    check_ranges(&memory, pages.len() as u64 / PAGE_SIZE, &shown(MEMORY))?;
    check_inventory(&inventory, &shown(INVENTORY))?;
    Ok(Image {
        manifest,
        inventory,
        memory,
        pages,
    })
}

/// Every range must point inside pages.img.
pub fn check_ranges(m: &Memory, pages: u64, file: &str) -> Result<(), ImageError> {
    let all = m
        .processes
        .iter()
        .flat_map(|p| &p.ranges)
        .chain(m.shmem.iter().flat_map(|s| &s.ranges));
    let lists = m
        .processes
        .iter()
        .map(|p| (format!("process {}", p.pid), &p.ranges))
        .chain(
            m.shmem
                .iter()
                .map(|s| (format!("shared object {}:{}", s.dev, s.ino), &s.ranges)),
        );
    // Addresses and object offsets alike are in bytes.
    for (who, ranges) in lists {
        for w in ranges.windows(2) {
            let end = w[0]
                .pages
                .checked_mul(PAGE_SIZE)
                .and_then(|n| w[0].addr.checked_add(n));
            if end.is_none_or(|e| e > w[1].addr) {
                return Err(ImageError::bad(
                    file,
                    format!(
                        "{who}: range at {:#x} is not sorted before, or overlaps, the one at {:#x}",
                        w[0].addr, w[1].addr
                    ),
                ));
            }
        }
    }
    for r in all {
        if r.at.checked_add(r.pages).is_none_or(|end| end > pages) {
            return Err(ImageError::bad(
                file,
                format!(
                    "range at {:#x} refers to pages {}+{} beyond the {pages} of {PAGES}",
                    r.addr, r.at, r.pages
                ),
            ));
        }
    }
    Ok(())
}

/// What decoding alone cannot promise: fixed-size parts of the right size.
pub fn check_inventory(inv: &Inventory, file: &str) -> Result<(), ImageError> {
    for t in &inv.threads {
        if t.regs.len() != NREGS {
            return Err(ImageError::bad(
                file,
                format!(
                    "thread {} has {} registers where {NREGS} belong",
                    t.tid,
                    t.regs.len()
                ),
            ));
        }
        if !t.siginfo.len().is_multiple_of(crate::ptrace::SIGINFO_SIZE) {
            return Err(ImageError::bad(
                file,
                format!("thread {}: torn siginfo", t.tid),
            ));
        }
    }
    for q in &inv.shared_siginfo {
        if !q.siginfo.len().is_multiple_of(crate::ptrace::SIGINFO_SIZE) {
            return Err(ImageError::bad(
                file,
                format!("process {}: torn siginfo", q.tgid),
            ));
        }
    }
    for t in &inv.snapshot.tasks {
        if let Some(d) = &t.detail {
            let ok = |n: usize, want: usize| n == 0 || n == want;
            if !ok(d.sigactions.len(), crate::model::NSIG)
                || !ok(d.rlimits.len(), crate::model::NLIMITS)
            {
                return Err(ImageError::bad(
                    file,
                    format!(
                        "process {}: {} signal actions and {} limits",
                        t.pid,
                        d.sigactions.len(),
                        d.rlimits.len()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Every entry decoder, the checks and `show` on arbitrary bytes, as the
/// fuzz target and the corpus test run them; true when a decoder accepted
/// the bytes. Must never panic.
pub fn exercise(data: &[u8]) -> bool {
    let mut accepted = decode::<Manifest>("f", Kind::Manifest, data).is_ok();
    if let Ok(m) = decode::<Memory>("f", Kind::Memory, data) {
        accepted = true;
        let _ = check_ranges(&m, 64, "f");
    }
    if let Ok(inventory) = decode::<Inventory>("f", Kind::Inventory, data) {
        accepted = true;
        if check_inventory(&inventory, "f").is_ok() {
            let img = Image {
                manifest: Manifest::default(),
                inventory,
                memory: Memory::default(),
                pages: vec![],
            };
            let _ = super::show::text(&img);
            let _ = super::show::json(&img);
        }
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(ranges: &[(u64, u64)]) -> Memory {
        Memory {
            processes: vec![ProcessPages {
                pid: 7,
                ranges: ranges
                    .iter()
                    .enumerate()
                    .map(|(i, &(addr, pages))| PageRange {
                        addr,
                        pages,
                        at: i as u64,
                    })
                    .collect(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn ranges_must_be_sorted_and_apart() {
        assert!(check_ranges(&memory(&[(0x1000, 1), (0x2000, 1)]), 2, "m").is_ok());
        let e = check_ranges(&memory(&[(0x1000, 2), (0x2000, 1)]), 2, "m").unwrap_err();
        assert!(e.to_string().contains("process 7: range at 0x1000"), "{e}");
        assert!(check_ranges(&memory(&[(0x3000, 1), (0x1000, 1)]), 2, "m").is_err());
        // Pointing beyond pages.img.
        assert!(check_ranges(&memory(&[(0x1000, 1), (0x2000, 1)]), 1, "m").is_err());
    }
}
