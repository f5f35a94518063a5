//! Presentation: progress bars on a terminal, log lines otherwise, and JSON.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use zdr::core::{Level, ProgressEvent, ProgressSink};
use zdr::human_bytes;

/// Progress on stderr: bars when it is a terminal, timestamped log lines otherwise.
pub struct CliProgress {
    bars: Option<MultiProgress>,
    state: Mutex<HashMap<String, Task>>,
    quiet: bool,
}

struct Task {
    bar: Option<ProgressBar>,
    started: Instant,
    bytes: u64,
}

impl CliProgress {
    pub fn new(no_progress: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self {
            bars: (tty && !no_progress).then(MultiProgress::new),
            state: Mutex::new(HashMap::new()),
            quiet: no_progress,
        }
    }

    /// Timestamped log lines, no bars, whatever `--no-progress` says: a daemon's log.
    pub fn log_only() -> Self {
        Self {
            bars: None,
            state: Mutex::new(HashMap::new()),
            quiet: false,
        }
    }

    fn line(&self, text: &str) {
        let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
        match &self.bars {
            Some(m) => {
                let _ = m.println(format!("{stamp} {text}"));
            }
            None => {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("{stamp} {text}");
                }
            }
        }
    }
}

impl ProgressSink for CliProgress {
    fn event(&self, event: ProgressEvent) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match event {
            ProgressEvent::Started { task, total } => {
                let bar = self.bars.as_ref().map(|m| {
                    let b = match total {
                        Some(t) => ProgressBar::new(t),
                        None => ProgressBar::new_spinner(),
                    };
                    b.set_style(
                        ProgressStyle::with_template(
                            "{spinner} {msg} {bytes} {binary_bytes_per_sec} {elapsed}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    b.set_message(task.clone());
                    m.add(b)
                });
                state.insert(
                    task,
                    Task {
                        bar,
                        started: Instant::now(),
                        bytes: 0,
                    },
                );
            }
            ProgressEvent::Advanced { task, bytes } => {
                if let Some(t) = state.get_mut(&task) {
                    t.bytes += bytes;
                    if let Some(b) = &t.bar {
                        b.inc(bytes);
                    }
                }
            }
            ProgressEvent::Finished { task } => {
                if let Some(t) = state.remove(&task) {
                    if let Some(b) = &t.bar {
                        b.finish_and_clear();
                    }
                    if !self.quiet && t.bytes > 0 {
                        let secs = t.started.elapsed().as_secs_f64();
                        self.line(&format!(
                            "done {task}: {} in {secs:.2}s ({:.1} MB/s)",
                            human_bytes(t.bytes),
                            t.bytes as f64 / 1e6 / secs.max(1e-6)
                        ));
                    }
                }
            }
            ProgressEvent::Message { level, text } => {
                drop(state);
                let tag = match level {
                    Level::Debug => return,
                    Level::Info => "info",
                    Level::Warn => "WARN",
                };
                if level == Level::Warn || !self.quiet {
                    self.line(&format!("{tag} {text}"));
                }
            }
        }
    }
}
