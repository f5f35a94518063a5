//! # zdr-n8n
//!
//! n8n's workflows as a zdr component (`type = "n8n"`), over n8n's public REST API
//! (`/api/v1`, `X-N8N-API-KEY`).
//!
//! - **Backup** pages through `GET /workflows` and stores each workflow as returned (nodes,
//!   connections, settings, static and pinned data, its `active` flag and tags) as one JSON
//!   line of the artifact `workflows`. The facts hold, per workflow, its id, name, active flag,
//!   tag names and a SHA-256 over its definition (name, nodes, connections, settings).
//! - **Restore** matches each workflow with the instance's by id, else by name: one that is
//!   missing is created (`POST /workflows`, without the read-only fields n8n refuses), one
//!   that is identical is left alone, one that differs is replaced (`PUT /workflows/{id}`)
//!   only with `overwrite` — otherwise the restore is refused, naming them, before anything is
//!   written. Tags are created when missing and set; the active flag is applied with
//!   `activate` / `deactivate` (an activation n8n refuses is reported, not fatal). A second
//!   run finds everything identical and writes nothing: workflows are never duplicated.
//!   Afterwards every restored workflow is read back and compared.
//! - **Verify** compares the instance's workflows with the facts.
//!
//! Credentials are not part of the public API's workflow export (n8n keeps them encrypted in
//! its database, and the public API has no call that reads them); a restored workflow refers
//! to credentials by id and name, as the export does. The backup records, per workflow and
//! for the whole instance, the credentials its nodes use (type, id, name — never data), and a
//! restore names those the restored workflows need, so they can be created on a new instance
//! or come back with n8n's database.

mod api;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use zdr_core::{
    ArtifactReader, ArtifactSink, BackupKind, BackupRequest, BackupSource, Component, Error,
    ErrorKind, Manifest, Progress, RestoreOutcome, RestoreTarget, Restorer, Result, Secret,
    SourceFacts, Verifier, VerifyReport,
};

use crate::api::Api;

/// The artifact holding the workflows.
pub const ARTIFACT: &str = "workflows";

/// Fields of a workflow n8n accepts in `POST`/`PUT /workflows` (the others are read-only
/// and refused).
const WRITABLE: [&str; 9] = [
    "name",
    "nodes",
    "connections",
    "settings",
    "staticData",
    "pinData",
    "description",
    "externalId",
    "nodeGroups",
];

/// Where the n8n instance is (`[components.NAME]` with `type = "n8n"`).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct N8nSettings {
    /// The instance's base URL, such as `http://n8n:5678` (the API is under `/api/v1`).
    pub url: String,
    /// The API key (in `ZDR_COMPONENTS__<NAME>__API_KEY`, or a `vault:` reference).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Seconds each call may take (default 60).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

impl std::fmt::Debug for N8nSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("N8nSettings")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// An n8n instance's workflows as a zdr component.
#[derive(Debug, Clone)]
pub struct N8nComponent {
    component: Component,
    api: Api,
}

impl N8nComponent {
    /// The component `component` for the instance `settings` names.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] for a URL that is not http(s) or a missing API key.
    pub fn new(component: Component, settings: &N8nSettings) -> Result<Self> {
        let api = Api::new(settings).map_err(|e| e.with_context("component", &component))?;
        Ok(Self { component, api })
    }
}

/// The part of a workflow that defines it: what a restore compares and the digest covers.
fn definition(w: &Value) -> Value {
    json!({
        "name": w.get("name"),
        "nodes": w.get("nodes"),
        "connections": w.get("connections"),
        "settings": w.get("settings"),
    })
}

/// SHA-256 of a workflow's definition (serde_json writes object keys sorted).
fn definition_sha(w: &Value) -> String {
    let text = serde_json::to_vec(&definition(w)).unwrap_or_default();
    hex::encode(Sha256::digest(&text))
}

