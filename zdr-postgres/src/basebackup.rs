//! Physical base backups: `pg_basebackup` in tar format streamed straight into the artifact
//! pipeline (no copy of the data directory on disk), with the WAL range in the manifest.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::io::AsyncWriteExt;
use zdr_core::{
    ArtifactSink, BackupKind, BackupRequest, BackupSource, CommandRunner, Component, Error,
    ErrorKind, LocalRunner, Manifest, Progress, Result, SourceFacts,
};

use crate::wal::WalArchive;
use crate::walname::{Lsn, Segment};
use crate::{PgConfig, pg, tools};

/// Version of [`BaseBackupFacts`].
pub const BASE_FACTS_FORMAT: u32 = 1;

/// The artifact name of a base backup's tar stream.
pub const BASE_ARTIFACT: &str = "base";

/// What a base backup's manifest records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseBackupFacts {
    /// Version of this structure.
    pub format: u32,
    /// Always `"base"`: tells base backups from logical dumps of the same component.
    pub kind: String,
    /// `pg_control`'s system identifier: WAL of another cluster never applies.
    pub system_identifier: String,
    /// `server_version`.
    pub server_version: String,
    /// `server_version_num`.
    pub server_version_num: i64,
    /// The timeline the backup started on.
    pub timeline: u32,
    /// Where replay must start.
    pub start_lsn: Lsn,
    /// Where the backup becomes consistent: recovery targets must be after it.
    pub stop_lsn: Lsn,
    /// The first WAL segment the backup needs.
    pub start_segment: String,
    /// The last WAL segment the backup needs to become consistent.
    pub stop_segment: String,
    /// `wal_segment_size` in bytes.
    pub wal_segment_size: u64,
    /// True when the WAL needed for consistency is inside the tar (`-X fetch`, used when the
    /// server does not archive); false when it comes from the archive.
    pub wal_included: bool,
    /// Size of the data directory streamed (tar bytes).
    pub tar_bytes: u64,
    /// The databases in the cluster at backup time.
    pub databases: Vec<String>,
}

impl BaseBackupFacts {
    /// The facts of a base backup manifest.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] when the manifest is not a base backup.
    pub fn from_manifest(m: &Manifest) -> Result<Self> {
        let facts: Self = serde_json::from_value(m.facts.clone()).map_err(|e| {
            Error::bad_input(format!("backup {} is not a PostgreSQL base backup", m.id))
                .with_source(e)
        })?;
        if facts.kind != "base" {
            return Err(Error::bad_input(format!(
                "backup {} is not a PostgreSQL base backup",
                m.id
            )));
        }
        Ok(facts)
    }

    /// Whether a manifest is a base backup (cheap test for catalog filtering).
    #[must_use]
    pub fn is_base(m: &Manifest) -> bool {
        m.facts.get("kind").and_then(|k| k.as_str()) == Some("base")
    }

    /// The WAL the backup needs from the archive to become consistent: timeline and the
    /// first and last segment (what pruning must keep for it to stay restorable).
    #[must_use]
    pub fn required_wal(&self) -> (u32, String, String) {
        (
            self.timeline,
            self.start_segment.clone(),
            self.stop_segment.clone(),
        )
    }
}

/// The oldest WAL segment still needed by the base backups in `manifests` (others ignored):
/// WAL before it may be pruned without breaking any of them. `None` without a base backup.
/// Segments of other timelines needed to reach a target are not covered: keep every `.history`
/// file and every segment after this one.
#[must_use]
pub fn wal_retention_floor(manifests: &[Manifest]) -> Option<String> {
    manifests
        .iter()
        .filter_map(|m| BaseBackupFacts::from_manifest(m).ok())
        .map(|f| f.start_segment)
        .min()
}

/// Takes base backups of a whole cluster with `pg_basebackup`.
#[derive(Clone)]
pub struct PgBaseBackup {
    component: Component,
    config: PgConfig,
    runner: Arc<dyn CommandRunner>,
    archive: Option<WalArchive>,
    archive_wait: Duration,
}

impl fmt::Debug for PgBaseBackup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBaseBackup")
            .field("component", &self.component)
            .field("config", &self.config)
            .field("archive", &self.archive)
            .finish()
    }
}

impl PgBaseBackup {
    /// Base backups of the cluster `config` connects to (its user needs the REPLICATION
    /// attribute, and `pg_hba.conf` a `replication` line for it).
    #[must_use]
    pub fn new(component: Component, config: PgConfig) -> Self {
        let runner = LocalRunner::shared(config.bin_dir.as_deref());
        Self {
            component,
            config,
            runner,
            archive: None,
            archive_wait: Duration::from_secs(60),
        }
    }

