//! The daemon's configuration: one TOML file read into typed structs (unknown keys are
//! errors), then a validation pass that collects every problem with its `FILE:LINE:COL`.
//!
//! Connector tables are typed by each connector's own factory through the registry; this
//! module only knows the core's sections.

mod load;
mod locate;
mod model;
mod validate;

pub use load::{ConfigError, LoadedConfig, Problem, load, load_str};
pub use model::*;
