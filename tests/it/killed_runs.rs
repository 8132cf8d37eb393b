//! Issue 13: the record says what happened, through a kill and through a lost session.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::TestEnv;

/// A table of 3000 due rows, ~22 a page, whose every DELETE statement sleeps 50 ms: a
/// sweep with batches of 20 takes several seconds.
async fn slow_table(env: &TestEnv) -> std::path::PathBuf {
    env.sql(
        "CREATE TABLE stream (id bigserial PRIMARY KEY, pad text, created_at timestamptz NOT NULL);
         INSERT INTO stream (pad, created_at) SELECT repeat('x', 300), now() - interval '100 days' FROM generate_series(1, 3000);
         ANALYZE stream;
         CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$;
         CREATE TRIGGER slow_delete BEFORE DELETE ON stream FOR EACH STATEMENT EXECUTE FUNCTION slow_delete();",
    )
    .await;
    let header = env.header().replace(
        "batch_size = 3\nmin_batch_size = 1\nmax_batch_size = 50",
        "batch_size = 20\nmin_batch_size = 10\nmax_batch_size = 20",
    );
    assert!(
        header.contains("batch_size = 20"),
        "header changed: {header}"
    );
    env.config_named(
        "retention.toml",
        &format!(
            "{header}\n[categories.logs]\ndescription = \"logs\"\n\n[[rules]]\nname = \"stream\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"stream\"\nage_column = \"created_at\"\nretain = \"30d\"\naction = \"delete\"\n"
        ),
    )
}

fn spawn_sweep(env: &TestEnv, cfg: &std::path::Path) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retentiond"));
    cmd.arg("--config")
        .arg(cfg)
        .args(["sweep", "--format", "json"])
        .env_remove("DATABASE_URL")
        .env("RETENTIOND_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.dir.path().join("sweep.err")).expect("stderr file"));
    for (k, v) in &env.env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start retentiond")
}

