//! Under failure: SIGKILL at random points, nothing wrongly removed, nothing lost.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::TestEnv;
use crate::s3::{keys, moto, put_many};

/// `(id, output_key, input_keys, account_id, young)` of a generations row.
type GenerationRow = (String, Option<String>, Vec<String>, i64, bool);

/// Kill points: 20 by default; `RETENTIOND_SOAK_KILLS` for longer soaks.
fn kills() -> usize {
    std::env::var("RETENTIOND_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_never_breaks_an_invariant() {
    let server = moto();
    let mut env = TestEnv::new("crash").await;
    env.env.extend(server.env());
    let c = server.client();
    let bucket = server.bucket(false).await;
    env.sql(
        "CREATE TABLE generations (id serial PRIMARY KEY, account_id bigint, created_at timestamptz NOT NULL, output_key text, input_keys text[] NOT NULL DEFAULT '{}');
         CREATE INDEX ON generations (created_at);
         INSERT INTO generations (account_id, created_at, output_key, input_keys)
           SELECT g % 10, now() - interval '100 days', 'out/' || g, ARRAY['in/' || g] FROM generate_series(1, 1500) g;
         INSERT INTO generations (account_id, created_at, output_key, input_keys)
           SELECT g % 10, now() - interval '1 day', 'out/young-' || g, '{}' FROM generate_series(1, 100) g;",
    )
    .await;
    let mut all: Vec<String> = (1..=1500)
        .flat_map(|g| vec![format!("out/{g}"), format!("in/{g}")])
        .collect();
    all.extend((1..=100).map(|g| format!("out/young-{g}")));
    put_many(&c, &bucket, all).await;
    let body = format!(
        "{}[[rules]]\nname = \"generations\"\ncategory = \"assets\"\nstore = \"app\"\ntable = \"generations\"\nage_column = \"created_at\"\nretain = \"90d\"\naction = \"delete\"\nsubject = {{ kind = \"account\", column = \"account_id\" }}\nobjects = {{ store = \"assets\", key_columns = [\"output_key\", \"input_keys\"] }}\n",
        server.store(&bucket)
    );
    let cfg = env.config_named(
        "retention.toml",
        &(env
            .header()
            .replace("max_batch_size = 50", "max_batch_size = 20")
            + &body),
    );
    env.run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "account:7",
            "--reason",
            "litigation",
        ],
    )
    .expect_code(0);
    let held_rows = env
        .scalar("SELECT count(*) FROM generations WHERE account_id = 7")
        .await;

    let mut rng_state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let mut killed = 0;
    for _ in 0..kills() {
        if env.scalar("SELECT count(*) FROM generations WHERE created_at < now() - interval '90 days' AND account_id <> 7").await == 0 {
            break;
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_retentiond"))
            .arg("--config")
            .arg(&cfg)
            .arg("sweep")
            .envs(env.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150 + next() % 700)).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();

        // Invariants after every kill.
        let rows: Vec<GenerationRow> = sqlx::query_as(
            "SELECT id::text, output_key, input_keys, account_id, created_at > now() - interval '90 days' FROM generations",
        )
        .fetch_all(&env.pool)
        .await
        .unwrap();
        assert_eq!(
            rows.iter().filter(|r| r.4).count(),
            100,
            "no row younger than its cutoff was removed"
        );
        assert_eq!(
            rows.iter().filter(|r| r.3 == 7).count() as i64,
            held_rows,
            "no held row was removed"
        );
        let present: HashSet<String> = keys(&c, &bucket, "").await.into_iter().collect();
        let live: HashSet<String> = rows.iter().map(|r| r.0.clone()).collect();
        let queued = queued_keys(&env).await;
        for g in 1..=1500 {
            if !live.contains(&g.to_string()) {
                for k in [format!("out/{g}"), format!("in/{g}")] {
                    assert!(
                        !present.contains(&k) || queued.contains(&k),
                        "row {g} was removed but its object {k} remains and is not queued for deletion"
                    );
                }
            }
        }
        for r in rows.iter().filter(|r| r.3 == 7 || r.4) {
            for k in r.1.iter().chain(r.2.iter()) {
                assert!(present.contains(k), "object {k} of a kept row is gone");
            }
        }
    }
    assert!(killed >= 3, "the test killed sweeps mid-run ({killed})");
    // A clean run finishes the job and records every killed run as interrupted.
    let cfg_fast = env.config_named("fast.toml", &(env.header() + &body));
    env.run(&cfg_fast, &["sweep"]).expect_code(0);
    assert_eq!(env.scalar("SELECT count(*) FROM generations WHERE created_at < now() - interval '90 days' AND account_id <> 7").await, 0);
    // ... and the queue: no object of a removed row is left, none is still queued.
    assert!(
        queued_keys(&env).await.is_empty(),
        "the clean run drained the queue"
    );
    let present: HashSet<String> = keys(&c, &bucket, "").await.into_iter().collect();
    let live: HashSet<String> = sqlx::query_scalar::<_, String>("SELECT id::text FROM generations")
        .fetch_all(&env.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    for g in (1..=1500).filter(|g| !live.contains(&g.to_string())) {
        assert!(
            !present.contains(&format!("out/{g}")) && !present.contains(&format!("in/{g}")),
            "row {g} was removed but an object it pointed to remains after a clean run"
        );
    }
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE status = 'running'")
            .await,
        0
    );
    // A process killed before it recorded its start leaves no run; every other killed
    // run is recorded as interrupted.
    let interrupted = env
        .scalar("SELECT count(*) FROM retentiond.runs WHERE status = 'interrupted'")
        .await;
    assert!(
        interrupted >= 1 && interrupted <= killed,
        "{interrupted} interrupted of {killed} killed"
    );
    eprintln!("crash: {killed} sweeps killed with SIGKILL, {interrupted} recorded as interrupted, invariants held after every kill");
    env.run(&cfg_fast, &["audit", "verify"]).expect_code(0);
}

/// Keys in the durable queue of objects whose rows are gone (empty before its first use).
pub async fn queued_keys(env: &TestEnv) -> HashSet<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT key FROM retentiond_work.pending_objects WHERE to_regclass('retentiond_work.pending_objects') IS NOT NULL",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap_or_default()
    .into_iter()
    .collect()
}
