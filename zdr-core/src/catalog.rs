//! The [`Catalog`]: every backup on a tier, rebuilt from its manifests alone, so the
//! offsite tier by itself is enough to restore after a full disaster.

use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::error::{Error, ErrorKind, Result};
use crate::id::{BackupId, Component};
use crate::layout::{self, MANIFESTS};
use crate::manifest::Manifest;
use crate::traits::StorageTier;
use futures::StreamExt as _;

/// Manifests read at once when a catalog is loaded.
const LOAD_CONCURRENCY: usize = 16;

/// Which backup of a component to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSelector {
    /// The newest.
    Latest,
    /// The one before the newest.
    Previous,
    /// A specific backup.
    Id(BackupId),
    /// The newest finished at or before the time.
    Before(DateTime<Utc>),
}

impl FromStr for BackupSelector {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "latest" => Ok(Self::Latest),
            "previous" => Ok(Self::Previous),
            _ => {
                if let Some(t) = s.strip_prefix("before:") {
                    return parse_time(t).map(Self::Before);
                }
                BackupId::parse(s).map(Self::Id).map_err(|_| {
                    Error::bad_input(format!(
                        "unknown backup {s:?}: use latest, previous, before:TIME or an id from the catalog"
                    ))
                })
            }
        }
    }
}

/// Parse a time given by an operator: RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC.
///
/// # Errors
/// [`ErrorKind::BadInput`] naming the text that did not parse.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let text = text.trim();
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, f) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc())
        .map_err(|_| {
            Error::bad_input(format!(
                "cannot read time {text:?}: use RFC 3339 or \"YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM]\" (UTC without an offset)"
            ))
        })
}

/// A manifest that could not be used, and why.
#[derive(Debug)]
pub struct CatalogProblem {
    /// The manifest's key.
    pub key: String,
    /// What is wrong with it.
    pub error: Error,
}

/// Every complete backup on one tier.
#[derive(Debug, Default)]
pub struct Catalog {
    tier: String,
    backups: Vec<Manifest>,
    problems: Vec<CatalogProblem>,
}

impl Catalog {
    /// Read every manifest on `tier`. Manifests that do not parse, do not match their
    /// sidecar, or sit under the wrong key are listed in [`Catalog::problems`], not used.
    ///
    /// # Errors
    /// Storage errors from listing the tier.
    pub async fn load(tier: &dyn StorageTier) -> Result<Self> {
        let entries = tier.list(MANIFESTS).await?;
        let mut manifests = Vec::new();
        let mut problems = Vec::new();
        let keys: std::collections::HashSet<&str> =
            entries.iter().map(|e| e.key.as_str()).collect();
        // A few manifests at a time: on an object store each is two round trips, and a
        // repository of thousands of backups would otherwise take minutes to list.
        let mut loads =
            futures::stream::iter(entries.iter().filter(|e| e.key.ends_with(".json")).map(
                |entry| {
                    let keys = &keys;
                    async move {
                        let has_sidecar = keys.contains(layout::sidecar_key(&entry.key).as_str());
                        (entry, load_one(tier, &entry.key, has_sidecar).await)
                    }
                },
            ))
            .buffered(LOAD_CONCURRENCY);
        while let Some((entry, loaded)) = loads.next().await {
            match loaded {
                Ok(m) => manifests.push(m),
                Err(error) if error.kind() == ErrorKind::Storage => return Err(error),
                Err(error) => problems.push(CatalogProblem {
                    key: entry.key.clone(),
                    error,
                }),
            }
        }
        let mut catalog = Self::from_manifests(tier.name(), manifests);
        catalog.problems = problems;
        Ok(catalog)
    }

    /// A catalog of the given manifests.
    #[must_use]
    pub fn from_manifests(tier: &str, mut backups: Vec<Manifest>) -> Self {
        backups.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Self {
            tier: tier.to_owned(),
            backups,
            problems: Vec::new(),
        }
    }

    /// The tier it was read from.
    #[must_use]
    pub fn tier(&self) -> &str {
        &self.tier
    }

    /// Manifests that could not be used.
    #[must_use]
    pub fn problems(&self) -> &[CatalogProblem] {
        &self.problems
    }

