//! Examples live next to this file; run them with `cargo run -p zdr-examples --example NAME`.
