//! The `omnisync` binary.
fn main() {}
