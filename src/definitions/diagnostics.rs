//! Problems found in definitions, each with its file, line and column.
//!
//! `nexusd validate` prints them as `FILE:LINE:COL: error: MESSAGE` (or as
//! JSON with `--format json`), the config-dir reconciler logs them, and the
//! API returns them: one type serves all three.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::yaml::Pos;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem at one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.severity,
            self.message
        )
    }
}

/// The problems of a set of files, in file and position order once sorted.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn error(&mut self, file: &Path, pos: Pos, message: impl Into<String>) {
        self.push(file, pos, Severity::Error, message.into());
    }

    pub fn warning(&mut self, file: &Path, pos: Pos, message: impl Into<String>) {
        self.push(file, pos, Severity::Warning, message.into());
    }

    fn push(&mut self, file: &Path, pos: Pos, severity: Severity, message: String) {
        let diagnostic = Diagnostic {
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.col,
            severity,
            message,
        };
        if !self.items.contains(&diagnostic) {
            self.items.push(diagnostic);
        }
    }

    /// Rewrites each diagnostic in place.
    pub fn remap(&mut self, mut f: impl FnMut(&mut Diagnostic)) {
        self.items.iter_mut().for_each(&mut f);
    }

    /// Moves every position down `lines` lines (a piece of a larger text).
    pub fn shift_lines(&mut self, lines: u32) {
        for d in &mut self.items {
            d.line += lines;
        }
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn has_warnings(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Warning)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    /// Sorts by file, then position, keeping the order of equal positions.
    pub fn sort(&mut self) {
        self.items
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        for d in other.items {
            if !self.items.contains(&d) {
                self.items.push(d);
            }
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}
