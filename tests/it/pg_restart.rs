//! PostgreSQL restarts mid-sweep: the run retries with backoff, then finishes or ends
//! `partial` with the failing rule recorded; the next run completes. The server is a
//! private one this test starts on its own port, so the shared server is never touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

struct PrivateServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Server options beyond the port and address.
    options: String,
    _dir: tempfile::TempDir,
}

fn as_owner(cmd: &Path) -> Command {
    // initdb and pg_ctl refuse to run as root; run them as the postgres user then.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(cmd);
        c
    } else {
        Command::new(cmd)
    }
}

impl PrivateServer {
    fn start() -> Self {
        Self::start_with("-c fsync=off")
    }

    fn start_with(options: &str) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries (scripts/ensure-postgres installs them)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let _ = Command::new("chmod").arg("777").arg(dir.path()).status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ok = as_owner(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["--auth=trust", "-U", "postgres", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "initdb");
        let s = Self {
            bin,
            data,
            port,
            options: options.to_owned(),
            _dir: dir,
        };
        s.ctl(&["start", "-w"]);
        s
    }

    fn ctl(&self, args: &[&str]) {
        let opts = format!(
            "-p {} -k /tmp -c listen_addresses=127.0.0.1 {}",
            self.port, self.options
        );
        let log = self.data.join("server.log");
        let ok = as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-o", &opts, "-l"])
            .arg(&log)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "pg_ctl {args:?}");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_sweep_is_retried_and_the_next_run_completes() {
    let server = PrivateServer::start();
    let mut db = PgConnection::connect(&server.url()).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 30000);
         INSERT INTO logs (at) SELECT now() - interval '1 day' FROM generate_series(1, 50);",
    )
    .execute(&mut db)
    .await
    .unwrap();
    drop(db);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db.url"), server.url()).unwrap();
    let cfg = dir.path().join("retention.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nbatch_size = 10\nmin_batch_size = 1\nmax_batch_size = 10\n\n[audit]\nstore = \"app\"\n\n[stores.app]\nkind = \"postgres\"\nurl_file = \"{}\"\n\n[categories.logs]\ndescription = \"logs\"\n\n[[rules]]\nname = \"logs\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"logs\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"delete\"\n",
            dir.path().join("db.url").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(&cfg)
        .args(["sweep", "--format", "json"])
        .env("RETENTIOND_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the sweep to be under way, then restart the server under it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = PgConnection::connect(&server.url()).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM logs")
            .fetch_one(&mut c)
            .await
            .unwrap();
        if left < 29_000 {
            break;
        }
        assert!(Instant::now() < deadline, "the sweep made no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.ctl(&["restart", "-m", "fast", "-w"]);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(code == 0 || code == 1, "exit {code}\n{stderr}");
    let mut c = PgConnection::connect(&server.url()).await.unwrap();
    let (status, rule_status): (String, Option<String>) = sqlx::query_as(
        "SELECT r.status, x.status FROM retentiond.runs r LEFT JOIN retentiond.rule_results x USING (run_id) ORDER BY r.id DESC LIMIT 1",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert!(
        matches!(status.as_str(), "succeeded" | "partial" | "failed"),
        "run recorded as {status} (rule {rule_status:?})\n{stdout}\n{stderr}"
    );
    let errors = serde_json::from_str::<serde_json::Value>(&stdout)
        .map(|r| r["rules"][0]["errors"].clone())
        .unwrap_or_default();
    eprintln!(
        "postgres restart: run ended {status} (rule {rule_status:?}), exit {code}, errors {errors}"
    );
    if status != "succeeded" {
        assert!(rule_status.is_some(), "the failing rule is recorded");
    }
    // The next run completes.
    let again = crate::common::run_bin(&cfg, &["sweep"], &[]);
    again.expect_code(0);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM logs")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 50, "all due rows gone, young ones kept");
    assert_eq!(
        crate::common::run_bin(&cfg, &["audit", "verify"], &[]).code,
        0
    );
}

/// A crash of PostgreSQL undoes the page batches whose commit records had not reached the
/// WAL on disk (they commit with `synchronous_commit = off`). The run must not count them:
/// it sees the server's new start time when it confirms, recounts the rows that came back
/// in those pages and walks them again. The audit trail is on another server (the shared
/// one), so its synchronous commits never flush the rule's WAL; the WAL writer is slowed
/// down so that the latest commits are still in memory when the server is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_a_postgres_crash_undid_are_not_counted() {
    const OLD: i64 = 150_000;
    let server = PrivateServer::start_with(
        "-c fsync=off -c full_page_writes=off -c wal_writer_delay=10000 -c wal_writer_flush_after=0",
    );
    let trail = crate::common::TestEnv::new("pg_crash").await;
    let mut db = PgConnection::connect(&server.url()).await.unwrap();
    sqlx::raw_sql(&format!(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, {OLD});
         INSERT INTO logs (at) SELECT now() - interval '1 day' FROM generate_series(1, 50);"
    ))
    .execute(&mut db)
    .await
    .unwrap();
    for st in ["VACUUM ANALYZE logs", "CHECKPOINT"] {
        sqlx::raw_sql(st).execute(&mut db).await.unwrap();
    }
    drop(db);
    let dir = trail.dir.path();
    std::fs::write(dir.join("app.url"), server.url()).unwrap();
    let cfg = trail.config_named(
        "retention.toml",
        &format!(
            "[daemon]\nbatch_size = 100\nmin_batch_size = 100\nmax_batch_size = 100\n\n[audit]\nstore = \"trail\"\n\n\
             [stores.trail]\nkind = \"postgres\"\nurl_file = \"{}\"\n\n\
             [stores.app]\nkind = \"postgres\"\nurl_file = \"{}\"\n\n\
             [categories.logs]\ndescription = \"logs\"\n\n\
             [[rules]]\nname = \"logs\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"logs\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"delete\"\n",
            trail.url_file().display(),
            dir.join("app.url").display()
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(&cfg)
        .args(["sweep", "--format", "json"])
        .env("RETENTIOND_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the batches are well under way, kill the server (no shutdown checkpoint, no
    // WAL write) and start it again: crash recovery replays only the WAL on disk.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut c = PgConnection::connect(&server.url()).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM logs")
            .fetch_one(&mut c)
            .await
            .unwrap();
        if left < OLD - OLD / 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the sweep made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.ctl(&["restart", "-m", "immediate", "-w"]);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("report: {e}\n{stdout}\n{stderr}"));
    let rule = crate::common::rule(&report, "logs");
    let mut c = PgConnection::connect(&server.url()).await.unwrap();
    let old_left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM logs WHERE at < now() - interval '30 days'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    let young: i64 =
        sqlx::query_scalar("SELECT count(*) FROM logs WHERE at >= now() - interval '30 days'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    let gone = (OLD - old_left) as u64;
    let deleted = rule["deleted"].as_u64().unwrap();
    let details = &rule["details"];
    eprintln!(
        "postgres crash: status {}, deleted {deleted}, really gone {gone}, restarts {}, rows undone by the crash {}",
        rule["status"], details["postgres_restarts"], details["rows_undone_by_restart"]
    );
    assert_eq!(young, 50, "young rows kept");
    assert_eq!(details["batch_walk"], "pages", "{rule}");
    assert!(
        deleted <= gone,
        "the report counts {deleted} deleted rows but only {gone} are gone: batches the crash undid were counted\n{rule}"
    );
    if rule["status"] == "succeeded" {
        assert_eq!(deleted, gone, "{rule}");
        assert_eq!(
            old_left, 0,
            "the pages the crash restored were walked again"
        );
    }
    // What the trail recorded is what the report said.
    let recorded: i64 = sqlx::query_scalar("SELECT deleted FROM retentiond.rule_results")
        .fetch_one(&trail.pool)
        .await
        .unwrap();
    assert_eq!(recorded as u64, deleted);
}

/// The flush that confirms asynchronously committed batches really flushes the WAL past
/// them: PostgreSQL waits for the WAL at commit only when the committing transaction
/// wrote WAL itself. The WAL writer is slowed down, so nothing else flushes meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flush_makes_asynchronous_commits_durable() {
    let server = PrivateServer::start_with("-c fsync=off -c wal_writer_delay=10000");
    let mut db = PgConnection::connect(&server.url()).await.unwrap();
    sqlx::raw_sql("CREATE TABLE t (x int)")
        .execute(&mut db)
        .await
        .unwrap();
    let opts = retentiond::store::postgres::connect_options("app", &server.url()).unwrap();
    let pg = retentiond::store::PgStore::connect("app", opts, 2)
        .await
        .unwrap();
    for round in 0..20 {
        sqlx::raw_sql("SET synchronous_commit = off; INSERT INTO t VALUES (1)")
            .execute(&mut db)
            .await
            .unwrap();
        let commit: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(&mut db)
            .await
            .unwrap();
        pg.flush_wal().await.unwrap();
        let durable: bool =
            sqlx::query_scalar("SELECT pg_current_wal_flush_lsn() >= CAST($1 AS pg_lsn)")
                .bind(&commit)
                .fetch_one(&mut db)
                .await
                .unwrap();
        assert!(
            durable,
            "round {round}: the WAL up to {commit} was not flushed"
        );
    }
}
