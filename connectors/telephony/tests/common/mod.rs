//! This crate's fixtures for the integration tests; the signed requests and the router
//! harness come from `switchboard_sdk::testing`.

/// The payload of `fixtures/{name}`, its origin note dropped.
pub fn fixture(name: &str) -> String {
    switchboard_sdk::testing::fixture(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"), name)
}
