//! nexusd: a declarative, GitOps-style file-event automation agent.
//!
//! The binary (`main.rs`) only parses the command line and maps errors to
//! exit codes; everything else lives here, one module per concept.

pub mod agent;
pub mod api;
pub mod auth;
pub mod cli;
pub mod datadir;
pub mod definitions;
pub mod engine;
pub mod events;
pub mod matching;
pub mod metrics;
pub mod pattern;
pub mod server;
pub mod steps;
pub mod store;
pub mod templates;
pub mod text;
