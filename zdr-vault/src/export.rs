//! The logical KV export (the backup).

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use zdr_core::{
    ArtifactSink, BackupKind, BackupRequest, BackupSource, Component, Error, Progress, Result,
    SourceFacts,
};

use crate::format::{Record, data_digest};
use crate::{FORMAT, VaultComponent, io_err};

#[async_trait]
impl BackupSource for VaultComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    async fn backup(
        &self,
        _req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        if self.config.raft_snapshot {
            return self.save_snapshot(sink, progress).await;
        }
        if !sink.encrypts() && !self.config.allow_plaintext {
            return Err(Error::bad_input(
                "refusing to export Vault secrets into an unencrypted backup",
            )
            .with_hint("back up into a sink that encrypts, or set allow_plaintext"));
        }
        if self.config.mounts.is_empty() {
            return Err(Error::bad_input(
                "vault: no mounts configured (mounts = [\"secret\"])",
            ));
        }
        let c = self.client()?;
        // Check every mount (and the token) before writing anything.
        let mut kinds = Vec::new();
        for m in &self.config.mounts {
            let m = m.trim_matches('/').to_owned();
            let kv = c.kv_version(&m).await?;
            kinds.push((m, kv));
        }
        let mut facts = Vec::new();
        for (mount, kv) in kinds {
            let task = format!("kv-{mount}");
            progress.start(&task, None);
            let paths = c.walk(&mount, kv).await?;
            let mut w = sink.create(&format!("kv-{mount}"), "jsonl").await?;
            let header = json!({"format": FORMAT, "mount": mount, "kv": kv});
            let mut versions = 0u64;
            let mut deleted = 0u64;
            let mut line = serde_json::to_vec(&header).unwrap_or_default();
            line.push(b'\n');
            w.write_all(&line)
                .await
                .map_err(|e| io_err(e, "vault artifact"))?;
            for p in &paths {
                let mut recs = Vec::new();
                if kv == 2 {
                    let (vs, settings) = c.metadata(&mount, p).await?;
                    let mut settings = Some(settings);
                    for (n, vm) in vs {
                        let destroyed = vm.get("destroyed").and_then(Value::as_bool) == Some(true);
                        let del = vm
                            .get("deletion_time")
                            .and_then(Value::as_str)
                            .is_some_and(|s| !s.is_empty());
                        let (state, data) = if destroyed {
                            ("destroyed", None)
                        } else if del {
                            ("deleted", None)
                        } else {
                            ("live", c.read(&mount, 2, p, Some(n)).await?)
                        };
                        if state != "live" {
                            deleted += 1;
                        }
                        recs.push(Record {
                            path: p.clone(),
                            version: Some(n),
                            state: state.to_owned(),
                            sha256: data.as_ref().map(data_digest),
                            data,
                            metadata: Some(vm),
                            settings: settings.take(),
                        });
                    }
                } else if let Some(data) = c.read(&mount, 1, p, None).await? {
                    recs.push(Record {
                        path: p.clone(),
                        version: None,
                        state: "live".to_owned(),
                        sha256: Some(data_digest(&data)),
                        data: Some(data),
                        metadata: None,
                        settings: None,
                    });
                }
                for r in recs {
                    versions += 1;
                    let mut line = serde_json::to_vec(&r).unwrap_or_default();
                    line.push(b'\n');
                    w.write_all(&line)
                        .await
                        .map_err(|e| io_err(e, "vault artifact"))?;
                    progress.advance(&task, line.len() as u64);
                }
            }
            w.finish().await?;
            progress.finish(&task);
            facts.push(json!({
                "mount": mount, "kv": kv, "paths": paths.len(),
                "versions": versions, "deleted_or_destroyed": deleted,
            }));
        }
        Ok(SourceFacts {
            kind: BackupKind::Export,
            facts: json!({ "format": FORMAT, "mounts": facts }),
        })
    }
}
