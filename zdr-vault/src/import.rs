//! The KV import with read-back verification (the restore).

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use zdr_core::{
    ArtifactReader, BackupKind, Component, Error, ErrorKind, Manifest, Progress, RestoreOutcome,
    RestoreTarget, Restorer, Result,
};

use crate::format::{KvSettings, Record, data_digest};
use crate::{FORMAT, VaultComponent, io_err};

#[async_trait]
impl Restorer for VaultComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    /// Import every `kv-<mount>` artifact into the mount of the same name (or
    /// `target.name`, when the backup holds one mount). Existing secrets get new versions (KV
    /// v2) or are overwritten (KV v1). Everything written is read back and compared.
    async fn restore(
        &self,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        let c = self.client()?;
        if backup.kind == BackupKind::Snapshot {
            return self.restore_snapshot(&c, backup, from, progress).await;
        }
        let arts: Vec<_> = backup
            .artifacts
            .iter()
            .filter(|a| a.name.starts_with("kv-"))
            .collect();
        if target.name.is_some() && arts.len() != 1 {
            return Err(Error::bad_input(
                "vault: a target mount name needs a backup of exactly one mount",
            ));
        }
        let mut out = RestoreOutcome::default();
        let mut targets = Vec::new();
        for a in arts {
            let mut lines = BufReader::new(from.open(a).await?).lines();
            let header: Value = match lines
                .next_line()
                .await
                .map_err(|e| io_err(e, "vault artifact"))?
            {
                Some(l) => serde_json::from_str(&l).map_err(|e| {
                    Error::integrity(format!("vault artifact {}: bad header ({e})", a.name))
                })?,
                None => {
                    return Err(Error::integrity(format!(
                        "vault artifact {} is empty",
                        a.name
                    )));
                }
            };
            if header.get("format").and_then(Value::as_str) != Some(FORMAT) {
                return Err(Error::integrity(format!(
                    "vault artifact {} is not {FORMAT}",
                    a.name
                )));
            }
            let src_kv = header.get("kv").and_then(Value::as_u64).unwrap_or(1);
            let mount = self.target_mount(
                header
                    .get("mount")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                target,
            );
            let kv = c.kv_version(&mount).await?;
            targets.push(mount.clone());
            progress.start(&a.name, None);
            // (path, version written in the target, digest) to read back.
            let items_before = out.items;
            let mut written: Vec<(String, Option<u64>, String)> = Vec::new();
            // KV v2 settings, written after every version (cas_required would refuse the
            // replay's writes) and read back with the data.
            let mut settings: Vec<(String, KvSettings)> = Vec::new();
            while let Some(l) = lines
                .next_line()
                .await
                .map_err(|e| io_err(e, "vault artifact"))?
            {
                let r: Record = serde_json::from_str(&l).map_err(|e| {
                    Error::integrity(format!("vault artifact {}: bad record ({e})", a.name))
                })?;
                // KV v1 sources and v1 targets carry the live data only.
                if (src_kv == 1 || kv == 1) && r.state != "live" {
                    continue;
                }
                let data = r.data.clone().unwrap_or_else(|| json!({}));
                if kv == 2 {
                    if let Some(st) = r.settings.clone().filter(|_| src_kv == 2) {
                        settings.push((r.path.clone(), st));
                    }
                    let v = c.write(&mount, 2, &r.path, &data).await?.ok_or_else(|| {
                        Error::new(
                            ErrorKind::Source,
                            format!("vault: write of {mount}/{} returned no version", r.path),
                        )
                    })?;
                    match r.state.as_str() {
                        "deleted" => c.remove_version(&mount, &r.path, v, false).await?,
                        "destroyed" => c.remove_version(&mount, &r.path, v, true).await?,
                        _ => {
                            if let Some(d) = r.sha256.clone() {
                                written.push((r.path.clone(), Some(v), d));
                            }
                        }
                    }
                } else {
                    c.write(&mount, 1, &r.path, &data).await?;
                    if let Some(d) = r.sha256.clone() {
                        // A later version of the same path replaces the earlier one.
                        written.retain(|(p, _, _)| p != &r.path);
                        written.push((r.path.clone(), None, d));
                    }
                }
                out.items += 1;
                out.bytes += l.len() as u64;
                progress.advance(&a.name, l.len() as u64);
            }
            for (p, st) in &settings {
                c.write_settings(&mount, p, st).await?;
            }
            // Read back every written path/version and compare digests.
            let mut bad = Vec::new();
            for (p, st) in &settings {
                let (_, got) = c.metadata(&mount, p).await?;
                if got != *st {
                    bad.push(format!("{mount}/{p} metadata settings"));
                }
            }
            for (p, v, d) in &written {
                let got = c.read(&mount, kv, p, *v).await?;
                if got.as_ref().map(data_digest).as_deref() != Some(d.as_str()) {
                    bad.push(match v {
                        Some(v) => format!("{mount}/{p} version {v}"),
                        None => format!("{mount}/{p}"),
                    });
                }
            }
            progress.finish(&a.name);
            if !bad.is_empty() {
                return Err(Error::integrity(format!(
                    "vault: {} secret(s) read back differ from the backup: {}",
                    bad.len(),
                    bad.join(", ")
                )));
            }
            out.notes.push(format!(
                "{mount}: {} record(s) imported, {} read back and matched by SHA-256, {} metadata setting(s) restored",
                out.items - items_before,
                written.len(),
                settings.len()
            ));
        }
        out.target = format!("{} ({})", self.config.client.address, targets.join(", "));
        Ok(out)
    }
}