    /// All backups, oldest first; of one component when given.
    #[must_use]
    pub fn list(&self, component: Option<&Component>) -> Vec<&Manifest> {
        self.backups
            .iter()
            .filter(|m| component.is_none_or(|c| &m.component == c))
            .collect()
    }

    /// The newest backup of `component`.
    #[must_use]
    pub fn latest(&self, component: &Component) -> Option<&Manifest> {
        self.list(Some(component)).pop()
    }

    /// The backup before the newest of `component`.
    #[must_use]
    pub fn previous(&self, component: &Component) -> Option<&Manifest> {
        let list = self.list(Some(component));
        list.len().checked_sub(2).map(|i| list[i])
    }

    /// The newest backup of `component` that finished at or before `time`.
    #[must_use]
    pub fn latest_before(&self, component: &Component, time: DateTime<Utc>) -> Option<&Manifest> {
        self.list(Some(component))
            .into_iter()
            .rev()
            .find(|m| m.finished_at <= time)
    }

    /// The backup with `id`.
    #[must_use]
    pub fn get(&self, id: &BackupId) -> Option<&Manifest> {
        self.backups.iter().find(|m| &m.id == id)
    }

    /// Resolve a selector, with an error that says what exists when nothing matches.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming the component, the selector and the tier.
    pub fn select(&self, component: &Component, selector: &BackupSelector) -> Result<&Manifest> {
        let found = match selector {
            BackupSelector::Latest => self.latest(component),
            BackupSelector::Previous => self.previous(component),
            BackupSelector::Id(id) => self.get(id).filter(|m| &m.component == component),
            BackupSelector::Before(t) => self.latest_before(component, *t),
        };
        found.ok_or_else(|| {
            let count = self.list(Some(component)).len();
            let what = match selector {
                BackupSelector::Latest => "no backup".to_owned(),
                BackupSelector::Previous => "no previous backup".to_owned(),
                BackupSelector::Id(id) => format!("no backup {id}"),
                BackupSelector::Before(t) => {
                    let first = self
                        .list(Some(component))
                        .first()
                        .map(|m| format!("; the first finished at {}", m.finished_at));
                    format!("no backup finished before {t}{}", first.unwrap_or_default())
                }
            };
            Error::not_found(format!("{what} of {component} ({count} in the catalog)"))
                .with_context("component", component)
                .with_context("tier", &self.tier)
                .with_hint("list the catalog of each tier to see the backups there")
        })
    }
}

async fn load_one(tier: &dyn StorageTier, key: &str, has_sidecar: bool) -> Result<Manifest> {
    let bytes = tier.read_all(key).await?;
    if has_sidecar {
        let sidecar = tier.read_all(&layout::sidecar_key(key)).await?;
        let expected = layout::parse_sidecar_for(std::str::from_utf8(&sidecar).unwrap_or(""), key)
            .map(str::to_owned);
        let actual = crate::sha256_hex(&bytes);
        if expected.as_deref() != Some(actual.as_str()) {
            return Err(Error::integrity(
                "manifest does not match its .sha256 sidecar (damaged manifest or sidecar)",
            )
            .with_context("key", key));
        }
    }
    let m = Manifest::from_json(&bytes).map_err(|e| e.with_context("key", key))?;
    if layout::manifest_key(&m.component, &m.id) != key {
        return Err(Error::integrity(format!(
            "manifest of {} {} is stored under the wrong key",
            m.component, m.id
        ))
        .with_context("key", key));
    }
    Ok(m)
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn times_with_fractions_and_offsets() -> Result<()> {
        let base = parse_time("2026-01-16 14:29:59")?;
        assert_eq!(parse_time("2026-01-16T14:29:59Z")?, base);
        assert_eq!(parse_time("2026-01-16 15:29:59+01")?, base);
        assert_eq!(parse_time("2026-01-16 15:29:59+01:00")?, base);
        let f = parse_time("2026-01-16 14:29:59.250000")?;
        assert_eq!((f - base).num_milliseconds(), 250);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-13-01 00:00:00").is_err());
        Ok(())
    }
}
