//! dumper's log: every step recorded, formatting deferred until a person
//! reads it (docs/log.md).
//!
//! A call (`log_debug!("opened {} as fd {}", path, fd)`) costs one load
//! and one compare when its level is off. When on, it copies a call-site
//! id, the time stamp counter and its arguments in raw form into a chunk
//! of a shared file mapping that only its thread writes: no lock, no
//! system call, no formatting. `dumper log decode` turns the file into
//! text later, with the format strings the log itself carries.

pub mod arg;
pub mod decode;
pub mod format;
pub mod site;
pub mod write;

pub use arg::{Arg, Hex};
pub use site::Site;

/// The build a log names in its header.
pub const BUILD: &str = concat!("dumper ", env!("CARGO_PKG_VERSION"));

/// Levels: a call at level L is recorded at verbosity -v(L+1) and above.
pub const ERROR: u8 = 0;
pub const WARN: u8 = 1;
pub const INFO: u8 = 2;
/// Every step: each task, fd, mapping, page range and system call.
pub const DEBUG: u8 = 3;

/// A call's arguments, as a tuple of references.
pub trait Args {
    fn kinds(&self) -> Vec<u8>;
    fn size(&self) -> usize;
    /// # Safety
    /// `p` must be valid for [`Args::size`] bytes.
    unsafe fn put(&self, p: *mut u8);
}

macro_rules! tuple {
    ($($n:ident),*) => {
        impl<$($n: Arg),*> Args for ($($n,)*) {
            fn kinds(&self) -> Vec<u8> {
                #[allow(non_snake_case)]
                let ($($n,)*) = self;
                vec![$(arg::kind_of($n)),*]
            }
            #[inline(always)]
            fn size(&self) -> usize {
                #[allow(non_snake_case)]
                let ($($n,)*) = self;
                0 $(+ $n.size())*
            }
            #[inline(always)]
            #[allow(unused_variables, unused_mut, unused_assignments)]
            unsafe fn put(&self, p: *mut u8) {
                #[allow(non_snake_case)]
                let ($($n,)*) = self;
                let mut p = p;
                // SAFETY: per the trait, p has room for every argument.
                $(p = unsafe { $n.put(p) };)*
            }
        }
    };
}
tuple!();
tuple!(A);
tuple!(A, B);
tuple!(A, B, C);
tuple!(A, B, C, D);
tuple!(A, B, C, D, E);
tuple!(A, B, C, D, E, F);
tuple!(A, B, C, D, E, F, G);
tuple!(A, B, C, D, E, F, G, H);

/// Records one call (the macros' body once the level check passed).
#[inline(always)]
pub fn emit<A: Args>(site: &'static Site, a: A) {
    let id = site.id(|| a.kinds());
    // SAFETY: record hands `put` exactly `size` bytes.
    write::record(id, site.level, a.size(), |p| unsafe { a.put(p) });
}

/// Whether calls at `level` are recorded now.
#[inline(always)]
pub fn enabled(level: u8) -> bool {
    level < write::LIMIT.load(std::sync::atomic::Ordering::Relaxed)
}

/// The `{...}` placeholders of a format string (`{{` is a brace), for the
/// macros' compile-time check against the argument count.
pub const fn placeholders(fmt: &str) -> usize {
    let b = fmt.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        if b[i] == b'{' {
            if i + 1 < b.len() && b[i + 1] == b'{' {
                i += 2;
                continue;
            }
            n += 1;
        }
        i += 1;
    }
    n
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_one {
    ($a:expr) => {
        1usize
    };
}

/// `log_at!(LEVEL, "format {} {:x}", a, b)`: see the module docs.
#[macro_export]
macro_rules! log_at {
    ($lvl:expr, $fmt:literal $(, $a:expr)* $(,)?) => {{
        const _: () = assert!(
            $crate::log::placeholders($fmt) == 0usize $(+ $crate::__log_one!($a))*,
            "log format and argument count differ"
        );
        const LEVEL: u8 = $lvl;
        if $crate::log::enabled(LEVEL) {
            static SITE: $crate::log::Site = $crate::log::Site::new(LEVEL, $fmt, file!(), line!());
            $crate::log::emit(&SITE, ($(&($a),)*));
        }
    }};
}

#[macro_export]
macro_rules! log_error { ($($t:tt)*) => { $crate::log_at!($crate::log::ERROR, $($t)*) }; }
#[macro_export]
macro_rules! log_warn { ($($t:tt)*) => { $crate::log_at!($crate::log::WARN, $($t)*) }; }
#[macro_export]
macro_rules! log_info { ($($t:tt)*) => { $crate::log_at!($crate::log::INFO, $($t)*) }; }
#[macro_export]
macro_rules! log_debug { ($($t:tt)*) => { $crate::log_at!($crate::log::DEBUG, $($t)*) }; }

/// Opens `path` as the log at verbosity `v` (CRIU's -v: 0 nothing, 1
/// errors, 2 warnings, 3 information, 4 everything).
pub fn open(path: &std::path::Path, v: u8) -> std::io::Result<()> {
    write::open(path, v, BUILD)
}

/// Closes the log; returns how many records were dropped because it was
/// full (1 GiB).
pub fn close() -> u64 {
    write::close()
}
