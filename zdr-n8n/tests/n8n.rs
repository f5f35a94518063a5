//! n8n workflows through zdr: against the n8n API **double** (`support/n8n_double.rs`), or
//! against a live n8n when `ZDR_TEST_N8N_URL` and `ZDR_TEST_N8N_API_KEY` are set
//! (`live_round_trip_or_double`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/n8n_double.rs"]
#[allow(dead_code)]
mod n8n_double;

use std::sync::Arc;

use n8n_double::N8nDouble;
use serde_json::{Value, json};
use zdr_core::{Component, ErrorKind, Progress, RestoreTarget, Verifier};
use zdr_n8n::{N8nComponent, N8nSettings};
use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};

const KEY: &str = "n8n-api-key-for-tests-4d2c";

fn settings(url: &str, key: &str) -> N8nSettings {
    N8nSettings {
        url: url.to_owned(),
        api_key: Some(key.into()),
        timeout_secs: Some(5),
    }
}

fn component(url: &str, key: &str) -> N8nComponent {
    N8nComponent::new(Component::new("n8n").unwrap(), &settings(url, key)).unwrap()
}

fn workflow(name: &str, trigger: bool) -> Value {
    let first = if trigger {
        json!({"id": "1", "name": "Schedule", "type": "n8n-nodes-base.scheduleTrigger", "typeVersion": 1.2, "position": [0, 0], "parameters": {"rule": {"interval": [{"field": "hours"}]}}})
    } else {
        json!({"id": "1", "name": "Start", "type": "n8n-nodes-base.noOp", "typeVersion": 1, "position": [0, 0], "parameters": {}})
    };
    json!({
        "name": name,
        "nodes": [first, {"id": "2", "name": "HTTP", "type": "n8n-nodes-base.httpRequest", "typeVersion": 4.2, "position": [200, 0], "parameters": {"url": format!("https://example.invalid/{name}")}}],
        "connections": {"Schedule": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}},
        "settings": {"executionOrder": "v1"},
        "staticData": null,
    })
}

fn repo() -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let tier = open_tier(
        "local",
        &TierConfig::Fs {
            root: dir.path().join("tier"),
        },
    )
    .unwrap();
    (dir, Repository::new(tier, PipelineOptions::default()))
}

