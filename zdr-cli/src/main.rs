//! zdr
fn main() {}
