//! /proc/PID/smaps: the one /proc file that shows vm flags. Parsed here
//! rather than through the procfs crate so that `VmFlags:` words come out
//! as the kernel spells them.

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
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
    pub name: String,
    pub vm_flags: Vec<String>,
}

fn header(line: &str) -> Option<Mapping> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?.as_bytes();
    let offset = it.next()?;
    let dev = it.next()?;
    let ino = it.next()?;
    let name = it.next().unwrap_or("").trim_start();
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
        name: name.to_string(),
        vm_flags: vec![],
    })
}

/// Parses smaps (or maps: then `vm_flags` stay empty).
pub fn parse(text: &str) -> Result<Vec<Mapping>, String> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let last = out.last_mut().ok_or("smaps: VmFlags before any mapping")?;
            last.vm_flags = flags.split_whitespace().map(str::to_string).collect();
        } else if !line.split(' ').next().unwrap_or("").ends_with(':') && !line.is_empty() {
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
";

    #[test]
    fn mappings() {
        let m = parse(SAMPLE).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].start, 0x55d0c0a00000);
        assert_eq!(m[0].name, "[heap]");
        assert_eq!(m[0].vm_flags, ["rd", "wr", "mr", "mw", "me", "ac"]);
        assert!(m[1].shared && m[1].write && !m[1].exec);
        assert_eq!((m[1].major, m[1].minor, m[1].ino), (0xfe, 0, 325843));
        assert_eq!(m[1].offset, 0x33000);
        assert_eq!(m[1].name, "/tmp/a file (deleted)");
        assert_eq!(m[2].name, "");
        assert!(!m[2].read && !m[2].write && !m[2].exec);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("VmFlags: rd\n").is_err());
        assert!(parse("zzzz-1 rw-p 0 00:00 0\n").is_err());
    }
}