fn names(d: &N8nDouble) -> Vec<String> {
    let mut v: Vec<String> = d
        .workflows()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn workflows_move_to_a_new_instance_once_with_tags_and_active_flags() {
    let old = N8nDouble::start(KEY).await;
    {
        let mut inner = old.inner.lock().unwrap();
        let mut active = workflow("Nightly sync", true);
        active["active"] = json!(true);
        inner.insert(active, &["prod", "sync"]);
        // Nodes name their credentials by type, id and name; the data stays in n8n.
        let mut mailer = workflow("Invoice mailer", true);
        mailer["nodes"][1]["credentials"] =
            json!({"httpBasicAuth": {"id": "7", "name": "Billing API"}});
        inner.insert(mailer, &["prod"]);
        inner.insert(workflow("Draft", false), &[]);
    }
    let (_dir, repo) = repo();
    let source = component(&old.url, KEY);
    let m = repo
        .backup(&source, "daily", &Progress::none())
        .await
        .unwrap();
    assert_eq!(m.facts["count"], 3);
    assert_eq!(m.facts["active"], 1);
    assert!(!serde_json::to_string(&m).unwrap().contains(KEY));
    let billing = json!([{"type": "httpBasicAuth", "id": "7", "name": "Billing API"}]);
    assert_eq!(m.facts["credentials"], billing);
    let per_workflow: Vec<&Value> = m.facts["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["credentials"] != json!([]))
        .collect();
    assert_eq!(per_workflow.len(), 1, "{:?}", m.facts);
    assert_eq!(per_workflow[0]["name"], "Invoice mailer");
    assert_eq!(per_workflow[0]["credentials"], billing);

    let new = N8nDouble::start("other-key-9f1e").await;
    let target = component(&new.url, "other-key-9f1e");
    let out = repo
        .restore(&target, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap();
    assert_eq!(out.items, 3);
    assert_eq!(names(&new), ["Draft", "Invoice mailer", "Nightly sync"]);
    assert!(
        out.notes.iter().any(|n| n.contains("1 credential(s)")
            && n.contains("\"Billing API\" (httpBasicAuth, id 7)")),
        "{:?}",
        out.notes
    );
    for w in new.workflows() {
        let name = w["name"].as_str().unwrap();
        assert_eq!(w["active"], json!(name == "Nightly sync"), "{name}");
        let mut tags: Vec<&str> = w["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        tags.sort_unstable();
        let want: &[&str] = match name {
            "Nightly sync" => &["prod", "sync"],
            "Invoice mailer" => &["prod"],
            _ => &[],
        };
        assert_eq!(tags, want, "{name}");
    }
    let report = Verifier::verify(&target, &m, &RestoreTarget::default())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");

    // A second run finds everything identical: no write, no duplicate.
    let writes = new.writes().len();
    let again = repo
        .restore(&target, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap();
    assert_eq!(again.items, 0);
    assert!(
        again
            .notes
            .iter()
            .any(|n| n.contains("3 workflow(s) already identical"))
    );
    assert_eq!(new.writes().len(), writes, "{:?}", new.writes());
    assert_eq!(new.workflows().len(), 3);

    // A workflow changed on the new instance: refused, nothing written; with overwrite,
    // replaced in place (same id).
    let changed_id = {
        let mut inner = new.inner.lock().unwrap();
        let (id, w) = inner
            .workflows
            .iter_mut()
            .find(|(_, w)| w["name"] == "Invoice mailer")
            .unwrap();
        w["nodes"][1]["parameters"]["url"] = json!("https://example.invalid/edited");
        id.clone()
    };
    let writes = new.writes().len();
    let err = repo
        .restore(&target, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("Invoice mailer"), "{err}");
    assert_eq!(new.writes().len(), writes);
    let stale = Verifier::verify(&target, &m, &RestoreTarget::default())
        .await
        .unwrap();
    assert!(!stale.is_ok());
    let out = repo
        .restore(
            &target,
            &m,
            &RestoreTarget {
                overwrite: true,
                ..RestoreTarget::default()
            },
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(out.items, 1);
    assert!(
        new.writes()
            .contains(&format!("PUT /workflows/{changed_id}"))
    );
    assert_eq!(new.workflows().len(), 3);
    assert!(
        Verifier::verify(&target, &m, &RestoreTarget::default())
            .await
            .unwrap()
            .is_ok()
    );
}

#[tokio::test]
async fn every_page_is_exported_and_refused_activations_are_reported() {
    let old = N8nDouble::start(KEY).await;
    {
        let mut inner = old.inner.lock().unwrap();
        for i in 0..300 {
            inner.insert(workflow(&format!("wf {i:03}"), true), &[]);
        }
        // Active without a trigger node (an older instance allowed it): n8n refuses to
        // activate it again.
        let mut odd = workflow("Legacy", false);
        odd["active"] = json!(true);
        inner.insert(odd, &["legacy"]);
    }
    let (_dir, repo) = repo();
    let m = repo
        .backup(&component(&old.url, KEY), "daily", &Progress::none())
        .await
        .unwrap();
    assert_eq!(m.facts["count"], 301, "more than one page of 250");
    let new = N8nDouble::start(KEY).await;
    let out = repo
        .restore(
            &component(&new.url, KEY),
            &m,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(out.items, 301);
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("Legacy") && n.contains("refused to activate")),
        "{:?}",
        out.notes
    );
    assert_eq!(new.workflows().len(), 301);
}

#[tokio::test]
async fn a_wrong_key_a_dead_instance_and_ambiguous_names_are_refused() {
    let old = N8nDouble::start(KEY).await;
    old.inner
        .lock()
        .unwrap()
        .insert(workflow("Report", true), &[]);
    let (_dir, repo) = repo();
    let err = repo
        .backup(
            &component(&old.url, "wrong-key"),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    assert!(!err.to_string().contains("wrong-key"));
    assert!(repo.catalog().await.unwrap().list(None).is_empty());

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let err = repo
        .backup(&component(&dead, KEY), "daily", &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Source, "{err}");
    assert!(err.is_temporary());
    assert_eq!(err.context_value("url"), Some(dead.as_str()));
    assert!(repo.catalog().await.unwrap().list(None).is_empty());

    let m = repo
        .backup(&component(&old.url, KEY), "daily", &Progress::none())
        .await
        .unwrap();
    let twice = N8nDouble::start(KEY).await;
    {
        let mut inner = twice.inner.lock().unwrap();
        // Another instance: other ids, and two workflows of that name, neither the backed-up
        // one.
        inner.insert(workflow("Unrelated", true), &[]);
        inner.insert(workflow("Report", false), &[]);
        let mut edited = workflow("Report", true);
        edited["settings"]["timezone"] = json!("UTC");
        inner.insert(edited, &[]);
    }
    let err = repo
        .restore(
            &component(&twice.url, KEY),
            &m,
            &RestoreTarget {
                overwrite: true,
                ..RestoreTarget::default()
            },
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.to_string()
            .contains("2 workflows of the instance have that name")
    );
    assert!(twice.writes().is_empty());

    assert!(
        N8nComponent::new(
            Component::new("n8n").unwrap(),
            &N8nSettings {
                url: "n8n:5678".into(),
                api_key: Some(KEY.into()),
                timeout_secs: None,
            }
        )
        .is_err()
    );
    assert!(
        N8nComponent::new(
            Component::new("n8n").unwrap(),
            &N8nSettings {
                url: "http://n8n:5678".into(),
                api_key: None,
                timeout_secs: None,
            }
        )
        .is_err()
    );
}

/// Against a live n8n (`ZDR_TEST_N8N_URL`, `ZDR_TEST_N8N_API_KEY`): workflows named
/// `zdr-test-*` are created, backed up, one deleted, restored (recreated by name), restored
/// again (nothing written), then removed. Without the variables, the same against the double.
#[tokio::test]
async fn live_round_trip_or_double() {
    let live = std::env::var("ZDR_TEST_N8N_URL")
        .ok()
        .zip(std::env::var("ZDR_TEST_N8N_API_KEY").ok());
    let double;
    let (url, key) = match live {
        Some((u, k)) => (u, k),
        None => {
            double = N8nDouble::start(KEY).await;
            (double.url.clone(), KEY.to_owned())
        }
    };
    let http = reqwest::Client::new();
    let api = |m: reqwest::Method, p: &str| {
        http.request(m, format!("{}/api/v1{p}", url.trim_end_matches('/')))
            .header("X-N8N-API-KEY", key.clone())
    };
    let tag = format!("zdr-test-{}", std::process::id());
    let mut ids = Vec::new();
    for i in 0..2 {
        let w: Value = api(reqwest::Method::POST, "/workflows")
            .json(&workflow(&format!("{tag}-{i}"), true))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(w["id"].as_str().unwrap().to_owned());
    }
    let cleanup = Arc::new(ids.clone());
    let (_dir, repo) = repo();
    let c = component(&url, &key);
    let m = repo.backup(&c, "daily", &Progress::none()).await.unwrap();
    api(reqwest::Method::DELETE, &format!("/workflows/{}", ids[0]))
        .send()
        .await
        .unwrap();
    let out = repo
        .restore(&c, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap();
    assert_eq!(out.items, 1, "the deleted one, recreated by name");
    let again = repo
        .restore(&c, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap();
    assert_eq!(again.items, 0);
    let all: Value = api(reqwest::Method::GET, "/workflows?limit=250")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mine: Vec<String> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["name"].as_str().unwrap_or_default().starts_with(&tag))
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(mine.len(), 2, "never duplicated");
    for id in mine.iter().chain(cleanup.iter()) {
        let _ = api(reqwest::Method::DELETE, &format!("/workflows/{id}"))
            .send()
            .await;
    }
}

#[tokio::test]
async fn workflows_sharing_a_name_are_each_restored_once_and_a_proxy_error_is_temporary() {
    let old = N8nDouble::start(KEY).await;
    {
        let mut inner = old.inner.lock().unwrap();
        inner.insert(workflow("Sync", true), &[]);
        inner.insert(workflow("Sync", false), &[]);
    }
    let (_dir, repo) = repo();
    let m = repo
        .backup(&component(&old.url, KEY), "daily", &Progress::none())
        .await
        .unwrap();
    let new = N8nDouble::start(KEY).await;
    let target = component(&new.url, KEY);
    for run in 0..2 {
        let out = repo
            .restore(&target, &m, &RestoreTarget::default(), &Progress::none())
            .await
            .unwrap();
        assert_eq!(out.items, if run == 0 { 2 } else { 0 }, "run {run}");
        assert_eq!(new.workflows().len(), 2, "run {run}: never duplicated");
    }
    assert!(
        Verifier::verify(&target, &m, &RestoreTarget::default())
            .await
            .unwrap()
            .is_ok()
    );

    // A proxy in front of n8n answering 502 with an HTML page: a temporary error with the
    // status, not a "not JSON" one.
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", proxy.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in proxy.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "<html><body>502 Bad Gateway</body></html>";
            let _ = write!(
                s,
                "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let err = repo
        .backup(&component(&url, KEY), "daily", &Progress::none())
        .await
        .unwrap_err();
    assert!(err.is_temporary(), "{err}");
    assert!(err.to_string().contains("502"), "{err}");
}
