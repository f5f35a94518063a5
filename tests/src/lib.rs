//! The zdr test kit: real throwaway servers (PostgreSQL clusters, SeaweedFS for S3, containers on
//! the Docker engine) and named doubles (the OneDrive Graph-API double), shared by the end-to-end
//! suites.

pub mod containers;
pub mod fixtures;
pub mod graph_double;
pub mod postgres;
pub mod seaweed;
