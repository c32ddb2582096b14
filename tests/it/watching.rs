//! The watcher scenarios of `research/watching.md` section 4, on the real
//! agent: each file change becomes exactly the events a user expects.

use std::fs;
use std::process::Command;

use crate::agent::{Agent, Backend};

const NO_WORKFLOWS: &str = "apiVersion: nexus/v1\nkind: Workflow\nmetadata: {name: idle}\nspec:\n  on: [{event: file.created, pattern: /never/*}]\n  steps: [{name: s, action: log, with: {message: x}}]\n";

fn agent() -> Agent {
    Agent::start(&[("idle.yaml", NO_WORKFLOWS)], &[])
}

/// The events so far, barriers left out, as `type path [old]` strings.
fn seen(agent: &Agent) -> Vec<String> {
    agent
        .events()
        .into_iter()
        .filter(|(_, p, _)| !p.starts_with("/barrier-"))
        .map(|(t, p, o)| match o {
            Some(o) => format!("{t} {p} <- {o}"),
            None => format!("{t} {p}"),
        })
        .collect()
}

fn sh(agent: &Agent, script: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(&agent.data)
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
}

/// Every event so far, sorted, once `n` events `prefix` came and then a
/// barrier: nothing more is on its way.
fn settled_sorted(agent: &Agent, prefix: &str, n: usize) -> Vec<String> {
    wait_count(agent, prefix, n);
    agent.barrier();
    let mut got = seen(agent);
    got.sort();
    got
}

/// `/health`'s `status`.
fn health(agent: &Agent) -> String {
    let body: serde_json::Value = serde_json::from_str(&agent.get_public("/health")).unwrap();
    body["status"].as_str().unwrap_or_default().to_owned()
}

fn wait_count(agent: &Agent, prefix: &str, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    agent.wait_until(&format!("{n} events `{prefix}`"), || {
        got = seen(agent)
            .into_iter()
            .filter(|e| e.starts_with(prefix))
            .collect();
        got.len() >= n
    });
    got
}

#[test]
fn nested_directories_made_at_once_are_scanned() {
    let agent = agent();
    fs::create_dir_all(agent.path("/a/b/c")).unwrap();
    fs::write(agent.path("/a/b/c/f.txt"), "x").unwrap();
    sh(&agent, "mkdir -p s/t/u && echo x > s/t/u/g.txt");
    assert_eq!(
        settled_sorted(&agent, "file.created", 2),
        ["file.created /a/b/c/f.txt", "file.created /s/t/u/g.txt"]
    );
}

#[test]
fn a_recursive_copy_of_1000_files_is_1000_creates() {
    let agent = agent();
    let src = tempfile::tempdir().unwrap();
    for i in 0..1000 {
        let sub = src.path().join(format!("d{}", i % 10));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join(format!("f{i}.txt")), format!("{i}")).unwrap();
    }
    sh(&agent, &format!("cp -r {} n", src.path().display()));
    wait_count(&agent, "file.created /n/", 1000);
    agent.barrier();
    let got = seen(&agent);
    assert_eq!(got.len(), 1000, "{:?}", &got[..got.len().min(5)]);
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 1000);
}

#[test]
fn directories_moved_in_out_and_around_expand_to_their_files() {
    let agent = agent();
    let outside = tempfile::tempdir().unwrap();
    sh(
        &agent,
        &format!(
            "mkdir -p {o}/d/e && touch {o}/d/e/1 {o}/d/e/2 && mv {o}/d ./d",
            o = outside.path().display()
        ),
    );
    wait_count(&agent, "file.created", 2);
    sh(&agent, "mv d z");
    wait_count(&agent, "file.moved", 2);
    sh(&agent, &format!("mv z {}/", outside.path().display()));
    wait_count(&agent, "file.deleted", 2);
    agent.barrier();
    let got = seen(&agent);
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "file.created /d/e/1",
            "file.created /d/e/2",
            "file.deleted /z/e/1",
            "file.deleted /z/e/2",
            "file.moved /z/e/1 <- /d/e/1",
            "file.moved /z/e/2 <- /d/e/2",
        ]
    );
}

