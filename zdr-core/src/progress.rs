//! Progress reporting. Library crates never print: they send [`ProgressEvent`]s to a
//! [`ProgressSink`] that the consumer injects (the CLI draws bars on a terminal and
//! writes log lines otherwise; a service may forward them to `tracing`).

use std::sync::Arc;

/// How important a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Details useful when debugging.
    Debug,
    /// Normal progress information.
    Info,
    /// Something went wrong but was handled (a retry, a fallback).
    Warn,
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A task started; `total` is its size in bytes when known.
    Started {
        /// The task, such as `backup configs` or `upload configs/daily/x.tar.zst`.
        task: String,
        /// Its size in bytes, if known.
        total: Option<u64>,
    },
    /// A task advanced by `bytes`.
    Advanced {
        /// The task.
        task: String,
        /// Bytes done since the last event.
        bytes: u64,
    },
    /// A task finished.
    Finished {
        /// The task.
        task: String,
    },
    /// A message for the operator's log.
    Message {
        /// Its level.
        level: Level,
        /// The text; never contains secrets.
        text: String,
    },
}

/// Receives progress events. Implementations must be cheap and must not block.
pub trait ProgressSink: Send + Sync {
    /// Handle one event.
    fn event(&self, event: ProgressEvent);
}

/// A cloneable handle to a [`ProgressSink`], passed to every long operation.
#[derive(Clone)]
pub struct Progress {
    sink: Option<Arc<dyn ProgressSink>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("enabled", &self.sink.is_some())
            .finish()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::none()
    }
}

impl Progress {
    /// A handle that drops every event.
    #[must_use]
    pub fn none() -> Self {
        Self { sink: None }
    }

    /// A handle that sends events to `sink`.
    pub fn new(sink: Arc<dyn ProgressSink>) -> Self {
        Self { sink: Some(sink) }
    }

    /// Send an event.
    pub fn event(&self, event: ProgressEvent) {
        if let Some(sink) = &self.sink {
            sink.event(event);
        }
    }

    /// A task started.
    pub fn start(&self, task: &str, total: Option<u64>) {
        self.event(ProgressEvent::Started {
            task: task.to_owned(),
            total,
        });
    }

    /// A task advanced by `bytes`.
    pub fn advance(&self, task: &str, bytes: u64) {
        if self.sink.is_some() {
            self.event(ProgressEvent::Advanced {
                task: task.to_owned(),
                bytes,
            });
        }
    }

    /// A task finished.
    pub fn finish(&self, task: &str) {
        self.event(ProgressEvent::Finished {
            task: task.to_owned(),
        });
    }

    /// A message at `level`.
    pub fn message(&self, level: Level, text: impl Into<String>) {
        self.event(ProgressEvent::Message {
            level,
            text: text.into(),
        });
    }

    /// An informational message.
    pub fn info(&self, text: impl Into<String>) {
        self.message(Level::Info, text);
    }

    /// A warning, such as a retry.
    pub fn warn(&self, text: impl Into<String>) {
        self.message(Level::Warn, text);
    }
}

/// A sink that keeps every event in memory; for tests and for consumers that want a log.
#[derive(Debug, Default)]
pub struct RecordingSink {
    events: std::sync::Mutex<Vec<ProgressEvent>>,
}

impl RecordingSink {
    /// A copy of the events received so far.
    #[must_use]
    pub fn events(&self) -> Vec<ProgressEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The texts of the messages received so far at `level` or above.
    #[must_use]
    pub fn messages(&self, level: Level) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                ProgressEvent::Message { level: l, text } if l >= level => Some(text),
                _ => None,
            })
            .collect()
    }
}

impl ProgressSink for RecordingSink {
    fn event(&self, event: ProgressEvent) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }
}