    /// After the backup, wait up to `wait` until its last needed segment is in `archive`;
    /// without it, the backup is refused (no manifest). Without an archive, the backup
    /// only trusts PostgreSQL's own wait for archiving.
    #[must_use]
    pub fn with_archive(mut self, archive: WalArchive, wait: Duration) -> Self {
        self.archive = Some(archive);
        self.archive_wait = wait;
        self
    }

    /// Run the tools through another runner.
    #[must_use]
    pub fn with_runner(mut self, runner: Arc<dyn CommandRunner>) -> Self {
        self.runner = runner;
        self
    }

    async fn wait_archived(&self, facts: &BaseBackupFacts, progress: &Progress) -> Result<()> {
        let Some(archive) = &self.archive else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + self.archive_wait;
        let size = facts.wal_segment_size;
        for n in facts.start_lsn.0 / size..=facts.stop_lsn.0 / size {
            let name = Segment {
                timeline: facts.timeline,
                number: n,
            }
            .name(size);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            archive
                .wait_archived(&name, left, progress)
                .await
                .map_err(|e| {
                    e.with_hint(
                        "the base backup needs this segment: check archive_mode/archive_command \
                         and the server log",
                    )
                })?;
        }
        Ok(())
    }
}

/// Parse `pg_basebackup -v` output: start point with timeline, and end point.
fn parse_points(stderr: &str) -> Option<(Lsn, u32, Lsn)> {
    let mut start = None;
    let mut end = None;
    for line in stderr.lines() {
        if let Some(rest) = line.split("write-ahead log start point: ").nth(1) {
            let mut it = rest.split_whitespace();
            let lsn = it.next()?.parse::<Lsn>().ok()?;
            let tl = it.nth(2)?.parse::<u32>().ok()?; // "<lsn> on timeline <n>"
            start = Some((lsn, tl));
        } else if let Some(rest) = line.split("write-ahead log end point: ").nth(1) {
            end = rest.split_whitespace().next()?.parse::<Lsn>().ok();
        }
    }
    let (s, tl) = start?;
    Some((s, tl, end?))
}

#[async_trait]
impl BackupSource for PgBaseBackup {
    fn component(&self) -> &Component {
        &self.component
    }

