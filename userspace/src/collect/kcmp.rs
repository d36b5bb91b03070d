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
const KCMP_FILES: libc::c_int = 2;

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

/// fd table identity: an id per pid, equal exactly when kcmp(KCMP_FILES)
/// says the processes share one table (CLONE_FILES), by a merge sort of
/// n log n calls. A process gone meanwhile shares nothing.
pub fn table_ids(pids: &[i32]) -> Vec<u32> {
    let cmp = |a: i32, b: i32| {
        // SAFETY: kcmp takes only integers.
        match unsafe { libc::syscall(libc::SYS_kcmp, a, b, KCMP_FILES, 0, 0) } {
            0 => Ordering::Equal,
            1 => Ordering::Less,
            2 => Ordering::Greater,
            _ => Ordering::Less,
        }
    };
    let mut order: Vec<usize> = (0..pids.len()).collect();
    merge_sort(&mut order, &mut |a, b| cmp(pids[a], pids[b]));
    let mut ids = vec![0u32; pids.len()];
    let mut id = 0;
    for w in 0..order.len() {
        if w > 0 && cmp(pids[order[w - 1]], pids[order[w]]) != Ordering::Equal {
            id += 1;
        }
        ids[order[w]] = id;
    }
    ids
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
    let mut ids = vec![0u32; fds.len()];
    let mut next = 0u32;
    for mut members in by_inode(fds) {
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
            return Err(kcmp_error(at(members[0]), e));
        }
    }
    Ok(ids)
}

/// The indices of `fds` grouped by (dev, ino), groups in (dev, ino) order:
/// only fds of one inode can share a description.
fn by_inode(fds: &[(i32, u32, u64, u64)]) -> Vec<Vec<usize>> {
    let mut groups: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, &(_, _, dev, ino)) in fds.iter().enumerate() {
        groups.entry((dev, ino)).or_default().push(i);
    }
    let mut groups: Vec<((u64, u64), Vec<usize>)> = groups.into_iter().collect();
    groups.sort_unstable_by_key(|g| g.0);
    groups.into_iter().map(|(_, m)| m).collect()
}

fn kcmp_error((pid, fd): (i32, u32), e: i32) -> CollectError {
    let err = std::io::Error::from_raw_os_error(e);
    if e == libc::EPERM || e == libc::EACCES {
        CollectError::Privilege(format!(
            "kcmp on process {pid} fd {fd}: {err}: run dumper as root (with CAP_SYS_PTRACE)"
        ))
    } else {
        CollectError::Kernel(format!(
            "kcmp on process {pid} fd {fd}: {err} (the kernel needs CONFIG_KCMP or CONFIG_CHECKPOINT_RESTORE)"
        ))
    }
}

/// A (pid, fd) pair to compare, first against second.
pub type Pair = ((i32, u32), (i32, u32));

/// One group's sort, advanced a round at a time: binary insertion in
/// waves. A wave takes as many pending fds as are placed so far and
/// binary-searches all of them at once among the classes (one comparison
/// each per round); fds that land in the same gap are sorted among
/// themselves by a quicksort, a round per pivot, and the new classes are
/// spliced in. The comparisons stay near log2(n!), as a merge sort's do,
/// in O(log² n) rounds.
#[derive(Default)]
struct Sort {
    /// Classes in kcmp order; the members of one share a description.
    classes: Vec<Vec<usize>>,
    pending: Vec<usize>,
    /// The wave's searches: (fd, lo, hi) over class indices; done when
    /// lo == hi (a gap) or found (usize::MAX in hi, class in lo).
    wave: Vec<(usize, usize, usize)>,
    /// Gaps being sorted: (gap, its parts).
    gaps: Vec<(usize, Vec<Part>)>,
}

const FOUND: usize = usize::MAX;

/// A quicksort's part: (sorted, members); the members of a sorted part
/// share one description.
type Part = (bool, Vec<usize>);

impl Sort {
    fn done(&self) -> bool {
        self.pending.is_empty() && self.wave.is_empty() && self.gaps.is_empty()
    }

    /// This round's comparisons, starting a wave if none is running.
    fn pairs(&mut self, out: &mut Vec<(usize, usize)>) {
        if self.wave.is_empty() && self.gaps.is_empty() && !self.pending.is_empty() {
            if self.classes.is_empty() {
                let first = self.pending.remove(0);
                self.classes.push(vec![first]);
            }
            // As many as are placed: fds that share one description
            // (stdio inherited by a whole tree) double in a round each.
            let placed: usize = self.classes.iter().map(Vec::len).sum();
            let k = placed.min(self.pending.len());
            let c = self.classes.len();
            self.wave = self.pending.drain(..k).map(|x| (x, 0, c)).collect();
        }
        for &(x, lo, hi) in &self.wave {
            if hi != FOUND && lo < hi {
                out.push((x, self.classes[(lo + hi) / 2][0]));
            }
        }
        for (_, parts) in &self.gaps {
            for (_, m) in parts.iter().filter(|(sorted, _)| !sorted) {
                let pivot = m[m.len() / 2];
                out.extend(m.iter().filter(|&&x| x != pivot).map(|&x| (x, pivot)));
            }
        }
    }

