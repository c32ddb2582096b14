//! Integration tests: the real `nexusd` binary on real files.

/// Runs a scenario `fn(Backend)` on SQLite and on a fresh PostgreSQL
/// database (skipped, loudly, outside CI when no server answers).
#[macro_export]
macro_rules! on_both {
    ($name:ident, $scenario:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$scenario($crate::agent::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                if let Some(backend) = $crate::agent::Backend::postgres() {
                    super::$scenario(backend)
                }
            }
        }
    };
}

mod agent;
mod agent_ops;
mod api;
mod backfills;
mod backlog;
mod cancels;
mod dashboard;
mod durability;
mod fleet;
mod injection;
mod logs;
mod on_failure;
mod replays;
mod reruns;
mod schema_agreement;
mod seed;
mod shared_data_dir;
mod steps_e2e;
mod support;
mod test_match;
mod validate;
mod watching;
