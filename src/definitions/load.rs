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
    /// Each definition document as loaded, in source order: the unit that
    /// `apply` records and versions.
    pub documents: Vec<SourceDocument>,
}

/// One definition document (a `Workflow` or a `Pipeline`) as data.
#[derive(Debug, Clone)]
pub struct SourceDocument {
    pub name: String,
    /// `Workflow` or `Pipeline`.
    pub kind: String,
    /// The document as JSON; the same value whatever its YAML layout.
    pub json: serde_json::Value,
    /// What it compiled to (a pipeline: its stages).
    pub workflows: Vec<crate::definitions::model::Workflow>,
}

/// Loads every definition under `paths` (files, directories searched
/// recursively for `.yaml`/`.yml`, or `-` for standard input). Files are
/// parsed and compiled in parallel; names are then checked across all of them.
pub fn load_paths(paths: &[PathBuf], limits: &Limits) -> Loaded {
    let mut diagnostics = Diagnostics::default();
    let mut inputs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            let cap = limits.max_file_bytes as u64 + 1;
            match std::io::stdin().take(cap).read_to_end(&mut bytes) {
                Ok(_) => inputs.push(Input::Bytes(PathBuf::from(STDIN_NAME), bytes)),
                Err(e) => diagnostics.error(
                    Path::new(STDIN_NAME),
                    Pos::START,
                    format!("cannot read standard input: {e}"),
                ),
            }
        } else {
            inputs.extend(
                definition_files(path, &mut diagnostics)
                    .into_iter()
                    .map(Input::File),
            );
        }
    }
    let results = parallel_map(inputs, |input| load_input(input, limits));
    merge(results, diagnostics)
}

/// Loads the agent's config directory: as [`load_paths`] on it, except that a
/// directory without definition files is an empty set (no workflows), not an
/// error. The tree is walked once.
pub fn load_config_dir(dir: &Path, limits: &Limits) -> Loaded {
    let mut diagnostics = Diagnostics::default();
    let mut files = Vec::new();
    walk(dir, &mut files, &mut diagnostics);
    files.sort();
    let results = parallel_map(files.into_iter().map(Input::File).collect(), |input| {
        load_input(input, limits)
    });
    merge(results, diagnostics)
}

/// Loads definitions from text already in memory (the API's `apply` body).
pub fn load_text(name: &Path, bytes: &[u8], limits: &Limits) -> Loaded {
    let result = load_file(name, bytes, limits);
    merge(vec![result], Diagnostics::default())
}

/// Loads without the JSON Schema pass: the typed structs and the compile
/// step alone. The test that keeps the schema and the Rust types in
/// agreement uses it; nothing else should.
pub fn load_text_typed_only(name: &Path, bytes: &[u8], limits: &Limits) -> Loaded {
    let mut result = FileResult::default();
    match yaml::parse_documents(bytes, limits) {
        Ok(docs) => {
            for doc in docs {
                let json = doc.root.value.to_json();
                let mut d = Doc {
                    file: name,
                    root: &doc.root,
                    diags: &mut result.diagnostics,
                };
                result.workflows.extend(compile_document(&mut d, json));
            }
        }
        Err(e) => result.diagnostics.error(name, e.pos, e.message),
    }
    merge(vec![result], Diagnostics::default())
}

enum Input {
    File(PathBuf),
    Bytes(PathBuf, Vec<u8>),
}

/// What one file yields, before names are checked across files.
#[derive(Default)]
struct FileResult {
    workflows: Vec<crate::definitions::model::Workflow>,
    diagnostics: Diagnostics,
    /// Definition names in document order, with where each stands.
    names: Vec<(String, PathBuf, Pos)>,
    documents: Vec<SourceDocument>,
}

fn load_input(input: Input, limits: &Limits) -> FileResult {
    match input {
        Input::Bytes(name, bytes) => load_file(&name, &bytes, limits),
        Input::File(file) => match read_capped(&file, limits) {
            Ok(bytes) => load_file(&file, &bytes, limits),
            Err(message) => {
                let mut result = FileResult::default();
                result.diagnostics.error(&file, Pos::START, message);
                result
            }
        },
    }
}

/// Runs `f` over `items` on every core, keeping the items' order.
fn parallel_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if workers <= 1 {
        return items.into_iter().map(f).collect();
    }
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        // The lock is held only to take the next item.
                        let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                        let Some((i, item)) = next else { break };
                        out.push((i, f(item)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Joins per-file results, reporting the second of two equal names.
fn merge(results: Vec<FileResult>, mut diagnostics: Diagnostics) -> Loaded {
    let mut set = DefinitionSet::default();
    let mut documents = Vec::new();
    let mut seen: Vec<(String, PathBuf, Pos)> = Vec::new();
    for result in results {
        diagnostics.extend(result.diagnostics);
        set.workflows.extend(result.workflows);
        documents.extend(result.documents);
        for (name, file, pos) in result.names {
            if let Some((_, first_file, first_pos)) = seen.iter().find(|(n, _, _)| *n == name) {
                diagnostics.error(
                    &file,
                    pos,
                    format!(
                        "duplicate definition name `{name}` (first defined at {}:{first_pos})",
                        first_file.display()
                    ),
                );
            } else {
                seen.push((name, file, pos));
            }
        }
    }
    diagnostics.sort();
    Loaded {
        set,
        diagnostics,
        documents,
    }
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

fn load_file(file: &Path, bytes: &[u8], limits: &Limits) -> FileResult {
    let mut result = FileResult::default();
    let docs = match yaml::parse_documents(bytes, limits) {
        Ok(docs) => docs,
        Err(e) => {
            result.diagnostics.error(file, e.pos, e.message);
            return result;
        }
    };
    if docs.is_empty() {
        result
            .diagnostics
            .error(file, Pos::START, "no definitions in this file: it is empty");
    }
    for doc in docs {
        load_document(file, &doc.root, &mut result);
    }
    result
}

fn load_document(file: &Path, root: &Located<Node>, result: &mut FileResult) {
    let diags = &mut result.diagnostics;
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
    if let Some(name) = json.pointer("/metadata/name").and_then(|n| n.as_str()) {
        let pos = root.position(&["metadata", "name"], Target::Value);
        result
            .names
            .push((name.to_owned(), file.to_path_buf(), pos));
    }
    let problems = schema::check(&json);
    if !problems.is_empty() {
        for p in problems {
            let pos = root.position(&p.pointer, p.target);
            diags.error(file, pos, p.message);
        }
        return;
    }
    let name = json.pointer("/metadata/name").and_then(|n| n.as_str());
    let kind = json.get("kind").and_then(|k| k.as_str());
    let source = match (name, kind) {
        (Some(name), Some(kind)) => Some((name.to_owned(), kind.to_owned(), json.clone())),
        _ => None,
    };
    let mut doc = Doc { file, root, diags };
    let workflows = compile_document(&mut doc, json);
    if let Some((name, kind, json)) = source {
        result.documents.push(SourceDocument {
            name,
            kind,
            json,
            workflows: workflows.clone(),
        });
    }
    result.workflows.extend(workflows);
}
