//! The document being compiled: where its nodes are, and the problems
//! found in it, each at a JSON pointer into it.

use std::path::Path;
use std::time::Duration;

use super::diagnostics::Diagnostics;
use super::duration::parse_duration;
use super::model::SourceRef;
use super::yaml::{Located, Node, Target};

/// A JSON pointer into the document being compiled.
pub type Ptr = Vec<String>;

/// Appends segments to a pointer.
pub fn at(base: &[String], more: &[&dyn ToString]) -> Ptr {
    let mut p = base.to_vec();
    p.extend(more.iter().map(|s| s.to_string()));
    p
}

/// The document being compiled, for positions and problems.
pub struct Doc<'a> {
    pub file: &'a Path,
    pub root: &'a Located<Node>,
    pub diags: &'a mut Diagnostics,
}

impl Doc<'_> {
    pub fn error(&mut self, ptr: &[String], target: Target, message: impl Into<String>) {
        let pos = self.root.position(ptr, target);
        self.diags.error(self.file, pos, message);
    }

    pub fn warning(&mut self, ptr: &[String], target: Target, message: impl Into<String>) {
        let pos = self.root.position(ptr, target);
        self.diags.warning(self.file, pos, message);
    }

    pub(super) fn source(&self) -> SourceRef {
        SourceRef {
            file: self.file.to_path_buf(),
            line: self.root.pos.line,
            column: self.root.pos.col,
        }
    }

    /// Parses a duration field, reporting a bad one.
    pub fn duration(&mut self, text: Option<&str>, ptr: Ptr, default: Duration) -> Duration {
        match text.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(message)) => {
                self.error(&ptr, Target::Value, message);
                default
            }
        }
    }
}
