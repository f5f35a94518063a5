//! WAL file names, segment numbers and LSNs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use zdr_core::{Error, Result};

/// The default `wal_segment_size` (16 MiB).
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// A write-ahead log location (`0/16B3748` in PostgreSQL's notation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::bad_input(format!(
                "invalid LSN {s:?}: use PostgreSQL's notation, such as 0/16B3748"
            ))
        };
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Self((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl From<Lsn> for String {
    fn from(l: Lsn) -> String {
        l.to_string()
    }
}

impl TryFrom<String> for Lsn {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// One WAL segment: timeline and segment number (`TTTTTTTTXXXXXXXXYYYYYYYY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    /// The timeline.
    pub timeline: u32,
    /// The segment number: byte position / segment size.
    pub number: u64,
}

fn segs_per_id(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size.max(1)
}

impl Segment {
    /// The segment of `timeline` that holds `lsn`.
    #[must_use]
    pub fn containing(timeline: u32, lsn: Lsn, segment_size: u64) -> Self {
        Self {
            timeline,
            number: lsn.0 / segment_size.max(1),
        }
    }

    /// The file name, as in `pg_wal`.
    #[must_use]
    pub fn name(&self, segment_size: u64) -> String {
        let per = segs_per_id(segment_size);
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / per,
            self.number % per
        )
    }

    /// Parse a 24-hex-digit segment name.
    ///
    /// # Errors
    /// [`zdr_core::ErrorKind::BadInput`] for anything else.
    pub fn parse(name: &str, segment_size: u64) -> Result<Self> {
        if name.len() != 24 || !name.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::bad_input(format!(
                "{name:?} is not a WAL segment name (24 hex digits)"
            )));
        }
        let part = |r: std::ops::Range<usize>| u32::from_str_radix(&name[r], 16).unwrap_or(0);
        let per = segs_per_id(segment_size);
        let (tl, log, seg) = (part(0..8), part(8..16), part(16..24));
        if u64::from(seg) >= per {
            return Err(Error::bad_input(format!(
                "{name:?} is not a WAL segment name for {} MiB segments",
                segment_size / (1024 * 1024)
            )));
        }
        Ok(Self {
            timeline: tl,
            number: u64::from(log) * per + u64::from(seg),
        })
    }

    /// The first LSN of the segment.
    #[must_use]
    pub fn start(&self, segment_size: u64) -> Lsn {
        Lsn(self.number * segment_size)
    }
}

/// A file PostgreSQL hands to `archive_command` or asks `restore_command` for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalFile {
    /// A WAL segment.
    Segment(Segment),
    /// `TTTTTTTT.history`: the history of a timeline.
    History(u32),
    /// `<segment>.<offset>.backup`: a backup history file.
    Backup(u32),
    /// `<segment>.partial`: the last, partial segment of a timeline after a promotion.
    Partial(u32),
}

impl WalFile {
    /// Classify `name` (a file name, no directory).
    ///
    /// # Errors
    /// [`zdr_core::ErrorKind::BadInput`] for names PostgreSQL does not archive.
    pub fn parse(name: &str, segment_size: u64) -> Result<Self> {
        let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
        let tl = |s: &str| u32::from_str_radix(&s[..8], 16).unwrap_or(0);
        if hex(name, 24) {
            return Segment::parse(name, segment_size).map(Self::Segment);
        }
        if let Some(t) = name.strip_suffix(".history")
            && hex(t, 8)
        {
            return Ok(Self::History(tl(t)));
        }
        if let Some(s) = name.strip_suffix(".partial")
            && hex(s, 24)
        {
            return Ok(Self::Partial(tl(s)));
        }
        if let Some(rest) = name.strip_suffix(".backup")
            && let Some((s, off)) = rest.split_once('.')
            && hex(s, 24)
            && hex(off, 8)
        {
            return Ok(Self::Backup(tl(s)));
        }
        Err(Error::bad_input(format!(
            "{name:?} is not a WAL file name (segment, .history, .partial or .backup)"
        )))
    }

    /// The timeline whose directory holds the file.
    #[must_use]
    pub fn timeline(&self) -> u32 {
        match self {
            Self::Segment(s) => s.timeline,
            Self::History(t) | Self::Backup(t) | Self::Partial(t) => *t,
        }
    }
}

/// The archive key (without compression suffix) of a WAL file:
/// `<prefix>/<timeline>/<name>` (the prefix is `wal/<component>`).
#[must_use]
pub fn base_key(prefix: &str, file: &WalFile, name: &str) -> String {
    format!("{prefix}/{:08X}/{name}", file.timeline())
}

/// One line of a timeline history file: the parent timeline and where it was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// The timeline that was left.
    pub parent: u32,
    /// The first LSN of the new timeline.
    pub at: Lsn,
}

/// Parse a `.history` file's text.
///
/// # Errors
/// [`zdr_core::ErrorKind::Integrity`] for malformed lines.
pub fn parse_history(text: &str) -> Result<Vec<Switch>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let parent = parts.next().and_then(|p| p.parse::<u32>().ok());
        let at = parts.next().and_then(|p| p.parse::<Lsn>().ok());
        match (parent, at) {
            (Some(parent), Some(at)) => out.push(Switch { parent, at }),
            _ => {
                return Err(Error::integrity(format!(
                    "malformed timeline history line {line:?}"
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() -> Result<()> {
        let s = Segment::parse("0000000200000001000000FE", DEFAULT_SEGMENT_SIZE)?;
        assert_eq!(s.timeline, 2);
        assert_eq!(s.number, 256 + 254);
        assert_eq!(s.name(DEFAULT_SEGMENT_SIZE), "0000000200000001000000FE");
        let next = Segment {
            number: s.number + 2,
            ..s
        };
        assert_eq!(next.name(DEFAULT_SEGMENT_SIZE), "000000020000000200000000");
        let lsn: Lsn = "1/FE000028".parse()?;
        assert_eq!(Segment::containing(2, lsn, DEFAULT_SEGMENT_SIZE), s);
        assert_eq!(lsn.to_string(), "1/FE000028");
        assert!(Segment::parse("000000010000000000000100", DEFAULT_SEGMENT_SIZE).is_err());
        assert!("zz".parse::<Lsn>().is_err());
        Ok(())
    }

    #[test]
    fn wal_file_kinds() -> Result<()> {
        let size = DEFAULT_SEGMENT_SIZE;
        assert_eq!(
            WalFile::parse("00000003.history", size)?,
            WalFile::History(3)
        );
        assert_eq!(
            WalFile::parse("000000010000000000000002.00000028.backup", size)?,
            WalFile::Backup(1)
        );
        assert_eq!(
            WalFile::parse("000000010000000000000009.partial", size)?,
            WalFile::Partial(1)
        );
        for bad in [
            "",
            "../x",
            "00000001.hist",
            "0000000100000000000000G1",
            "a/b",
        ] {
            assert!(WalFile::parse(bad, size).is_err(), "{bad}");
        }
        let f = WalFile::parse("000000020000000000000003", size)?;
        assert_eq!(
            base_key("wal/db", &f, "000000020000000000000003"),
            "wal/db/00000002/000000020000000000000003"
        );
        Ok(())
    }

    #[test]
    fn history_files_parse() -> Result<()> {
        let h =
            parse_history("1\t0/3000000\tno recovery target specified\n\n2\t0/5000A0\tafter\n")?;
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].parent, 2);
        assert_eq!(h[1].at, Lsn(0x5000A0));
        assert!(parse_history("x y").is_err());
        Ok(())
    }
}
