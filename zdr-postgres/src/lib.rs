//! # zdr-postgres
//!
//! The zdr adapter for postgres. Its `BackupSource`, `Restorer` and `Verifier` are not
//! built yet: this crate reserves the name in the workspace, and exposes nothing.
