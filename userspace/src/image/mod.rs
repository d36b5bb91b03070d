//! The image format (docs/images.md): one directory per dump holding
//! `manifest.img` (format version, what was dumped, a size and xxh3-128
//! checksum for every other file), `inventory.img` (the snapshot with its
//! detail, and each thread's registers, extended state and queued
//! signals), `memory.img` (which pages each process had, and where in
//! `pages.img` their contents are) and `pages.img` (raw 4 KiB pages).
//!
//! Entry files are a 24-byte header (magic, format version, kind, payload
//! length) and a postcard payload: the model's own serde definitions are
//! the schema, so there is no second one to drift from it.

pub mod entries;
pub mod read;
pub mod show;
pub mod write;

pub use entries::*;

use serde::{de::DeserializeOwned, Serialize};

pub const MAGIC: [u8; 8] = *b"DUMPERIM";
pub const FORMAT_VERSION: u32 = 2;
pub const HEADER_LEN: usize = 24;
pub const PAGE_SIZE: u64 = 4096;

pub const MANIFEST: &str = "manifest.img";
pub const INVENTORY: &str = "inventory.img";
pub const MEMORY: &str = "memory.img";
pub const PAGES: &str = "pages.img";

/// What an entry file holds (its header says, so a file renamed or
/// swapped for another is caught).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    Manifest = 1,
    Inventory = 2,
    Memory = 3,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {what}")]
    Bad { file: String, what: String },
}

impl ImageError {
    pub fn io(file: impl std::fmt::Display, source: std::io::Error) -> Self {
        ImageError::Io {
            file: file.to_string(),
            source,
        }
    }
    pub fn bad(file: impl std::fmt::Display, what: impl Into<String>) -> Self {
        ImageError::Bad {
            file: file.to_string(),
            what: what.into(),
        }
    }
}

/// An entry file's bytes: header, then the postcard encoding of `v`.
pub fn encode<T: Serialize>(kind: Kind, v: &T) -> Vec<u8> {
    let payload = postcard::to_stdvec(v).expect("model types always serialize");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(kind as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes an entry file of `kind`; `file` names it in errors. Never
/// panics, whatever the bytes.
pub fn decode<T: DeserializeOwned>(file: &str, kind: Kind, bytes: &[u8]) -> Result<T, ImageError> {
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
        return Err(ImageError::bad(
            file,
            "not a dumper image (no DUMPERIM header)",
        ));
    }
    let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    let version = word(8);
    if version != FORMAT_VERSION {
        return Err(ImageError::bad(
            file,
            format!("image format version {version}; this dumper reads version {FORMAT_VERSION}: use the dumper that wrote it"),
        ));
    }
    if word(12) != kind as u32 {
        return Err(ImageError::bad(
            file,
            format!(
                "holds entry kind {} where kind {} ({kind:?}) belongs",
                word(12),
                kind as u32
            ),
        ));
    }
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(ImageError::bad(
            file,
            format!(
                "truncated or padded: header says {len} payload bytes, file has {}",
                payload.len()
            ),
        ));
    }
    match postcard::take_from_bytes::<T>(payload) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(ImageError::bad(
            file,
            format!("{} bytes left over after the entry", rest.len()),
        )),
        Err(e) => Err(ImageError::bad(file, format!("corrupt entry: {e}"))),
    }
}

/// The checksum the manifest keeps for each file, as 32 hex digits.
pub fn checksum_hex(sum: u128) -> String {
    format!("{sum:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_refuse_damage() {
        let m = Manifest {
            root: 42,
            ..Default::default()
        };
        let b = encode(Kind::Manifest, &m);
        let back: Manifest = decode("m", Kind::Manifest, &b).unwrap();
        assert_eq!(back, m);
        let err = |b: &[u8], k| decode::<Manifest>("m", k, b).unwrap_err().to_string();
        assert!(err(&b[..b.len() - 1], Kind::Manifest).contains("truncated"));
        assert!(err(&b, Kind::Memory).contains("kind"));
        assert!(err(b"hello", Kind::Manifest).contains("not a dumper image"));
        let mut v = b.clone();
        v[8] = 9;
        assert!(err(&v, Kind::Manifest).contains("version 9"));
    }
}