#[test]
fn renames_are_moves_even_200_at_once() {
    let agent = agent();
    for i in 0..200 {
        agent.write(&format!("/r/s{i}"), "x");
    }
    wait_count(&agent, "file.created", 200);
    sh(
        &agent,
        "for i in $(seq 0 199); do mv r/s$i r/t$i & done; wait",
    );
    wait_count(&agent, "file.moved", 200);
    agent.barrier();
    let got = seen(&agent);
    assert_eq!(got.len(), 400, "only the creates and the moves");
    assert!(
        got[200..].iter().all(|e| e.starts_with("file.moved /r/t")),
        "{:?}",
        &got[200..]
    );
}

#[test]
fn an_atomic_save_is_one_update() {
    let agent = agent();
    agent.write("/t.txt", "old");
    wait_count(&agent, "file.created", 1);
    sh(&agent, "echo new > .t.txt.tmp && mv -f .t.txt.tmp t.txt");
    wait_count(&agent, "file.updated", 1);
    agent.barrier();
    assert_eq!(seen(&agent), ["file.created /t.txt", "file.updated /t.txt"]);
}

#[test]
fn a_slow_writer_gives_one_create_after_close_with_the_full_size() {
    let agent = agent();
    sh(
        &agent,
        "(for i in 1 2 3 4; do head -c 1048576 /dev/zero; sleep 1; done) > big.bin",
    );
    wait_count(&agent, "file.created", 1);
    agent.barrier();
    assert_eq!(seen(&agent), ["file.created /big.bin"]);
    assert_eq!(event_size(&agent, "/big.bin"), Some(4 * 1024 * 1024));
}

fn event_size(agent: &Agent, path: &str) -> Option<i64> {
    let path = path.to_owned();
    agent.query(async move |pool| {
        sqlx::query_scalar("SELECT size FROM events WHERE path = $1")
            .bind(path)
            .fetch_one(&pool)
            .await
            .unwrap()
    })
}

#[test]
fn deletes_chmods_and_short_lived_files() {
    let agent = agent();
    for n in ["1", "2", "3"] {
        agent.write(&format!("/d/{n}"), n);
    }
    agent.write("/m", "m");
    wait_count(&agent, "file.created", 4);
    sh(&agent, "rm -rf d && chmod 600 m && touch x && rm x");
    wait_count(&agent, "file.deleted /d/", 3);
    wait_count(&agent, "metadata.changed", 1);
    agent.barrier();
    let got = seen(&agent);
    let x: Vec<&String> = got.iter().filter(|e| e.ends_with(" /x")).collect();
    // A file gone before its close was handled yields nothing; one seen
    // complete yields created then deleted, never a lone delete.
    assert!(
        x.is_empty() || x == [&"file.created /x".to_owned(), &"file.deleted /x".to_owned()],
        "{x:?}"
    );
    assert_eq!(
        got.iter()
            .filter(|e| e.starts_with("metadata.changed /m"))
            .count(),
        1
    );
}

#[test]
fn symlinks_to_outside_give_no_events_and_no_loop() {
    let agent = agent();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), agent.path("/out")).unwrap();
    std::os::unix::fs::symlink(".", agent.path("/loop")).unwrap();
    fs::write(outside.path().join("z"), "z").unwrap();
    agent.write("/in.txt", "i");
    wait_count(&agent, "file.created", 1);
    agent.barrier();
    assert_eq!(seen(&agent), ["file.created /in.txt"]);
}