    /// Stream `pg_basebackup -D - -Ft` into the artifact `base` (`tar`).
    async fn backup(
        &self,
        req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        let c = &self.config;
        let mut conn = pg::connect(c, &c.maintenance_database).await?;
        let row = sqlx::query(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::bigint, \
             (SELECT system_identifier::text FROM pg_control_system()), \
             (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
             current_setting('archive_mode'), pg_is_in_recovery()",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(|e| pg::db_error(e, c, "cannot read the cluster's settings"))?;
        let server_version: String = row.get(0);
        let server_version_num: i64 = row.get(1);
        let system_identifier: String = row.get(2);
        let segment_size = u64::try_from(row.get::<i64, _>(3)).unwrap_or(0);
        let archive_mode: String = row.get(4);
        let databases: Vec<String> = sqlx::query_scalar(
            "SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(|e| pg::db_error(e, c, "cannot list databases"))?;
        pg::close(conn).await;
        tools::check_version(
            self.runner.as_ref(),
            c,
            "pg_basebackup",
            server_version_num,
            &server_version,
        )
        .await?;
        let archiving = archive_mode != "off";
        if !archiving {
            progress.warn(
                "archive_mode is off: the base backup includes its own WAL (-X fetch); it can be \
                 restored, but not rolled forward to a point in time",
            );
        }
        let label = format!("zdr {}", req.id);
        let spec = tools::spec(c, "pg_basebackup", &c.maintenance_database).args([
            "--pgdata=-".to_owned(),
            "--format=tar".to_owned(),
            format!("--wal-method={}", if archiving { "none" } else { "fetch" }),
            "--checkpoint=fast".to_owned(),
            "--verbose".to_owned(),
            "--no-password".to_owned(),
            format!("--label={label}"),
        ]);
        let task = "pg_basebackup".to_owned();
        progress.start(&task, None);
        let mut writer = sink.create(BASE_ARTIFACT, "tar").await?;
        let (mut run, tail) = tools::spawn(self.runner.as_ref(), c, &spec).await?;
        let mut out = run
            .stdout
            .take()
            .ok_or_else(|| Error::unexpected("pg_basebackup has no stdout"))?;
        let mut observer = TarObserver::default();
        // After the data, the server waits until its last WAL segment is archived before it
        // sends the end of the stream; with a failing archive_command that wait has no end.
        // Once data flows, a silence longer than the archive wait ends the backup.
        let limit = self.archive_wait;
        let copied = async {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = if total == 0 {
                    out.read(&mut buf).await.map_err(Some)?
                } else {
                    match tokio::time::timeout(limit, out.read(&mut buf)).await {
                        Ok(r) => r.map_err(Some)?,
                        Err(_) => return Err(None),
                    }
                };
                if n == 0 {
                    return Ok::<u64, Option<std::io::Error>>(total);
                }
                observer.feed(&buf[..n]);
                writer.write_all(&buf[..n]).await.map_err(Some)?;
                total += n as u64;
                progress.advance(&task, n as u64);
            }
        }
        .await;
        let tar_bytes = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = run.handle.kill().await;
                let text = tail.text(c).await;
                let err = match e {
                    Some(e) => Error::from_io(e, "storing the output of pg_basebackup"),
                    None => Error::new(
                        ErrorKind::Source,
                        format!(
                            "pg_basebackup sent nothing for {} s: the server is waiting for its \
                             last WAL segment to be archived",
                            limit.as_secs()
                        ),
                    )
                    .with_hint(
                        "archive_command is failing: see pg_stat_archiver and the server log",
                    ),
                };
                return Err(if text.is_empty() {
                    err
                } else {
                    err.with_context("pg_basebackup", text)
                });
            }
        };
        let text = tools::finish(run, tail, c, "pg_basebackup").await?;
        writer
            .flush()
            .await
            .map_err(|e| Error::from_io(e, "storing the output of pg_basebackup"))?;
        writer.finish().await?;
        progress.finish(&task);
        let (start_lsn, timeline, stop_lsn) = observer
            .points()
            .or_else(|| parse_points(&text))
            .ok_or_else(|| {
                Error::integrity(format!(
                    "the base backup stream has no backup_label and backup_manifest with the WAL \
                     range (pg_basebackup said: {text})"
                ))
            })?;
        let seg = |lsn: Lsn| Segment::containing(timeline, lsn, segment_size).name(segment_size);
        let facts = BaseBackupFacts {
            format: BASE_FACTS_FORMAT,
            kind: "base".into(),
            system_identifier,
            server_version,
            server_version_num,
            timeline,
            start_lsn,
            stop_lsn,
            start_segment: seg(start_lsn),
            stop_segment: seg(stop_lsn),
            wal_segment_size: segment_size,
            wal_included: !archiving,
            tar_bytes,
            databases,
        };
        if archiving {
            self.wait_archived(&facts, progress).await?;
        }
        progress.info(format!(
            "base backup of {} ({tar_bytes} bytes), WAL {} .. {} on timeline {timeline}",
            self.component, facts.start_segment, facts.stop_segment
        ));
        Ok(SourceFacts {
            kind: BackupKind::Physical,
            facts: serde_json::to_value(&facts)
                .map_err(|e| Error::unexpected("cannot serialize facts").with_source(e))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_from_verbose_output() {
        let text = "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n\
                    pg_basebackup: checkpoint completed\n\
                    pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1\n\
                    pg_basebackup: write-ahead log end point: 0/2000100\n\
                    pg_basebackup: base backup completed";
        assert_eq!(
            parse_points(text),
            Some((Lsn(0x2000028), 1, Lsn(0x2000100)))
        );
        assert_eq!(parse_points("nothing"), None);
    }

    fn manifest(id: &str, facts: serde_json::Value) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format": 1, "id": id, "component": "db", "kind": "physical", "schedule": "daily",
            "started_at": "2026-01-16T14:00:00Z", "finished_at": "2026-01-16T14:01:00Z",
            "zdr_version": "0", "parent": null, "facts": facts, "artifacts": []
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn retention_floor_is_the_oldest_base_start() {
        let base = |start: &str| {
            serde_json::json!({"format": 1, "kind": "base", "system_identifier": "1",
                "server_version": "15", "server_version_num": 150000, "timeline": 1,
                "start_lsn": "0/5000028", "stop_lsn": "0/5000100", "start_segment": start,
                "stop_segment": start, "wal_segment_size": 16777216, "wal_included": false,
                "tar_bytes": 1, "databases": []})
        };
        let ms = vec![
            manifest("20260116_140000_aaaa", base("000000010000000000000009")),
            manifest("20260115_140000_bbbb", base("000000010000000000000005")),
            manifest(
                "20260114_140000_cccc",
                serde_json::json!({"database": "app"}),
            ),
        ];
        assert_eq!(
            wal_retention_floor(&ms).as_deref(),
            Some("000000010000000000000005")
        );
        assert_eq!(wal_retention_floor(&ms[2..]), None);
    }

    #[test]
    fn tar_observer_finds_the_wal_range() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap_or_default();
        };
        add(
            "backup_label",
            b"START WAL LOCATION: 0/9000028 (file 000000020000000000000009)\nSTART TIMELINE: 2\n",
        );
        add("base/1/1259", &vec![7u8; 70_000]);
        let mut manifest =
            String::from("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [");
        for i in 0..2000 {
            manifest.push_str(&format!(
                "{{ \"Path\": \"base/1/{i}\", \"Size\": 8192 }},\n"
            ));
        }
        manifest.push_str("],\n\"WAL-Ranges\": [\n{ \"Timeline\": 2, \"Start-LSN\": \"0/9000028\", \"End-LSN\": \"0/A000100\" }\n],\n\"Manifest-Checksum\": \"x\"}\n");
        add("backup_manifest", manifest.as_bytes());
        let bytes = b.into_inner().unwrap_or_default();
        for chunk in [1, 7, 511, 512, 4096, 1 << 20] {
            let mut o = TarObserver::default();
            for part in bytes.chunks(chunk) {
                o.feed(part);
            }
            assert_eq!(
                o.points(),
                Some((Lsn(0x9000028), 2, Lsn(0xA000100))),
                "chunk {chunk}"
            );
        }
        // A stream without the manifest has no range.
        let mut o = TarObserver::default();
        o.feed(&bytes[..1024]);
        assert_eq!(o.points(), None);
    }
}

/// Watches a tar stream go by and keeps `backup_label` and the end of `backup_manifest`
/// (where PostgreSQL writes the WAL range), skipping everything else without copying it.
#[derive(Debug, Default)]
pub(crate) struct TarObserver {
    header: Vec<u8>,
    /// Bytes of the current entry's content still to pass (including padding).
    remaining: u64,
    /// Content bytes of the current entry still to pass (without padding).
    content: u64,
    capture: Option<Capture>,
    /// The contents of `backup_label`.
    pub(crate) label: Option<String>,
    /// The last bytes of `backup_manifest`.
    pub(crate) manifest_tail: Option<String>,
    buf: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    Label,
    Manifest,
}

const MANIFEST_TAIL: usize = 8192;

fn octal(field: &[u8]) -> u64 {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256 for large sizes.
        return field[1..]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    }
    field
        .iter()
        .filter(|b| (b'0'..=b'7').contains(b))
        .fold(0u64, |acc, b| acc * 8 + u64::from(b - b'0'))
}

