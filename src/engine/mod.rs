//! The engine: the live definitions, the intake every event comes through,
//! the event loop, the dispatcher and runs, run leases and the background
//! workers. [`crate::agent`] puts them together.

pub mod backfills;
pub mod clock;
pub mod config_dir;
pub mod dispatch;
pub mod election;
pub mod event_loop;
pub mod intake;
pub mod leases;
pub mod live;
pub mod logs;
pub mod node;
pub mod registry;
pub mod replays;
pub mod reruns;
pub mod run;
pub mod workers;
