//! A reader of tar headers over a stream passing by: it learns which collection snapshots a
//! full-storage snapshot was made of, from the `config.json` Qdrant puts in it, without
//! holding the archive.

use std::collections::HashMap;

use serde_json::Value;

const BLOCK: usize = 512;
/// The most of `config.json` kept (it maps collections to snapshot names).
const CONFIG_LIMIT: usize = 16 << 20;

/// Tar headers seen so far, fed chunk by chunk.
#[derive(Default)]
pub(crate) struct TarScan {
    header: Vec<u8>,
    /// Content (and padding) bytes still to pass before the next header.
    skip: u64,
    /// Content bytes still to keep of the current entry (`collect` receives them).
    keep: u64,
    collect: Option<Collect>,
    /// GNU sparse extension blocks still to pass.
    sparse_ext: bool,
    long_name: Option<Vec<u8>>,
    long_buf: Vec<u8>,
    config: Vec<u8>,
    ended: bool,
    broken: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Collect {
    LongName,
    Config,
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Base-256 (GNU) for sizes past the octal field.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| char::from(*b))
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn cstr(field: &[u8]) -> Vec<u8> {
    field.iter().take_while(|b| **b != 0).copied().collect()
}

impl TarScan {
    /// Pass the next bytes of the archive.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.ended && !self.broken {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let kept = usize::try_from(self.keep).unwrap_or(usize::MAX).min(n);
                match self.collect {
                    Some(Collect::LongName) => self.long_buf.extend_from_slice(&data[..kept]),
                    Some(Collect::Config) if self.config.len() + kept <= CONFIG_LIMIT => {
                        self.config.extend_from_slice(&data[..kept]);
                    }
                    _ => {}
                }
                self.keep -= kept as u64;
                self.skip -= n as u64;
                data = &data[n..];
                if self.skip == 0 && self.collect == Some(Collect::LongName) {
                    self.long_name = Some(cstr(&std::mem::take(&mut self.long_buf)));
                }
                if self.skip == 0 {
                    self.collect = None;
                }
                continue;
            }
            let take = (BLOCK - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() < BLOCK {
                continue;
            }
            let block = std::mem::take(&mut self.header);
            if self.sparse_ext {
                self.sparse_ext = block[504] != 0;
                continue;
            }
            self.header_block(&block);
        }
    }

    fn header_block(&mut self, h: &[u8]) {
        if h.iter().all(|b| *b == 0) {
            self.ended = true;
            return;
        }
        let stored = octal(&h[148..156]);
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    u64::from(b' ')
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        let Some(size) = octal(&h[124..136]).filter(|_| stored == Some(sum)) else {
            self.broken = true;
            return;
        };
        let flag = h[156];
        let mut name = self.long_name.take().unwrap_or_else(|| cstr(&h[..100]));
        if &h[257..263] == b"ustar\0" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                let mut full = prefix;
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
        }
        self.skip = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        self.keep = size;
        self.collect = match flag {
            b'L' => Some(Collect::LongName),
            b'0' | 0 if name == b"config.json" => Some(Collect::Config),
            _ => None,
        };
        self.sparse_ext = flag == b'S' && h[482] != 0;
    }

    /// The collection → snapshot name map of the archive's `config.json`, once the whole
    /// archive passed; `None` when it was not a readable Qdrant full snapshot.
    pub(crate) fn collection_snapshots(&self) -> Option<HashMap<String, String>> {
        if self.broken || self.config.is_empty() {
            return None;
        }
        let v: Value = serde_json::from_slice(&self.config).ok()?;
        v["collections_mapping"].as_object().map(|m| {
            m.iter()
                .filter_map(|(c, s)| Some((c.clone(), s.as_str()?.to_owned())))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(out: &mut Vec<u8>, name: &str, body: &[u8]) {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        let size = format!("{:011o}\0", body.len());
        h[124..136].copy_from_slice(size.as_bytes());
        h[156] = b'0';
        h[257..265].copy_from_slice(b"ustar  \0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }

    #[test]
    fn finds_the_collection_map_in_any_chunking() {
        let mut tar = Vec::new();
        entry(&mut tar, "a-1-2026.snapshot", &[7u8; 1300]);
        entry(&mut tar, "b-1-2026.snapshot", b"");
        entry(
            &mut tar,
            "config.json",
            br#"{"collections_mapping": {"a": "a-1-2026.snapshot", "b": "b-1-2026.snapshot"}, "collections_aliases": {}}"#,
        );
        tar.extend_from_slice(&[0u8; 2 * BLOCK]);
        for chunk in [1, 7, 511, 512, 513, 4096, tar.len()] {
            let mut scan = TarScan::default();
            for c in tar.chunks(chunk) {
                scan.feed(c);
            }
            let map = scan.collection_snapshots();
            assert_eq!(
                map.as_ref().and_then(|m| m.get("a")).map(String::as_str),
                Some("a-1-2026.snapshot"),
                "chunk {chunk}"
            );
            assert_eq!(map.map(|m| m.len()), Some(2));
        }
    }

    #[test]
    fn anything_else_is_not_a_full_snapshot() {
        let mut scan = TarScan::default();
        scan.feed(&[b'x'; 4096]);
        assert!(scan.collection_snapshots().is_none());
        let mut tar = Vec::new();
        entry(&mut tar, "other.txt", b"hello");
        let mut scan = TarScan::default();
        scan.feed(&tar);
        assert!(scan.collection_snapshots().is_none());
    }
}
