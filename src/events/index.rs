//! What the index remembers of a file, and what a difference means.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use super::EventType;

/// The `lstat` fields that tell whether a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub ino: u64,
    pub dev: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl FileMeta {
    pub fn from_metadata(m: &Metadata) -> FileMeta {
        FileMeta {
            ino: m.ino(),
            dev: m.dev(),
            size: m.size(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
        }
    }

    pub fn mtime_ms(&self) -> i64 {
        self.mtime_ns / 1_000_000
    }
}

/// The event that takes a file from `before` to `after` (either may be
/// absent), or `None` when nothing a user would call a change happened.
pub fn classify(before: Option<&FileMeta>, after: Option<&FileMeta>) -> Option<EventType> {
    match (before, after) {
        (None, None) => None,
        (None, Some(_)) => Some(EventType::Created),
        (Some(_), None) => Some(EventType::Deleted),
        (Some(b), Some(a)) => {
            if b.ino != a.ino || b.dev != a.dev || b.size != a.size || b.mtime_ns != a.mtime_ns {
                Some(EventType::Updated)
            } else if b.mode != a.mode || b.uid != a.uid || b.gid != a.gid {
                Some(EventType::MetadataChanged)
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> FileMeta {
        FileMeta {
            ino: 1,
            dev: 1,
            size: 10,
            mtime_ns: 5,
            mode: 0o100644,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn derives_the_event_from_the_difference() {
        let m = meta();
        assert_eq!(classify(None, Some(&m)), Some(EventType::Created));
        assert_eq!(classify(Some(&m), None), Some(EventType::Deleted));
        assert_eq!(classify(Some(&m), Some(&m)), None);
        let replaced = FileMeta { ino: 2, ..m };
        assert_eq!(
            classify(Some(&m), Some(&replaced)),
            Some(EventType::Updated)
        );
        let grown = FileMeta { size: 11, ..m };
        assert_eq!(classify(Some(&m), Some(&grown)), Some(EventType::Updated));
        let chmod = FileMeta {
            mode: 0o100600,
            ..m
        };
        assert_eq!(
            classify(Some(&m), Some(&chmod)),
            Some(EventType::MetadataChanged)
        );
    }
}
