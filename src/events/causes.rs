//! Who caused a write: built-in actions register the paths they are about
//! to write, and the event the watcher then derives for that path carries
//! the run and the chain depth (SPEC "No loops"); the file API registers the
//! user whose request wrote it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::events::Cause;

/// How long a registered write waits for its event.
const TTL: Duration = Duration::from_secs(30);

/// Runs' writes, by path.
pub type Causes = Recent<Cause>;

/// Writes awaiting their event, by path.
#[derive(Debug)]
pub struct Recent<T> {
    // Held only to insert or take one entry, never across an await.
    inner: Mutex<Inner<T>>,
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Recent {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                swept: None,
            }),
        }
    }
}

#[derive(Debug)]
struct Inner<T> {
    map: HashMap<String, (T, Instant)>,
    /// When expired entries were last dropped: at most once per TTL, so a
    /// burst of writes does not sweep the map on every one.
    swept: Option<Instant>,
}

impl Causes {
    pub fn register_run(&self, path: &str, run_id: &str, depth: u32) {
        self.register(
            path,
            Cause {
                run_id: run_id.to_owned(),
                depth,
            },
        );
    }
}

impl<T> Recent<T> {
    pub fn register(&self, path: &str, value: T) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if inner.swept.is_none_or(|t| now.duration_since(t) >= TTL) {
            inner.map.retain(|_, (_, at)| now.duration_since(*at) < TTL);
            inner.swept = Some(now);
        }
        let map = &mut inner.map;
        map.insert(path.to_owned(), (value, now));
    }

    /// What wrote `path` recently, if anything registered it.
    pub fn take(&self, path: &str) -> Option<T> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .map
            .remove(path)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(c, _)| c)
    }
}