fn name_of(w: &Value) -> &str {
    w.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// A workflow's id: a string, or a number on older n8n versions.
fn id_of(w: &Value) -> String {
    match w.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The credentials a workflow's nodes use: `(type, id, name)`, each once, in order. A node
/// names them in its `credentials` object, type → `{id, name}`; the data is never there.
fn credential_refs(w: &Value) -> BTreeSet<(String, String, String)> {
    let mut refs = BTreeSet::new();
    for node in w
        .get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(creds) = node.get("credentials").and_then(Value::as_object) else {
            continue;
        };
        for (kind, c) in creds {
            let id = match c.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            refs.insert((kind.clone(), id, name));
        }
    }
    refs
}

fn credentials_json(refs: &BTreeSet<(String, String, String)>) -> Value {
    Value::Array(
        refs.iter()
            .map(|(kind, id, name)| json!({"type": kind, "id": id, "name": name}))
            .collect(),
    )
}

fn active_of(w: &Value) -> bool {
    w.get("active").and_then(Value::as_bool).unwrap_or(false)
}

fn tag_names(w: &Value) -> BTreeSet<String> {
    w.get("tags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The body of a create or update: the writable fields the backup holds.
fn writable(w: &Value) -> Value {
    let mut body = serde_json::Map::new();
    for k in WRITABLE {
        if let Some(v) = w.get(k)
            && !v.is_null()
        {
            body.insert(k.to_owned(), v.clone());
        }
    }
    Value::Object(body)
}

#[async_trait]
impl BackupSource for N8nComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    async fn backup(
        &self,
        _req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        let workflows = self.api.workflows().await?;
        let mut w = sink.create(ARTIFACT, "jsonl").await?;
        let mut facts = Vec::new();
        let mut all_credentials = BTreeSet::new();
        for mut wf in workflows {
            if wf.get("tags").is_none() {
                let tags = self.api.workflow_tags(&id_of(&wf)).await?;
                if let Some(o) = wf.as_object_mut() {
                    o.insert("tags".into(), tags);
                }
            }
            let mut line = serde_json::to_vec(&wf)
                .map_err(|e| Error::unexpected("cannot serialize a workflow").with_source(e))?;
            line.push(b'\n');
            w.write_all(&line)
                .await
                .map_err(|e| Error::from_io(e, "writing the workflows failed"))?;
            let used = credential_refs(&wf);
            facts.push(json!({
                "id": id_of(&wf),
                "name": name_of(&wf),
                "active": active_of(&wf),
                "tags": tag_names(&wf),
                "sha256": definition_sha(&wf),
                "credentials": credentials_json(&used),
            }));
            all_credentials.extend(used);
        }
        w.finish().await?;
        progress.info(format!(
            "{} workflow(s) of {} exported",
            facts.len(),
            self.api.url()
        ));
        Ok(SourceFacts {
            kind: BackupKind::Export,
            facts: json!({
                "url": self.api.url(),
                "count": facts.len(),
                "active": facts.iter().filter(|f| f["active"] == true).count(),
                "workflows": facts,
                "credentials": credentials_json(&all_credentials),
            }),
        })
    }
}

/// What a restore does with one backed-up workflow.
enum Plan {
    Create(Value),
    Update(String, Value),
    /// The definition is the same; the active flag or tags may still need setting.
    Same(String, Value),
}

#[async_trait]
impl Restorer for N8nComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    /// The artifact is read to its verified end before anything is written.
    fn verifies_while_reading(&self) -> bool {
        true
    }

    async fn restore(
        &self,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        let record = backup.artifact(ARTIFACT).ok_or_else(|| {
            Error::integrity(format!("backup {} has no workflows artifact", backup.id))
        })?;
        // Read whole first: the stream's checksum is checked at its end, before any write.
        let mut lines = BufReader::new(from.open(record).await?).lines();
        let mut saved: Vec<Value> = Vec::new();
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| Error::from_io(e, "reading the workflows failed"))?
        {
            if line.trim().is_empty() {
                continue;
            }
            saved.push(serde_json::from_str(&line).map_err(|e| {
                Error::integrity("a line of the workflows artifact is not a workflow")
                    .with_source(e)
            })?);
        }
        let live = self.api.workflows().await?;
        let by_id: BTreeMap<String, &Value> = live.iter().map(|w| (id_of(w), w)).collect();
        let mut by_name: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for w in &live {
            by_name.entry(name_of(w)).or_default().push(w);
        }
        // A live workflow whose id a backed-up one carries is that one's; each live workflow
        // is matched once.
        let saved_ids: BTreeSet<String> = saved.iter().map(id_of).collect();
        let mut claimed: BTreeSet<String> = BTreeSet::new();
        let mut plans = Vec::new();
        let mut conflicts = Vec::new();
        for w in &saved {
            let found = match by_id.get(&id_of(w)) {
                Some(l) => Some(*l),
                None => {
                    let free: Vec<&Value> = by_name
                        .get(name_of(w))
                        .map(|v| {
                            v.iter()
                                .copied()
                                .filter(|l| {
                                    !claimed.contains(&id_of(l)) && !saved_ids.contains(&id_of(l))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    // The same definition first (what an earlier run restored), else the
                    // only workflow of that name.
                    match free.iter().find(|l| definition_sha(l) == definition_sha(w)) {
                        Some(l) => Some(*l),
                        None => match free.as_slice() {
                            [] => None,
                            [one] => Some(*one),
                            many => {
                                conflicts.push(format!(
                                    "{:?} ({} workflows of the instance have that name)",
                                    name_of(w),
                                    many.len()
                                ));
                                continue;
                            }
                        },
                    }
                }
            };
            if let Some(l) = found {
                claimed.insert(id_of(l));
            }
            match found {
                None => plans.push(Plan::Create(w.clone())),
                Some(l) if definition_sha(l) == definition_sha(w) => {
                    plans.push(Plan::Same(id_of(l), w.clone()));
                }
                Some(l) if target.overwrite => {
                    plans.push(Plan::Update(id_of(l), w.clone()));
                }
                Some(l) => conflicts.push(format!("{:?} (id {})", name_of(w), id_of(l))),
            }
        }
        if !conflicts.is_empty() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "{} workflow(s) of the instance differ from backup {}: {}; nothing was written",
                    conflicts.len(),
                    backup.id,
                    conflicts.join(", ")
                ),
            )
            .with_context("url", self.api.url())
            .with_hint("restore with overwrite to replace them"));
        }
        let mut tags = self.api.tags().await?;
        let (mut created, mut updated, mut same) = (0u64, 0u64, 0u64);
        let mut notes = Vec::new();
        let mut restored: Vec<(String, Value)> = Vec::new();
        for plan in plans {
            let (id, w) = match plan {
                Plan::Create(w) => {
                    let made = self.api.create(&writable(&w)).await?;
                    created += 1;
                    (id_of(&made), w)
                }
                Plan::Update(id, w) => {
                    self.api.update(&id, &writable(&w)).await?;
                    updated += 1;
                    (id, w)
                }
                Plan::Same(id, w) => {
                    same += 1;
                    (id, w)
                }
            };
            let wanted = tag_names(&w);
            let now = self.api.workflow_with_tags(&id).await?;
            let current = tag_names(&now);
            if wanted != current {
                let mut ids = Vec::new();
                for name in &wanted {
                    let tag_id = match tags.get(name) {
                        Some(t) => t.clone(),
                        None => {
                            let t = self.api.create_tag(name).await?;
                            tags.insert(name.clone(), t.clone());
                            t
                        }
                    };
                    ids.push(json!({ "id": tag_id }));
                }
                self.api.set_tags(&id, &Value::Array(ids)).await?;
            }
            if active_of(&now) == active_of(&w) {
                restored.push((id, w));
                continue;
            }
            if let Err(e) = self.api.set_active(&id, active_of(&w)).await {
                if e.kind() == ErrorKind::BadInput {
                    notes.push(format!(
                        "workflow {:?} was restored but n8n refused to {}: {}",
                        name_of(&w),
                        if active_of(&w) {
                            "activate it"
                        } else {
                            "deactivate it"
                        },
                        e.message()
                    ));
                } else {
                    return Err(e);
                }
            }
            restored.push((id, w));
        }
        // Read each back: the definition n8n holds now is the backed-up one.
        for (id, w) in &restored {
            let back = self.api.workflow_with_tags(id).await?;
            if definition_sha(&back) != definition_sha(w) {
                return Err(Error::integrity(format!(
                    "workflow {:?} (id {id}) reads back different from the backup",
                    name_of(w)
                ))
                .with_context("url", self.api.url()));
            }
        }
        if same > 0 {
            notes.push(format!(
                "{same} workflow(s) already identical were left alone"
            ));
        }
        let needed: BTreeSet<(String, String, String)> = restored
            .iter()
            .flat_map(|(_, w)| credential_refs(w))
            .collect();
        if !needed.is_empty() {
            let list: Vec<String> = needed
                .iter()
                .map(|(kind, id, name)| format!("{name:?} ({kind}, id {id})"))
                .collect();
            notes.push(format!(
                "the restored workflows use {} credential(s) that n8n's API does not export: {}; \
                 on a new instance, restore n8n's database or create them with these names",
                needed.len(),
                list.join(", ")
            ));
        }
        progress.info(format!(
            "{created} workflow(s) created, {updated} replaced on {}",
            self.api.url()
        ));
        Ok(RestoreOutcome {
            target: self.api.url().to_owned(),
            items: created + updated,
            bytes: record.raw_size,
            notes,
        })
    }
}

