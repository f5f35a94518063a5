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
            .rpc(
                "read sampled points",
                Some(c),
                self.grpc.get_points(pb::GetPoints {
                    collection_name: c.to_string(),
                    ids: ids.iter().filter_map(convert::json_to_id).collect(),
                    with_payload: enabled_payload(true),
                    with_vectors: enabled_vectors(false),
                    ..Default::default()
                }),
            )
            .await?;
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

/// The differences between recorded payload indexes and `got`: a missing or retyped index,
/// and other parameters where the backup recorded some.
fn payload_index_problems(dest: &str, recorded: &Value, got: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(recorded) = recorded.as_object() else {
        return problems;
    };
    for (field, want) in recorded {
        let have = &got[field];
        if have.is_null() {
            problems.push(format!("{dest}: payload index {field} is missing"));
        } else if have["data_type"] != want["data_type"] {
            problems.push(format!(
                "{dest}: payload index {field} is {}, the backup recorded {}",
                have["data_type"], want["data_type"]
            ));
        } else if want["params"].is_object() && have["params"] != want["params"] {
            problems.push(format!(
                "{dest}: payload index {field} has parameters {}, the backup recorded {}",
                have["params"], want["params"]
            ));
        }
    }
    problems
}

impl QdrantComponent {
    /// Compare the collections `dests` (in the order of `facts.collections`) with the facts:
    /// exact counts, vector configuration, payload indexes and the sampled points.
    pub(crate) async fn verify_collections(
        &self,
        facts: &QdrantFacts,
        dests: &[String],
    ) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for (c, dest) in facts.collections.iter().zip(dests) {
            let Some(info) = self.collection_info(dest).await? else {
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
            report.problems.extend(payload_index_problems(
                dest,
                &c.payload_schema,
                &info.payload_schema,
            ));
            if c.sample.is_empty() {
                continue;
            }
            let ids: Vec<Value> = c.sample.iter().map(|s| s.id.clone()).collect();
            let got = self.get_points(dest, &ids).await?;
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

#[async_trait]
impl Verifier for QdrantComponent {
    /// Compare the live collections (or the one restored under `target.name`) with the
    /// backup's facts.
    async fn verify(&self, backup: &Manifest, target: &RestoreTarget) -> Result<VerifyReport> {
        let facts = QdrantFacts::from_manifest(backup)?;
        let dests: Vec<String> = facts
            .collections
            .iter()
            .map(|c| match (&target.name, facts.collections.len()) {
                (Some(n), 1) => n.clone(),
                _ => c.name.clone(),
            })
            .collect();
        self.verify_collections(&facts, &dests).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_indexes_compare_types_and_recorded_parameters() {
        let text = json!({"type": "text", "tokenizer": "word", "lowercase": false});
        let recorded = json!({
            "body": {"data_type": "text", "params": text, "points": 3},
            "tenant": {"data_type": "keyword", "points": 3},
        });
        let same = json!({
            "body": {"data_type": "text", "params": text, "points": 5},
            "tenant": {"data_type": "keyword", "params": {"type": "keyword", "is_tenant": true}},
        });
        assert!(payload_index_problems("c", &recorded, &same).is_empty());
        let lost = json!({
            "body": {"data_type": "text", "points": 3},
            "tenant": {"data_type": "integer"},
        });
        let problems = payload_index_problems("c", &recorded, &lost);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("body has parameters null"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("tenant is \"integer\""),
            "{problems:?}"
        );
        assert_eq!(
            payload_index_problems("c", &recorded, &json!({})),
            vec![
                "c: payload index body is missing".to_owned(),
                "c: payload index tenant is missing".to_owned()
            ]
        );
    }
}
