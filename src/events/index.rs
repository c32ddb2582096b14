//! What the index remembers of a file, and what a difference means.
//!
//! The `lstat` fields decide most cases. Extended attributes are summarised
//! in a signature. A content hash (of files up to [`HASH_LIMIT`]) is stored so
//! that a file whose mtime alone changed (`touch`, a restore) can be told
//! apart from one rewritten with the same size: the first is
//! `metadata.changed`, the second `file.updated`.
//!
//! A `stat` taken within a clock tick of the file's mtime proves nothing
//! about later writes in that tick: they keep the mtime, and with the same
//! length the size (git's "racy" entries). Such an entry is marked `racy`,
//! and an identical `stat` of it is settled by the content hash.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::EventType;

/// Files up to this size get a content hash in the index.
pub const HASH_LIMIT: u64 = 1024 * 1024;

/// What the index remembers of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub ino: u64,
    pub dev: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A signature of the extended attributes (0 for none).
    pub xattrs: i64,
    /// The first 8 bytes of the content's SHA-256, for files up to [`HASH_LIMIT`].
    pub hash: Option<i64>,
    /// Seen too close to its mtime for an identical `stat` to prove the
    /// content unchanged (see [`is_racy`]).
    pub racy: bool,
}

impl FileMeta {
    /// The state of the file at `abs` from its `lstat`, taken at `seen_ns`
    /// (Unix nanoseconds, read before the `lstat`), its extended attributes
    /// read, its hash not yet (see [`content_hash`]).
    pub fn read(abs: &Path, m: &Metadata, seen_ns: i64) -> FileMeta {
        let meta = FileMeta::from_metadata(m);
        FileMeta {
            xattrs: xattr_signature(abs),
            racy: is_racy(meta.mtime_ns, seen_ns),
            ..meta
        }
    }

