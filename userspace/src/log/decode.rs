//! Reading a log back: definitions first, then every record of every
//! chunk in time order, formatted with its site's format string. A log
//! whose writer died reads up to the last record it finished.

use super::format::{self, hdr, kind, CHUNK_HEADER, DEFINE, HEADER, LEVEL_NAMES};
use std::collections::HashMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Def {
    pub level: u8,
    pub file: String,
    pub line: u32,
    pub fmt: String,
    pub kinds: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Value {
    U(u64),
    I(i64),
    S(String),
    B(bool),
    F(f64),
    #[serde(serialize_with = "hex")]
    X(u64),
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    /// Nanoseconds since the log was opened.
    pub t_ns: u64,
    pub tid: u32,
    pub level: &'static str,
    pub file: String,
    pub line: u32,
    pub msg: String,
    pub args: Vec<Value>,
}

pub struct Log {
    pub pid: u32,
    pub build: String,
    /// Realtime of the opening, ns since the epoch.
    pub opened_ns: u64,
    /// Whether the writer closed it (false: it died or is still running).
    pub closed: bool,
    pub entries: Vec<Entry>,
    /// Records whose site has no definition (their chunk was cut).
    pub undefined: usize,
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// Parses the arguments of `kinds` from `b`.
fn values(b: &[u8], kinds: &[u8]) -> Option<Vec<Value>> {
    let mut o = 0;
    let mut v = Vec::with_capacity(kinds.len());
    for &k in kinds {
        if k == kind::STR {
            let n = u32_at(b, o)? as usize;
            let s = b.get(o + 4..o + 4 + n)?;
            v.push(Value::S(String::from_utf8_lossy(s).into_owned()));
            o += 4 + n;
            continue;
        }
        let w = u64_at(b, o)?;
        o += 8;
        v.push(match k {
            kind::U64 => Value::U(w),
            kind::I64 => Value::I(w as i64),
            kind::BOOL => Value::B(w != 0),
            kind::F64 => Value::F(f64::from_bits(w)),
            kind::HEX => Value::X(w),
            _ => return None,
        });
    }
    Some(v)
}

fn show(v: &Value, spec: &str, out: &mut String) {
    let _ = match (v, spec) {
        (Value::U(n) | Value::X(n), ":x") => write!(out, "{n:x}"),
        (Value::U(n) | Value::X(n), ":#x") => write!(out, "{n:#x}"),
        (Value::I(n), ":x") => write!(out, "{n:x}"),
        (Value::I(n), ":#x") => write!(out, "{n:#x}"),
        (Value::S(s), ":?") => write!(out, "{s:?}"),
        (Value::X(n), _) => write!(out, "{n:#x}"),
        (Value::U(n), _) => write!(out, "{n}"),
        (Value::I(n), _) => write!(out, "{n}"),
        (Value::S(s), _) => write!(out, "{s}"),
        (Value::B(b), _) => write!(out, "{b}"),
        (Value::F(f), _) => write!(out, "{f}"),
    };
}

/// Formats `fmt` with `args`: `{}`, `{:x}`, `{:#x}`, `{:?}`; `{{` and `}}`
/// are braces.
pub fn render(fmt: &str, args: &[Value]) -> String {
    let mut out = String::with_capacity(fmt.len() + 16 * args.len());
    let mut it = args.iter();
    let mut rest = fmt;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if let Some(after) = tail.strip_prefix('}') {
            out.push('}');
            rest = after;
            continue;
        }
        let Some(j) = tail.find('}') else {
            out.push_str(tail);
            rest = "";
            break;
        };
        match it.next() {
            Some(v) => show(v, &tail[1..j], &mut out),
            None => out.push_str("<missing>"),
        }
        rest = &tail[j + 1..];
    }
    out.push_str(rest);
    out
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}: not a dumper log (bad magic): give the file dumper -o wrote")]
    Magic(String),
    #[error("{path}: log format version {found}, this dumper reads version {want}: decode it with the dumper that wrote it ({build})")]
    Version {
        path: String,
        found: u32,
        want: u32,
        build: String,
    },
    #[error("{0}: shorter than a log header ({1} bytes): the writer died before it wrote one")]
    Short(String, usize),
}

