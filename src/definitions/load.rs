//! From paths on disk to a compiled [`DefinitionSet`] and every problem
//! found on the way: the one path that `validate`, `test-match`, `apply` and
//! the config-dir reconciler share.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::compile::{Doc, compile_document};
use super::diagnostics::Diagnostics;
use super::model::DefinitionSet;
use super::schema;
use super::yaml::{self, Limits, Located, Node, Pos, Target};

/// The name under which standard input is reported.
pub const STDIN_NAME: &str = "<stdin>";

/// The outcome of loading: use `set` only when `diagnostics` has no errors.
#[derive(Debug, Default)]
pub struct Loaded {
    pub set: DefinitionSet,
    pub diagnostics: Diagnostics,
}

/// Loads every definition under `paths` (files, directories searched
/// recursively for `.yaml`/`.yml`, or `-` for standard input).
pub fn load_paths(paths: &[PathBuf], limits: &Limits) -> Loaded {
    let mut loaded = Loaded::default();
    let mut names = NameIndex::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            let cap = limits.max_file_bytes as u64 + 1;
            match std::io::stdin().take(cap).read_to_end(&mut bytes) {
                Ok(_) => load_bytes(
                    Path::new(STDIN_NAME),
                    &bytes,
                    limits,
                    &mut loaded,
                    &mut names,
                ),
                Err(e) => loaded.diagnostics.error(
                    Path::new(STDIN_NAME),
                    Pos::START,
                    format!("cannot read standard input: {e}"),
                ),
            }
            continue;
        }
        for file in definition_files(path, &mut loaded.diagnostics) {
            match read_capped(&file, limits) {
                Ok(bytes) => load_bytes(&file, &bytes, limits, &mut loaded, &mut names),
                Err(message) => loaded.diagnostics.error(&file, Pos::START, message),
            }
        }
    }
    loaded.diagnostics.sort();
    loaded
}

/// Loads definitions from text already in memory (the API's `apply` body).
pub fn load_text(name: &Path, bytes: &[u8], limits: &Limits) -> Loaded {
    let mut loaded = Loaded::default();
    load_bytes(name, bytes, limits, &mut loaded, &mut NameIndex::default());
    loaded.diagnostics.sort();
    loaded
}

/// The definition files under `path`, sorted so that results are stable.
fn definition_files(path: &Path, diags: &mut Diagnostics) -> Vec<PathBuf> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            diags.error(path, Pos::START, format!("cannot read: {}", io_reason(&e)));
            return Vec::new();
        }
    };
    if meta.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    walk(path, &mut files, diags);
    files.sort();
    if files.is_empty() {
        diags.error(
            path,
            Pos::START,
            "no `.yaml` or `.yml` files in this directory",
        );
    }
    files
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, diags: &mut Diagnostics) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.error(
                dir,
                Pos::START,
                format!("cannot read directory: {}", io_reason(&e)),
            );
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if kind.is_dir() && !hidden {
            walk(&path, files, diags);
        } else if !hidden && is_definition_file(&path) && (kind.is_file() || path.is_file()) {
            files.push(path);
        }
    }
}

/// True for the file names definitions live in.
pub fn is_definition_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn read_capped(file: &Path, limits: &Limits) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("cannot read: {}", io_reason(&e)))?;
    let mut bytes = Vec::new();
    f.take(limits.max_file_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {}", io_reason(&e)))?;
    Ok(bytes)
}

fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_lowercase(),
        None => text.to_lowercase(),
    }
}

/// Definition names seen so far, to report the second of two.
#[derive(Default)]
struct NameIndex {
    seen: Vec<(String, PathBuf, Pos)>,
}

fn load_bytes(
    file: &Path,
    bytes: &[u8],
    limits: &Limits,
    loaded: &mut Loaded,
    names: &mut NameIndex,
) {
    let docs = match yaml::parse_documents(bytes, limits) {
        Ok(docs) => docs,
        Err(e) => {
            loaded.diagnostics.error(file, e.pos, e.message);
            return;
        }
    };
    if docs.is_empty() {
        loaded
            .diagnostics
            .error(file, Pos::START, "no definitions in this file: it is empty");
    }
    for doc in docs {
        load_document(file, &doc.root, loaded, names);
    }
}

fn load_document(file: &Path, root: &Located<Node>, loaded: &mut Loaded, names: &mut NameIndex) {
    let diags = &mut loaded.diagnostics;
    match &root.value {
        Node::Map(_) => {}
        Node::Null => {
            diags.error(
                file,
                root.pos,
                "empty document: expected a `Workflow` or `Pipeline` definition",
            );
            return;
        }
        other => {
            diags.error(
                file,
                root.pos,
                format!(
                    "a definition must be a mapping with `apiVersion`, `kind`, `metadata` and `spec`, found {}",
                    other.type_name()
                ),
            );
            return;
        }
    }
    for dup in root.value.duplicate_keys() {
        diags.error(
            file,
            dup.pos,
            format!("duplicate key `{}` (first at {})", dup.key, dup.first),
        );
    }
    let json = root.value.to_json();
    let problems = schema::check(&json);
    if let Some(name) = json.pointer("/metadata/name").and_then(|n| n.as_str()) {
        let pos = root.position(&["metadata", "name"], Target::Value);
        if let Some((_, first_file, first_pos)) = names.seen.iter().find(|(n, _, _)| n == name) {
            diags.error(
                file,
                pos,
                format!(
                    "duplicate definition name `{name}` (first defined at {}:{first_pos})",
                    first_file.display()
                ),
            );
        } else {
            names.seen.push((name.to_owned(), file.to_path_buf(), pos));
        }
    }
    if !problems.is_empty() {
        for p in problems {
            let pos = root.position(&p.pointer, p.target);
            diags.error(file, pos, p.message);
        }
        return;
    }
    let mut doc = Doc { file, root, diags };
    let workflows = compile_document(&mut doc, json);
    loaded.set.workflows.extend(workflows);
}
