//! YAML to a positioned tree.
//!
//! serde-saphyr parses (with limits on aliases, depth, nodes and documents)
//! into [`Node`], a JSON-like tree that keeps the line and column of every key
//! and value. Everything later (the JSON Schema check, the typed raw structs,
//! the compile step) works on plain JSON and asks this tree for positions by
//! JSON pointer, so every diagnostic can name `FILE:LINE:COL`.
//!
//! Duplicate keys are passed through by the parser and reported here, so that
//! one duplicate does not hide the other problems of the file.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Budget, Location, Options, Spanned, options::DuplicateKeyPolicy};

/// A line and column, both 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, col: 1 };

    fn from_location(loc: Location) -> Pos {
        if loc == Location::UNKNOWN {
            return Pos::START;
        }
        Pos {
            line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
            col: u32::try_from(loc.column()).unwrap_or(u32::MAX),
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A YAML value with the position of each part.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Located<Node>>),
    /// Entries in document order, duplicates kept (see [`Node::duplicate_keys`]).
    Map(Vec<(Located<String>, Located<Node>)>),
}

/// A value and where it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub pos: Pos,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<T>::deserialize(deserializer)?;
        Ok(Located {
            value: spanned.value,
            pos: Pos::from_location(spanned.referenced),
        })
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(i64::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(i64::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(i64::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Located<String>>()? {
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// Limits on what one definitions file may cost to parse.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes per file (`--max-file-size`).
    pub max_file_bytes: usize,
    /// Nesting depth of collections.
    pub max_depth: usize,
    /// Nodes created by alias expansion, across the file.
    pub max_alias_events: usize,
    /// Documents per file.
    pub max_documents: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 1024 * 1024,
            max_depth: 64,
            max_alias_events: 10_000,
            max_documents: 1_000,
        }
    }
}

/// Why a file could not be read as YAML at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// One document of a file: its root and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub root: Located<Node>,
}

/// Parses every document of a file's bytes.
///
/// Fails on bytes that are not UTF-8, on a file over the size limit, on a YAML
/// syntax error and on a breached limit: in each case the rest of the file
/// cannot be trusted, so the error stands for the whole file.
pub fn parse_documents(bytes: &[u8], limits: &Limits) -> Result<Vec<Document>, YamlError> {
    if bytes.len() > limits.max_file_bytes {
        return Err(YamlError {
            pos: Pos::START,
            message: format!(
                "file is larger than the limit of {} bytes (raise it with `--max-file-size`)",
                limits.max_file_bytes
            ),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| YamlError {
        pos: pos_of_offset(bytes, e.valid_up_to()),
        message: "file is not valid UTF-8".to_owned(),
    })?;
    let docs: Vec<Located<Node>> =
        serde_saphyr::from_multiple_with_options(text, parser_options(limits))
            .map_err(|e| yaml_error(&e, limits))?;
    Ok(docs.into_iter().map(|root| Document { root }).collect())
}

fn parser_options(limits: &Limits) -> Options {
    let mut budget = Budget::default();
    budget.max_depth = limits.max_depth;
    budget.max_documents = limits.max_documents;
    budget.max_recorded_anchor_events = limits.max_alias_events;
    budget.max_nodes = 1_000_000;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    options.alias_limits.max_total_replayed_events = limits.max_alias_events;
    options.alias_limits.max_replay_stack_depth = limits.max_depth;
    options.strict_booleans = true;
    options
}

fn yaml_error(err: &serde_saphyr::Error, limits: &Limits) -> YamlError {
    let pos = err.location().map_or(Pos::START, Pos::from_location);
    let rendered = err.without_snippet().to_string();
    let mut message = first_line_without_position(&rendered);
    if message.starts_with("budget breached") {
        let lower = message.to_lowercase();
        message = if lower.contains("depth") {
            format!(
                "YAML nests deeper than the limit of {} levels",
                limits.max_depth
            )
        } else if lower.contains("alias") || lower.contains("anchor") {
            format!(
                "YAML aliases expand past the limit of {} nodes (an alias bomb?)",
                limits.max_alias_events
            )
        } else if lower.contains("document") {
            format!(
                "more than {} YAML documents in one file",
                limits.max_documents
            )
        } else {
            "YAML is too large to parse safely".to_owned()
        };
    }
    YamlError { pos, message }
}

/// serde-saphyr's messages end with ` at line L column C`; the position is
/// reported separately, in `FILE:LINE:COL` form.
fn first_line_without_position(rendered: &str) -> String {
    let line = rendered.lines().next().unwrap_or("invalid YAML").trim();
    let line = match line.rfind(" at line ") {
        Some(i) => &line[..i],
        None => line,
    };
    let line = line.trim_end_matches('.');
    let mut chars = line.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "invalid YAML".to_owned(),
    }
}

fn pos_of_offset(bytes: &[u8], offset: usize) -> Pos {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Pos {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        col: u32::try_from(col).unwrap_or(u32::MAX),
    }
}

/// A duplicate key: where it stands again, and where it first stood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    pub key: String,
    pub pos: Pos,
    pub first: Pos,
}

