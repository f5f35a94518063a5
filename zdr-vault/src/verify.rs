//! Verification of a restored Vault against the manifest facts.

use async_trait::async_trait;
use serde_json::Value;
use zdr_core::{BackupKind, ErrorKind, Manifest, RestoreTarget, Result, Verifier, VerifyReport};

use crate::VaultComponent;

#[async_trait]
impl Verifier for VaultComponent {
    /// Count-only check against the manifest facts (the digests live in the encrypted
    /// artifact and are compared by the restore itself): every exported mount exists on the
    /// target and holds at least as many paths as were exported. Raft snapshots: the server
    /// answers `sys/mounts` with the token.
    async fn verify(&self, backup: &Manifest, target: &RestoreTarget) -> Result<VerifyReport> {
        let c = self.client()?;
        let mut report = VerifyReport::default();
        if backup.kind == BackupKind::Snapshot {
            c.call("GET", "sys/mounts", None, false).await?;
            report.checked = 1;
            return Ok(report);
        }
        let mounts = backup
            .facts
            .get("mounts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for m in mounts {
            let src = m
                .get("mount")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let mount = self.target_mount(&src, target);
            let want = m.get("paths").and_then(Value::as_u64).unwrap_or(0);
            match c.kv_version(&mount).await {
                Ok(kv) => {
                    let got = c.walk(&mount, kv).await?.len() as u64;
                    report.checked += got;
                    if got < want {
                        report
                            .problems
                            .push(format!("{mount}: {got} path(s), the backup has {want}"));
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    report
                        .problems
                        .push(format!("{mount}: no such mount on the target"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}
