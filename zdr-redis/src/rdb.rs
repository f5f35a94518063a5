//! A streaming reader of the RDB format: checks the `REDIS` magic and version, walks every
//! record (keys, expiries, auxiliary fields, functions) without keeping values in memory,
//! counts keys per database, and checks the CRC64 trailer.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};
use zdr_core::{Error, Result};

/// The CRC64 of redis (`crc64.c`): Jones polynomial `0xad93d23594c935a9`, reflected,
/// initial value 0, no final xor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Crc64 {
    value: u64,
}

const CRC64_TABLE: [u64; 256] = {
    // The reflected form of 0xad93d23594c935a9.
    const POLY: u64 = 0x95ac_9329_ac4b_c9b5;
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

impl Crc64 {
    /// A fresh checksum.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut crc = self.value;
        for &b in bytes {
            crc = CRC64_TABLE[((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8);
        }
        self.value = crc;
    }

    /// The checksum of everything added so far.
    #[must_use]
    pub fn value(&self) -> u64 {
        self.value
    }
}

/// What the reader learned from a complete, valid RDB stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdbSummary {
    /// The RDB format version from the header (`REDIS0010` is 10).
    pub version: u32,
    /// Keys per database, counted record by record.
    pub keys: BTreeMap<u32, u64>,
    /// Keys with an expiry per database.
    pub volatile: BTreeMap<u32, u64>,
    /// The `RESIZEDB` hints per database (the server's key count when it wrote the file).
    pub resizedb_hints: BTreeMap<u32, u64>,
    /// The `redis-ver` auxiliary field, if present.
    pub redis_ver: Option<String>,
    /// The CRC64 trailer as hex, or `None` when the writer disabled checksums (zero trailer).
    pub crc64: Option<String>,
    /// The total size of the stream in bytes.
    pub bytes: u64,
}

/// The oldest and newest RDB versions the reader accepts.
pub const RDB_VERSIONS: std::ops::RangeInclusive<u32> = 1..=12;

struct Input<R> {
    inner: R,
    crc: Crc64,
    pos: u64,
}

fn truncated(pos: u64) -> Error {
    Error::integrity(format!(
        "the RDB stream is truncated (it ends after {pos} bytes, inside a record)"
    ))
}

fn corrupt(pos: u64, what: impl std::fmt::Display) -> Error {
    Error::integrity(format!("the RDB stream is corrupt at byte {pos}: {what}"))
}

impl<R: Read> Input<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => return Err(truncated(self.pos + done as u64)),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from_io(e, "cannot read the RDB stream")),
            }
        }
        self.crc.update(buf);
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let take = usize::try_from(n.min(buf.len() as u64)).unwrap_or(buf.len());
            self.exact(&mut buf[..take])?;
            n -= take as u64;
        }
        Ok(())
    }

    /// A length, or `Err(encoding)` for the special string encodings.
    fn length_or_encoding(&mut self) -> Result<std::result::Result<u64, u8>> {
        let first = self.u8()?;
        match first >> 6 {
            0 => Ok(Ok(u64::from(first & 0x3f))),
            1 => {
                let second = self.u8()?;
                Ok(Ok((u64::from(first & 0x3f) << 8) | u64::from(second)))
            }
            2 => match first {
                0x80 => {
                    let mut b = [0u8; 4];
                    self.exact(&mut b)?;
                    Ok(Ok(u64::from(u32::from_be_bytes(b))))
                }
                0x81 => {
                    let mut b = [0u8; 8];
                    self.exact(&mut b)?;
                    Ok(Ok(u64::from_be_bytes(b)))
                }
                other => Err(corrupt(
                    self.pos,
                    format!("bad length prefix 0x{other:02x}"),
                )),
            },
            _ => Ok(Err(first & 0x3f)),
        }
    }

    fn length(&mut self) -> Result<u64> {
        match self.length_or_encoding()? {
            Ok(n) => Ok(n),
            Err(enc) => Err(corrupt(
                self.pos,
                format!("a length was expected, found string encoding {enc}"),
            )),
        }
    }

    /// Read a string; keep it (up to `keep` bytes) or skip it.
    fn string(&mut self, keep: usize) -> Result<Option<Vec<u8>>> {
        match self.length_or_encoding()? {
            Ok(len) => {
                if len <= keep as u64 {
                    let mut v = vec![0u8; usize::try_from(len).unwrap_or(0)];
                    self.exact(&mut v)?;
                    Ok(Some(v))
                } else {
                    self.skip(len)?;
                    Ok(None)
                }
            }
            Err(0) => self.int_string(1),
            Err(1) => self.int_string(2),
            Err(2) => self.int_string(4),
            Err(3) => {
                let compressed = self.length()?;
                let _plain = self.length()?;
                self.skip(compressed)?;
                Ok(None)
            }
            Err(other) => Err(corrupt(
                self.pos,
                format!("unknown string encoding {other}"),
            )),
        }
    }

    fn int_string(&mut self, n: usize) -> Result<Option<Vec<u8>>> {
        let mut b = [0u8; 4];
        self.exact(&mut b[..n])?;
        let v: i64 = match n {
            1 => i64::from(b[0] as i8),
            2 => i64::from(i16::from_le_bytes([b[0], b[1]])),
            _ => i64::from(i32::from_le_bytes(b)),
        };
        Ok(Some(v.to_string().into_bytes()))
    }

    fn skip_string(&mut self) -> Result<()> {
        self.string(0).map(|_| ())
    }

    fn skip_strings(&mut self, n: u64) -> Result<()> {
        for _ in 0..n {
            self.skip_string()?;
        }
        Ok(())
    }

    /// Skip one value of `rdb_type`.
    fn skip_value(&mut self, rdb_type: u8) -> Result<()> {
        match rdb_type {
            // string; zipmap, ziplist, intset, listpack encodings (one blob each)
            0 | 9..=13 | 16 | 17 | 20 => self.skip_string(),
            // list (linked), set
            1 | 2 => {
                let n = self.length()?;
                self.skip_strings(n)
            }
            // zset (doubles as strings)
            3 => {
                let n = self.length()?;
                for _ in 0..n {
                    self.skip_string()?;
                    let len = self.u8()?;
                    if len < 253 {
                        self.skip(u64::from(len))?;
                    }
                }
                Ok(())
            }
            // hash
            4 => {
                let n = self.length()?;
                self.skip_strings(n.saturating_mul(2))
            }
            // zset2 (binary doubles)
            5 => {
                let n = self.length()?;
                for _ in 0..n {
                    self.skip_string()?;
                    self.skip(8)?;
                }
                Ok(())
            }
            // quicklist: n ziplists
            14 => {
                let n = self.length()?;
                self.skip_strings(n)
            }
            // quicklist2: n (container, blob)
            18 => {
                let n = self.length()?;
                for _ in 0..n {
                    let _container = self.length()?;
                    self.skip_string()?;
                }
                Ok(())
            }
            15 | 19 | 21 => self.skip_stream(rdb_type),
            // Redis 7.4 hashes with field expiry (from its rdb.c; no 7.4 server in the tests):
            // 24 = metadata (min expiry ms, then n x (ttl, field, value)), 22 its pre-GA form
            // without the min expiry; 25 = listpack-ex (min expiry ms + blob), 23 pre-GA.
            22 | 24 => {
                if rdb_type == 24 {
                    self.skip(8)?;
                }
                let n = self.length()?;
                for _ in 0..n {
                    self.length()?;
                    self.skip_string()?;
                    self.skip_string()?;
                }
                Ok(())
            }
            23 | 25 => {
                if rdb_type == 25 {
                    self.skip(8)?;
                }
                self.skip_string()
            }
            6 | 7 => Err(Error::new(
                zdr_core::ErrorKind::Unsupported,
                "the RDB holds a module value, which the validator cannot walk",
            )),
            other => Err(corrupt(self.pos, format!("unknown value type {other}"))),
        }
    }

    fn skip_stream(&mut self, rdb_type: u8) -> Result<()> {
        let listpacks = self.length()?;
        for _ in 0..listpacks {
            self.skip_string()?; // master id
            self.skip_string()?; // listpack
        }
        self.length()?; // length
        self.length()?; // last id ms
        self.length()?; // last id seq
        if rdb_type >= 19 {
            self.length()?; // first id ms
            self.length()?; // first id seq
            self.length()?; // max deleted ms
            self.length()?; // max deleted seq
            self.length()?; // entries added
        }
        let groups = self.length()?;
        for _ in 0..groups {
            self.skip_string()?; // name
            self.length()?; // last id ms
            self.length()?; // last id seq
            if rdb_type >= 19 {
                self.length()?; // entries read
            }
            let pel = self.length()?;
            self.skip(pel.saturating_mul(16 + 8))?;
            for _ in 0..pel {
                self.length()?; // delivery count
            }
            let consumers = self.length()?;
            for _ in 0..consumers {
                self.skip_string()?; // name
                self.skip(8)?; // seen time
                if rdb_type >= 21 {
                    self.skip(8)?; // active time
                }
                let pel = self.length()?;
                self.skip(pel.saturating_mul(16))?;
            }
        }
        Ok(())
    }
}

