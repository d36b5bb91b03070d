//! Just enough of a BTF reader for the build script: find a struct's member
//! by a dotted path (descending through anonymous unions and structs, as C
//! does) and give its byte offset and size, so the eBPF programs read kernel
//! fields at the offsets of the kernel they are built for. Rust eBPF has no
//! CO-RE relocations (aya issue 349), so this is how offsets stay honest.

use std::collections::HashMap;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_ENUM64: u32 = 19;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Clone, Debug)]
struct Member {
    name: String,
    ty: u32,
    bit_offset: u32,
    bitfield: bool,
    /// A bitfield's width in bits (kind_flag structs), 0 otherwise.
    bits: u32,
}

#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    name: String,
    size_or_type: u32,
    members: Vec<Member>,
    array: Option<(u32, u32)>,
    enumerators: Vec<(String, i64)>,
}

pub struct Btf {
    types: Vec<Type>,
    by_name: HashMap<(u32, String), u32>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, String> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
        .ok_or_else(|| format!("BTF truncated at byte {off}"))
}

impl Btf {
    /// Parses raw BTF (the contents of /sys/kernel/btf/vmlinux or of a
    /// vmlinux ELF's .BTF section).
    pub fn parse(b: &[u8]) -> Result<Btf, String> {
        if b.len() < 24 || u16::from_le_bytes([b[0], b[1]]) != 0xeb9f {
            return Err("not little-endian BTF (bad magic)".into());
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = hdr_len + u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = hdr_len + u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let strs = b
            .get(str_off..str_off + str_len)
            .ok_or("BTF string section out of bounds")?;
        let name = |off: u32| -> String {
            let s = &strs[(off as usize).min(strs.len())..];
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };
        // Type id 0 is void.
        let mut types = vec![Type {
            kind: 0,
            name: String::new(),
            size_or_type: 0,
            members: vec![],
            array: None,
            enumerators: vec![],
        }];
        let mut p = type_off;
        let end = type_off + type_len;
        while p < end {
            let name_off = u32_at(b, p)?;
            let info = u32_at(b, p + 4)?;
            let size_or_type = u32_at(b, p + 8)?;
            p += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kflag = info >> 31 == 1;
            let mut t = Type {
                kind,
                name: name(name_off),
                size_or_type,
                members: vec![],
                array: None,
                enumerators: vec![],
            };
            match kind {
                KIND_INT | 14 | 17 => p += 4,
                KIND_ARRAY => {
                    t.array = Some((u32_at(b, p)?, u32_at(b, p + 8)?));
                    p += 12;
                }
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let off = u32_at(b, p + 8)?;
                        t.members.push(Member {
                            name: name(u32_at(b, p)?),
                            ty: u32_at(b, p + 4)?,
                            bit_offset: if kflag { off & 0xff_ffff } else { off },
                            bitfield: kflag && (off >> 24) != 0,
                            bits: if kflag { off >> 24 } else { 0 },
                        });
                        p += 12;
                    }
                }
                KIND_ENUM => {
                    for _ in 0..vlen {
                        let v = u32_at(b, p + 4)? as i32 as i64;
                        t.enumerators.push((name(u32_at(b, p)?), v));
                        p += 8;
                    }
                }
                KIND_ENUM64 => {
                    for _ in 0..vlen {
                        let v =
                            (u32_at(b, p + 4)? as u64 | (u32_at(b, p + 8)? as u64) << 32) as i64;
                        t.enumerators.push((name(u32_at(b, p)?), v));
                        p += 12;
                    }
                }
                13 => p += 8 * vlen,  // FUNC_PROTO params
                15 => p += 12 * vlen, // DATASEC vars
                _ => {}
            }
            types.push(t);
        }
        let mut by_name = HashMap::new();
        for (id, t) in types.iter().enumerate() {
            if !t.name.is_empty() {
                by_name.entry((t.kind, t.name.clone())).or_insert(id as u32);
            }
        }
        Ok(Btf { types, by_name })
    }

    fn strip(&self, mut id: u32) -> u32 {
        loop {
            let t = &self.types[id as usize];
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return id,
            }
        }
    }

    fn size_of(&self, id: u32) -> u32 {
        let t = &self.types[self.strip(id) as usize];
        match t.kind {
            KIND_PTR => 8,
            KIND_ARRAY => {
                let (elem, n) = t.array.unwrap();
                self.size_of(elem) * n
            }
            _ => t.size_or_type,
        }
    }

    fn struct_id(&self, name: &str) -> Result<u32, String> {
        self.by_name
            .get(&(KIND_STRUCT, name.to_string()))
            .or_else(|| self.by_name.get(&(KIND_UNION, name.to_string())))
            .copied()
            .ok_or_else(|| format!("struct {name} not in BTF"))
    }

    /// Finds `name` in struct/union `id`, looking inside anonymous members.
    fn member(&self, id: u32, name: &str) -> Option<(u32, u32, bool)> {
        let t = &self.types[self.strip(id) as usize];
        for m in &t.members {
            if m.name == name {
                return Some((m.bit_offset, m.ty, m.bitfield));
            }
            if m.name.is_empty() {
                if let Some((off, ty, bf)) = self.member(m.ty, name) {
                    return Some((m.bit_offset + off, ty, bf));
                }
            }
        }
        None
    }

    /// Byte offset and size of `path` (`"a.b"`) inside `struct sname`.
    pub fn field(&self, sname: &str, path: &str) -> Result<(u32, u32), String> {
        let mut id = self.struct_id(sname)?;
        let mut bits = 0;
        for part in path.split('.') {
            let (off, ty, bitfield) = self
                .member(id, part)
                .ok_or_else(|| format!("struct {sname} has no member {path}"))?;
            if bitfield || off % 8 != 0 {
                return Err(format!("{sname}.{path} is a bitfield"));
            }
            bits += off;
            id = ty;
        }
        Ok((bits / 8, self.size_of(id)))
    }

    /// The byte holding one-bit bitfield `name` of `struct sname`, and the
    /// bit's mask in it.
    pub fn flag_bit(&self, sname: &str, name: &str) -> Result<(u32, u8), String> {
        let id = self.struct_id(sname)?;
        let t = &self.types[self.strip(id) as usize];
        let m = t
            .members
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| format!("struct {sname} has no member {name}"))?;
        if m.bits != 1 {
            return Err(format!("{sname}.{name} is not a one-bit bitfield"));
        }
        Ok((m.bit_offset / 8, 1u8 << (m.bit_offset % 8)))
    }

    pub fn struct_size(&self, sname: &str) -> Result<u32, String> {
        Ok(self.size_of(self.struct_id(sname)?))
    }

    pub fn enum_value(&self, name: &str) -> Result<i64, String> {
        self.types
            .iter()
            .filter(|t| t.kind == KIND_ENUM || t.kind == KIND_ENUM64)
            .flat_map(|t| t.enumerators.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("enumerator {name} not in BTF"))
    }
}

