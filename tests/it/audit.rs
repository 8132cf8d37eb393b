//! The audit trail: append-only, hash-chained, tamper-evident, and crash-aware.

use crate::common::TestEnv;

const RULES: &str = "[categories.logs]\ndescription = \"logs\"\n\n[[rules]]\nname = \"logs\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"logs\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"delete\"\nsubject = { kind = \"account\", column = \"account_id\" }\n";

/// An environment with three runs and a hold change in its trail.
async fn with_history(name: &str) -> (TestEnv, std::path::PathBuf) {
    let env = TestEnv::new(name).await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, account_id bigint, at timestamptz);
         INSERT INTO logs (account_id, at) SELECT g % 5, now() - interval '40 days' FROM generate_series(1, 50) g;",
    )
    .await;
    let cfg = env.config(RULES);
    env.run(&cfg, &["sweep", "--dry-run"]).expect_code(0);
    env.run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "account:1",
            "--reason",
            "case 7",
        ],
    )
    .expect_code(0);
    env.run(&cfg, &["sweep"]).expect_code(0);
    env.run(&cfg, &["sweep"]).expect_code(0);
    let v = env.run(&cfg, &["audit", "verify", "--format", "json"]);
    v.expect_code(0);
    assert_eq!(v.json()["records"], 4);
    (env, cfg)
}

/// Runs `sql` as the superuser with triggers off, as an attacker with full access would.
async fn tamper(env: &TestEnv, sql: &str) {
    env.sql(&format!(
        "SET session_replication_role = replica; {sql}; SET session_replication_role = origin;"
    ))
    .await;
}

