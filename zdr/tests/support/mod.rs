//! What the tests of this crate share: an HTTP gate that holds an n8n component's backup
//! open until the test lets it go (a double of nothing but a server that has not answered
//! yet).

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

/// An HTTP server that holds every request until opened, then answers as an n8n with no
/// workflows; it records the paths it was asked for.
pub struct Gate {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `true` lets every held and later request through.
    pub open: watch::Sender<bool>,
    /// The paths asked for.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Woken at every request.
    pub asked: Arc<Notify>,
}

impl Gate {
    /// Returns once the gate has been asked something (at once if it was already).
    pub async fn wait_asked(&self) {
        loop {
            let asked = self.asked.notified();
            tokio::pin!(asked);
            asked.as_mut().enable();
            if !self.requests.lock().unwrap().is_empty() {
                return;
            }
            asked.await;
        }
    }
}

/// A closed gate on a free port.
pub async fn gate() -> Gate {
    let (open, rx) = watch::channel(false);
    let requests: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&requests);
    let asked: Arc<Notify> = Arc::default();
    let ask = Arc::clone(&asked);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let mut rx = rx.clone();
        let seen = Arc::clone(&seen);
        let ask = Arc::clone(&ask);
        async move {
            seen.lock().unwrap().push(uri.path().to_owned());
            ask.notify_waiters();
            let _ = rx.wait_for(|o| *o).await;
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                r#"{"data":[],"nextCursor":null}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Gate {
        addr,
        open,
        requests,
        asked,
    }
}

/// The `[components.flows]` table of an n8n component behind `gate`.
pub fn flows(gate: &Gate) -> String {
    format!(
        r#"
[components.flows]
type = "n8n"
url = "http://{}"
api_key = "k"
"#,
        gate.addr
    )
}
