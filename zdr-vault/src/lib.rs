//! # zdr-vault
//!
//! The zdr adapter for vault. Its `BackupSource`, `Restorer` and `Verifier` are not
//! built yet: this crate reserves the name in the workspace, and exposes nothing.