#[tokio::test]
async fn finished_records_are_append_only() {
    let (env, _) = with_history("appendonly").await;
    for sql in [
        "UPDATE retentiond.runs SET status = 'succeeded' WHERE mode = 'dry_run'",
        "DELETE FROM retentiond.runs WHERE mode = 'dry_run'",
        "UPDATE retentiond.rule_results SET deleted = 0",
        "DELETE FROM retentiond.rule_results",
        "UPDATE retentiond.holds SET reason = 'nothing to see'",
        "TRUNCATE retentiond.holds CASCADE",
    ] {
        let err = sqlx::raw_sql(sql).execute(&env.pool).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

#[tokio::test]
async fn verify_detects_an_edited_record() {
    let (env, cfg) = with_history("tamperedit").await;
    tamper(
        &env,
        "UPDATE retentiond.rule_results SET deleted = deleted + 1 WHERE deleted > 0",
    )
    .await;
    let out = env.run(&cfg, &["audit", "verify"]);
    out.expect_code(4);
    assert!(
        out.stdout.contains("content does not match its hash"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn verify_detects_a_deleted_record() {
    let (env, cfg) = with_history("tamperdelete").await;
    tamper(
        &env,
        "DELETE FROM retentiond.rule_results WHERE run_id = (SELECT run_id FROM retentiond.runs WHERE chain_seq = 3);
         DELETE FROM retentiond.runs WHERE chain_seq = 3",
    )
    .await;
    let out = env.run(&cfg, &["audit", "verify"]);
    out.expect_code(4);
    assert!(out.stdout.contains("record 3 is missing"), "{}", out.stdout);
}

#[tokio::test]
async fn verify_detects_reordered_records() {
    let (env, cfg) = with_history("tamperorder").await;
    tamper(
        &env,
        "UPDATE retentiond.runs SET chain_seq = -1 WHERE chain_seq = 3;
         UPDATE retentiond.runs SET chain_seq = 3 WHERE chain_seq = 4;
         UPDATE retentiond.runs SET chain_seq = 4 WHERE chain_seq = -1",
    )
    .await;
    let out = env.run(&cfg, &["audit", "verify"]);
    out.expect_code(4);
    assert!(
        out.stdout.contains("prev_hash does not match"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn verify_detects_an_inserted_record() {
    let (env, cfg) = with_history("tamperinsert").await;
    tamper(
        &env,
        "INSERT INTO retentiond.runs (run_id, trigger, mode, actor, host, version, config_sha256, started_at, finished_at, status)
         VALUES (gen_random_uuid(), 'manual', 'enforce', 'mallory', 'h', '0', 'x', now(), now(), 'succeeded')",
    )
    .await;
    let out = env.run(&cfg, &["audit", "verify"]);
    out.expect_code(4);
    assert!(out.stdout.contains("not in the chain"), "{}", out.stdout);
}

#[tokio::test]
async fn a_killed_sweep_is_recorded_as_interrupted_and_the_next_run_finishes() {
    let env = TestEnv::new("killed").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, account_id bigint, at timestamptz);
         CREATE INDEX ON logs (at);
         INSERT INTO logs (account_id, at) SELECT g % 5, now() - interval '40 days' FROM generate_series(1, 20000) g;
         INSERT INTO logs (account_id, at) SELECT g % 5, now() - interval '1 day' FROM generate_series(1, 100) g;",
    )
    .await;
    // Batches of at most 5 rows: the sweep takes long enough to be killed mid-way.
    let cfg = env.config_named(
        "retention.toml",
        &(env
            .header()
            .replace("max_batch_size = 50", "max_batch_size = 5")
            + RULES),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(&cfg)
        .arg("sweep")
        .envs(env.env.iter().cloned())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it has deleted something, then kill it without warning.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while env.scalar("SELECT count(*) FROM logs").await > 19_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep made no progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE status = 'running'")
            .await,
        1
    );
    assert!(
        env.scalar("SELECT count(*) FROM logs WHERE at < now() - interval '30 days'")
            .await
            > 0
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM logs WHERE at > now() - interval '30 days'")
            .await,
        100,
        "nothing young was removed"
    );

    let cfg_fast = env.config(RULES);
    env.run(&cfg_fast, &["sweep"]).expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE status = 'interrupted'")
            .await,
        1
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE status = 'running'")
            .await,
        0
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM logs").await,
        100,
        "the next run finished the job"
    );
    env.run(&cfg_fast, &["audit", "verify"]).expect_code(0);
}

// Issue 13, item 8: a sweep in which every selected rule was skipped (another process
// holds the rule) did nothing, and says so with exit 1, not 0.
#[tokio::test]
async fn a_sweep_whose_every_rule_was_skipped_does_not_exit_0() {
    use sqlx::Connection;
    let env = TestEnv::new("all_skipped").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, account_id bigint, at timestamptz);
         INSERT INTO logs (account_id, at) SELECT g % 5, now() - interval '40 days' FROM generate_series(1, 20) g;",
    )
    .await;
    let cfg = env.config(RULES);
    env.run(&cfg, &["migrate"]).expect_code(0);
    // Another "replica" holds the rule's lock (the same key the daemon takes).
    let url = std::fs::read_to_string(env.url_file()).unwrap();
    let mut other = sqlx::PgConnection::connect(url.trim()).await.unwrap();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(0x5254_4e32_i32)
        .bind(retentiond::audit::rule_lock_key("logs"))
        .fetch_one(&mut other)
        .await
        .unwrap();
    assert!(got, "the test holds the rule lock");
    let out = env.run(&cfg, &["sweep", "--format", "json"]);
    out.expect_code(1);
    assert_eq!(out.json()["rules"][0]["status"], "skipped");
    assert_eq!(env.scalar("SELECT count(*) FROM logs").await, 20);
    drop(other);
    env.run(&cfg, &["sweep"]).expect_code(0);
    assert_eq!(env.scalar("SELECT count(*) FROM logs").await, 0);
}

// Issue 14, item 6: statuses and modes became enums with no change of the canonical form.
// A trail sealed by the binary of commit 2512913 (before the change) verifies with this
// one, at its own head hash, and the chain goes on from it: a new run links to it, and a
// record edited afterwards is still caught.
#[tokio::test]
async fn a_trail_sealed_by_the_previous_binary_verifies_and_the_chain_goes_on() {
    let env = TestEnv::new("old_trail").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, account_id bigint, at timestamptz);
         INSERT INTO logs (account_id, at) SELECT g % 5, now() - interval '40 days' FROM generate_series(1, 10) g;",
    )
    .await;
    env.sql(include_str!("../fixtures/trail-2512913.sql")).await;
    // search_path is left empty by the dump's own SET; the binary sets its own.
    let cfg = env.config(RULES);
    let v = env.run(&cfg, &["audit", "verify", "--format", "json"]);
    v.expect_code(0);
    let head = "d6afc23acd8047912c6768cd24c42c8a8da9ab53f5dfef225e6b064c46ec3577";
    assert_eq!(v.json()["records"], 5, "{}", v.stdout);
    assert_eq!(v.json()["head_hash"], head, "{}", v.stdout);
    // The old runs read back with their statuses.
    let list = env.run(&cfg, &["report", "list", "--format", "json"]);
    list.expect_code(0);
    let runs = list.json();
    let statuses: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 3, "{}", list.stdout);
    assert!(statuses.iter().all(|s| *s == "succeeded"), "{statuses:?}");
    // A new run continues the chain from the old head.
    env.run(&cfg, &["sweep"]).expect_code(0);
    let v = env.run(&cfg, &["audit", "verify", "--format", "json"]);
    v.expect_code(0);
    assert_eq!(v.json()["records"], 6);
    let prev: String =
        sqlx::query_scalar("SELECT prev_hash FROM retentiond.runs ORDER BY chain_seq DESC LIMIT 1")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(prev, head, "the new record links to the old head");
    // And the old records are still protected: an edit is caught.
    tamper(
        &env,
        "UPDATE retentiond.runs SET actor = 'mallory' WHERE chain_seq = 1",
    )
    .await;
    env.run(&cfg, &["audit", "verify"]).expect_code(4);
}