#[async_trait]
impl Verifier for N8nComponent {
    /// Each backed-up workflow is on the instance (by id, else by name) with the same
    /// definition, active flag and tags.
    async fn verify(&self, backup: &Manifest, _target: &RestoreTarget) -> Result<VerifyReport> {
        let live = self.api.workflows().await?;
        let mut report = VerifyReport::default();
        let saved = backup
            .facts
            .get("workflows")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for f in &saved {
            report.checked += 1;
            let id = f["id"].as_str().unwrap_or_default();
            let name = f["name"].as_str().unwrap_or_default();
            // By id, else by name: the one with the same definition when several share it.
            let found = live.iter().find(|w| id_of(w) == id).or_else(|| {
                let named: Vec<&Value> = live.iter().filter(|w| name_of(w) == name).collect();
                named
                    .iter()
                    .find(|w| f["sha256"].as_str() == Some(definition_sha(w).as_str()))
                    .or(named.first())
                    .copied()
            });
            let Some(w) = found else {
                report
                    .problems
                    .push(format!("workflow {name:?} is missing"));
                continue;
            };
            if f["sha256"].as_str() != Some(definition_sha(w).as_str()) {
                report
                    .problems
                    .push(format!("workflow {name:?} has another definition"));
            }
            if f["active"].as_bool() != Some(active_of(w)) {
                report.problems.push(format!(
                    "workflow {name:?} is {}",
                    if active_of(w) { "active" } else { "inactive" }
                ));
            }
            let tags: BTreeSet<String> = f["tags"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if tags != tag_names(w) {
                report
                    .problems
                    .push(format!("workflow {name:?} has other tags"));
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_keep_only_what_n8n_accepts() {
        let w = json!({"id": "a1", "name": "n", "active": true, "nodes": [], "connections": {},
            "settings": {}, "tags": [{"id": "t", "name": "x"}], "createdAt": "2026-01-01",
            "versionId": "v", "staticData": null, "pinData": {"n": []}});
        assert_eq!(
            writable(&w),
            json!({"name": "n", "nodes": [], "connections": {}, "settings": {}, "pinData": {"n": []}})
        );
        assert_eq!(tag_names(&w), BTreeSet::from(["x".to_owned()]));
        let mut renamed = w.clone();
        renamed["name"] = json!("m");
        assert_ne!(definition_sha(&w), definition_sha(&renamed));
        let mut reactivated = w.clone();
        reactivated["active"] = json!(false);
        assert_eq!(definition_sha(&w), definition_sha(&reactivated));
    }
}
