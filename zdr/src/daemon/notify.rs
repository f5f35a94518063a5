//! Alerts and pings: a generic JSON webhook and healthchecks-style ping URLs, sent in the
//! background with retries — an unreachable receiver is a logged warning, never a blocked or
//! failed backup. URLs are secrets (they carry tokens): they never appear in messages.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use zdr_core::{Progress, Secret};

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A job failed after succeeding (or on its first run).
    JobFailed,
    /// A failing job succeeded again.
    JobRecovered,
    /// A drill failed.
    DrillFailed,
    /// A failing drill passed again.
    DrillRecovered,
    /// A component's recovery point objective is missed.
    RpoBreached,
    /// A component's recovery point objective is met again.
    RpoRecovered,
}

impl AlertKind {
    /// True for the alerts that announce a recovery.
    #[must_use]
    pub fn is_recovery(self) -> bool {
        matches!(
            self,
            Self::JobRecovered | Self::DrillRecovered | Self::RpoRecovered
        )
    }
}

/// One alert, as the webhook receives it (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// What happened.
    pub event: AlertKind,
    /// The job, when a job's outcome changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The component concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// What happened, in words (no secrets).
    pub message: String,
    /// The host the daemon runs on.
    pub host: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Sends alerts and pings in the background.
#[derive(Clone)]
pub(crate) struct Notifier {
    /// Only when something is to be sent (a webhook or a ping URL is configured).
    client: Option<reqwest::Client>,
    webhook: Option<Secret>,
    retries: u32,
    retry_delay: Duration,
    tasks: Arc<Mutex<JoinSet<()>>>,
    progress: Progress,
}

impl Notifier {
    pub(crate) fn new(
        webhook: Option<Secret>,
        pings: bool,
        retries: u32,
        retry_delay: Duration,
        progress: Progress,
    ) -> zdr_core::Result<Self> {
        let client = if webhook.is_some() || pings {
            Some(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| {
                        zdr_core::Error::unexpected(
                            "cannot make the HTTP client for alerts and pings",
                        )
                        .with_source(e)
                        .with_hint("are the system's CA certificates installed (ca-certificates)?")
                    })?,
            )
        } else {
            None
        };
        Ok(Self {
            client,
            webhook,
            retries,
            retry_delay,
            tasks: Arc::new(Mutex::new(JoinSet::new())),
            progress,
        })
    }

    /// Post `alert` to the webhook (when one is configured).
    pub(crate) async fn alert(&self, alert: Alert) {
        let Some(url) = self.webhook.clone() else {
            return;
        };
        let body = match serde_json::to_vec(&alert) {
            Ok(b) => b,
            Err(e) => {
                self.progress
                    .warn(format!("cannot encode the alert {:?}: {e}", alert.event));
                return;
            }
        };
        let what = format!("the webhook alert {:?}", alert.event);
        self.spawn(url, Some("application/json"), body, what).await;
    }

    /// Ping `url` (healthchecks style: `URL/start`, `URL`, `URL/fail`) with `body` as the
    /// log text.
    pub(crate) async fn ping(&self, url: &Secret, suffix: &str, body: String, job: &str) {
        let full = Secret::new(format!("{}{suffix}", url.expose().trim_end_matches('/')));
        let what = format!(
            "the {} ping of job {job}",
            if suffix.is_empty() {
                "success"
            } else {
                suffix.trim_start_matches('/')
            }
        );
        // healthchecks keeps the first 100 kB of a ping's body.
        let mut body = body.into_bytes();
        body.truncate(100_000);
        self.spawn(full, None, body, what).await;
    }

    async fn spawn(
        &self,
        url: Secret,
        content_type: Option<&'static str>,
        body: Vec<u8>,
        what: String,
    ) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let retries = self.retries;
        let delay = self.retry_delay;
        let progress = self.progress.clone();
        let mut tasks = self.tasks.lock().await;
        // Finished sends are reaped so the set stays small in a long-running daemon.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let mut last = String::new();
            for attempt in 0..=retries {
                if attempt > 0 {
                    tokio::time::sleep(delay * 2u32.saturating_pow(attempt - 1)).await;
                }
                let mut req = client.post(url.expose()).body(body.clone());
                if let Some(ct) = content_type {
                    req = req.header(reqwest::header::CONTENT_TYPE, ct);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => last = format!("answered {}", r.status()),
                    // The error's text names the URL; only its kind is kept.
                    Err(e) => {
                        last = if e.is_timeout() {
                            "timed out".to_owned()
                        } else if e.is_connect() {
                            "cannot connect".to_owned()
                        } else {
                            "request failed".to_owned()
                        };
                    }
                }
            }
            progress.warn(format!(
                "{what} was not delivered after {} attempts: {last}",
                retries + 1
            ));
        });
    }

    /// Wait (at most `limit`) for the sends still under way.
    pub(crate) async fn flush(&self, limit: Duration) {
        let mut tasks = self.tasks.lock().await;
        let _ =
            tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} }).await;
    }
}
