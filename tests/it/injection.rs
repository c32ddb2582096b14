//! A file name never becomes code: `run` placeholders reach a real `sh` as
//! environment variables, whatever the name holds and however it is quoted.

use std::process::Command;

use nexusd::definitions::model::{Step, StepKind};
use nexusd::definitions::{Limits, load_text};
use nexusd::events::path_fields;
use serde_json::json;

const HOSTILE_NAMES: &[&str] = &[
    "$(touch P1).txt",
    "`touch P2`.txt",
    "x;touch P3;.txt",
    "q'uo\"te.txt",
    "-n.txt",
    "a b.txt",
    "new\nline.txt",
    "{{event.path}}.txt",
    "*.txt",
    "$HOME.txt",
];

fn run_steps(run_lines: &[&str]) -> Vec<Step> {
    let mut yaml = String::from(
        "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: quoting}\nspec:\n  on: [{event: file.created, pattern: /in/*}]\n  steps:\n",
    );
    for (i, line) in run_lines.iter().enumerate() {
        yaml.push_str(&format!("    - name: s{i}\n      run: |\n        {line}\n"));
    }
    let loaded = load_text("inline.yaml".as_ref(), yaml.as_bytes(), &Limits::default());
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    loaded.set.workflows[0].steps.clone()
}

#[test]
fn hostile_names_are_one_argument_in_every_quoting() {
    let steps = run_steps(&[
        r#"printf '%s|' {{event.name}}"#,
        r#"printf '%s|' "{{event.name}}""#,
        r#"printf '%s|' "$(printf '%s' {{event.name}})""#,
        r#"printf '%s|' "in dq: {{event.name}} and {{basename event.path}}""#,
    ]);
    let expected = [
        |n: &str| format!("{n}|"),
        |n: &str| format!("{n}|"),
        |n: &str| format!("{n}|"),
        |n: &str| format!("in dq: {n} and {n}|"),
    ];
    for name in HOSTILE_NAMES {
        let dir = tempfile::tempdir().unwrap();
        let mut event = path_fields(&format!("/in/{name}"));
        event.insert("abs_path".into(), json!(dir.path().join(name)));
        let data = json!({"event": event});
        for (step, expect) in steps.iter().zip(expected) {
            let StepKind::Run(run) = &step.kind else {
                unreachable!("run steps only")
            };
            let out = Command::new("sh")
                .arg("-c")
                .arg(&run.script)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .envs(run.render_vars(&data).unwrap())
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name:?} in {}: {:?}",
                run.source,
                out
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                expect(name),
                "{name:?} in {}",
                run.source
            );
            let created: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            assert!(
                created.is_empty(),
                "{name:?} in {} created files: {created:?}",
                run.source
            );
        }
    }
}

#[test]
fn a_placeholder_in_single_quotes_is_refused_at_load() {
    let yaml = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: q}\nspec:\n  on: [{event: file.created, pattern: /in/*}]\n  steps:\n    - name: s\n      run: |\n        echo 'name: {{event.name}}'\n";
    let loaded = load_text("q.yaml".as_ref(), yaml.as_bytes(), &Limits::default());
    assert_eq!(
        loaded.diagnostics.to_string(),
        "q.yaml:9:9: error: `{{event.name}}` stands inside single quotes, where the shell would not expand it: remove the quotes or use double quotes\n"
    );
}
