//! Retries with exponential backoff for temporary errors, each retry logged.

use std::future::Future;
use std::time::Duration;

use zdr_core::{Progress, Result};

/// How often and how patiently to retry temporary failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total, including the first.
    pub attempts: u32,
    /// Delay before the first retry; doubled each time.
    pub base_delay: Duration,
    /// Upper bound of the delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    #[must_use]
    pub fn none() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    /// Run `op` until it succeeds, fails permanently, or attempts run out. Every retry is
    /// reported as a warning through `progress`; an error that stayed temporary is marked
    /// persistent.
    ///
    /// # Errors
    /// The last error of `op`.
    pub async fn run<T, F, Fut>(&self, what: &str, progress: &Progress, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut delay = self.base_delay;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_temporary() && attempt < self.attempts => {
                    progress.warn(format!(
                        "{what}: attempt {attempt}/{} failed, retrying in {:.1}s: {e}",
                        self.attempts,
                        delay.as_secs_f64()
                    ));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.max_delay);
                    attempt += 1;
                }
                Err(e) => return Err(e.persistent()),
            }
        }
    }
}