/// Decodes the log in `b` (read from `path`).
pub fn decode(path: &str, b: &[u8]) -> Result<Log, DecodeError> {
    if b.len() < HEADER {
        return Err(DecodeError::Short(path.into(), b.len()));
    }
    if b[..8] != format::MAGIC {
        return Err(DecodeError::Magic(path.into()));
    }
    let build = String::from_utf8_lossy(&b[hdr::BUILD..hdr::BUILD + hdr::BUILD_LEN])
        .trim_end_matches('\0')
        .to_string();
    let version = u32_at(b, hdr::VERSION).unwrap_or(0);
    if version != format::VERSION {
        return Err(DecodeError::Version {
            path: path.into(),
            found: version,
            want: format::VERSION,
            build,
        });
    }
    let chunk = u32_at(b, hdr::CHUNK).unwrap_or(0) as usize;
    let chunk = if chunk >= CHUNK_HEADER * 2 {
        chunk
    } else {
        format::CHUNK
    };
    let r64 = |o| u64_at(b, o).unwrap_or(0);
    // Clock pairs (tsc, monotonic ns): the opening, each chunk's, the
    // closing; the time of a record is interpolated between the outermost.
    let mut pairs = vec![(r64(hdr::OPEN), r64(hdr::OPEN + 8))];
    let closed = r64(hdr::CLOSE) != 0;
    if closed {
        pairs.push((r64(hdr::CLOSE), r64(hdr::CLOSE + 8)));
    }
    let mut defs: HashMap<u32, Def> = HashMap::new();
    // (tsc, chunk sequence, index in chunk, tid, site, payload range)
    let mut raw: Vec<(u64, u64, usize, u32, u32, std::ops::Range<usize>)> = vec![];
    let mut at = HEADER;
    while at + CHUNK_HEADER <= b.len() {
        let c = &b[at..(at + chunk).min(b.len())];
        at += chunk;
        if u32_at(c, 0) != Some(format::CHUNK_MAGIC) {
            continue;
        }
        let base = at - chunk;
        let tid = u32_at(c, 4).unwrap_or(0);
        let seq = u64_at(c, 8).unwrap_or(0);
        pairs.push((u64_at(c, 16).unwrap_or(0), u64_at(c, 24).unwrap_or(0)));
        let mut o = CHUNK_HEADER;
        let mut idx = 0;
        let first = raw.len();
        while let Some(w) = u64_at(c, o) {
            let len = format::header_len(w);
            let head = if format::header_stamped(w) { 16 } else { 8 };
            if w == 0 || len < head || o + len > c.len() {
                break;
            }
            let site = format::header_site(w);
            let payload = base + o + head..base + o + len;
            if site == DEFINE {
                if let Some((id, d)) = definition(&b[payload.clone()]) {
                    defs.insert(id, d);
                }
            } else {
                let tsc = if head == 16 {
                    u64_at(c, o + 8).unwrap_or(0)
                } else {
                    0
                };
                raw.push((tsc, seq, idx, tid, site, payload));
            }
            idx += 1;
            o += len;
        }
        stamp_between(&mut raw[first..]);
    }
    pairs.retain(|p| p.0 != 0);
    pairs.sort_unstable();
    let (t0, m0) = pairs.first().copied().unwrap_or((0, 0));
    let (t1, m1) = pairs.last().copied().unwrap_or((0, 0));
    let ns_per_tick = if t1 > t0 && m1 > m0 {
        (m1 - m0) as f64 / (t1 - t0) as f64
    } else {
        0.0
    };
    let open_mono = r64(hdr::OPEN + 8);
    raw.sort_by_key(|r| (r.0, r.1, r.2));
    let mut entries = Vec::with_capacity(raw.len());
    let mut undefined = 0;
    for (tsc, _, _, tid, site, payload) in raw {
        let Some(d) = defs.get(&site) else {
            undefined += 1;
            continue;
        };
        let args = values(&b[payload], &d.kinds).unwrap_or_default();
        let mono = m0 as f64 + (tsc as f64 - t0 as f64) * ns_per_tick;
        entries.push(Entry {
            t_ns: (mono - open_mono as f64).max(0.0) as u64,
            tid,
            level: LEVEL_NAMES.get(d.level as usize).copied().unwrap_or("?"),
            file: d.file.clone(),
            line: d.line,
            msg: render(&d.fmt, &args),
            args,
        });
    }
    Ok(Log {
        pid: u32_at(b, hdr::PID).unwrap_or(0),
        build,
        opened_ns: r64(hdr::OPEN + 16),
        closed,
        entries,
        undefined,
    })
}

/// Records of one chunk without a time stamp (the writer reads the clock
/// on some only) get one between the stamps before and after them; those
/// after the last stamp get the last.
fn stamp_between<T>(recs: &mut [(u64, u64, usize, u32, u32, T)]) {
    let stamped: Vec<usize> = (0..recs.len()).filter(|&i| recs[i].0 != 0).collect();
    for w in stamped.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (ta, tb) = (recs[a].0, recs[b].0.max(recs[a].0));
        for (k, r) in recs[a + 1..b].iter_mut().enumerate() {
            r.0 = ta + (tb - ta) * (k + 1) as u64 / (b - a) as u64;
        }
    }
    if let Some(&last) = stamped.last() {
        let t = recs[last].0;
        for r in &mut recs[last + 1..] {
            r.0 = t;
        }
    }
}

fn definition(p: &[u8]) -> Option<(u32, Def)> {
    let id = u32_at(p, 0)?;
    let line = u32_at(p, 4)?;
    let level = *p.get(8)?;
    let n = *p.get(9)? as usize;
    let kinds = p.get(10..10 + n)?.to_vec();
    let v = values(p.get(10 + n..)?, &[kind::STR, kind::STR])?;
    let [Value::S(file), Value::S(fmt)] = <[Value; 2]>::try_from(v).ok()? else {
        return None;
    };
    Some((
        id,
        Def {
            level,
            file,
            line,
            fmt,
            kinds,
        },
    ))
}

/// One line per entry: seconds since the opening, thread, level, source
/// location, message.
pub fn text_line(e: &Entry) -> String {
    format!(
        "{:>4}.{:09} {:>7} {:<5} {}:{}: {}",
        e.t_ns / 1_000_000_000,
        e.t_ns % 1_000_000_000,
        e.tid,
        e.level,
        e.file,
        e.line,
        e.msg
    )
}
