//! Scenario 7 of `make bench`: what a node's claims cost while another node
//! of its data dir holds 100,000 unfinished runs, over 1,000,000 finished
//! ones (a standby agent beside a watcher with a backlog). Each round is
//! what a node with room does when told of new runs: a claim that finds
//! nothing it may take, then the check for runs waiting unclaimed. And a
//! clean stop's release of its leases (it holds none). SQLite, and
//! PostgreSQL at `NEXUS_BENCH_DATABASE_URL` (default the local server) in
//! a database of its own, `nexusd_bench_claims`, made and dropped here.

use criterion::{Criterion, criterion_group, criterion_main};
use nexusd::store::Store;
use sqlx::Executor;
use sqlx::any::AnyPoolOptions;

/// `make bench-quick` (`NEXUS_BENCH_QUICK`): a tenth of it.
fn sizes() -> (i64, i64) {
    if std::env::var("NEXUS_BENCH_QUICK").is_ok_and(|v| !v.is_empty()) {
        (100_000, 10_000)
    } else {
        (1_000_000, 100_000)
    }
}
/// Far in the future: the holder's leases never run out here.
const LEASE_UNTIL: i64 = 9_000_000_000_000;

/// Rows as the agents record them: the finished runs of the past, then the
/// holder's unfinished ones (every 50th running), all of one data dir.
fn seed(series: &str) -> [String; 2] {
    let (finished, held) = sizes();
    [
        format!(
            "INSERT INTO runs (id, workflow, event_id, event_type, path, status, queued_ms, finished_ms, owner, lease_until_ms, fence, origin) \
             SELECT 'f' || g, 'w', 'e' || g, 'file.created', '/in/f' || g, 'succeeded', g, g + 5, 'holder', g + 30000, 1, 'here' FROM {}",
            series.replace("{n}", &finished.to_string())
        ),
        format!(
            "INSERT INTO runs (id, workflow, event_id, event_type, path, status, queued_ms, owner, lease_until_ms, fence, origin) \
             SELECT 'h' || g, 'w', 'e' || g, 'file.created', '/in/h' || g, \
             CASE WHEN g % 50 = 0 THEN 'running' ELSE 'queued' END, {finished} + g, 'holder', {LEASE_UNTIL}, 1, 'here' FROM {}",
            series.replace("{n}", &held.to_string())
        ),
    ]
}

async fn postgres() -> Option<Store> {
    let url = std::env::var("NEXUS_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    sqlx::any::install_default_drivers();
    let admin = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .ok()?;
    let made = async {
        admin
            .execute("DROP DATABASE IF EXISTS nexusd_bench_claims WITH (FORCE)")
            .await?;
        admin.execute("CREATE DATABASE nexusd_bench_claims").await
    };
    if let Err(e) = made.await {
        eprintln!("claims: cannot make a database of its own ({e}); PostgreSQL is not measured");
        return None;
    }
    let (base, _) = url.rsplit_once('/').unwrap();
    let url = format!("{base}/nexusd_bench_claims");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(Some(&url), dir.path()).await.unwrap();
    let pool = AnyPoolOptions::new().connect(&url).await.unwrap();
    for sql in seed("generate_series(1, {n}) g") {
        pool.execute(sql.as_str()).await.unwrap();
    }
    pool.execute("ANALYZE runs").await.unwrap();
    Some(store)
}

async fn sqlite(dir: &std::path::Path) -> Store {
    let store = Store::open(None, dir).await.unwrap();
    let path = dir.join(".nexus/nexus.db");
    let pool = AnyPoolOptions::new()
        .connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let series = "(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) SELECT g FROM s)";
    for sql in seed(series) {
        pool.execute(sql.as_str()).await.unwrap();
    }
    pool.close().await;
    drop(store);
    // As an agent finds it on its next start (which brings the planner's
    // statistics up to date).
    Store::open(None, dir).await.unwrap()
}

/// 100000 as `100,000`.
fn count(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rounds(c: &mut Criterion, name: &str, store: &Store, rt: &tokio::runtime::Runtime) {
    // Nothing to take: the check answers as the dispatcher needs it.
    rt.block_on(async {
        assert!(
            store
                .claim_unfinished(60_000, 256, &[])
                .await
                .unwrap()
                .is_empty()
        );
        assert!(!store.unclaimed_waiting(&[]).await.unwrap());
    });
    c.bench_function(
        &format!(
            "claim and check, {} runs held elsewhere ({name})",
            count(sizes().1)
        ),
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    let runs = store.claim_unfinished(60_000, 256, &[]).await.unwrap();
                    let waiting = store.unclaimed_waiting(&[]).await.unwrap();
                    (runs.len(), waiting)
                })
            })
        },
    );
    c.bench_function(
        &format!(
            "release leases at a stop, {} runs held elsewhere ({name})",
            count(sizes().1)
        ),
        |b| b.iter(|| rt.block_on(store.release_leases()).unwrap()),
    );
}

fn claims(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lite = rt.block_on(sqlite(dir.path())).serving("here", "standby");
    rounds(c, "SQLite", &lite, &rt);
    if let Some(pg) = rt.block_on(postgres()) {
        let pg = pg.serving("here", "standby");
        rounds(c, "PostgreSQL", &pg, &rt);
        drop(pg);
        rt.block_on(async {
            let url = std::env::var("NEXUS_BENCH_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let admin = AnyPoolOptions::new().connect(&url).await.unwrap();
            admin
                .execute("DROP DATABASE IF EXISTS nexusd_bench_claims WITH (FORCE)")
                .await
                .unwrap();
        });
    } else {
        eprintln!("claims: PostgreSQL is not reachable; its rounds are not measured");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = claims
}
criterion_main!(benches);