// Compiled only when the library includes this file for its tests
// (src/lib.rs); the build script never sees cfg(test).
#[cfg(test)]
mod tests {
    use super::Btf;

    /// A BTF blob: `struct outer { int a; union { int b; struct outer *c; }; }`,
    /// `enum e { E_ONE = 7 }`, `typedef int t`.
    fn blob() -> Vec<u8> {
        let strs = b"\0int\0outer\0a\0b\0c\0e\0E_ONE\0t\0";
        let off = |s: &str| {
            let pat = format!("\0{s}\0");
            strs.windows(pat.len())
                .position(|w| w == pat.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut t: Vec<u32> = vec![];
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        t.extend([off("int"), info(1, 0), 4, 32]); // 1: int
        t.extend([off("outer"), info(4, 2), 16]); // 2: struct outer
        t.extend([off("a"), 1, 0, 0, 3, 64]); //    a at 0; anonymous union at bit 64
        t.extend([0, info(5, 2), 8]); // 3: union
        t.extend([off("b"), 1, 0, off("c"), 4, 0]);
        t.extend([0, info(2, 0), 2]); // 4: struct outer *
        t.extend([off("e"), info(6, 1), 4, off("E_ONE"), 7]); // 5: enum
        t.extend([off("t"), info(8, 0), 1]); // 6: typedef int t
        let types: Vec<u8> = t.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut b = vec![];
        b.extend(0xeb9fu16.to_le_bytes());
        b.extend([1u8, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strs.len() as u32,
        ] {
            b.extend(w.to_le_bytes());
        }
        b.extend(types);
        b.extend(strs);
        b
    }

    #[test]
    fn members_through_anonymous_unions() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.field("outer", "a"), Ok((0, 4)));
        assert_eq!(btf.field("outer", "b"), Ok((8, 4)));
        assert_eq!(btf.field("outer", "c"), Ok((8, 8)));
        assert_eq!(btf.struct_size("outer"), Ok(16));
        assert_eq!(btf.enum_value("E_ONE"), Ok(7));
        assert!(btf.field("outer", "zz").is_err());
        assert!(btf.field("inner", "a").is_err());
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(Btf::parse(b"\x7fELF not btf at all, not at all").is_err());
        let mut b = blob();
        b.truncate(40);
        assert!(Btf::parse(&b).is_err());
    }

    #[test]
    fn the_running_kernel() {
        let Ok(raw) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux: skipped");
            return;
        };
        let btf = Btf::parse(&raw).unwrap();
        // Sizes that have not changed in years; offsets are the kernel's.
        assert_eq!(btf.field("task_struct", "pid").unwrap().1, 4);
        assert_eq!(btf.field("task_struct", "comm").unwrap().1, 16);
        assert_eq!(btf.field("vm_area_struct", "vm_flags").unwrap().1, 8);
        assert_eq!(btf.field("bpf_iter__task_file", "fd").unwrap().1, 4);
        assert_eq!(btf.enum_value("PIDTYPE_SID"), Ok(3));
    }
}
