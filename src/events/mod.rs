//! File events: what changed, as triggers name it.

use std::fmt;
use std::str::FromStr;

/// The five kinds of change (SPEC section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    Created,
    Updated,
    Deleted,
    Moved,
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
