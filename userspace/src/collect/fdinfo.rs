//! /proc/PID/fdinfo/N: the procfs crate does not parse it.

/// The fields every fdinfo file starts with (fs/proc/fd.c, seq_show).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdInfo {
    pub pos: i64,
    /// f_flags, with O_CLOEXEC when the fd has close-on-exec.
    pub flags: u32,
    pub mnt_id: i32,
    pub ino: u64,
    /// The lines fs/eventfd.c adds (an eventfd's fdinfo only).
    pub eventfd: Option<crate::model::Eventfd>,
}

/// [`parse`] of /proc/PID/fdinfo/FD's bytes, as a collection error that
/// names the file.
pub fn parse_file(pid: i32, fd: u32, bytes: &[u8]) -> Result<FdInfo, super::CollectError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| parse(t).ok())
        .ok_or_else(|| {
            super::CollectError::Decode(format!("/proc/{pid}/fdinfo/{fd}: unexpected format"))
        })
}

pub fn parse(text: &str) -> Result<FdInfo, String> {
    let mut info = FdInfo::default();
    let mut seen = 0;
    for line in text.lines() {
        let Some((key, val)) = line.split_once(':') else {
            continue;
        };
        let val = val.trim();
        let bad = |what: &str| format!("fdinfo: bad {what} {val:?}");
        match key {
            "pos" => info.pos = val.parse().map_err(|_| bad("pos"))?,
            "flags" => info.flags = u32::from_str_radix(val, 8).map_err(|_| bad("flags"))?,
            "mnt_id" => info.mnt_id = val.parse().map_err(|_| bad("mnt_id"))?,
            "ino" => info.ino = val.parse().map_err(|_| bad("ino"))?,
            _ => continue,
        }
        seen += 1;
        if seen == 4 {
            break;
        }
    }
    if seen < 4 {
        return Err(format!("fdinfo: missing fields in {text:?}"));
    }
    // The rest only for an eventfd (the common fields come first).
    if let Some(at) = text.find("eventfd-count:") {
        let mut e = crate::model::Eventfd::default();
        for line in text[at..].lines() {
            let Some((key, val)) = line.split_once(':') else {
                continue;
            };
            let val = val.trim();
            match key {
                "eventfd-count" => {
                    e.count = u64::from_str_radix(val, 16)
                        .map_err(|_| format!("fdinfo: bad eventfd-count {val:?}"))?
                }
                "eventfd-semaphore" => e.semaphore = val == "1",
                _ => {}
            }
        }
        info.eventfd = Some(e);
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd() {
        let t =
            "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1039\neventfd-count:                0\n";
        assert_eq!(
            parse(t).unwrap(),
            FdInfo {
                pos: 0,
                flags: 0o2000002,
                mnt_id: 17,
                ino: 1039,
                eventfd: Some(crate::model::Eventfd {
                    count: 0,
                    semaphore: false
                }),
            }
        );
    }

    #[test]
    fn large_pos_and_errors() {
        let t =
            "pos:\t9223372036854775807\nflags:\t0100000\nmnt_id:\t1\nino:\t18446744073709551615\n";
        let i = parse(t).unwrap();
        assert_eq!(i.pos, i64::MAX);
        assert_eq!(i.ino, u64::MAX);
        assert!(parse("pos:\tx\n").is_err());
        assert!(parse("pos:\t1\nflags:\t0\n").is_err());
        assert!(parse("pos:\t1\nflags:\t9\nmnt_id:\t1\nino:\t1\n").is_err());
        let e = parse("pos:\t0\nflags:\t02\nmnt_id:\t1\nino:\t1\neventfd-count:               2a\neventfd-id: 3\neventfd-semaphore: 1\n").unwrap();
        assert_eq!(
            e.eventfd,
            Some(crate::model::Eventfd {
                count: 42,
                semaphore: true
            })
        );
    }
}
