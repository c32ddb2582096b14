//! Glob patterns on virtual paths: how a trigger or an ignore names files.

use std::sync::OnceLock;

use globset::{Glob, GlobBuilder, GlobMatcher};

/// A compiled glob and the text it came from.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// As written.
    pub text: String,
    /// Rooted at `/`.
    pub rooted: String,
    pub(crate) glob: Glob,
    /// Built on first use: compiling a regex is most of a glob's cost, and
    /// `validate` never needs most of them.
    matcher: OnceLock<GlobMatcher>,
}

impl Pattern {
    /// Compiles a trigger or ignore pattern: `*` and `?` stay within one
    /// segment, `**` spans segments and must be a whole segment, and a
    /// pattern without a leading `/` is rooted at `/`.
    pub fn new(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("empty pattern: give a glob such as `/inbox/*.txt`".to_owned());
        }
        if text.contains('\0') {
            return Err(format!(
                "pattern `{}` holds a NUL byte",
                text.escape_debug()
            ));
        }
        let rooted = if text.starts_with('/') {
            text.to_owned()
        } else {
            format!("/{text}")
        };
        if let Some(seg) = rooted.split('/').find(|s| s.contains("**") && *s != "**") {
            return Err(format!(
                "invalid glob `{text}`: `**` must be a whole path segment (`{seg}`); write `**/{}` to match at any depth, or `*` within one segment",
                seg.replace("**", "*")
            ));
        }
        if rooted.split('/').any(|s| s == "." || s == "..") {
            return Err(format!(
                "invalid glob `{text}`: `.` and `..` segments never match, paths are normalized"
            ));
        }
        let glob = GlobBuilder::new(&rooted)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("invalid glob `{text}`: {}", glob_reason(&e)))?;
        Ok(Pattern {
            text: text.to_owned(),
            matcher: OnceLock::new(),
            glob,
            rooted,
        })
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.matcher
            .get_or_init(|| self.glob.compile_matcher())
            .is_match(path)
    }

    /// A path this pattern matches, built by filling its wildcards with
    /// plain text; used to reason about loops and dead patterns.
    pub fn sample_path(&self) -> String {
        let mut out = String::new();
        let mut chars = self.rooted.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    while chars.peek() == Some(&'*') {
                        chars.next();
                    }
                    out.push('x');
                }
                '?' => out.push('x'),
                '[' => {
                    let class: String = chars.by_ref().take_while(|&c| c != ']').collect();
                    let first = class.trim_start_matches(['!', '^']).chars().next();
                    out.push(if class.starts_with(['!', '^']) {
                        '_'
                    } else {
                        first.unwrap_or('x')
                    });
                }
                '{' => {
                    let alt: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    out.push_str(alt.split(',').next().unwrap_or_default());
                }
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        out
    }
}

fn glob_reason(e: &globset::Error) -> String {
    let text = e.kind().to_string();
    text.trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_the_spec_table() {
        let cases = [
            ("/workspace/uploads/*.txt", "/workspace/uploads/a.txt", true),
            (
                "/workspace/uploads/*.txt",
                "/workspace/uploads/sub/a.txt",
                false,
            ),
            ("**/*.meta.json", "/a/b/c.meta.json", true),
            ("**/*.meta.json", "/c.meta.json", true),
            (
                "/workspace/categorized/**/*.txt",
                "/workspace/categorized/long/a.txt",
                true,
            ),
            ("/docs/*.{txt,md}", "/docs/a.md", true),
            ("/docs/[a-c]?.txt", "/docs/b1.txt", true),
            ("/docs/[a-c]?.txt", "/docs/d1.txt", false),
            ("/docs/*", "/docs/.hidden", true),
        ];
        for (pattern, path, expected) in cases {
            assert_eq!(
                Pattern::new(pattern).unwrap().is_match(path),
                expected,
                "{pattern} {path}"
            );
        }
    }

    #[test]
    fn refuses_bad_globs() {
        assert!(
            Pattern::new("**.txt")
                .unwrap_err()
                .contains("`**` must be a whole path segment")
        );
        assert!(
            Pattern::new("/x/[a.txt")
                .unwrap_err()
                .starts_with("invalid glob `/x/[a.txt`")
        );
        assert!(Pattern::new("").is_err());
        assert!(Pattern::new("/a/../b").is_err());
    }

    #[test]
    fn samples_match_their_pattern() {
        for text in [
            "/workspace/uploads/*.txt",
            "**/*.meta.json",
            "/d/{a,b}/[0-9]?.log",
        ] {
            let p = Pattern::new(text).unwrap();
            assert!(p.is_match(&p.sample_path()), "{text}: {}", p.sample_path());
        }
    }
}
