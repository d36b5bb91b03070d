//! Paths the iterators cannot give, completed from /proc with one readlink
//! per distinct (vfsmount, dentry): a library mapped by 500 processes, or
//! a cwd they share, costs one lookup, not 500. Files on pseudo filesystems
//! (pipes, sockets, anonymous inodes) get their link text synthesized and
//! cost none.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Default)]
pub struct PathCache {
    known: HashMap<[u64; 2], Arc<str>>,
    /// readlink calls made: the cost this cache exists to bound.
    pub lookups: usize,
}

impl PathCache {
    /// The path of the file whose identity is `key`, read (once) from the
    /// /proc link `link` when not known yet. None when the link is gone.
    pub fn resolve(&mut self, key: [u64; 2], link: impl FnOnce() -> PathBuf) -> Option<Arc<str>> {
        if key == [0, 0] {
            return None;
        }
        if let Some(p) = self.known.get(&key) {
            return Some(p.clone());
        }
        self.lookups += 1;
        // A failed lookup is not cached: another process may still hold
        // the same file and resolve it.
        let p: Arc<str> = readlink(&link())?.into();
        self.known.insert(key, p.clone());
        Some(p)
    }
}

pub fn readlink(p: &std::path::Path) -> Option<String> {
    std::fs::read_link(p)
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lookup_per_key() {
        let mut c = PathCache::default();
        let a = c.resolve([1, 2], || "/proc/self/exe".into());
        let b = c.resolve([1, 2], || unreachable!());
        assert_eq!(a, b);
        assert!(a.is_some());
        assert_eq!(c.lookups, 1);
        assert_eq!(c.resolve([0, 0], || unreachable!()), None);
        assert_eq!(c.resolve([3, 4], || "/proc/self/nonexistent".into()), None);
    }
}