    /// Applies this round's results, in the order `pairs` gave them.
    fn apply(&mut self, results: &mut impl Iterator<Item = Ordering>) {
        for s in &mut self.wave {
            let (_, lo, hi) = *s;
            if hi == FOUND || lo >= hi {
                continue;
            }
            let mid = (lo + hi) / 2;
            *s = match results.next().expect("a result per pair") {
                Ordering::Equal => (s.0, mid, FOUND),
                Ordering::Less => (s.0, lo, mid),
                Ordering::Greater => (s.0, mid + 1, hi),
            };
        }
        for (_, parts) in &mut self.gaps {
            let mut next = Vec::with_capacity(parts.len() + 2);
            for (sorted, m) in parts.drain(..) {
                if sorted {
                    next.push((true, m));
                    continue;
                }
                let pivot = m[m.len() / 2];
                let (mut less, mut equal, mut greater) = (vec![], vec![pivot], vec![]);
                for &x in m.iter().filter(|&&x| x != pivot) {
                    match results.next().expect("a result per pair") {
                        Ordering::Equal => equal.push(x),
                        Ordering::Less => less.push(x),
                        Ordering::Greater => greater.push(x),
                    }
                }
                for (part, is_class) in [(less, false), (equal, true), (greater, false)] {
                    if !part.is_empty() {
                        next.push((is_class || part.len() == 1, part));
                    }
                }
            }
            *parts = next;
        }
        // A wave whose searches have all ended: each gap's newcomers are
        // sorted among themselves, then spliced in.
        if !self.wave.is_empty() && self.wave.iter().all(|&(_, lo, hi)| hi == FOUND || lo >= hi) {
            let mut landed: Vec<(usize, usize)> = vec![];
            for (x, lo, hi) in std::mem::take(&mut self.wave) {
                if hi == FOUND {
                    self.classes[lo].push(x);
                } else {
                    landed.push((lo, x));
                }
            }
            // By gap, in wave order within one (a stable sort).
            landed.sort_by_key(|&(g, _)| g);
            for (g, x) in landed {
                match self.gaps.last_mut() {
                    Some((last, parts)) if *last == g => parts[0].1.push(x),
                    _ => self.gaps.push((g, vec![(false, vec![x])])),
                }
            }
            for (_, parts) in &mut self.gaps {
                parts[0].0 = parts[0].1.len() == 1;
            }
        }
        if self.wave.is_empty() && self.gaps.iter().all(|(_, p)| p.iter().all(|(s, _)| *s)) {
            // One pass: each gap's new classes go before the class at
            // its index (gaps are in index order).
            let old = std::mem::take(&mut self.classes);
            let mut gaps = std::mem::take(&mut self.gaps).into_iter().peekable();
            for (i, class) in old.into_iter().enumerate() {
                while let Some((_, parts)) = gaps.next_if(|(g, _)| *g == i) {
                    self.classes.extend(parts.into_iter().map(|(_, m)| m));
                }
                self.classes.push(class);
            }
            for (_, parts) in gaps {
                self.classes.extend(parts.into_iter().map(|(_, m)| m));
            }
        }
    }
}

