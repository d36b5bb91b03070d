//! Call sites: what a record does not carry (level, format, file, line,
//! argument kinds), known at compile time and written to the log once, as
//! a definition record, when the site is first used.

use super::arg::Arg;
use super::format::DEFINE;
use super::write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

pub struct Site {
    pub level: u8,
    pub fmt: &'static str,
    pub file: &'static str,
    pub line: u32,
    id: AtomicU32,
}

static NEXT: AtomicU32 = AtomicU32::new(1);
static DEFINING: Mutex<()> = Mutex::new(());

impl Site {
    pub const fn new(level: u8, fmt: &'static str, file: &'static str, line: u32) -> Site {
        Site {
            level,
            fmt,
            file,
            line,
            id: AtomicU32::new(0),
        }
    }

    /// The site's id; the first call defines it in the log.
    #[inline(always)]
    pub fn id(&'static self, kinds: impl FnOnce() -> Vec<u8>) -> u32 {
        let id = self.id.load(Ordering::Relaxed);
        if id != 0 {
            return id;
        }
        self.define(kinds())
    }

    #[cold]
    fn define(&'static self, kinds: Vec<u8>) -> u32 {
        let _g = DEFINING.lock().unwrap_or_else(|e| e.into_inner());
        let id = self.id.load(Ordering::Relaxed);
        if id != 0 {
            return id;
        }
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        // id u32, line u32, level u8, kind count u8, kinds, file, format.
        let size = 10 + kinds.len() + self.file.size() + self.fmt.size();
        write::record(DEFINE, super::ERROR, size, |p| {
            // SAFETY: p has `size` bytes.
            unsafe {
                p.cast::<u32>().write_unaligned(id);
                p.add(4).cast::<u32>().write_unaligned(self.line);
                let p = p.add(8);
                p.write(self.level);
                p.add(1).write(kinds.len() as u8);
                std::ptr::copy_nonoverlapping(kinds.as_ptr(), p.add(2), kinds.len());
                let p = self.file.put(p.add(2 + kinds.len()));
                self.fmt.put(p);
            }
        });
        self.id.store(id, Ordering::Relaxed);
        id
    }
}
