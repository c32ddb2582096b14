//! File events: what changed, as triggers name it, and how changes on disk
//! become events (watcher hints, the file index, the reconciler).

pub mod causes;
pub mod ignore;
pub mod index;
pub mod openfiles;
pub mod reconcile;
pub mod watcher;

use std::fmt;
use std::str::FromStr;

/// One change of one regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub kind: EventType,
    /// Virtual path: absolute, `/`-separated, rooted at the data dir.
    pub path: String,
    pub old_path: Option<String>,
    pub size: Option<u64>,
    pub mtime_ms: Option<i64>,
    /// When nexusd observed it, in Unix milliseconds.
    pub observed_ms: i64,
    /// The run whose built-in write caused it, if any.
    pub cause: Option<Cause>,
    /// The exact file on disk when its name is not UTF-8 (`path` escapes
    /// each invalid byte as `\xNN`).
    pub raw_abs: Option<std::path::PathBuf>,
    /// The API user whose request caused it (a file write, a trigger).
    pub actor: Option<String>,
    /// How it entered the engine.
    pub source: Source,
}

/// How an event entered the engine: seen by the watch, found by a
/// comparison of the tree with the index (at start, after lost events, a
/// poll), or made by an API request (`workflows trigger`; its user is the
/// event's actor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    #[default]
    Watch,
    Scan,
    Api,
    /// A backfill: a file already there, taken in for one workflow.
    Backfill,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Watch => "watch",
            Source::Scan => "scan",
            Source::Api => "api",
            Source::Backfill => "backfill",
        }
    }

    /// The stored spelling back; an unknown one (a newer agent's) reads
    /// as `watch`.
    pub fn parse(text: &str) -> Source {
        match text {
            "scan" => Source::Scan,
            "api" => Source::Api,
            "backfill" => Source::Backfill,
            _ => Source::Watch,
        }
    }
}

/// What caused an event: a run's own write, and how deep the chain is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub run_id: String,
    /// 1 for an event caused by a run started by an outside change.
    pub depth: u32,
}

impl Event {
    /// How many runs led to this event (0 for an outside change).
    pub fn chain_depth(&self) -> u32 {
        self.cause.as_ref().map_or(0, |c| c.depth)
    }

    /// The event's template fields (SPEC section 3), `abs_path` under `root`.
    pub fn template_fields(&self, root: &std::path::Path) -> serde_json::Value {
        let mut m = path_fields(&self.path);
        m.insert("id".into(), self.id.clone().into());
        m.insert("type".into(), self.kind.as_str().into());
        m.insert("old_path".into(), self.old_path.clone().into());
        m.insert(
            "abs_path".into(),
            abs_path(root, &self.path)
                .to_string_lossy()
                .into_owned()
                .into(),
        );
        m.insert("size".into(), self.size.into());
        m.insert("mtime".into(), self.mtime_ms.map(rfc3339_ms).into());
        m.insert("timestamp".into(), rfc3339_ms(self.observed_ms).into());
        serde_json::Value::Object(m)
    }
}

/// A path as text: valid UTF-8 as it is, each invalid byte as `\xNN`.
/// The flag is false when an escape was needed (the text is then not the
/// exact name, and the caller keeps the raw path).
pub fn encode_path(os: &std::ffi::OsStr) -> (String, bool) {
    use std::os::unix::ffi::OsStrExt;
    let bytes = os.as_bytes();
    if let Ok(s) = std::str::from_utf8(bytes) {
        return (s.to_owned(), true);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    (out, false)
}

/// The file on disk for a virtual path.
pub fn abs_path(root: &std::path::Path, path: &str) -> std::path::PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Unix milliseconds as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0).unsigned_abs());
    humantime::format_rfc3339_millis(t).to_string()
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Now, in Unix nanoseconds: the time a `stat` is taken at (racy entries).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A new, time-ordered id with a prefix (`evt_`, `run_`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// The five kinds of change (SPEC section 3), spelled as triggers, the
/// store and the API spell them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub enum EventType {
    #[serde(rename = "file.created")]
    Created,
    #[serde(rename = "file.updated")]
    Updated,
    #[serde(rename = "file.deleted")]
    Deleted,
    #[serde(rename = "file.moved")]
    Moved,
    #[serde(rename = "metadata.changed")]
    MetadataChanged,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::Created,
        EventType::Updated,
        EventType::Deleted,
        EventType::Moved,
        EventType::MetadataChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "file.created",
            EventType::Updated => "file.updated",
            EventType::Deleted => "file.deleted",
            EventType::Moved => "file.moved",
            EventType::MetadataChanged => "metadata.changed",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<String> = EventType::ALL.iter().map(|t| format!("`{t}`")).collect();
                format!(
                    "unknown event type `{s}`, expected one of {}",
                    all.join(", ")
                )
            })
    }
}

/// A set of event types, as a trigger lists them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventSet(u8);

impl EventSet {
    pub fn insert(&mut self, t: EventType) {
        self.0 |= 1 << t as u8;
    }

    pub fn contains(self, t: EventType) -> bool {
        self.0 & (1 << t as u8) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = EventType> {
        EventType::ALL
            .into_iter()
            .filter(move |t| self.contains(*t))
    }
}

impl fmt::Display for EventSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(EventType::as_str).collect();
        f.write_str(&names.join(", "))
    }
}

/// The template fields derived from a virtual path: `name`, `stem`, `ext`,
/// `dir` (SPEC section 3).
pub fn path_fields(path: &str) -> serde_json::Map<String, serde_json::Value> {
    use crate::templates::helpers::{split_ext, split_name};
    let (dir, name) = split_name(path);
    let (stem, ext) = split_ext(name);
    let mut m = serde_json::Map::new();
    m.insert("path".into(), path.into());
    m.insert("name".into(), name.into());
    m.insert("stem".into(), stem.into());
    m.insert("ext".into(), ext.into());
    m.insert("dir".into(), dir.into());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_names() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
        }
        assert!(
            "file.changed"
                .parse::<EventType>()
                .unwrap_err()
                .contains("`file.created`")
        );
    }
}