/// As [`description_ids`], with the comparisons issued in rounds rather
/// than one at a time: every round hands all the comparisons that do not
/// wait on another to `compare` at once (batch(2) runs them in one kernel
/// entry). It sorts into the same order, so the ids are the same, with
/// about as many comparisons as the merge sort.
pub fn description_ids_in_rounds(
    fds: &[(i32, u32, u64, u64)],
    mut compare: impl FnMut(&[Pair]) -> Result<Vec<Result<Ordering, i32>>, CollectError>,
) -> Result<Vec<u32>, CollectError> {
    let mut sorts: Vec<Sort> = by_inode(fds)
        .into_iter()
        .map(|pending| Sort {
            pending,
            ..Default::default()
        })
        .collect();
    let at = |i: usize| (fds[i].0, fds[i].1);
    let mut pairs = vec![];
    loop {
        pairs.clear();
        let mut counts = Vec::with_capacity(sorts.len());
        for s in &mut sorts {
            let before = pairs.len();
            s.pairs(&mut pairs);
            counts.push(pairs.len() - before);
        }
        if pairs.is_empty() {
            // Every state with work left asks for a comparison.
            debug_assert!(sorts.iter().all(Sort::done));
            break;
        }
        let asked: Vec<Pair> = pairs.iter().map(|&(a, b)| (at(a), at(b))).collect();
        let mut results = Vec::with_capacity(asked.len());
        for (r, &(x, _)) in compare(&asked)?.into_iter().zip(&pairs) {
            results.push(match r {
                Ok(o) => o,
                // Gone meanwhile: a description of its own, as the merge
                // sort has it.
                Err(libc::ESRCH) | Err(libc::EBADF) => Ordering::Less,
                Err(e) => return Err(kcmp_error(at(x), e)),
            });
        }
        let mut it = results.into_iter();
        for (s, n) in sorts.iter_mut().zip(counts) {
            let mut mine = it.by_ref().take(n).collect::<Vec<_>>().into_iter();
            s.apply(&mut mine);
        }
    }
    let mut ids = vec![0u32; fds.len()];
    for (id, class) in sorts.iter().flat_map(|s| &s.classes).enumerate() {
        for &i in class {
            ids[i] = id as u32 + 1;
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
    fn rounds_give_the_merge_sorts_ids() {
        let me = std::process::id() as i32;
        use std::os::fd::AsRawFd;
        let files: Vec<std::fs::File> = (0..5)
            .map(|_| std::fs::File::open("/proc/self/exe").unwrap())
            .collect();
        let mut fds: Vec<(i32, u32, u64, u64)> = files
            .iter()
            .map(|f| (me, f.as_raw_fd() as u32, 1, 1))
            .collect();
        let dups: Vec<i32> = fds
            .iter()
            .step_by(2)
            .map(|&(_, fd, _, _)| unsafe { libc::dup(fd as i32) })
            .collect();
        fds.extend(dups.iter().map(|&d| (me, d as u32, 1, 1)));
        // Another inode: its own group.
        let other = std::fs::File::open("/proc/self/stat").unwrap();
        fds.push((me, other.as_raw_fd() as u32, 1, 2));
        let mut rounds = 0;
        let b = description_ids_in_rounds(&fds, |pairs| {
            rounds += 1;
            Ok(pairs.iter().map(|&(a, b)| kcmp_file(a, b)).collect())
        })
        .unwrap();
        assert_eq!(description_ids(&fds).unwrap(), b);
        assert!(rounds >= 1 && rounds <= fds.len(), "{rounds}");
        for d in dups {
            unsafe { libc::close(d) };
        }
    }

    /// Values with repeats as fake fds (pid = value, fd = index), compared
    /// by value: the classes come out in order, with about the merge
    /// sort's number of comparisons, in few rounds.
    #[test]
    fn rounds_sort_with_few_comparisons() {
        let mut seed = 12345u64;
        // (fds, distinct values): mostly distinct, and one description
        // shared by many (stdio inherited by a whole tree).
        let cases = [
            (1usize, 1u64),
            (2, 2),
            (3, 3),
            (10, 8),
            (100, 75),
            (1000, 750),
            (3000, 2250),
            (1500, 1),
            (3000, 3),
        ];
        for (n, distinct) in cases {
            let values: Vec<i32> = (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 33) % distinct) as i32
                })
                .collect();
            let fds: Vec<(i32, u32, u64, u64)> = values
                .iter()
                .enumerate()
                .map(|(i, &v)| (v, i as u32, 0, 0))
                .collect();
            let (mut rounds, mut comparisons) = (0, 0);
            let ids = description_ids_in_rounds(&fds, |pairs| {
                rounds += 1;
                comparisons += pairs.len();
                Ok(pairs
                    .iter()
                    .map(|&((a, _), (b, _))| Ok(a.cmp(&b)))
                    .collect())
            })
            .unwrap();
            // Ids follow the values' order and are equal exactly when the
            // values are.
            for i in 0..n {
                for j in 0..n {
                    assert_eq!(values[i].cmp(&values[j]), ids[i].cmp(&ids[j]), "n {n}");
                }
            }
            let log = (n as f64).log2().max(1.0);
            assert!(
                comparisons as f64 <= 1.1 * n as f64 * log,
                "n {n}: {comparisons} comparisons"
            );
            assert!(
                rounds as f64 <= log * log + 4.0 * log,
                "n {n}: {rounds} rounds"
            );
        }
    }

    #[test]
    fn merge_sort_sorts() {
        let mut v = vec![5, 3, 9, 1, 1, 7];
        merge_sort(&mut v, &mut |a: i32, b: i32| a.cmp(&b));
        assert_eq!(v, vec![1, 1, 3, 5, 7, 9]);
    }
}
