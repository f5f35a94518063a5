//! Raft snapshots: streamed save and restore.

use serde_json::json;
use tokio::io::AsyncWriteExt;
use zdr_core::{
    ArtifactReader, ArtifactSink, BackupKind, Error, ErrorKind, Manifest, Progress, RestoreOutcome,
    Result, SourceFacts,
};

use crate::client::{VaultClient, vault_error};
use crate::{VaultComponent, io_err};

impl VaultComponent {
    /// Stream `GET sys/storage/raft/snapshot` into the artifact `raft.snap`, chunk by chunk.
    pub(crate) async fn save_snapshot(
        &self,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        let c = self.client()?;
        let what = "GET /v1/sys/storage/raft/snapshot";
        let mut resp = c
            .request(reqwest::Method::GET, "sys/storage/raft/snapshot")
            .send()
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Source,
                    format!("vault: {what}: cannot reach {}: {e}", c.cfg.address),
                )
                .temporary()
            })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(vault_error(status, what, &body));
        }
        let mut w = sink.create("raft", "snap").await?;
        let expected_len = resp.content_length();
        progress.start("raft", expected_len);
        let mut total = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            Error::new(
                ErrorKind::Source,
                format!("vault: {what}: transfer broken after {total} bytes: {e}"),
            )
            .temporary()
        })? {
            w.write_all(&chunk)
                .await
                .map_err(|e| io_err(e, "vault raft snapshot"))?;
            total += chunk.len() as u64;
            progress.advance("raft", chunk.len() as u64);
        }
        if let Some(expected) = expected_len
            && expected != total
        {
            return Err(Error::new(
                ErrorKind::Source,
                format!("vault: {what}: got {total} of {expected} bytes"),
            ));
        }
        if total == 0 {
            return Err(Error::new(
                ErrorKind::Source,
                format!("vault: {what}: empty snapshot"),
            ));
        }
        w.finish().await?;
        progress.finish("raft");
        Ok(SourceFacts {
            kind: BackupKind::Snapshot,
            facts: json!({ "raft_snapshot": true, "bytes": total }),
        })
    }

    /// Stream the `raft` artifact into `POST sys/storage/raft/snapshot[-force]`.
    pub(crate) async fn restore_snapshot(
        &self,
        c: &VaultClient,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        let art = backup.artifact("raft").ok_or_else(|| {
            Error::integrity(format!("backup {} has no raft artifact", backup.id))
        })?;
        let endpoint = if self.config.force {
            "sys/storage/raft/snapshot-force"
        } else {
            "sys/storage/raft/snapshot"
        };
        let what = format!("POST /v1/{endpoint}");
        let reader = from.open(art).await?;
        progress.start("raft", Some(art.raw_size));
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(reader));
        let resp = c
            .request(reqwest::Method::POST, endpoint)
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| Error::new(ErrorKind::Source, format!("vault: {what}: {e}")))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(vault_error(status, &what, &body));
        }
        progress.finish("raft");
        Ok(RestoreOutcome {
            target: c.cfg.address.clone(),
            items: 1,
            bytes: art.raw_size,
            notes: vec![format!("raft snapshot restored through {endpoint}")],
        })
    }
}
