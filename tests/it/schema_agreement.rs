//! The JSON Schema and the Rust types say the same thing: what one accepts
//! the other accepts, and what the schema can catch both catch.

use std::fs;
use std::path::{Path, PathBuf};

use nexusd::definitions::load::load_text_typed_only;
use nexusd::definitions::schema;
use nexusd::definitions::yaml::parse_documents;
use nexusd::definitions::{Limits, load_paths};

use crate::support::{fixtures, repo};

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn schema_problems(file: &Path) -> usize {
    let bytes = fs::read(file).unwrap();
    let docs = parse_documents(&bytes, &Limits::default()).unwrap();
    docs.iter()
        .map(|d| schema::check(&d.root.value.to_json()).len())
        .sum()
}

fn typed_errors(file: &Path) -> usize {
    let bytes = fs::read(file).unwrap();
    load_text_typed_only(file, &bytes, &Limits::default())
        .diagnostics
        .errors()
        .count()
}

#[test]
fn valid_files_pass_the_schema_and_the_types() {
    let mut files = yaml_files(&repo().join("workflows.example"));
    files.extend(yaml_files(&fixtures().join("valid")));
    assert!(files.len() >= 7);
    for file in files {
        assert_eq!(
            schema_problems(&file),
            0,
            "schema rejects {}",
            file.display()
        );
        assert_eq!(typed_errors(&file), 0, "types reject {}", file.display());
        let loaded = load_paths(std::slice::from_ref(&file), &Limits::default());
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    }
}

/// Invalid fixtures whose problem is structural, so the schema sees it.
const SCHEMA_CATCHES: &[&str] = &[
    "unknown-field",
    "step-two-kinds",
    "step-no-kind",
    "bad-duration",
    "bad-name-case",
    "bad-name-too-long",
    "unknown-event-type",
    "empty-steps",
    "unknown-kind",
    "unknown-action",
];

#[test]
fn what_the_schema_catches_the_types_catch_too() {
    for name in SCHEMA_CATCHES {
        let file = fixtures().join(format!("invalid/{name}.yaml"));
        assert!(schema_problems(&file) > 0, "the schema accepts {name}");
        assert!(typed_errors(&file) > 0, "the types accept {name}");
    }
}
