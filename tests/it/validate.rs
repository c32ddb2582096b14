//! `nexusd validate`: every bad input gets its exact message and position.

use std::fs;

use crate::support::{fixtures, nexusd, nexusd_in, repo};

fn fixture_names(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(fixtures().join(dir))
        .expect("fixtures exist")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_invalid_fixture_gets_its_exact_messages() {
    let names = fixture_names("invalid");
    assert!(names.len() >= 30, "fixtures went missing: {names:?}");
    for name in names {
        let path = format!("invalid/{name}");
        let out = nexusd(&["validate", "-f", &path]);
        assert_eq!(out.code, 1, "{name} must be rejected:\n{}", out.stdout);
        assert!(
            out.stdout.contains(&format!("{path}:")),
            "{name}: no position:\n{}",
            out.stdout
        );
        assert!(
            !out.stderr.contains("panicked"),
            "{name} panicked:\n{}",
            out.stderr
        );
        insta::assert_snapshot!(name.trim_end_matches(".yaml"), out.stdout);
    }
}

#[test]
fn the_examples_validate_without_a_warning() {
    let out = nexusd_in(
        &repo(),
        &["validate", "--strict", "-f", "workflows.example"],
        b"",
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "valid: 7 workflow(s), 0 warning(s)\n");
}

#[test]
fn valid_fixtures_pass() {
    let out = nexusd(&["validate", "--strict", "-f", "valid"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.stderr, "valid: 4 workflow(s), 0 warning(s)\n");
}

#[test]
fn every_problem_of_every_file_is_reported_together() {
    let out = nexusd(&[
        "validate",
        "-f",
        "invalid/unknown-kind.yaml",
        "invalid/bad-duration.yaml",
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
    assert_eq!(out.stderr, "invalid: 2 error(s), 0 warning(s)\n");
}

#[test]
fn an_oversized_file_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    fs::write(&big, format!("# {}\n", "x".repeat(1024 * 1024))).unwrap();
    let out = nexusd_in(dir.path(), &["validate", "-f", "big.yaml"], b"");
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        "big.yaml:1:1: error: file is larger than the limit of 1048576 bytes (raise it with `--max-file-size`)\n"
    );
    let out = nexusd_in(
        dir.path(),
        &["validate", "--max-file-size", "2000000", "-f", "big.yaml"],
        b"",
    );
    assert_eq!(
        out.stdout,
        "big.yaml:1:1: error: no definitions in this file: it is empty\n"
    );
}

#[test]
fn standard_input_is_read_with_dash() {
    let good = fs::read(fixtures().join("valid/spec-example.yaml")).unwrap();
    let out = nexusd_in(&fixtures(), &["validate", "-f", "-"], &good);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let bad = fs::read(fixtures().join("invalid/unknown-kind.yaml")).unwrap();
    let out = nexusd_in(&fixtures(), &["validate", "-f", "-"], &bad);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        "<stdin>:2:7: error: unknown kind `Job`, expected one of `Workflow`, `Pipeline`\n"
    );
}

#[test]
fn a_name_used_twice_is_reported_at_the_second_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let doc = fs::read_to_string(fixtures().join("valid/spec-example.yaml")).unwrap();
    fs::write(dir.path().join("a.yaml"), &doc).unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    fs::write(dir.path().join("sub/b.yml"), &doc).unwrap();
    fs::write(dir.path().join("notes.txt"), "not a definition").unwrap();
    let out = nexusd_in(dir.path(), &["validate", "-f", "."], b"");
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        "./sub/b.yml:5:9: error: duplicate definition name `text-processor` (first defined at ./a.yaml:5:9)\n"
    );
}

#[test]
fn json_format_carries_the_same_diagnostics() {
    let out = nexusd(&[
        "validate",
        "--format",
        "json",
        "-f",
        "invalid/unknown-variable.yaml",
    ]);
    assert_eq!(out.code, 1);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(
        report["diagnostics"][0],
        serde_json::json!({
            "file": "invalid/unknown-variable.yaml", "line": 11, "column": 12,
            "severity": "error",
            "message": "unknown variable `evnt.path`, did you mean `event.path`?"
        })
    );
}

#[test]
fn warnings_pass_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let looping = fs::read_to_string(fixtures().join("valid/spec-example.yaml"))
        .unwrap()
        .replace(
            "      ignore: [\"**/*_summary.txt\"]        # optional\n",
            "",
        );
    fs::write(dir.path().join("loop.yaml"), looping).unwrap();
    let out = nexusd_in(dir.path(), &["validate", "-f", "loop.yaml"], b"");
    assert_eq!(out.code, 0);
    insta::assert_snapshot!("self_triggering_write_warning", out.stdout);
    let strict = nexusd_in(
        dir.path(),
        &["validate", "--strict", "-f", "loop.yaml"],
        b"",
    );
    assert_eq!(strict.code, 1);
    assert_eq!(strict.stdout, out.stdout);
}

#[test]
fn dead_patterns_and_option_risks_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("w.yaml"),
        "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  on:\n    - event: file.created\n      pattern: [/inbox/, /.nexus/db]\n  steps:\n    - name: a\n      run: cat {{event.name}}\n",
    )
    .unwrap();
    let out = nexusd_in(dir.path(), &["validate", "-f", "w.yaml"], b"");
    assert_eq!(out.code, 0, "{}", out.stdout);
    insta::assert_snapshot!("dead_pattern_and_option_warnings", out.stdout);
}

#[test]
fn missing_paths_and_usage_errors_have_their_exit_codes() {
    let out = nexusd(&["validate", "-f", "no/such/dir"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stdout,
        "no/such/dir:1:1: error: cannot read: no such file or directory\n"
    );
    let out = nexusd(&["validate"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--filename <PATH>"), "{}", out.stderr);
}

#[test]
fn schema_prints_the_published_schema() {
    let out = nexusd(&["schema"]);
    assert_eq!(out.code, 0);
    let on_disk = fs::read_to_string(repo().join("schemas/nexus-v1.schema.json")).unwrap();
    assert_eq!(out.stdout, on_disk);
}
