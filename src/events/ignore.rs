//! Names that never produce events: the temporary files of editors and
//! downloaders. Because they are ignored, the fast path can emit on close
//! without waiting to see whether a rename follows.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// The default list, shown by `nexusd serve --help`.
pub const DEFAULT_IGNORES: &[&str] = &[
    ".*.tmp",
    ".*.swp",
    "*~",
    ".#*",
    "*.part",
    "*.crdownload",
    "4913",
];

/// File-name globs to ignore.
#[derive(Debug, Clone)]
pub struct Ignore {
    set: GlobSet,
}

impl Ignore {
    /// Builds from file-name globs (matched against the last path segment).
    pub fn new<S: AsRef<str>>(globs: &[S]) -> Result<Ignore, String> {
        let mut b = GlobSetBuilder::new();
        for g in globs {
            let g = g.as_ref();
            let glob = GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("invalid ignore glob `{g}`: {}", e.kind()))?;
            b.add(glob);
        }
        let set = b.build().map_err(|e| e.to_string())?;
        Ok(Ignore { set })
    }

    pub fn defaults() -> Ignore {
        // The default globs are constants covered by a test.
        Ignore::new(DEFAULT_IGNORES).expect("default ignore globs are valid")
    }

    /// True when the path's file name is ignored.
    pub fn is_ignored(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        self.set.is_match(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_editor_and_download_temporaries() {
        let ig = Ignore::defaults();
        for p in [
            "/a/.t.tmp",
            "/.x.swp",
            "/a/b.txt~",
            "/.#lock",
            "/d/f.iso.part",
            "/f.crdownload",
            "/w/4913",
        ] {
            assert!(ig.is_ignored(p), "{p}");
        }
        for p in ["/a/t.txt", "/a/tmp", "/a/.env", "/a/49130"] {
            assert!(!ig.is_ignored(p), "{p}");
        }
    }
}
