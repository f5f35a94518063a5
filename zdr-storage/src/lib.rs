//! placeholder
pub mod onedrive;
