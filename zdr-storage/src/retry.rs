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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use zdr_core::{Error, ErrorStatus, Level, RecordingSink};

    use super::*;

    fn fast(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn temporary_errors_are_retried_and_logged() {
        let sink = Arc::new(RecordingSink::default());
        let calls = AtomicU32::new(0);
        let v = fast(5)
            .run("upload x", &Progress::new(sink.clone()), || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Error::new(zdr_core::ErrorKind::Storage, "reset").temporary())
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(v.ok(), Some(7));
        let warns = sink.messages(Level::Warn);
        assert_eq!(warns.len(), 2, "{warns:?}");
        assert!(warns[0].starts_with("upload x: attempt 1/5 failed, retrying"));
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried_and_exhaustion_is_persistent() {
        let calls = AtomicU32::new(0);
        let e = fast(5)
            .run("x", &Progress::none(), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::bad_input("no"))
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(e.err().map(|e| e.status()), Some(ErrorStatus::Permanent));
        let e = fast(3)
            .run("x", &Progress::none(), || async {
                Err::<(), _>(Error::new(zdr_core::ErrorKind::Storage, "down").temporary())
            })
            .await;
        assert_eq!(e.err().map(|e| e.status()), Some(ErrorStatus::Persistent));
    }
}
