//! The n8n API **double** (`zdr-n8n/tests/support/n8n_double.rs`) as a process of its own, for
//! the fault suite (`scripts/faults.sh`), where zdr runs as a binary and is killed.
//!
//! `N8N_DOUBLE_API_KEY=KEY zdr-n8n-double [SEED]` serves on a free port of 127.0.0.1, prints
//! its base URL on one line of stdout, and holds `SEED` workflows (default 0): each with a
//! trigger node and the tag `seed`, every third one active and tagged `prod` too. Its state
//! lives in memory and is gone with the process, like an instance whose database was lost.
//! It serves until killed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../../zdr-n8n/tests/support/n8n_double.rs"]
#[allow(dead_code)]
mod n8n_double;

use std::io::Write;

use serde_json::json;

#[tokio::main]
async fn main() {
    let key = std::env::var("N8N_DOUBLE_API_KEY").expect("N8N_DOUBLE_API_KEY must be set");
    let seed: usize = std::env::args()
        .nth(1)
        .map_or(0, |s| s.parse().expect("SEED must be a number"));
    let double = n8n_double::N8nDouble::start(&key).await;
    {
        let mut inner = double.inner.lock().expect("lock");
        for i in 0..seed {
            let name = format!("workflow {i:04}");
            let w = json!({
                "name": name,
                "active": i % 3 == 0,
                "nodes": [
                    {"id": "1", "name": "Schedule", "type": "n8n-nodes-base.scheduleTrigger",
                     "typeVersion": 1.2, "position": [0, 0],
                     "parameters": {"rule": {"interval": [{"field": "hours"}]}}},
                    {"id": "2", "name": "HTTP", "type": "n8n-nodes-base.httpRequest",
                     "typeVersion": 4.2, "position": [200, 0],
                     "parameters": {"url": format!("https://example.invalid/{i}")}}
                ],
                "connections": {"Schedule": {"main": [[{"node": "HTTP", "type": "main", "index": 0}]]}},
                "settings": {"executionOrder": "v1"},
                "staticData": null,
            });
            let tags: &[&str] = if i % 3 == 0 {
                &["seed", "prod"]
            } else {
                &["seed"]
            };
            inner.insert(w, tags);
        }
    }
    let mut out = std::io::stdout();
    writeln!(out, "{}", double.url).expect("stdout");
    out.flush().expect("stdout");
    std::future::pending::<()>().await;
}