    pub fn from_metadata(m: &Metadata) -> FileMeta {
        FileMeta {
            xattrs: 0,
            hash: None,
            racy: false,
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

/// True when a file with this mtime, `stat`ed at `seen_ns`, may still be
/// written without its mtime moving. Nanosecond stamps come from the
/// kernel's coarse clock, one tick (at most 10 ms) behind: 50 ms leaves
/// room. Stamps in whole milliseconds or seconds come from coarser clocks
/// (FAT's two seconds, some network filesystems): 2 s. An mtime in the
/// future is always racy.
pub fn is_racy(mtime_ns: i64, seen_ns: i64) -> bool {
    let window = if mtime_ns % 1_000_000 == 0 {
        2_000_000_000
    } else {
        50_000_000
    };
    seen_ns.saturating_sub(mtime_ns) < window
}

/// The event that takes a file from `before` to `after` (either may be
/// absent), or `None` when nothing a user would call a change happened.
/// `hash_now` is asked for the current content hash only when the stat
/// cannot decide: the mtime alone moved, or `before` is racy and the stat
/// is the same (a file too large to hash is then taken as updated).
pub fn classify(
    before: Option<&FileMeta>,
    after: Option<&FileMeta>,
    hash_now: impl FnOnce() -> Option<i64>,
) -> Option<EventType> {
    match (before, after) {
        (None, None) => None,
        (None, Some(_)) => Some(EventType::Created),
        (Some(_), None) => Some(EventType::Deleted),
        (Some(b), Some(a)) => {
            let meta_changed =
                b.mode != a.mode || b.uid != a.uid || b.gid != a.gid || b.xattrs != a.xattrs;
            if b.ino != a.ino || b.dev != a.dev || b.size != a.size {
                Some(EventType::Updated)
            } else if b.mtime_ns != a.mtime_ns {
                match b.hash {
                    Some(old) if hash_now() == Some(old) => Some(EventType::MetadataChanged),
                    _ => Some(EventType::Updated),
                }
            } else if b.racy && !matches!(b.hash, Some(old) if hash_now() == Some(old)) {
                Some(EventType::Updated)
            } else if meta_changed {
                Some(EventType::MetadataChanged)
            } else {
                None
            }
        }
    }
}

/// The first 8 bytes of the SHA-256 of a file up to [`HASH_LIMIT`].
pub fn content_hash(abs: &Path) -> Option<i64> {
    let bytes = std::fs::read(abs).ok()?;
    if bytes.len() as u64 > HASH_LIMIT {
        return None;
    }
    let digest = Sha256::digest(&bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Some(i64::from_le_bytes(first))
}

/// A signature of a file's extended attributes (names and values), 0 when
/// it has none or the filesystem keeps none.
pub fn xattr_signature(abs: &Path) -> i64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(abs.as_os_str().as_bytes()) else {
        return 0;
    };
    let mut names = vec![0u8; 4096];
    // SAFETY: the buffer is valid for its length; the path is NUL-terminated.
    let n = unsafe { libc::llistxattr(path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return 0;
    }
    names.truncate(n as usize);
    let mut hasher = Sha256::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        hasher.update(name);
        let Ok(cname) = std::ffi::CString::new(name) else {
            continue;
        };
        let mut value = vec![0u8; 65536];
        // SAFETY: as above; the value buffer is valid for its length.
        let len = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len >= 0 {
            hasher.update([0]);
            hasher.update(&value[..len as usize]);
        }
        hasher.update([0xff]);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(first)
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
            xattrs: 0,
            hash: Some(7),
            racy: false,
        }
    }

    #[test]
    fn derives_the_event_from_the_difference() {
        let m = meta();
        let unused = || -> Option<i64> { panic!("no hash needed") };
        assert_eq!(classify(None, Some(&m), unused), Some(EventType::Created));
        assert_eq!(classify(Some(&m), None, unused), Some(EventType::Deleted));
        assert_eq!(classify(Some(&m), Some(&m), unused), None);
        let replaced = FileMeta { ino: 2, ..m };
        assert_eq!(
            classify(Some(&m), Some(&replaced), unused),
            Some(EventType::Updated)
        );
        let grown = FileMeta { size: 11, ..m };
        assert_eq!(
            classify(Some(&m), Some(&grown), unused),
            Some(EventType::Updated)
        );
        let chmod = FileMeta {
            mode: 0o100600,
            ..m
        };
        assert_eq!(
            classify(Some(&m), Some(&chmod), unused),
            Some(EventType::MetadataChanged)
        );
        let xattr = FileMeta { xattrs: 99, ..m };
        assert_eq!(
            classify(Some(&m), Some(&xattr), unused),
            Some(EventType::MetadataChanged)
        );
    }

    #[test]
    fn an_mtime_alone_is_metadata_when_the_content_is_the_same() {
        let m = meta();
        let touched = FileMeta {
            mtime_ns: 6,
            hash: None,
            ..m
        };
        assert_eq!(
            classify(Some(&m), Some(&touched), || Some(7)),
            Some(EventType::MetadataChanged)
        );
        assert_eq!(
            classify(Some(&m), Some(&touched), || Some(8)),
            Some(EventType::Updated)
        );
        let unhashed = FileMeta { hash: None, ..m };
        assert_eq!(
            classify(Some(&unhashed), Some(&touched), || Some(7)),
            Some(EventType::Updated)
        );
    }

    #[test]
    fn a_racy_entry_with_the_same_stat_is_settled_by_its_content() {
        let racy = FileMeta {
            racy: true,
            ..meta()
        };
        assert_eq!(classify(Some(&racy), Some(&meta()), || Some(7)), None);
        assert_eq!(
            classify(Some(&racy), Some(&meta()), || Some(8)),
            Some(EventType::Updated),
            "rewritten within the tick"
        );
        let chmod = FileMeta {
            mode: 0o100600,
            ..meta()
        };
        assert_eq!(
            classify(Some(&racy), Some(&chmod), || Some(7)),
            Some(EventType::MetadataChanged)
        );
        let large = FileMeta { hash: None, ..racy };
        assert_eq!(
            classify(Some(&large), Some(&meta()), || None),
            Some(EventType::Updated),
            "no hash to prove it unchanged"
        );
        let unused = || -> Option<i64> { panic!("the stat decides") };
        assert_eq!(classify(Some(&meta()), Some(&meta()), unused), None);
    }

    #[test]
    fn racy_means_seen_within_a_tick_of_the_mtime() {
        let ns = 1_700_000_000_123_456_789;
        assert!(is_racy(ns, ns + 10_000_000));
        assert!(!is_racy(ns, ns + 60_000_000));
        assert!(is_racy(ns, ns - 1), "an mtime in the future");
        let seconds = 1_700_000_000_000_000_000;
        assert!(is_racy(seconds, seconds + 1_500_000_000));
        assert!(!is_racy(seconds, seconds + 2_000_000_000));
    }

    #[test]
    fn reads_extended_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, "x").unwrap();
        let before = xattr_signature(&f);
        let path = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
        // SAFETY: valid C strings and buffer.
        let rc = unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                c"user.tag".as_ptr(),
                b"v1".as_ptr().cast(),
                2,
                0,
            )
        };
        if rc != 0 {
            return; // a filesystem without user xattrs: nothing to compare
        }
        assert_ne!(xattr_signature(&f), before);
        assert_eq!(content_hash(&f), content_hash(&f));
    }
}
