//! Where things are stored on every tier.
//!
//! ```text
//! <component>/<schedule>/<name>_<backup-id>.<ext>[.gz|.lz4|.zst][.age]
//! <the same>.sha256                          # `sha256sum -c` format, over the stored bytes
//! manifests/<component>/<backup-id>.json     # written last
//! manifests/<component>/<backup-id>.json.sha256
//! <component>/blobs/<aa>/<sha256>[.zst][.age]  # content-addressed blobs (object storage),
//!                                             # shared by the backups whose index names them
//! <component>/blobs/packs/<aa>/<id>.pack     # small blobs, each stored as above, end to end
//! <component>/blobs/packs/<aa>/<id>.pack.idx # JSON lines: the record of each blob in it
//! <component>/blobs/packs/<aa>/<id>.pack.idx.sha256, <id>.pack.sha256  # written last
//! ```

use crate::id::{BackupId, Component};
use crate::manifest::Compression;

/// The prefix under which manifests live.
pub const MANIFESTS: &str = "manifests/";

/// The key of an artifact.
#[must_use]
pub fn artifact_key(
    component: &Component,
    schedule: &str,
    name: &str,
    id: &BackupId,
    ext: &str,
    compression: Compression,
    encrypted: bool,
) -> String {
    let ext = ext.trim_start_matches('.');
    let dot = if ext.is_empty() { "" } else { "." };
    let age = if encrypted { ".age" } else { "" };
    format!(
        "{component}/{schedule}/{name}_{id}{dot}{ext}{}{age}",
        compression.suffix()
    )
}

/// The folder of a component's content-addressed blobs (see
/// [`crate::ArtifactSink::blobs`]): `<component>/blobs/`. No artifact key has this shape
/// (artifact keys are `<component>/<schedule>/<file>`, and `blobs/<aa>/<sha>` adds a level).
#[must_use]
pub fn blob_prefix(component: &Component) -> String {
    format!("{component}/blobs/")
}

/// The key of the blob whose raw content has SHA-256 `sha256` (lowercase hex):
/// `<component>/blobs/<first two hex digits>/<sha256>[.zst][.age]`.
#[must_use]
pub fn blob_key(
    component: &Component,
    sha256: &str,
    compression: Compression,
    encrypted: bool,
) -> String {
    let fan = sha256.get(..2).unwrap_or("00");
    let age = if encrypted { ".age" } else { "" };
    format!(
        "{}{fan}/{sha256}{}{age}",
        blob_prefix(component),
        compression.suffix()
    )
}

/// The key of the pack `id` (32 lowercase hex digits) of `component`:
/// `<component>/blobs/packs/<first two digits>/<id>.pack`. A pack holds small blobs end to
/// end, each exactly as it would be stored alone (compressed, encrypted); a record with an
/// [`crate::ArtifactRecord::offset`] names one. Its `.sha256` sidecar covers the whole pack,
/// and its table ([`pack_table_key`], with a sidecar of its own) lists the records of the
/// blobs in it.
#[must_use]
pub fn pack_key(component: &Component, id: &str) -> String {
    let fan = id.get(..2).unwrap_or("00");
    format!("{}packs/{fan}/{id}.pack", blob_prefix(component))
}

/// The key of the table of the pack at `pack_key`: `<pack key>.idx`.
#[must_use]
pub fn pack_table_key(pack_key: &str) -> String {
    format!("{pack_key}.idx")
}

/// True for a lowercase hex SHA-256 (64 digits), the only names a blob can have.
#[must_use]
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The key of a backup's manifest.
#[must_use]
pub fn manifest_key(component: &Component, id: &BackupId) -> String {
    format!("{MANIFESTS}{component}/{id}.json")
}

/// The key of the `.sha256` sidecar of `key`.
#[must_use]
pub fn sidecar_key(key: &str) -> String {
    format!("{key}.sha256")
}

