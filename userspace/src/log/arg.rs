//! Arguments in raw form: what a log call copies instead of formatting.
//! Integers take 8 bytes, strings a u32 length and their bytes (at most
//! [`MAX_STR`], cut on a character boundary).

use super::format::kind;

/// The longest string a record holds (a path's PATH_MAX).
pub const MAX_STR: usize = 4096;

pub trait Arg {
    const KIND: u8;
    /// Bytes [`Arg::put`] writes.
    fn size(&self) -> usize;
    /// Writes the value at `p` (unaligned) and returns the byte after it.
    ///
    /// # Safety
    /// `p` must be valid for [`Arg::size`] bytes.
    unsafe fn put(&self, p: *mut u8) -> *mut u8;
}

/// An integer printed as hexadecimal (addresses, flags).
#[derive(Clone, Copy)]
pub struct Hex(pub u64);

macro_rules! word {
    ($k:expr, $($t:ty),*) => {$(
        impl Arg for $t {
            const KIND: u8 = $k;
            #[inline(always)]
            fn size(&self) -> usize {
                8
            }
            #[inline(always)]
            unsafe fn put(&self, p: *mut u8) -> *mut u8 {
                // SAFETY: per the trait, p has 8 bytes.
                unsafe {
                    p.cast::<u64>().write_unaligned(*self as u64);
                    p.add(8)
                }
            }
        }
    )*};
}
word!(kind::U64, u8, u16, u32, u64, usize);
word!(kind::I64, i8, i16, i32, i64, isize);
word!(kind::BOOL, bool);

impl Arg for Hex {
    const KIND: u8 = kind::HEX;
    #[inline(always)]
    fn size(&self) -> usize {
        8
    }
    #[inline(always)]
    unsafe fn put(&self, p: *mut u8) -> *mut u8 {
        // SAFETY: per the trait.
        unsafe { self.0.put(p) }
    }
}

impl Arg for f64 {
    const KIND: u8 = kind::F64;
    #[inline(always)]
    fn size(&self) -> usize {
        8
    }
    #[inline(always)]
    unsafe fn put(&self, p: *mut u8) -> *mut u8 {
        // SAFETY: per the trait.
        unsafe { self.to_bits().put(p) }
    }
}

/// The bytes of `s` a record keeps.
#[inline(always)]
fn kept(s: &str) -> &[u8] {
    if s.len() <= MAX_STR {
        return s.as_bytes();
    }
    let mut n = MAX_STR;
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s.as_bytes()[..n]
}

impl Arg for str {
    const KIND: u8 = kind::STR;
    #[inline(always)]
    fn size(&self) -> usize {
        4 + kept(self).len()
    }
    #[inline(always)]
    unsafe fn put(&self, p: *mut u8) -> *mut u8 {
        let b = kept(self);
        // SAFETY: per the trait, p has 4 + b.len() bytes.
        unsafe {
            p.cast::<u32>().write_unaligned(b.len() as u32);
            std::ptr::copy_nonoverlapping(b.as_ptr(), p.add(4), b.len());
            p.add(4 + b.len())
        }
    }
}

impl<T: Arg + ?Sized> Arg for &T {
    const KIND: u8 = T::KIND;
    #[inline(always)]
    fn size(&self) -> usize {
        (**self).size()
    }
    #[inline(always)]
    unsafe fn put(&self, p: *mut u8) -> *mut u8 {
        // SAFETY: per the trait.
        unsafe { (**self).put(p) }
    }
}

/// The kind of an argument, for a call site's definition.
pub fn kind_of<T: Arg + ?Sized>(_: &T) -> u8 {
    T::KIND
}

/// Owned and shared strings record as the `str` they hold.
macro_rules! as_str {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            const KIND: u8 = kind::STR;
            #[inline(always)]
            fn size(&self) -> usize {
                AsRef::<str>::as_ref(self).size()
            }
            #[inline(always)]
            unsafe fn put(&self, p: *mut u8) -> *mut u8 {
                // SAFETY: per the trait.
                unsafe { AsRef::<str>::as_ref(self).put(p) }
            }
        }
    )*};
}
as_str!(String, std::borrow::Cow<'_, str>, std::sync::Arc<str>);
