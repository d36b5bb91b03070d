//! Open-file-description identity from /proc's side: kcmp(KCMP_FILE).
//!
//! kcmp orders files (by an obfuscated pointer), so sorting finds equal
//! ones in O(n log n) calls. Only fds on the same inode can share a
//! description, so fds are first grouped by (dev, ino) and kcmp sorts
//! within each group: most groups have one member and cost no call at all.

use super::CollectError;
use std::cmp::Ordering;
use std::collections::HashMap;

const KCMP_FILE: libc::c_int = 0;

/// kcmp(KCMP_FILE): the order of two open files, or the errno.
fn kcmp_file(a: (i32, u32), b: (i32, u32)) -> Result<Ordering, i32> {
    // SAFETY: kcmp takes only integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            a.0,
            b.0,
            KCMP_FILE,
            a.1 as libc::c_ulong,
            b.1 as libc::c_ulong,
        )
    };
    match r {
        0 => Ok(Ordering::Equal),
        1 => Ok(Ordering::Less),
        2 => Ok(Ordering::Greater),
        _ => Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)),
    }
}

/// Merge sort that tolerates a comparator failing (a process exiting mid
/// sort): failed comparisons count as "less" and the caller's ids for such
/// fds are merely not shared. (`slice::sort_by` may panic on an
/// inconsistent order.)
fn merge_sort<T: Copy>(v: &mut Vec<T>, cmp: &mut impl FnMut(T, T) -> Ordering) {
    if v.len() <= 1 {
        return;
    }
    let mut right = v.split_off(v.len() / 2);
    merge_sort(v, cmp);
    merge_sort(&mut right, cmp);
    let left = std::mem::take(v);
    let (mut i, mut j) = (0, 0);
    v.reserve(left.len() + right.len());
    while i < left.len() && j < right.len() {
        if cmp(right[j], left[i]) == Ordering::Less {
            v.push(right[j]);
            j += 1;
        } else {
            v.push(left[i]);
            i += 1;
        }
    }
    v.extend_from_slice(&left[i..]);
    v.extend_from_slice(&right[j..]);
}

/// Assigns a description id to each `(pid, fd, dev, ino)`; returns ids in
/// input order. Equal ids exactly when kcmp says the files are equal. A
/// process or fd gone meanwhile (ESRCH, EBADF) just shares nothing; any
/// other failure (no ptrace right, a kernel without CONFIG_KCMP) is an
/// error, not a silently wrong identity.
pub fn description_ids(fds: &[(i32, u32, u64, u64)]) -> Result<Vec<u32>, CollectError> {
    let mut groups: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, &(_, _, dev, ino)) in fds.iter().enumerate() {
        groups.entry((dev, ino)).or_default().push(i);
    }
    let mut ids = vec![0u32; fds.len()];
    let mut next = 0u32;
    let mut keys: Vec<_> = groups.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        let mut members = groups.remove(&key).unwrap();
        let at = |i: usize| (fds[i].0, fds[i].1);
        let mut failure = None;
        // Results seen while sorting; the pass over neighbours reuses them.
        let mut seen: HashMap<(usize, usize), Ordering> = HashMap::new();
        let mut cmp = |a: usize, b: usize| {
            if let Some(&o) = seen.get(&(a, b)) {
                return o;
            }
            let o = match kcmp_file(at(a), at(b)) {
                Ok(o) => o,
                Err(libc::ESRCH) | Err(libc::EBADF) => Ordering::Less,
                Err(e) => {
                    failure.get_or_insert(e);
                    Ordering::Less
                }
            };
            seen.insert((a, b), o);
            seen.insert((b, a), o.reverse());
            o
        };
        merge_sort(&mut members, &mut cmp);
        for k in 0..members.len() {
            if k == 0 || cmp(members[k - 1], members[k]) != Ordering::Equal {
                next += 1;
            }
            ids[members[k]] = next;
        }
        if let Some(e) = failure {
            let (pid, fd) = at(members[0]);
            let err = std::io::Error::from_raw_os_error(e);
            return Err(if e == libc::EPERM || e == libc::EACCES {
                CollectError::Privilege(format!(
                    "kcmp on process {pid} fd {fd}: {err}: run dumper as root (with CAP_SYS_PTRACE)"
                ))
            } else {
                CollectError::Kernel(format!(
                    "kcmp on process {pid} fd {fd}: {err} (the kernel needs CONFIG_KCMP or CONFIG_CHECKPOINT_RESTORE)"
                ))
            });
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dup_shares_open_does_not() {
        let me = std::process::id() as i32;
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        let g = std::fs::File::open("/proc/self/exe").unwrap();
        use std::os::fd::AsRawFd;
        let a = f.as_raw_fd() as u32;
        let d = unsafe { libc::dup(a as i32) } as u32;
        let b = g.as_raw_fd() as u32;
        let ids = description_ids(&[(me, a, 1, 1), (me, b, 1, 1), (me, d, 1, 1)]).unwrap();
        assert_eq!(ids[0], ids[2]);
        assert_ne!(ids[0], ids[1]);
        unsafe { libc::close(d as i32) };
    }

    #[test]
    fn merge_sort_sorts() {
        let mut v = vec![5, 3, 9, 1, 1, 7];
        merge_sort(&mut v, &mut |a: i32, b: i32| a.cmp(&b));
        assert_eq!(v, vec![1, 1, 3, 5, 7, 9]);
    }
}
