//! /proc/PID/smaps: the one /proc file that shows vm flags. Parsed here
//! rather than through the procfs crate: its VmFlags type has no bit for
//! `lf` (VM_LOCKONFAULT, mlock2's MLOCK_ONFAULT, which a restore must
//! reproduce) and drops the words it does not know; here every word comes
//! out as the kernel spells it. Names are taken from their exact column
//! (fs/proc/task_mmu.c pads the header to 72 characters and a space), so a
//! file name that starts with spaces keeps them.

use crate::model::VmFlags;
use std::borrow::Cow;

/// One mapping, borrowing its name from the text it was parsed from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping<'a> {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    pub offset: u64,
    pub major: u32,
    pub minor: u32,
    pub ino: u64,
    /// Empty for anonymous memory.
    pub name: Cow<'a, str>,
    /// From the `VmFlags:` line (smaps only).
    pub vm_flags: VmFlags,
}

impl Mapping<'_> {
    /// The model's mapping, with `path` for the name (interned by the
    /// caller, who may share it among many mappings).
    pub fn vma(&self, path: Option<std::sync::Arc<str>>) -> crate::model::Vma {
        crate::model::Vma {
            start: self.start,
            end: self.end,
            prot: crate::model::Prot {
                read: self.read,
                write: self.write,
                exec: self.exec,
            },
            shared: self.shared,
            flags: self.vm_flags,
            pgoff: self.offset,
            dev: libc::makedev(self.major, self.minor),
            ino: self.ino,
            path,
        }
    }
}

/// Where the name starts: show_map_vma pads the header (seq_setwidth to
/// 25 + 6 * sizeof(void *) - 1 = 72 columns), then one space.
const NAME_COLUMN: usize = 72 + 1;

/// A mapping's header line (`start-end perms offset dev inode [name]`),
/// or None for any other line.
pub fn header(line: &str) -> Option<Mapping<'_>> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?.as_bytes();
    let offset = fields.next()?;
    let dev = fields.next()?;
    let ino = fields.next()?;
    // The header proper ends after the inode number.
    let end_of_header = range.len() + perms.len() + offset.len() + dev.len() + ino.len() + 4;
    let name = match line.get(end_of_header..) {
        None | Some("") => "",
        Some(rest) => {
            let at = NAME_COLUMN.max(end_of_header + 1) - end_of_header;
            match rest.get(..at) {
                Some(pad) if pad.bytes().all(|b| b == b' ') => &rest[at..],
                _ => rest.trim_start(),
            }
        }
    };
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    if perms.len() != 4 {
        return None;
    }
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
        offset: u64::from_str_radix(offset, 16).ok()?,
        major: u32::from_str_radix(major, 16).ok()?,
        minor: u32::from_str_radix(minor, 16).ok()?,
        ino: ino.parse().ok()?,
        // seq_path escapes a newline in a path as \012.
        name: if name.contains("\\012") {
            Cow::Owned(name.replace("\\012", "\n"))
        } else {
            Cow::Borrowed(name)
        },
        vm_flags: VmFlags::default(),
    })
}

/// True for a `Key: value` line of smaps rather than a mapping header.
pub fn is_attribute(line: &str) -> bool {
    line.split(' ').next().unwrap_or("").ends_with(':')
}

/// Parses smaps (or maps: then `vm_flags` stay empty).
pub fn parse(text: &str) -> Result<Vec<Mapping<'_>>, String> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let last = out.last_mut().ok_or("smaps: VmFlags before any mapping")?;
            last.vm_flags = VmFlags::from_smaps(flags.split_whitespace());
        } else if !line.is_empty() && !is_attribute(line) {
            out.push(header(line).ok_or_else(|| format!("smaps: bad mapping line {line:?}"))?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                   4 kB
VmFlags: rd wr mr mw me ac 
7f079ca96000-7f079ca98000 rw-s 00033000 fe:00 325843                     /tmp/a file (deleted)
Size:                  8 kB
VmFlags: rd wr sh mr mw me ms 
7f079ca98000-7f079ca99000 ---p 00000000 00:00 0
VmFlags: mr mw me gd 
7f079ca99000-7f079ca9a000 r--p 00000000 fe:00 12                         /tmp/new\\012line
7f079ca9a000-7f079ca9b000 r--p 00000000 fe:00 13                           two spaces
ffffffffffffffff-ffffffffffffffff r--p 00000000 fe:00 123456789012345678 long
";

    #[test]
    fn mappings() {
        let m = parse(SAMPLE).unwrap();
        assert_eq!(m.len(), 6);
        assert_eq!(m[0].start, 0x55d0c0a00000);
        assert_eq!(m[0].name, "[heap]");
        assert_eq!(m[0].vm_flags, VmFlags::from_smaps(["mr", "mw", "me", "ac"]));
        assert!(m[1].shared && m[1].write && !m[1].exec);
        assert_eq!((m[1].major, m[1].minor, m[1].ino), (0xfe, 0, 325843));
        assert_eq!(m[1].offset, 0x33000);
        assert_eq!(m[1].name, "/tmp/a file (deleted)");
        assert_eq!(m[2].name, "");
        assert!(!m[2].read && !m[2].write && !m[2].exec);
        assert_eq!(m[3].name, "/tmp/new\nline");
        assert_eq!(m[4].name, "  two spaces");
        assert_eq!(m[5].name, "long");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("VmFlags: rd\n").is_err());
        assert!(parse("zzzz-1 rw-p 0 00:00 0\n").is_err());
    }
}
