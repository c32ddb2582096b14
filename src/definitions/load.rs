//! From paths on disk to a compiled [`DefinitionSet`] and every problem
//! found on the way: the one path that `validate`, `test-match`, `apply` and
//! the config-dir reconciler share.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::compile::compile_document;
use super::diagnostics::Diagnostics;
use super::doc::Doc;
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
    pub kind: crate::api::DefinitionKind,
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
/// A large text is cut at its document markers and its documents loaded on
/// every core; positions are those in the whole text.
pub fn load_text(name: &Path, bytes: &[u8], limits: &Limits) -> Loaded {
    const PARALLEL_ABOVE: usize = 64 * 1024;
    let chunks = if bytes.len() > PARALLEL_ABOVE && bytes.len() <= limits.max_file_bytes {
        split_documents(bytes)
    } else {
        Vec::new()
    };
    if chunks.len() <= 1 || chunks.len() > limits.max_documents {
        let result = load_file(name, bytes, limits);
        return merge(vec![result], Diagnostics::default());
    }
    let results = parallel_map(chunks, |(first_line, chunk)| {
        let mut r = load_file_inner(name, chunk, limits, false);
        r.diagnostics.shift_lines(first_line - 1);
        for (_, _, pos) in &mut r.names {
            pos.line += first_line - 1;
        }
        r
    });
    if results
        .iter()
        .all(|r| r.documents.is_empty() && r.diagnostics.is_empty() && r.names.is_empty())
    {
        let mut diagnostics = Diagnostics::default();
        diagnostics.error(name, Pos::START, "no definitions in this file: it is empty");
        return merge(Vec::new(), diagnostics);
    }
    merge(results, Diagnostics::default())
}

/// Cuts YAML text before each line that starts a document (`---` at the
/// start of a line): such a line cannot occur inside a document's content
/// (block scalars are indented, and a document marker ends a quoted one).
/// Each piece comes with its first line number.
fn split_documents(bytes: &[u8]) -> Vec<(u32, &[u8])> {
    let mut pieces = Vec::new();
    let (mut start, mut start_line, mut line) = (0usize, 1u32, 1u32);
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let marker = rest.starts_with(b"---")
            && matches!(rest.get(3), None | Some(b' ' | b'\t' | b'\n' | b'\r'));
        if marker && at > start {
            pieces.push((start_line, &bytes[start..at]));
            start = at;
            start_line = line;
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(n) => {
                at += n + 1;
                line += 1;
            }
            None => break,
        }
    }
    pieces.push((start_line, &bytes[start..]));
    pieces
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

/// Reads the definition files under `paths` (as [`load_paths`] finds them),
/// each as one source `(file, text)`: what `nexusd apply` and `diff` send,
/// so the agent's errors name the files, lines and columns as they are.
/// Unreadable, oversized, non-UTF-8 and empty files are diagnostics.
pub fn read_sources(
    paths: &[PathBuf],
    limits: &Limits,
) -> Result<Vec<(String, String)>, Diagnostics> {
    let mut diagnostics = Diagnostics::default();
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            match std::io::stdin()
                .take(limits.max_file_bytes as u64 + 1)
                .read_to_end(&mut bytes)
            {
                Ok(_) => inputs.push((PathBuf::from(STDIN_NAME), bytes)),
                Err(e) => diagnostics.error(
                    Path::new(STDIN_NAME),
                    Pos::START,
                    format!("cannot read standard input: {e}"),
                ),
            }
            continue;
        }
        for file in definition_files(path, &mut diagnostics) {
            match read_capped(&file, limits) {
                Ok(bytes) => inputs.push((file, bytes)),
                Err(message) => diagnostics.error(&file, Pos::START, message),
            }
        }
    }
    let mut sources = Vec::new();
    for (file, bytes) in inputs {
        if bytes.len() > limits.max_file_bytes {
            diagnostics.error(
                &file,
                Pos::START,
                format!(
                    "file is larger than the limit of {} bytes (raise it with `--max-file-size`)",
                    limits.max_file_bytes
                ),
            );
            continue;
        }
        match String::from_utf8(bytes) {
            Ok(text) => sources.push((file.display().to_string(), text)),
            Err(_) => diagnostics.error(&file, Pos::START, "file is not valid UTF-8"),
        }
    }
    if diagnostics.has_errors() {
        return Err(diagnostics);
    }
    Ok(sources)
}

/// Loads definitions from sources in memory, each `(file name, text)` (an
/// apply of several files): each is loaded as that file, on every core, and
/// names are checked across all of them.
pub fn load_sources(sources: Vec<(PathBuf, Vec<u8>)>, limits: &Limits) -> Loaded {
    let inputs = sources
        .into_iter()
        .map(|(name, bytes)| Input::Bytes(name, bytes))
        .collect();
    let results = parallel_map(inputs, |input| load_input(input, limits));
    merge(results, Diagnostics::default())
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
    load_file_inner(file, bytes, limits, true)
}

/// `require_documents`: a text with no definition at all is an error (a
/// piece of a larger text may hold none).
fn load_file_inner(
    file: &Path,
    bytes: &[u8],
    limits: &Limits,
    require_documents: bool,
) -> FileResult {
    let mut result = FileResult::default();
    let docs = match yaml::parse_documents(bytes, limits) {
        Ok(docs) => docs,
        Err(e) => {
            result.diagnostics.error(file, e.pos, e.message);
            return result;
        }
    };
    if docs.is_empty() && require_documents {
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
        (Some(name), Some(kind)) => Some((
            name.to_owned(),
            crate::api::DefinitionKind::parse(kind),
            json.clone(),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_markers_with_their_first_lines() {
        let text = b"# head\n---\na: 1\nb: |\n  ---\n--- # c\nc: 2\n---\n";
        let pieces: Vec<(u32, String)> = split_documents(text)
            .into_iter()
            .map(|(l, p)| (l, String::from_utf8_lossy(p).into_owned()))
            .collect();
        assert_eq!(
            pieces,
            [
                (1, "# head\n".to_owned()),
                (2, "---\na: 1\nb: |\n  ---\n".to_owned()),
                (6, "--- # c\nc: 2\n".to_owned()),
                (8, "---\n".to_owned()),
            ]
        );
    }

    #[test]
    fn a_large_text_reports_positions_in_the_whole_text() {
        let good = "---\napiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: wNAME}\nspec:\n  on: [{event: file.created, pattern: /a/*.txt}]\n  steps: [{name: s, action: log, with: {message: hi}}]\n";
        let mut text = String::new();
        for i in 0..400 {
            text.push_str(&good.replace("NAME", &i.to_string()));
        }
        let bad_line = text.lines().count() + 6;
        text.push_str(
            &good
                .replace("NAME", "bad")
                .replace("file.created", "file.create"),
        );
        text.push_str(&good.replace("NAME", "7"));
        assert!(text.len() > 64 * 1024);
        let loaded = load_text(Path::new("<body>"), text.as_bytes(), &Limits::default());
        let errors: Vec<String> = loaded.diagnostics.errors().map(|d| d.to_string()).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("<body>:{bad_line}:")),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("duplicate definition name `w7`"),
            "{errors:?}"
        );
        assert_eq!(loaded.documents.len(), 401, "the invalid one is left out");
    }
}