/// The contents of a `.sha256` sidecar in `sha256sum -c` format for the file at `key`
/// (the file name only, so `sha256sum -c` works from the file's directory).
#[must_use]
pub fn sidecar_line(key: &str, sha256_hex: &str) -> String {
    let file = key.rsplit('/').next().unwrap_or(key);
    format!("{sha256_hex}  {file}\n")
}

/// Parse the sidecar of the file at `key` as `sha256sum -c` reads it: one line
/// `<64 hex digits>` + two spaces (or a space and `*`) + the file's name. Returns the digest
/// only when the name is the file's own, so a sidecar that `sha256sum -c` would reject (a
/// damaged name, another file's line) is never accepted.
#[must_use]
pub fn parse_sidecar_for<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let file = key.rsplit('/').next().unwrap_or(key);
    let line = text.strip_suffix('\n').unwrap_or(text);
    if line.contains('\n') {
        return None;
    }
    let digest = parse_sidecar(line)?;
    let rest = &line[digest.len()..];
    let name = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))?;
    (name == file).then_some(digest)
}

/// Parse a sidecar written by [`sidecar_line`] (or by `sha256sum`): the hex digest, if well formed.
#[must_use]
pub fn parse_sidecar(text: &str) -> Option<&str> {
    let digest = text.split_whitespace().next()?;
    (digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit())).then_some(digest)
}

/// Check that a key given by a user or read from a manifest stays inside the tier:
/// relative, no `..`, no empty segments.
#[must_use]
pub fn is_safe_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout() {
        let c = Component::new("postgres").ok();
        let id = BackupId::parse("20260116_143000_a1f3").ok();
        let (Some(c), Some(id)) = (c, id) else {
            panic!("fixtures")
        };
        assert_eq!(
            artifact_key(
                &c,
                "daily",
                "zentoria_main",
                &id,
                "sql",
                Compression::Gzip,
                false
            ),
            "postgres/daily/zentoria_main_20260116_143000_a1f3.sql.gz"
        );
        assert_eq!(
            artifact_key(&c, "daily", "x", &id, "tar", Compression::Zstd, true),
            "postgres/daily/x_20260116_143000_a1f3.tar.zst.age"
        );
        assert_eq!(
            manifest_key(&c, &id),
            "manifests/postgres/20260116_143000_a1f3.json"
        );
        let line = sidecar_line("a/b/c.sql.gz", &"0".repeat(64));
        assert_eq!(line, format!("{}  c.sql.gz\n", "0".repeat(64)));
        assert_eq!(parse_sidecar(&line), Some("0".repeat(64).as_str()));
        assert!(parse_sidecar("xyz  c").is_none());
        let key = "configs/daily/tree_20260101_000000_abcd.tar.zst";
        let good = sidecar_line(key, &"0".repeat(64));
        assert_eq!(parse_sidecar_for(&good, key), Some("0".repeat(64).as_str()));
        let binary = good.replace("  tree", " *tree");
        assert!(parse_sidecar_for(&binary, key).is_some());
        let damaged = good.replace("tree_", "tree-");
        assert!(parse_sidecar_for(&damaged, key).is_none(), "a damaged name");
        assert!(parse_sidecar_for(&good, "configs/daily/other.tar.zst").is_none());
        assert!(parse_sidecar_for(&format!("{good}{good}"), key).is_none());
    }

    #[test]
    fn blob_keys_fan_out_by_hash() {
        let Ok(c) = Component::new("uploads") else {
            panic!("fixture")
        };
        let sha = "ab".repeat(32);
        assert!(is_sha256_hex(&sha));
        assert!(!is_sha256_hex("AB"));
        assert_eq!(
            blob_key(&c, &sha, Compression::Zstd, true),
            format!("uploads/blobs/ab/{sha}.zst.age")
        );
        assert!(blob_key(&c, &sha, Compression::None, false).starts_with(&blob_prefix(&c)));
    }

    #[test]
    fn unsafe_keys_are_refused() {
        for k in ["", "/etc/passwd", "a/../b", "a//b", "./a"] {
            assert!(!is_safe_key(k), "{k}");
        }
        assert!(is_safe_key("configs/daily/x.tar"));
    }
}