#[test]
fn state_kept_elsewhere_through_a_symlinked_nexus_dir_still_starts() {
    // `.nexus` moved to another disk and linked back: it has no watch for
    // the agent to drop, and the agent starts as before, with its records.
    let mut agent = agent();
    agent.write("/before.txt", "b");
    wait_count(&agent, "file.created", 1);
    assert!(agent.stop().success());
    let elsewhere = tempfile::tempdir().unwrap();
    let state = elsewhere.path().join("state");
    fs::rename(agent.path("/.nexus"), &state).unwrap();
    std::os::unix::fs::symlink(&state, agent.path("/.nexus")).unwrap();
    agent.spawn(&[]);
    agent.write("/after.txt", "a");
    wait_count(&agent, "file.created", 2);
    agent.barrier();
    assert_eq!(
        seen(&agent),
        ["file.created /before.txt", "file.created /after.txt"]
    );
}

crate::on_both!(
    a_rewrite_in_the_tick_of_the_last_look_is_found_at_the_next_start,
    racy_restart
);

/// `research/watching.md` 19: a file rewritten with the same length within
/// the clock tick of the agent's last look at it keeps its size and mtime.
/// That look was stored as racy; the next start compares the content, and
/// its own look, far from the mtime, is trusted from then on.
fn racy_restart(backend: crate::agent::Backend) {
    use std::time::{Duration, SystemTime};
    let mut agent = Agent::start_on(backend, &[("idle.yaml", NO_WORKFLOWS)], &[]);
    // An mtime ahead of the clock: the agent looks within its tick.
    let tick = SystemTime::now() + Duration::from_millis(500) + Duration::from_nanos(123_457);
    write_at(&agent.path("/r.txt"), "aaaa", tick);
    wait_count(&agent, "file.created", 1);
    assert_eq!(racy(&agent, "/r.txt"), Some(true));
    assert!(agent.stop().success());
    write_at(&agent.path("/r.txt"), "bbbb", tick);
    agent.wait_until("the clock past the tick", || {
        SystemTime::now() > tick + Duration::from_millis(100)
    });
    agent.spawn(&[]);
    wait_count(&agent, "file.updated", 1);
    assert_eq!(racy(&agent, "/r.txt"), Some(false));
    assert!(agent.stop().success());
    agent.spawn(&[]);
    agent.barrier();
    assert_eq!(seen(&agent), ["file.created /r.txt", "file.updated /r.txt"]);
}

/// Writes `content` to `path` and gives it the mtime `at` before closing it.
fn write_at(path: &std::path::Path, content: &str, at: std::time::SystemTime) {
    use std::io::Write;
    let mut f = fs::File::create(path).unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f.set_modified(at).unwrap();
}

/// Whether the index holds `path` as racy.
fn racy(agent: &Agent, path: &str) -> Option<bool> {
    let path = path.to_owned();
    agent.query(async move |pool| {
        sqlx::query_scalar::<_, i64>("SELECT racy FROM file_index WHERE path = $1")
            .bind(path)
            .fetch_optional(&pool)
            .await
            .unwrap()
            .map(|r| r != 0)
    })
}

#[test]
fn past_the_inotify_watch_limit_directories_are_polled_and_nothing_is_lost() {
    let mut agent = Agent::new_on(Backend::Sqlite, &[("idle.yaml", NO_WORKFLOWS)]);
    for i in 1..=20 {
        fs::create_dir(agent.path(&format!("/d{i}"))).unwrap();
    }
    // The config dir, the data dir and a few of its 20 directories.
    agent.watch_limit = Some(8);
    agent.spawn(&["--poll-interval", "1s"]);
    assert!(
        agent
            .log_text()
            .contains("the inotify watch limit is reached"),
        "{}",
        agent.log_text()
    );
    assert_eq!(health(&agent), "degraded");
    let metrics = agent.get_public("/metrics");
    assert!(metrics.contains("\nnexus_watch_degraded 1\n"), "{metrics}");
    for i in 1..=20 {
        agent.write(&format!("/d{i}/f.txt"), "x");
    }
    agent.write("/late/g.txt", "y");
    let got = settled_sorted(&agent, "file.created", 21);
    let mut expected: Vec<String> = (1..=20)
        .map(|i| format!("file.created /d{i}/f.txt"))
        .collect();
    expected.push("file.created /late/g.txt".to_owned());
    expected.sort();
    assert_eq!(got, expected, "each file once");
    assert!(
        agent
            .gaps()
            .iter()
            .any(|(reason, _)| reason.starts_with("poll:")),
        "{:?}",
        agent.gaps()
    );
    // The limit raised: every directory has its watch again at the next poll.
    let raised = Command::new("nsenter")
        .args(["--user", "--target", &agent.pid().to_string()])
        .args(["sh", "-c", "echo 1000 > /proc/sys/user/max_inotify_watches"])
        .status()
        .unwrap();
    assert!(raised.success());
    agent.wait_until("the watch whole again", || {
        agent
            .log_text()
            .contains("every directory of the data dir is watched again")
    });
    assert_eq!(health(&agent), "ok");
    // No polls any more: these come from the watches.
    for i in 1..=20 {
        agent.write(&format!("/d{i}/h.txt"), "x");
    }
    wait_count(&agent, "file.created", 41);
}