impl TarObserver {
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining.min(data.len() as u64)).unwrap_or(0);
                let take = n.min(usize::try_from(self.content).unwrap_or(usize::MAX));
                if let Some(c) = self.capture {
                    self.buf.extend_from_slice(&data[..take]);
                    if c == Capture::Manifest && self.buf.len() > 2 * MANIFEST_TAIL {
                        let cut = self.buf.len() - MANIFEST_TAIL;
                        self.buf.drain(..cut);
                    }
                }
                self.content -= take as u64;
                self.remaining -= n as u64;
                data = &data[n..];
                if self.remaining == 0 {
                    self.end_entry();
                }
                continue;
            }
            let need = 512 - self.header.len();
            let n = need.min(data.len());
            self.header.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.header.len() == 512 {
                let h = std::mem::take(&mut self.header);
                if h.iter().all(|b| *b == 0) {
                    continue; // end-of-archive blocks
                }
                let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
                let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
                let size = octal(&h[124..136]);
                let typeflag = h[156];
                self.content = size;
                self.remaining = size.div_ceil(512) * 512;
                self.capture = match (typeflag, name.as_str()) {
                    (b'0' | 0, "backup_label" | "./backup_label") => Some(Capture::Label),
                    (b'0' | 0, "backup_manifest" | "./backup_manifest") => Some(Capture::Manifest),
                    _ => None,
                };
                self.buf.clear();
                if self.remaining == 0 {
                    self.end_entry();
                }
            }
        }
    }

    fn end_entry(&mut self) {
        match self.capture.take() {
            Some(Capture::Label) => {
                self.label = Some(String::from_utf8_lossy(&self.buf).into_owned());
            }
            Some(Capture::Manifest) => {
                self.manifest_tail = Some(String::from_utf8_lossy(&self.buf).into_owned());
            }
            None => {}
        }
        self.buf.clear();
    }

    /// Start LSN and timeline from `backup_label`, end LSN from the manifest's WAL range.
    pub(crate) fn points(&self) -> Option<(Lsn, u32, Lsn)> {
        let label = self.label.as_deref()?;
        let mut start = None;
        let mut tl = None;
        for line in label.lines() {
            if let Some(r) = line.strip_prefix("START WAL LOCATION: ") {
                start = r.split_whitespace().next()?.parse::<Lsn>().ok();
            } else if let Some(r) = line.strip_prefix("START TIMELINE: ") {
                tl = r.trim().parse::<u32>().ok();
            }
        }
        let tail = self.manifest_tail.as_deref()?;
        let after = tail.rsplit("\"End-LSN\"").next()?;
        let end = after
            .split('"')
            .find(|s| s.contains('/'))?
            .parse::<Lsn>()
            .ok()?;
        Some((start?, tl?, end))
    }
}
