//! # zdr-qdrant
//!
//! The zdr adapter for qdrant. Its `BackupSource`, `Restorer` and `Verifier` are not
//! built yet: this crate reserves the name in the workspace, and exposes nothing.
