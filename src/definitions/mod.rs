//! Definitions: YAML documents parsed with positions, checked against the
//! JSON Schema, deserialized into raw types, and compiled into the validated
//! model the engine runs. `nexusd validate` is this module and nothing else.

pub mod compile;
pub mod diagnostics;
pub mod doc;
pub mod duration;
pub mod lint;
pub mod load;
pub mod model;
pub mod names;
pub mod raw;
pub mod retry;
pub mod schema;
pub mod steps;
pub mod yaml;

pub use diagnostics::{Diagnostic, Diagnostics, Severity};
pub use load::{Loaded, load_config_dir, load_paths, load_text};
pub use model::DefinitionSet;
pub use yaml::Limits;