/// Read a whole RDB stream from `input` and check it: magic and version, every record, the
/// CRC64 trailer (unless it is zero: checksums disabled), and nothing after it. Values are
/// skipped, never kept; memory stays flat whatever the size.
///
/// # Errors
/// [`zdr_core::ErrorKind::Integrity`] for a wrong magic, an unsupported version, a corrupt
/// or truncated record, a CRC mismatch or trailing bytes; [`zdr_core::ErrorKind::Unsupported`]
/// for module values; I/O errors of `input`.
pub fn validate(input: impl Read) -> Result<RdbSummary> {
    let mut r = Input {
        inner: input,
        crc: Crc64::new(),
        pos: 0,
    };
    let mut header = [0u8; 9];
    r.exact(&mut header)?;
    if &header[..5] != b"REDIS" {
        return Err(Error::integrity(
            "not an RDB stream: the `REDIS` magic is missing",
        ));
    }
    let version = std::str::from_utf8(&header[5..])
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| Error::integrity("not an RDB stream: the version is not a number"))?;
    if !RDB_VERSIONS.contains(&version) {
        return Err(Error::integrity(format!(
            "unsupported RDB version {version} (this reader knows {}..={})",
            RDB_VERSIONS.start(),
            RDB_VERSIONS.end()
        )));
    }
    let mut summary = RdbSummary {
        version,
        ..RdbSummary::default()
    };
    let mut db: u32 = 0;
    let mut has_expiry = false;
    loop {
        let op = r.u8()?;
        match op {
            0xFF => break,
            0xFE => {
                let n = r.length()?;
                db = u32::try_from(n).map_err(|_| corrupt(r.pos, "database number too large"))?;
            }
            0xFB => {
                let size = r.length()?;
                let _expires = r.length()?;
                summary.resizedb_hints.insert(db, size);
            }
            0xFA => {
                let key = r.string(64)?;
                let value = r.string(256)?;
                if key.as_deref() == Some(b"redis-ver".as_slice()) {
                    summary.redis_ver = value.map(|v| String::from_utf8_lossy(&v).into_owned());
                }
            }
            0xFD => {
                r.skip(4)?;
                has_expiry = true;
            }
            0xFC => {
                r.skip(8)?;
                has_expiry = true;
            }
            0xF9 => r.skip(1)?,
            0xF8 => {
                r.length()?;
            }
            0xF5 => r.skip_string()?,
            0xF4 => {
                // slot info (7.4+): slot id, slot size, expires slot size
                r.length()?;
                r.length()?;
                r.length()?;
            }
            0xF6 | 0xF7 => {
                return Err(Error::new(
                    zdr_core::ErrorKind::Unsupported,
                    "the RDB holds old-style functions or module data, which the validator cannot walk",
                ));
            }
            t => {
                r.skip_string()?; // the key
                r.skip_value(t)?;
                *summary.keys.entry(db).or_insert(0) += 1;
                if has_expiry {
                    *summary.volatile.entry(db).or_insert(0) += 1;
                }
                has_expiry = false;
            }
        }
    }
    if version >= 5 {
        let computed = r.crc.value();
        let mut trailer = [0u8; 8];
        r.exact(&mut trailer)?;
        let stored = u64::from_le_bytes(trailer);
        if stored != 0 {
            if stored != computed {
                return Err(Error::integrity(format!(
                    "the RDB checksum does not match: trailer {stored:016x}, computed {computed:016x}"
                )));
            }
            summary.crc64 = Some(format!("{stored:016x}"));
        }
    }
    let mut extra = [0u8; 1];
    loop {
        match r.inner.read(&mut extra) {
            Ok(0) => break,
            Ok(_) => {
                return Err(Error::integrity(
                    "the RDB stream has bytes after its checksum trailer",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from_io(e, "cannot read the RDB stream")),
        }
    }
    summary.bytes = r.pos;
    Ok(summary)
}

/// Feed arbitrary bytes to [`validate`]; used by the fuzz target and the tests. Never panics.
pub fn validate_bytes(bytes: &[u8]) -> Result<RdbSummary> {
    validate(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_matches_redis() {
        let mut c = Crc64::new();
        c.update(b"123456789");
        assert_eq!(c.value(), 0xe9c6_d914_c4b8_d9ca);
    }

    fn tiny() -> Vec<u8> {
        let mut v = b"REDIS0010".to_vec();
        v.extend_from_slice(&[0xFA, 9]);
        v.extend_from_slice(b"redis-ver");
        v.extend_from_slice(&[6]);
        v.extend_from_slice(b"7.0.15");
        v.extend_from_slice(&[0xFE, 0, 0xFB, 2, 1]);
        v.extend_from_slice(&[0, 1, b'a', 1, b'1']);
        v.extend_from_slice(&[0xFC, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'b', 0xC0, 7]);
        v.extend_from_slice(&[0xFE, 3, 0, 1, b'c', 0, 0xFF]);
        let mut c = Crc64::new();
        c.update(&v);
        v.extend_from_slice(&c.value().to_le_bytes());
        v
    }

    #[test]
    fn reads_a_handmade_rdb() -> Result<()> {
        let s = validate_bytes(&tiny())?;
        assert_eq!(s.version, 10);
        assert_eq!(s.keys.get(&0), Some(&2));
        assert_eq!(s.keys.get(&3), Some(&1));
        assert_eq!(s.volatile.get(&0), Some(&1));
        assert_eq!(s.resizedb_hints.get(&0), Some(&2));
        assert_eq!(s.redis_ver.as_deref(), Some("7.0.15"));
        Ok(())
    }

    #[test]
    fn truncations_and_flips_are_integrity_errors_never_panics() {
        let good = tiny();
        for cut in 0..good.len() {
            let e = validate_bytes(&good[..cut]).err();
            assert_eq!(
                e.map(|e| e.kind()),
                Some(zdr_core::ErrorKind::Integrity),
                "cut {cut}"
            );
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                assert!(validate_bytes(&bad).is_err(), "flip {i}:{bit}");
            }
        }
        // Random inputs, with and without a valid header.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..3000 {
            let len = (round % 200) + 1;
            let mut buf = Vec::with_capacity(len + 9);
            if round % 2 == 0 {
                buf.extend_from_slice(b"REDIS0010");
            }
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                buf.push((state >> 24) as u8);
            }
            let _ = validate_bytes(&buf);
        }
    }
}
