//! Placeholder until the transport benchmark lands.
fn main() {}