/// Waits until at least `gone` rows of `stream` are gone (the child must still run).
async fn wait_gone(env: &TestEnv, child: &mut std::process::Child, gone: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = env.scalar("SELECT count(*) FROM stream").await;
        if 3000 - left >= gone {
            assert!(left > 0, "the sweep finished before the test could act");
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the sweep exited ({status}) after {} rows: {}",
                3000 - left,
                std::fs::read_to_string(env.dir.path().join("sweep.err")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the sweep never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Issue 13, item 1: a run killed in the middle of a rule is sealed `interrupted` with
// what its committed batches removed, from the last progress record: never more than
// what is really gone, and says that it is a lower bound.
#[tokio::test]
async fn a_killed_run_keeps_what_its_batches_removed() {
    let env = TestEnv::new("killed_progress").await;
    let cfg = slow_table(&env).await;
    let mut child = spawn_sweep(&env, &cfg);
    // Past the first progress record (every 2 s): at ~400 rows/s that is > 800 rows.
    wait_gone(&env, &mut child, 1400).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = 3000 - env.scalar("SELECT count(*) FROM stream").await;
    // A dry-run recovers the killed run and removes nothing.
    env.run(&cfg, &["sweep", "--dry-run"]).expect_code(0);
    assert_eq!(3000 - env.scalar("SELECT count(*) FROM stream").await, gone);
    let (run_id, status, deleted, lower, errors): (
        String,
        String,
        i64,
        Option<bool>,
        serde_json::Value,
    ) = sqlx::query_as(
        "SELECT r.run_id::text, r.status, x.deleted, (x.details->>'lower_bound')::bool, x.errors \
             FROM retentiond.runs r JOIN retentiond.rule_results x ON x.run_id = r.run_id \
             WHERE r.mode = 'enforce' ORDER BY r.id LIMIT 1",
    )
    .fetch_one(&env.pool)
    .await
    .expect("the killed run has a rule result");
    assert_eq!(status, "interrupted");
    assert!(
        deleted > 0 && deleted <= gone,
        "recorded {deleted} deleted, really gone {gone}: a lower bound, and not nothing"
    );
    assert_eq!(
        lower,
        Some(true),
        "the result says its count is a lower bound"
    );
    assert!(errors.to_string().contains("lower bound"), "{errors}");
    // The trail verifies, and the report of the interrupted run shows the count.
    env.run(&cfg, &["audit", "verify"]).expect_code(0);
    let shown = env.run(&cfg, &["report", "show", &run_id, "--format", "json"]);
    shown.expect_code(0);
    let shown = shown.json();
    assert_eq!(shown["status"], "interrupted");
    assert_eq!(shown["rules"][0]["deleted"].as_i64(), Some(deleted));
    assert!(shown["rules"][0]["errors"]
        .to_string()
        .contains("lower bound"));
}

// Issue 13, item 2: when the session holding a run's liveness lock is lost and another
// process takes the lock (as a recovery does before sealing the run `interrupted`), the
// run stops before it removes anything more; `audit verify` reports the run until it is
// recovered, and recovery seals it.
#[tokio::test]
async fn a_run_that_lost_its_liveness_lock_stops_removing() {
    use sqlx::Connection;
    let env = TestEnv::new("lost_liveness").await;
    let cfg = slow_table(&env).await;
    env.run(&cfg, &["migrate"]).expect_code(0);
    let mut child = spawn_sweep(&env, &cfg);
    wait_gone(&env, &mut child, 200).await;
    let url = std::fs::read_to_string(env.url_file()).unwrap();
    let mut other = sqlx::PgConnection::connect(url.trim()).await.unwrap();
    // Drop the session that holds the run's liveness lock (class "RTN1"), and take the
    // lock at once, as another replica's recovery would: in one statement, so this
    // session waits for the lock before the run could try to take it again.
    let taken: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid), pg_advisory_lock(1381256753, objid::int8::int4) \
         FROM pg_locks WHERE locktype = 'advisory' AND classid = 1381256753 AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) t",
    )
    .fetch_one(&mut other)
    .await
    .unwrap();
    assert_eq!(taken, 1, "one session held the run's liveness lock");
    let left_then = env.scalar("SELECT count(*) FROM stream").await;
    let status = child.wait().unwrap();
    assert_ne!(
        status.code(),
        Some(0),
        "the run could not be recorded: not a success"
    );
    let left_after = env.scalar("SELECT count(*) FROM stream").await;
    assert!(
        left_then - left_after <= 50,
        "at most the batch in flight (a page or two, ~22 rows each) went after the lock was lost, not {}",
        left_then - left_after
    );
    assert!(left_after > 0);
    drop(other);
    // Never sealed: audit verify says so (exit 4).
    let v = env.run(&cfg, &["audit", "verify"]);
    v.expect_code(4);
    assert!(
        v.stdout.contains("never sealed") || v.stderr.contains("never sealed"),
        "{}{}",
        v.stdout,
        v.stderr
    );
    // The next start records it as interrupted; then the trail verifies.
    env.run(&cfg, &["sweep", "--dry-run"]).expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE status = 'interrupted'")
            .await,
        1
    );
    env.run(&cfg, &["audit", "verify"]).expect_code(0);
}

// Issue 13, item 2: a lost session whose lock nobody took is taken again safely, and
// the run goes on to the end, recorded as it happened.
#[tokio::test]
async fn a_run_whose_session_drops_takes_its_lock_again_and_finishes() {
    let env = TestEnv::new("relock_liveness").await;
    let cfg = slow_table(&env).await;
    env.run(&cfg, &["migrate"]).expect_code(0);
    let mut child = spawn_sweep(&env, &cfg);
    wait_gone(&env, &mut child, 200).await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND classid = 1381256753 AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) t",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(killed, 1, "one session held the run's liveness lock");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(env.scalar("SELECT count(*) FROM stream").await, 0);
    let (status, deleted): (String, i64) = sqlx::query_as(
        "SELECT r.status, x.deleted FROM retentiond.runs r JOIN retentiond.rule_results x USING (run_id) WHERE r.mode = 'enforce'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), deleted), ("succeeded", 3000));
    env.run(&cfg, &["audit", "verify"]).expect_code(0);
}
