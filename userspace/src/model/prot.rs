use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A mapping's protection. Serialized as `"rwx"` letters with `-` where
/// absent, as /proc/PID/maps prints them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Prot {
    /// The `rwx` letters, without allocating (for the log).
    pub fn letters(self) -> &'static str {
        const ALL: [&str; 8] = ["---", "--x", "-w-", "-wx", "r--", "r-x", "rw-", "rwx"];
        ALL[(self.read as usize) << 2 | (self.write as usize) << 1 | self.exec as usize]
    }
}

impl fmt::Display for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |on, ch| if on { ch } else { '-' };
        write!(
            f,
            "{}{}{}",
            c(self.read, 'r'),
            c(self.write, 'w'),
            c(self.exec, 'x')
        )
    }
}

impl std::str::FromStr for Prot {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.as_bytes() {
            [r @ (b'r' | b'-'), w @ (b'w' | b'-'), x @ (b'x' | b'-')] => Ok(Prot {
                read: *r == b'r',
                write: *w == b'w',
                exec: *x == b'x',
            }),
            _ => Err(format!("bad protection {s:?} (want e.g. \"r-x\")")),
        }
    }
}

impl Serialize for Prot {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Prot;

    #[test]
    fn letters() {
        let p = Prot {
            read: true,
            write: false,
            exec: true,
        };
        assert_eq!(p.to_string(), "r-x");
        assert_eq!("r-x".parse::<Prot>().unwrap(), p);
        assert_eq!("---".parse::<Prot>().unwrap(), Prot::default());
        assert!("rw".parse::<Prot>().is_err() && "rwz".parse::<Prot>().is_err());
    }
}