#[test]
fn a_directory_the_agent_may_not_read_costs_only_itself() {
    use std::os::unix::fs::PermissionsExt;
    let mut agent = Agent::new_on(Backend::Sqlite, &[("idle.yaml", NO_WORKFLOWS)]);
    for dir in ["/a", "/lost+found", "/m/deep", "/z"] {
        fs::create_dir_all(agent.path(dir)).unwrap();
    }
    agent.hand_over_to_nobody();
    // As a mount point's lost+found: root's, for root alone.
    std::os::unix::fs::chown(agent.path("/lost+found"), Some(0), Some(0)).unwrap();
    fs::set_permissions(agent.path("/lost+found"), fs::Permissions::from_mode(0o700)).unwrap();
    agent.spawn(&[]);
    let log = agent.log_text();
    assert!(
        log.contains("cannot watch a directory the agent may not read")
            && log.contains("lost+found"),
        "{log}"
    );
    for file in ["/a/1", "/m/2", "/m/deep/3", "/z/4", "/new/5"] {
        agent.write(file, "x");
    }
    assert_eq!(
        settled_sorted(&agent, "file.created", 5),
        [
            "file.created /a/1",
            "file.created /m/2",
            "file.created /m/deep/3",
            "file.created /new/5",
            "file.created /z/4"
        ]
    );
    assert_eq!(health(&agent), "ok");
}

crate::on_both!(changes_made_while_stopped_are_found_at_start, catch_up);

fn catch_up(backend: crate::agent::Backend) {
    let mut agent = Agent::start_on(backend, &[("idle.yaml", NO_WORKFLOWS)], &[]);
    for (n, c) in [("a", "a"), ("b", "b"), ("c", "c"), ("d", "d"), ("f", "f")] {
        agent.write(&format!("/{n}"), c);
    }
    wait_count(&agent, "file.created", 5);
    assert!(agent.stop().success());
    let before = seen(&agent).len();
    sh(
        &agent,
        "mkdir new && for i in $(seq 1 30); do echo $i > new/n$i; done; touch -d '2020-01-01' new/n1; echo x >> b; rm c; mv d e; chmod 600 f",
    );
    agent.spawn(&[]);
    // Files written moments ago may still be in their writer's hands: they
    // are handed over once quiet, a little after the start.
    agent.wait_until("34 events", || seen(&agent).len() >= before + 34);
    agent.barrier();
    let mut after: Vec<String> = seen(&agent)[before..].to_vec();
    after.retain(|e| !e.contains("/barrier-"));
    after.sort();
    let mut expected: Vec<String> = (1..=30)
        .map(|i| format!("file.created /new/n{i}"))
        .collect();
    expected.extend([
        "file.deleted /c".to_owned(),
        "file.moved /e <- /d".to_owned(),
        "file.updated /b".to_owned(),
        "metadata.changed /f".to_owned(),
    ]);
    expected.sort();
    assert_eq!(after, expected);
    let gaps = agent.gaps();
    assert_eq!(
        gaps.last().map(|(_, n)| *n),
        Some(34),
        "the restart's gap found 34 changes: {gaps:?}"
    );
}

