//! Test support: the Qdrant REST double.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]
pub mod qdrant_double;
