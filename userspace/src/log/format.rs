//! The log file's layout, version 1 (docs/log.md describes it for people).
//!
//! ```text
//! page 0      header: magic, version, chunk size, pid, build, clock pairs
//! then        chunks of CHUNK bytes, each claimed by one thread:
//!               chunk header (CHUNK_HEADER bytes)
//!               records, each a multiple of 8 bytes, until a zero word
//! ```
//!
//! A record is a header word (length in bytes, call-site id, whether a
//! time stamp follows), the time stamp counter when it does (always for
//! errors, warnings, information and definitions; for debug records one
//! time in [`super::write::STAMP_EVERY`]), then the arguments in the call
//! site's order. The header
//! word is stored last, so a record cut short by a crash reads as the end
//! of its chunk. Site id 0 is a definition: the call site's level, file,
//! line, format and argument kinds, written once before the site's first
//! record. The decoding table therefore travels with the log.

pub const MAGIC: [u8; 8] = *b"DMPRLOG\0";
pub const VERSION: u32 = 1;
/// The header page.
pub const HEADER: usize = 4096;
/// What a thread claims at a time: big enough that claiming is rare, small
/// enough that a short-lived thread wastes little.
pub const CHUNK: usize = 64 * 1024;
pub const CHUNK_MAGIC: u32 = u32::from_le_bytes(*b"CHNK");
/// magic u32, tid u32, sequence u64, tsc u64, monotonic ns u64.
pub const CHUNK_HEADER: usize = 32;
/// The site id of definition records.
pub const DEFINE: u32 = 0;

/// Header fields at their offsets.
pub mod hdr {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const CHUNK: usize = 12;
    pub const PID: usize = 16;
    /// Clock pair at open: tsc u64, monotonic ns u64, realtime ns u64.
    pub const OPEN: usize = 24;
    /// Clock pair at a clean close (zero if the writer died): tsc u64,
    /// monotonic ns u64.
    pub const CLOSE: usize = 48;
    /// Chunks claimed so far (u64), updated as they are claimed.
    pub const CHUNKS: usize = 64;
    /// NUL-padded build string (128 bytes): which dumper wrote the log.
    pub const BUILD: usize = 128;
    pub const BUILD_LEN: usize = 128;
}

/// Argument kinds, as definition records list them.
pub mod kind {
    pub const U64: u8 = 1;
    pub const I64: u8 = 2;
    pub const STR: u8 = 3;
    pub const BOOL: u8 = 4;
    pub const F64: u8 = 5;
    /// u64 printed as hex (pointers, addresses).
    pub const HEX: u8 = 6;
}

/// Level names by number (a level-L call is recorded from -v(L+1) on).
pub const LEVEL_NAMES: [&str; 4] = ["error", "warn", "info", "debug"];

/// Rounds up to the record alignment.
pub const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// A record's header word: its length in bytes, its site, and whether a
/// time stamp (the counter's value, one word) follows it.
pub const fn header(len: usize, site: u32, stamped: bool) -> u64 {
    len as u64 | (site as u64) << 16 | (stamped as u64) << 48
}

pub const fn header_len(word: u64) -> usize {
    (word & 0xffff) as usize
}

pub const fn header_site(word: u64) -> u32 {
    (word >> 16) as u32
}

pub const fn header_stamped(word: u64) -> bool {
    word >> 48 & 1 != 0
}
