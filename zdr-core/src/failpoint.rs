//! Failpoints: named commit points where the fault suite kills the process on purpose.
//!
//! A destructive step (a database swap, a server stop, a file replaced) calls
//! [`failpoint`] with a stable name before and after each point where a crash leaves a
//! distinct state. When the environment variable `ZDR_FAILPOINT` names that point, the
//! process aborts there at once — the same as `kill -9` at that instant, but hit
//! deterministically instead of by timing. `ZDR_FAILPOINT=<name>:pause` instead stops the
//! thread there for a minute, so a test can send a signal (Ctrl-C, SIGTERM) at that very
//! point. Unset (always, outside the fault tests), a failpoint costs one environment lookup
//! and does nothing.

/// The environment variable naming the failpoint to die at.
pub const FAILPOINT_ENV: &str = "ZDR_FAILPOINT";

/// Abort the process here when `ZDR_FAILPOINT` equals `name` (or pause here when it is
/// `name:pause`).
pub fn failpoint(name: &str) {
    let Some(value) = std::env::var_os(FAILPOINT_ENV) else {
        return;
    };
    if value == name {
        std::process::abort();
    }
    if value.to_str().and_then(|v| v.strip_suffix(":pause")) == Some(name) {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}
