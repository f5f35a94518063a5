//! Names: [`Component`] and [`BackupId`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The name of a backed-up component, such as `postgres`, `redis` or `configs`.
///
/// Lowercase ASCII letters, digits, `-` and `_`; 1 to 64 characters, starting with a
/// letter. It is used as a path segment on every tier, so nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Component(String);

impl Component {
    /// Validate and wrap a component name.
    ///
    /// # Errors
    /// [`crate::ErrorKind::BadInput`] when the name has characters outside `[a-z0-9_-]`,
    /// is empty, longer than 64 characters, or does not start with a letter.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(Self(name))
        } else {
            Err(Error::bad_input(format!(
                "invalid component name {name:?}: use 1-64 of [a-z0-9_-], starting with a letter"
            )))
        }
    }

    /// The name as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Component {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::new(value)
    }
}

impl From<Component> for String {
    fn from(value: Component) -> Self {
        value.0
    }
}

impl FromStr for Component {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// The identity of one backup: its UTC start time to the second and four random hex
/// digits, such as `20260116_143000_a1f3`.
///
/// Ids sort by time; the suffix keeps two backups started in the same second apart.
/// The time part matches the runbook's `<name>_<YYYYMMDD_HHMMSS>` file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

const ID_TIME_FORMAT: &str = "%Y%m%d_%H%M%S";

impl BackupId {
    /// A new id for a backup starting at `at`.
    #[must_use]
    pub fn generate(at: DateTime<Utc>) -> Self {
        let suffix: u16 = rand::random();
        Self(format!("{}_{suffix:04x}", at.format(ID_TIME_FORMAT)))
    }

    /// Parse an id.
    ///
    /// # Errors
    /// [`crate::ErrorKind::BadInput`] when the text is not `YYYYMMDD_HHMMSS_xxxx`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::bad_input(format!(
                "invalid backup id {text:?}: expected YYYYMMDD_HHMMSS_xxxx, as the catalog lists them"
            ))
        };
        if text.len() != 20 {
            return Err(bad());
        }
        let (time, suffix) = text.split_at(15);
        let suffix = suffix.strip_prefix('_').ok_or_else(bad)?;
        if !suffix
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            return Err(bad());
        }
        NaiveDateTime::parse_from_str(time, ID_TIME_FORMAT).map_err(|_| bad())?;
        Ok(Self(text.to_owned()))
    }

    /// The time encoded in the id (the backup's start, to the second).
    #[must_use]
    pub fn time(&self) -> Option<DateTime<Utc>> {
        NaiveDateTime::parse_from_str(&self.0[..15], ID_TIME_FORMAT)
            .ok()
            .map(|t| t.and_utc())
    }

    /// The id as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for BackupId {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::parse(&value)
    }
}

impl From<BackupId> for String {
    fn from(value: BackupId) -> Self {
        value.0
    }
}

impl FromStr for BackupId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn component_names() {
        assert!(Component::new("postgres").is_ok());
        assert!(Component::new("zentoria_main-2").is_ok());
        for bad in ["", "Postgres", "../etc", "a/b", "1db", "a b"] {
            let e = Component::new(bad).err().map(|e| e.kind());
            assert_eq!(e, Some(ErrorKind::BadInput), "{bad:?}");
        }
    }

    #[test]
    fn backup_id_round_trip_and_time() {
        let at = DateTime::parse_from_rfc3339("2026-01-16T14:30:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let id = BackupId::generate(at);
        assert!(id.as_str().starts_with("20260116_143000_"));
        assert_eq!(BackupId::parse(id.as_str()).ok(), Some(id.clone()));
        assert_eq!(id.time(), Some(at));
        for bad in [
            "20260116_143000",
            "20261316_143000_abcd",
            "20260116_143000_ABCD",
            "x",
        ] {
            assert!(BackupId::parse(bad).is_err(), "{bad}");
        }
    }
}
