//! `nexusd test-match`: why a file did or did not trigger, offline.

use crate::support::{nexusd_in, repo};

fn test_match(event: &str, path: &str, extra: &[&str]) -> crate::support::Outcome {
    let mut args = vec![
        "test-match",
        "-f",
        "workflows.example",
        "--event",
        event,
        "--path",
        path,
    ];
    args.extend_from_slice(extra);
    nexusd_in(&repo(), &args, b"")
}

#[test]
fn an_upload_starts_the_text_processor_only() {
    let out = test_match("file.created", "/workspace/uploads/a.txt", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("upload_created", out.stdout);
}

#[test]
fn the_summary_is_ignored_and_says_by_which_pattern() {
    let out = test_match(
        "file.created",
        "workspace/uploads/a_summary.txt",
        &["-o", "json"],
    );
    assert_eq!(out.code, 1);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["path"], "/workspace/uploads/a_summary.txt");
    let text = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workflow"] == "text-processor")
        .unwrap();
    assert_eq!(text["matched"], false);
    assert_eq!(text["reason"], "ignored by `**/*_summary.txt`");
}

#[test]
fn an_unlisted_event_type_is_named() {
    let out = test_match("file.deleted", "/workspace/important/x.txt", &[]);
    assert_eq!(out.code, 1);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("backup-important"))
        .unwrap();
    assert!(
        line.ends_with(
            "event type file.deleted not listed (triggers on file.created, file.updated)"
        ),
        "{line}"
    );
}

#[test]
fn stages_are_listed_by_their_pipeline_names() {
    let out = test_match("file.created", "/workspace/categorized/long/a.txt", &[]);
    assert_eq!(out.code, 0);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("document-processor/notify"))
        .unwrap();
    assert!(
        line.contains("pattern `/workspace/categorized/**/*.txt` matched"),
        "{line}"
    );
}

#[test]
fn a_bad_event_type_is_a_usage_error() {
    let out = test_match("file.changed", "/a", &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unknown event type `file.changed`"),
        "{}",
        out.stderr
    );
}
