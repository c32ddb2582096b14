//! Scenario 6 of `make bench`: one event against 1,000 compiled workflows
//! (target: 2 µs). The definitions are the ones `validate`'s scenario uses:
//! each workflow triggers on its own directory, with an ignore pattern.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use nexusd::definitions::{Limits, load_text};
use nexusd::events::EventType;
use nexusd::matching::Matcher;

fn definitions(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        let (f, w) = (i / 10, i % 10);
        text.push_str(&format!(
            "---\napiVersion: nexus/v1\nkind: Workflow\nmetadata: {{name: wf-{f}-{w}}}\nspec:\n  on:\n    - event: [file.created, file.updated]\n      pattern: /bench/{f}/{w}/*.txt\n      ignore: [\"**/*_out.txt\"]\n  steps:\n    - {{name: note, action: log, with: {{message: \"{{{{event.path}}}}\"}}}}\n"
        ));
    }
    text
}

fn matching(c: &mut Criterion) {
    let text = definitions(1000);
    let limits = Limits {
        max_file_bytes: usize::MAX,
        max_documents: usize::MAX,
        ..Limits::default()
    };
    let loaded = load_text(Path::new("bench.yaml"), text.as_bytes(), &limits);
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    let set = loaded.set;
    let matcher = Matcher::new(set);
    // Warm the lazily compiled matchers, as a running agent has.
    let hit = "/bench/57/3/report.txt";
    assert_eq!(matcher.matching(EventType::Created, hit).len(), 1);
    c.bench_function("one event against 1,000 workflows (one matches)", |b| {
        b.iter(|| matcher.matching(EventType::Created, std::hint::black_box(hit)))
    });
    let miss = "/elsewhere/report.txt";
    c.bench_function("one event against 1,000 workflows (none matches)", |b| {
        b.iter(|| matcher.matching(EventType::Created, std::hint::black_box(miss)))
    });
    let ignored = "/bench/57/3/report_out.txt";
    c.bench_function("one event against 1,000 workflows (ignored)", |b| {
        b.iter(|| matcher.matching(EventType::Created, std::hint::black_box(ignored)))
    });
}

criterion_group!(benches, matching);
criterion_main!(benches);
