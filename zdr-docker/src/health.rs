//! Waiting until a container is up again and healthy.

use std::time::Duration;

use chrono::{DateTime, Utc};
use zdr_core::{Error, ErrorKind, Result};

use crate::Docker;
use crate::client::{ContainerStatus, parse_time, status_of};

/// Time between two looks at the container's state.
const POLL: Duration = Duration::from_millis(100);

impl Docker {
    /// Waits until `container` runs after a start later than `since` and a health probe that
    /// began after that start passed. Without a healthcheck, running is enough.
    ///
    /// Pass as `since` the `started_at` of [`Docker::status`] taken before the container was
    /// stopped, killed or crashed (engine time, no clock skew): right after a crash and an
    /// automatic restart the engine can still report "healthy" from the previous run, which
    /// this does not accept. `None` accepts the current run.
    ///
    /// # Errors
    /// [`ErrorKind::Source`] naming the container, its last status and health output when
    /// `timeout` passes; [`ErrorKind::NotFound`] when the container does not exist.
    pub async fn wait_healthy(
        &self,
        container: &str,
        since: Option<DateTime<Utc>>,
        timeout: Duration,
    ) -> Result<ContainerStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let c = self.inspect(container).await?;
            let status = status_of(container, &c);
            let state = c.state.clone().unwrap_or_default();
            let started = status.started_at.filter(|t| since.is_none_or(|s| *t > s));
            let has_check = c
                .config
                .as_ref()
                .and_then(|c| c.healthcheck.as_ref())
                .and_then(|h| h.test.as_ref())
                .is_some_and(|t| !t.is_empty() && t[0] != "NONE");
            let health = state.health.clone().unwrap_or_default();
            let log = health.log.clone().unwrap_or_default();
            if let Some(started) = started
                && status.running
                && !state.restarting.unwrap_or(false)
            {
                if !has_check {
                    return Ok(status);
                }
                // The last probe must have begun after this start and passed.
                let passed = log.last().is_some_and(|r| {
                    r.exit_code == Some(0)
                        && parse_time(r.start.as_deref()).is_some_and(|t| t >= started)
                });
                if passed && status.health.as_deref() == Some("healthy") {
                    return Ok(status);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let last_output = log
                    .last()
                    .and_then(|r| r.output.as_deref())
                    .map(|o| {
                        let o = o.trim();
                        let cut: String = o.chars().take(300).collect();
                        if cut.len() < o.len() {
                            format!("{cut}...")
                        } else {
                            cut
                        }
                    })
                    .unwrap_or_default();
                let health_text = status.health.clone().unwrap_or_else(|| "none".to_owned());
                let mut msg = format!(
                    "container {} did not become healthy within {:.1} s (status {}, health {health_text}",
                    status.name,
                    timeout.as_secs_f64(),
                    status.status,
                );
                if since.is_some() && started.is_none() {
                    msg.push_str(", not started again since the failure");
                }
                if !last_output.is_empty() {
                    msg.push_str(&format!(", last probe: {last_output}"));
                }
                if let Some(code) = status.exit_code.filter(|c| *c != 0 && !status.running) {
                    msg.push_str(&format!(", exit code {code}"));
                }
                msg.push(')');
                return Err(Error::new(ErrorKind::Source, msg)
                    .with_context("container", &status.name)
                    .with_context("status", &status.status)
                    .with_context("health", health_text)
                    .with_hint(format!("`docker logs {}` shows why", status.name)));
            }
            tokio::time::sleep(POLL.min(deadline - tokio::time::Instant::now())).await;
        }
    }
}
