//! Which run caused a write: built-in actions register the paths they are
//! about to write, and the event the watcher then derives for that path
//! carries the run and the chain depth (SPEC "No loops").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::events::Cause;

/// How long a registered write waits for its event.
const TTL: Duration = Duration::from_secs(30);

#[derive(Default, Debug)]
pub struct Causes {
    // Held only to insert or take one entry, never across an await.
    inner: Mutex<Inner>,
}

#[derive(Default, Debug)]
struct Inner {
    map: HashMap<String, (Cause, Instant)>,
    /// When expired entries were last dropped: at most once per TTL, so a
    /// burst of writes does not sweep the map on every one.
    swept: Option<Instant>,
}

impl Causes {
    pub fn register(&self, path: &str, run_id: &str, depth: u32) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if inner.swept.is_none_or(|t| now.duration_since(t) >= TTL) {
            inner.map.retain(|_, (_, at)| now.duration_since(*at) < TTL);
            inner.swept = Some(now);
        }
        let map = &mut inner.map;
        map.insert(
            path.to_owned(),
            (
                Cause {
                    run_id: run_id.to_owned(),
                    depth,
                },
                now,
            ),
        );
    }

    /// The cause of an event on `path`, if a run wrote it recently.
    pub fn take(&self, path: &str) -> Option<Cause> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .map
            .remove(path)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(c, _)| c)
    }
}