#[test]
fn an_overflowing_event_buffer_loses_nothing() {
    let agent = Agent::start(&[("idle.yaml", NO_WORKFLOWS)], &["--event-buffer", "64"]);
    sh(
        &agent,
        "mkdir burst && cd burst && for i in $(seq 1 20000); do echo $i > f$i; done",
    );
    wait_count(&agent, "file.created /burst/", 20_000);
    agent.barrier();
    let got = seen(&agent);
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((got.len(), unique.len()), (20_000, 20_000));
    assert!(
        agent.log_text().contains("watch events were lost"),
        "the overflow path was taken"
    );
    let gaps = agent.gaps();
    assert_eq!(
        gaps[0].0,
        "start: changes made while nexusd was not running"
    );
    assert!(gaps.len() >= 2, "{gaps:?}");
    assert!(
        gaps[1..]
            .iter()
            .all(|(r, _)| r == "overflow: watch events were lost"),
        "{gaps:?}"
    );
}

#[test]
fn an_mtime_or_an_xattr_alone_is_metadata_and_a_same_size_rewrite_is_an_update() {
    let agent = agent();
    agent.write("/t", "aaaa");
    wait_count(&agent, "file.created", 1);
    sh(&agent, "touch -d '2021-01-01' t");
    wait_count(&agent, "metadata.changed", 1);
    let path = std::ffi::CString::new(agent.path("/t").to_str().unwrap()).unwrap();
    // SAFETY: valid C strings and buffer.
    let xattrs = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            c"user.tag".as_ptr(),
            b"v1".as_ptr().cast(),
            2,
            0,
        )
    } == 0;
    if xattrs {
        wait_count(&agent, "metadata.changed", 2);
    }
    sh(&agent, "printf bbbb > t");
    wait_count(&agent, "file.updated", 1);
    agent.barrier();
    let mut expected = vec!["file.created /t", "metadata.changed /t"];
    if xattrs {
        expected.push("metadata.changed /t");
    }
    expected.push("file.updated /t");
    assert_eq!(seen(&agent), expected);
}

/// A file deleted is one `file.deleted`, however often the agent starts
/// again after: the stored index forgot it with the event.
fn deletions_stay_deleted_across_restarts(backend: Backend) {
    let mut agent = Agent::start_on(backend, &[], &[]);
    for name in ["a", "b", "c"] {
        agent.write(&format!("/gone/{name}.txt"), "x");
    }
    // The first may wait out its settle time (its close came before the
    // new directory's watch): a file gone before is no event at all.
    agent.wait_until("the three creations", || {
        let events = agent.events();
        events
            .iter()
            .filter(|(t, p, _)| t == "file.created" && p.starts_with("/gone/"))
            .count()
            == 3
    });
    for name in ["a", "c"] {
        fs::remove_file(agent.path(&format!("/gone/{name}.txt"))).unwrap();
    }
    agent.barrier();
    for _ in 0..2 {
        assert!(agent.stop().success());
        agent.spawn(&[]);
        agent.barrier();
    }
    let deleted: Vec<String> = agent
        .events()
        .into_iter()
        .filter(|(t, p, _)| t == "file.deleted" && p.starts_with("/gone/"))
        .map(|(_, p, _)| p)
        .collect();
    assert_eq!(deleted, ["/gone/a.txt", "/gone/c.txt"]);
    let indexed: Vec<String> = agent.query(async |pool| {
        sqlx::query_scalar("SELECT path FROM file_index WHERE path LIKE '/gone/%' ORDER BY path")
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    assert_eq!(indexed, ["/gone/b.txt"]);
}
crate::on_both!(
    a_deleted_file_is_one_event_across_restarts,
    deletions_stay_deleted_across_restarts
);
