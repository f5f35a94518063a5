//! # zdr-redis
//!
//! The zdr adapter for redis. Its `BackupSource`, `Restorer` and `Verifier` are not
//! built yet: this crate reserves the name in the workspace, and exposes nothing.