impl Node {
    /// Converts to JSON for the schema and the typed structs. A repeated key
    /// keeps its first value; the repetition is reported by
    /// [`Node::duplicate_keys`].
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Node::Str(s) => Value::String(s.clone()),
            Node::Seq(items) => Value::Array(items.iter().map(|i| i.value.to_json()).collect()),
            Node::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    map.entry(k.value.clone())
                        .or_insert_with(|| v.value.to_json());
                }
                Value::Object(map)
            }
        }
    }

    /// Every key that stands twice in one mapping, at any depth.
    pub fn duplicate_keys(&self) -> Vec<DuplicateKey> {
        let mut found = Vec::new();
        self.collect_duplicates(&mut found);
        found
    }

    fn collect_duplicates(&self, found: &mut Vec<DuplicateKey>) {
        match self {
            Node::Seq(items) => items.iter().for_each(|i| i.value.collect_duplicates(found)),
            Node::Map(entries) => {
                for (i, (key, value)) in entries.iter().enumerate() {
                    if let Some((first, _)) =
                        entries[..i].iter().find(|(k, _)| k.value == key.value)
                    {
                        found.push(DuplicateKey {
                            key: key.value.clone(),
                            pos: key.pos,
                            first: first.pos,
                        });
                    }
                    value.value.collect_duplicates(found);
                }
            }
            _ => {}
        }
    }

    /// A short name of the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) | Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

/// Which part of an entry a position should point at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The key of the last path segment (for unknown or misplaced fields).
    Key,
    /// The value (for wrong types and bad values).
    Value,
}

impl Located<Node> {
    /// The position of the node at `pointer` (JSON pointer segments), or of
    /// its nearest existing ancestor when the path does not exist.
    pub fn position<S: AsRef<str>>(&self, pointer: &[S], target: Target) -> Pos {
        let mut node = self;
        for (i, seg) in pointer.iter().enumerate() {
            let seg = seg.as_ref();
            let last = i + 1 == pointer.len();
            match &node.value {
                Node::Map(entries) => match entries.iter().find(|(k, _)| k.value == seg) {
                    Some((key, _)) if last && target == Target::Key => return key.pos,
                    Some((_, value)) => node = value,
                    None => return node.pos,
                },
                Node::Seq(items) => match seg.parse::<usize>().ok().and_then(|n| items.get(n)) {
                    Some(item) => node = item,
                    None => return node.pos,
                },
                _ => return node.pos,
            }
        }
        node.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Document>, YamlError> {
        parse_documents(text.as_bytes(), &Limits::default())
    }

    #[test]
    fn keeps_positions_of_keys_and_values() {
        let docs = parse("a:\n  b: [1, x]\n  c: hi\n").unwrap();
        let root = &docs[0].root;
        assert_eq!(
            root.position(&["a", "c"], Target::Value),
            Pos { line: 3, col: 6 }
        );
        assert_eq!(
            root.position(&["a", "c"], Target::Key),
            Pos { line: 3, col: 3 }
        );
        assert_eq!(
            root.position(&["a", "b", "1"], Target::Value),
            Pos { line: 2, col: 10 }
        );
        assert_eq!(
            root.position(&["a", "zz"], Target::Key),
            Pos { line: 2, col: 3 }
        );
    }

    #[test]
    fn reports_duplicate_keys_without_failing_the_parse() {
        let docs = parse("env:\n  A: 1\n  A: 2\n").unwrap();
        let dups = docs[0].root.value.duplicate_keys();
        assert_eq!(dups.len(), 1);
        assert_eq!(dups[0].key, "A");
        assert_eq!(dups[0].pos, Pos { line: 3, col: 3 });
        assert_eq!(dups[0].first, Pos { line: 2, col: 3 });
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let docs = parse("a: yes\nb: true\n").unwrap();
        let json = docs[0].root.value.to_json();
        assert_eq!(json["a"], "yes");
        assert_eq!(json["b"], true);
    }

    #[test]
    fn splits_documents() {
        let docs = parse("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].root.pos.line, 3);
    }

    #[test]
    fn invalid_utf8_names_the_position() {
        let err = parse_documents(b"a: 1\nb: \xff\n", &Limits::default()).unwrap_err();
        assert_eq!(err.pos, Pos { line: 2, col: 4 });
        assert_eq!(err.message, "file is not valid UTF-8");
    }
}
