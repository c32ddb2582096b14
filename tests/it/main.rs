//! Integration tests: the real `nexusd` binary on real files.

mod agent;
mod agent_ops;
mod injection;
mod schema_agreement;
mod seed;
mod steps_e2e;
mod support;
mod test_match;
mod validate;
mod watching;
