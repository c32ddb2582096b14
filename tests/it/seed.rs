//! The seed scenarios of SPEC section 9, end to end on the real agent with
//! the definitions of `workflows.example/`.

use crate::agent::{Agent, Backend};

on_both!(
    text_processor_writes_a_summary_and_not_a_summary_of_it,
    text_processor
);
on_both!(the_document_pipeline_runs_its_three_stages, pipeline);
on_both!(
    analysis_and_backup_follow_their_documents,
    analysis_and_backup
);
on_both!(
    safe_processor_fails_an_empty_file_once_and_succeeds_otherwise,
    safe_processor
);

fn text_processor(backend: Backend) {
    let agent = Agent::examples_on(backend);
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(5);
    agent.write("/workspace/uploads/fox.txt", &text);
    let summary = agent.wait_file("/workspace/uploads/fox_summary.txt");
    let preview: String = text.chars().take(100).collect();
    assert_eq!(
        summary,
        format!("File: /workspace/uploads/fox.txt\nWords: 45\nPreview: {preview}\n")
    );
    let runs = agent.wait_runs("text-processor", 1);
    assert_eq!(runs[0].status, "succeeded");
    assert_eq!(runs[0].path, "/workspace/uploads/fox.txt");
    agent.barrier();
    let events = agent.events();
    assert!(
        events
            .iter()
            .any(|(t, p, _)| t == "file.created" && p == "/workspace/uploads/fox_summary.txt")
    );
    let runs = agent.runs();
    assert_eq!(
        runs.iter()
            .filter(|r| r.workflow == "text-processor")
            .count(),
        1,
        "{runs:?}"
    );
    assert!(
        !agent
            .path("/workspace/uploads/fox_summary_summary.txt")
            .exists()
    );
}

fn pipeline(backend: Backend) {
    let agent = Agent::examples_on(backend);
    agent.write("/workspace/inbox/report.txt", "word ".repeat(120));
    let meta: serde_json::Value =
        serde_json::from_str(&agent.wait_file("/workspace/inbox/report.txt.meta.json")).unwrap();
    assert_eq!(
        meta,
        serde_json::json!({"file_path": "/workspace/inbox/report.txt", "size_bytes": 600, "word_count": 120, "line_count": 1, "char_count": 600})
    );
    let copy = agent.wait_file("/workspace/categorized/medium/report.txt");
    assert_eq!(copy, "word ".repeat(120));
    agent.wait_runs("document-processor/notify", 1);
    let log = agent.wait_file("/workspace/notifications.log");
    let line: serde_json::Value = serde_json::from_str(log.trim()).unwrap();
    assert_eq!(line["event"], "file_processed");
    assert_eq!(line["file"], "/workspace/categorized/medium/report.txt");
    assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    for stage in ["extract", "categorize", "notify"] {
        let runs = agent.wait_runs(&format!("document-processor/{stage}"), 1);
        assert_eq!(runs[0].status, "succeeded", "{stage}: {runs:?}");
    }
    agent.write("/workspace/inbox/short.txt", "just a few words");
    agent.wait_file("/workspace/categorized/short/short.txt");
    agent.write("/workspace/inbox/long.txt", "w ".repeat(300));
    agent.wait_file("/workspace/categorized/long/long.txt");
}

fn analysis_and_backup(backend: Backend) {
    let agent = Agent::examples_on(backend);
    agent.write("/workspace/documents/a.txt", "one two\nthree\n");
    let analysis: serde_json::Value =
        serde_json::from_str(&agent.wait_file("/workspace/documents/a.txt.analysis.json")).unwrap();
    assert_eq!(
        (
            analysis["words"].as_u64(),
            analysis["lines"].as_u64(),
            analysis["chars"].as_u64()
        ),
        (Some(3), Some(2), Some(14))
    );
    assert!(analysis["timestamp"].is_string());
    agent.write("/workspace/important/plan.txt", "v1");
    assert_eq!(
        agent.wait_file("/workspace/backups/important/plan.txt"),
        "v1"
    );
    agent.wait_runs("backup-important", 1);
    agent.write("/workspace/important/plan.txt", "v2");
    agent.wait_runs("backup-important", 2);
    assert_eq!(
        std::fs::read_to_string(agent.path("/workspace/backups/important/plan.txt")).unwrap(),
        "v2"
    );
}

fn safe_processor(backend: Backend) {
    let agent = Agent::examples_on(backend);
    agent.write("/workspace/process/empty.txt", "");
    agent.write("/workspace/process/full.txt", "a\nb\n");
    assert_eq!(
        agent.wait_file("/workspace/processed/full.done"),
        "/workspace/process/full.txt: 2 lines\n"
    );
    let runs = agent.wait_runs("safe-processor", 2);
    let empty = runs.iter().find(|r| r.path.ends_with("empty.txt")).unwrap();
    assert_eq!(
        (empty.status.as_str(), empty.attempts),
        ("failed", 1),
        "{empty:?}"
    );
    assert_eq!(
        empty.error.as_deref(),
        Some("step `check` failed: exit code 3")
    );
    let steps = agent.steps(&empty.id);
    assert_eq!(steps[0].exit_code, Some(3));
}
