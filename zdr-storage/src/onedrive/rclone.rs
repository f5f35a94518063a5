//! Credentials from an existing rclone OneDrive remote: rclone's config file search
//! order, its INI format and its `token` JSON.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zdr_core::{Error, Result};

use super::config::redacted;

/// Credentials found in an rclone OneDrive remote.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct RcloneRemote {
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<String>,
    pub(super) refresh_token: String,
    /// rclone's `region`, when set and not `global`.
    pub(super) region: Option<String>,
}

impl fmt::Debug for RcloneRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RcloneRemote")
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .field("refresh_token", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

/// rclone's search order for its config file, when `$RCLONE_CONFIG` is unset: the first
/// existing one of `$XDG_CONFIG_HOME/rclone/rclone.conf`, `~/.config/rclone/rclone.conf`,
/// `~/.rclone.conf`; if none exists, the first candidate (so the error names it).
pub(super) fn default_rclone_config(
    env: &dyn Fn(&str) -> Option<OsString>,
    exists: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(p) = env("RCLONE_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Some(xdg) = env("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(xdg).join("rclone").join("rclone.conf"));
    }
    if let Some(home) = env("HOME").filter(|p| !p.is_empty()) {
        let home = PathBuf::from(home);
        candidates.push(home.join(".config").join("rclone").join("rclone.conf"));
        candidates.push(home.join(".rclone.conf"));
    }
    candidates
        .iter()
        .find(|p| exists(p))
        .or_else(|| candidates.first())
        .cloned()
}

pub(super) fn read_rclone_remote(path: &Path, remote: &str) -> Result<RcloneRemote> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "does not exist"
        } else {
            "cannot be read"
        };
        Error::bad_input(format!(
            "OneDrive: rclone config {} for remote {remote:?} {what}",
            path.display()
        ))
        .with_context("remote", remote)
        .with_context("file", path.display())
        .with_source(e)
        .with_hint("set rclone_config to the rclone.conf that defines the remote")
    })?;
    parse_rclone_remote(&text, remote, path)
}

/// The sections of an INI file, in order: `(name, [(key, value)])`.
///
/// rclone's format: `[name]` headers, `key = value` lines, `#` / `;` comment lines.
/// Keys are trimmed; values are trimmed and lose one pair of surrounding double quotes.
pub(super) fn parse_ini(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.trim().to_owned(), Vec::new()));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if let Some((_, entries)) = sections.last_mut() {
            entries.push((key.trim().to_owned(), value.to_owned()));
        }
    }
    sections
}

/// The parts of rclone's `token` JSON that zdr reads.
#[derive(Deserialize)]
pub(super) struct RcloneToken {
    #[serde(default)]
    pub(super) refresh_token: Option<String>,
}

pub(super) fn parse_rclone_remote(text: &str, remote: &str, path: &Path) -> Result<RcloneRemote> {
    let bad = |msg: String| {
        Error::bad_input(format!(
            "OneDrive: rclone remote {remote:?} in {}: {msg}",
            path.display()
        ))
        .with_context("remote", remote)
        .with_context("file", path.display())
    };
    if text.contains("RCLONE_ENCRYPT_V0:") {
        return Err(bad("the rclone config is encrypted".into()).with_hint(
            "zdr cannot decrypt rclone configs: give zdr an unencrypted rclone config file, \
             or set client_id, client_secret and refresh_token directly",
        ));
    }
    let sections = parse_ini(text);
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut found = false;
    for (name, kv) in sections {
        if name == remote {
            found = true;
            entries.extend(kv);
        }
    }
    if !found {
        return Err(bad("no such remote".into()).with_hint(
            "check the remote name with `rclone listremotes` and the rclone_config path",
        ));
    }
    // Later keys win, as in rclone.
    let get = |key: &str| {
        entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    match get("type") {
        Some("onedrive") => {}
        Some(other) => {
            return Err(bad(format!("type is {other:?}, not \"onedrive\"")));
        }
        None => return Err(bad("the section has no type (expected \"onedrive\")".into())),
    }
    let token = get("token").filter(|t| !t.is_empty()).ok_or_else(|| {
        bad("no token (the remote was never authorized)".into())
            .with_hint("authorize it with `rclone config reconnect REMOTE:`")
    })?;
    // Never attach the serde error: its message can quote token values.
    let parsed: RcloneToken = serde_json::from_str(token).map_err(|e| {
        bad(format!(
            "the token is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let refresh_token = parsed
        .refresh_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            bad("the token JSON has no refresh_token".into()).with_hint(
                "re-authorize the remote with `rclone config reconnect REMOTE:` so rclone \
                 stores a refresh token",
            )
        })?;
    let opt = |key: &str| {
        get(key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    // `drive_id` and `drive_type` are deliberately ignored (see the module docs).
    let region = opt("region").filter(|r| r != "global");
    Ok(RcloneRemote {
        client_id: opt("client_id"),
        client_secret: opt("client_secret"),
        refresh_token,
        region,
    })
}
