//! Verification of restored collections against the manifest facts.

use async_trait::async_trait;
use qdrant_client::qdrant as pb;
use serde_json::{Value, json};
use zdr_core::{Manifest, RestoreTarget, Result, Verifier, VerifyReport};

use crate::client::{enabled_payload, enabled_vectors};
use crate::convert;
use crate::facts::payload_hash;
use crate::{QdrantComponent, QdrantFacts};

impl QdrantComponent {
    /// Read the points `ids` of `c` (payloads only) as REST JSON.
    pub(crate) async fn get_points(&self, c: &str, ids: &[Value]) -> Result<Vec<Value>> {
        let got = self
            .grpc
            .get_points(pb::GetPoints {
                collection_name: c.to_string(),
                ids: ids.iter().filter_map(convert::json_to_id).collect(),
                with_payload: enabled_payload(true),
                with_vectors: enabled_vectors(false),
                ..Default::default()
            })
            .await
            .map_err(|e| self.grpc_err("read sampled points", Some(c), e))?;
        Ok(got
            .result
            .into_iter()
            .map(|p| {
                json!({
                    "id": convert::id_to_json(p.id.as_ref()),
                    "payload": convert::payload_to_json(&p.payload),
                })
            })
            .collect())
    }
}

#[async_trait]
impl Verifier for QdrantComponent {
    async fn verify(&self, backup: &Manifest, target: &RestoreTarget) -> Result<VerifyReport> {
        let facts = QdrantFacts::from_manifest(backup)?;
        let mut report = VerifyReport::default();
        for c in &facts.collections {
            let dest = match (&target.name, facts.collections.len()) {
                (Some(n), 1) => n.clone(),
                _ => c.name.clone(),
            };
            let Some(info) = self.collection_info(&dest).await? else {
                report
                    .problems
                    .push(format!("collection {dest} is missing"));
                continue;
            };
            report.checked += 1;
            if info.points_count != c.points_count {
                report.problems.push(format!(
                    "{dest}: {} points, the backup recorded {}",
                    info.points_count, c.points_count
                ));
            }
            if info.vectors != c.vectors {
                report.problems.push(format!(
                    "{dest}: vector config {} differs from the backup's {}",
                    info.vectors, c.vectors
                ));
            }
            if c.sample.is_empty() {
                continue;
            }
            let ids: Vec<Value> = c.sample.iter().map(|s| s.id.clone()).collect();
            let got = self.get_points(&dest, &ids).await?;
            for s in &c.sample {
                report.checked += 1;
                match got.iter().find(|p| p["id"] == s.id) {
                    None => report
                        .problems
                        .push(format!("{dest}: point {} is missing", s.id)),
                    Some(p) if payload_hash(&p["payload"]) != s.payload_sha256 => report
                        .problems
                        .push(format!("{dest}: point {} has another payload", s.id)),
                    Some(_) => {}
                }
            }
        }
        Ok(report)
    }
}
