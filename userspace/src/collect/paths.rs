//! Paths the iterators cannot give, completed from /proc with one readlink
//! per distinct (vfsmount, dentry): a library mapped by 500 processes, or
//! a cwd they share, costs one lookup, not 500. Files on pseudo filesystems
//! (pipes, sockets, anonymous inodes) get their link text synthesized and
//! cost none.

use super::{vanished, CollectError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Default)]
pub struct PathCache {
    known: HashMap<[u64; 2], Arc<str>>,
    /// readlink calls made: the cost this cache exists to bound.
    pub lookups: usize,
}

impl PathCache {
    /// The path of the file whose identity is `key`, read (once) from the
    /// /proc link `link` when not known yet. None when the link is gone
    /// (the process exited or closed the fd meanwhile); an error when it may
    /// not be read.
    pub fn resolve(
        &mut self,
        key: [u64; 2],
        link: impl FnOnce() -> PathBuf,
    ) -> Result<Option<Arc<str>>, CollectError> {
        if key == [0, 0] {
            return Ok(None);
        }
        if let Some(p) = self.known.get(&key) {
            return Ok(Some(p.clone()));
        }
        self.lookups += 1;
        let link = link();
        match readlink(&link) {
            Ok(p) => {
                let p: Arc<str> = p.into();
                self.known.insert(key, p.clone());
                Ok(Some(p))
            }
            // Not cached: another process may still hold the file.
            Err(e) if vanished(&e) => Ok(None),
            Err(e) => Err(link_error(&link, e)),
        }
    }
}

pub fn readlink(p: &Path) -> std::io::Result<String> {
    std::fs::read_link(p).map(|t| t.to_string_lossy().into_owned())
}

/// A /proc read that failed for a reason other than the process going away.
pub fn link_error(what: &Path, e: std::io::Error) -> CollectError {
    if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
        CollectError::Privilege(format!(
            "permission denied reading {}: run dumper as root (with CAP_SYS_PTRACE)",
            what.display()
        ))
    } else {
        CollectError::io(what.display().to_string(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lookup_per_key() {
        let mut c = PathCache::default();
        let a = c.resolve([1, 2], || "/proc/self/exe".into()).unwrap();
        let b = c.resolve([1, 2], || unreachable!()).unwrap();
        assert_eq!(a, b);
        assert!(a.is_some());
        assert_eq!(c.lookups, 1);
        assert_eq!(c.resolve([0, 0], || unreachable!()).unwrap(), None);
        assert_eq!(
            c.resolve([3, 4], || "/proc/self/nonexistent".into())
                .unwrap(),
            None
        );
        assert!(c
            .resolve([5, 6], || "/proc/self/fd/999999".into())
            .unwrap()
            .is_none());
    }
}
