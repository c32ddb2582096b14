//! Integration tests: the real `nexusd` binary on real files.

mod injection;
mod schema_agreement;
mod support;
mod test_match;
mod validate;
