//! `zdr` with an `n8n` component against the n8n API **double** of zdr-n8n's tests
//! (`zdr-n8n/tests/support/n8n_double.rs`): backup, a workflow deleted and one edited, a
//! restore refused over the edit (exit 2, nothing written), then with `--overwrite`; the API
//! key comes from the environment and never appears in any output.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../zdr-n8n/tests/support/n8n_double.rs"]
#[allow(dead_code)]
mod n8n_double;

use std::process::{Command, Output};

use serde_json::{Value, json};

const KEY: &str = "n8n-cli-test-key-77aa";

fn zdr(config: &std::path::Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_zdr"))
        .arg("--config")
        .arg(config)
        .arg("--no-progress")
        .args(args)
        .env("ZDR_COMPONENTS__AUTOMATION__API_KEY", KEY)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(KEY), "{all}");
    out
}

fn workflow(name: &str) -> Value {
    json!({
        "name": name,
        "nodes": [{"id": "1", "name": "Webhook", "type": "n8n-nodes-base.webhook", "typeVersion": 2, "position": [0, 0], "parameters": {"path": name}}],
        "connections": {},
        "settings": {"executionOrder": "v1"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n8n_workflows_backup_and_restore_through_the_cli() {
    let n8n = n8n_double::N8nDouble::start(KEY).await;
    let (gone, edited) = {
        let mut inner = n8n.inner.lock().unwrap();
        let mut hook = workflow("Lead intake");
        hook["active"] = json!(true);
        let gone = inner.insert(hook, &["crm"]);
        let edited = inner.insert(workflow("Weekly report"), &[]);
        (gone, edited)
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zdr.toml");
    std::fs::write(
        &config,
        format!(
            "primary = \"local\"\n[tiers.local]\ntype = \"fs\"\nroot = \"{}/tier\"\n[components.automation]\ntype = \"n8n\"\nurl = \"{}\"\n",
            dir.path().display(),
            n8n.url
        ),
    )
    .unwrap();
    let out = zdr(&config, &["backup", "automation"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    {
        let mut inner = n8n.inner.lock().unwrap();
        inner.workflows.remove(&gone);
        inner.workflows.get_mut(&edited).unwrap()["settings"]["timezone"] =
            json!("Europe/Amsterdam");
    }
    let writes = n8n.writes().len();
    let out = zdr(&config, &["restore", "automation"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Weekly report"));
    assert_eq!(n8n.writes().len(), writes, "nothing written");

    let out = zdr(&config, &["--json", "restore", "automation", "--overwrite"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = n8n
        .workflows()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let lead = n8n
        .workflows()
        .into_iter()
        .find(|w| w["name"] == "Lead intake")
        .unwrap();
    assert_eq!(lead["active"], json!(true));
    assert_eq!(lead["tags"][0]["name"], json!("crm"));
    let report = n8n
        .workflows()
        .into_iter()
        .find(|w| w["name"] == "Weekly report")
        .unwrap();
    assert!(report["settings"].get("timezone").is_none());

    let out = zdr(&config, &["restore", "automation"]);
    assert_eq!(out.status.code(), Some(0), "a second run has nothing to do");
    assert_eq!(n8n.workflows().len(), 2);
    let out = zdr(&config, &["verify", "automation"]);
    assert_eq!(out.status.code(), Some(0));
    let wrong = Command::new(env!("CARGO_BIN_EXE_zdr"))
        .arg("--config")
        .arg(&config)
        .args(["--no-progress", "backup", "automation"])
        .env("ZDR_COMPONENTS__AUTOMATION__API_KEY", "not-the-key")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
}
