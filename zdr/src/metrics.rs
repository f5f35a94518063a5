//! Prometheus metrics from [`Stack::status`](crate::Stack::status), in the text exposition
//! format — for node_exporter's textfile collector when zdr runs from cron
//! (`zdr status --textfile /var/lib/node_exporter/textfile/zdr.prom`).

use std::fmt::Write as _;
use std::path::Path;

use zdr_core::{Error, Result};

use crate::postgres::StatusReport;

/// The metrics of `report` in Prometheus' text format: per component the newest backup's
/// finish time, age, stored size and duration, the number of backups on the primary tier, the
/// recovery point's age, the objective and whether it is missed, and for PostgreSQL the age of
/// the newest archived WAL segment; and the report's time and number of problems.
#[must_use]
pub fn prometheus_text(report: &StatusReport) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let label = |c: &str| format!("{{component=\"{}\"}}", escape(c));
    let per = |f: &dyn Fn(&crate::postgres::ComponentStatus) -> Option<f64>| -> Vec<(String, f64)> {
        report
            .components
            .iter()
            .filter_map(|c| f(c).map(|v| (label(&c.component), v)))
            .collect()
    };
    family(
        "zdr_backup_last_finished_timestamp_seconds",
        "When the newest backup on the primary tier finished (Unix time).",
        "gauge",
        per(&|c| c.latest.as_ref().map(|m| m.finished_at.timestamp() as f64)),
    );
    family(
        "zdr_backup_age_seconds",
        "Age of the newest backup on the primary tier.",
        "gauge",
        per(&|c| {
            c.latest
                .as_ref()
                .map(|m| (report.now - m.finished_at).num_seconds() as f64)
        }),
    );
    family(
        "zdr_backup_size_bytes",
        "Stored size of the newest backup (all its artifacts).",
        "gauge",
        per(&|c| c.latest.as_ref().map(|m| m.stored_size() as f64)),
    );
    family(
        "zdr_backup_duration_seconds",
        "How long the newest backup took.",
        "gauge",
        per(&|c| {
            c.latest
                .as_ref()
                .map(|m| (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0)
        }),
    );
    family(
        "zdr_backups",
        "Backups of the component on the primary tier.",
        "gauge",
        per(&|c| Some(c.backups as f64)),
    );
    family(
        "zdr_recovery_point_age_seconds",
        "Age of the newest recovery point (backup, or archived WAL after a base backup).",
        "gauge",
        per(&|c| c.recovery_point_age_seconds.map(|a| a as f64)),
    );
    family(
        "zdr_rpo_target_seconds",
        "The component's recovery point objective.",
        "gauge",
        per(&|c| c.rpo_target_seconds.map(|t| t as f64)),
    );
    family(
        "zdr_rpo_breached",
        "1 when the recovery point is older than the objective (or there is none).",
        "gauge",
        per(&|c| Some(if c.rpo_breached { 1.0 } else { 0.0 })),
    );
    family(
        "zdr_wal_last_archived_age_seconds",
        "PostgreSQL: age of the newest archived WAL segment.",
        "gauge",
        per(&|c| c.wal.as_ref().and_then(|w| w.rpo_seconds).map(|a| a as f64)),
    );
    family(
        "zdr_status_problems",
        "Tiers or archives the status could not read.",
        "gauge",
        vec![(String::new(), report.problems.len() as f64)],
    );
    family(
        "zdr_status_timestamp_seconds",
        "When these figures were taken (Unix time).",
        "gauge",
        vec![(String::new(), report.now.timestamp() as f64)],
    );
    out
}

/// Write [`prometheus_text`] to `path` atomically (a temporary file beside it, then a
/// rename), so the collector never reads half a file.
///
/// # Errors
/// [`zdr_core::ErrorKind::Io`] naming the path.
pub fn write_textfile(report: &StatusReport, path: &Path) -> Result<()> {
    let text = prometheus_text(report);
    let name = path
        .file_name()
        .ok_or_else(|| Error::bad_input(format!("{} is not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::from_io(
                e,
                format!("cannot write the metrics file {}", path.display()),
            )
        })
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
