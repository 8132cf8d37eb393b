//! Test harness: a fresh database per test, configs in temp dirs, the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

/// Admin URL of the test server (the test script starts it).
pub fn admin_url() -> String {
    std::env::var("RETENTIOND_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// HMAC key every test run uses.
pub const HMAC_KEY: &str = "test-only-hmac-key-0123456789";

/// A database of its own, and a temp dir for its config.
pub struct TestEnv {
    /// Pool on it.
    pub pool: PgPool,
    /// Temp dir (config, url file, reports).
    pub dir: tempfile::TempDir,
    /// Extra environment for the binary.
    pub env: Vec<(String, String)>,
}

fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("url has a database");
    format!("{base}/{db}")
}

impl TestEnv {
    /// Creates database `rtd_<name>_<random>`.
    pub async fn new(name: &str) -> Self {
        let db = format!(
            "rtd_{}_{}",
            name.replace('-', "_"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("connect to the test postgres (run scripts/test)");
        sqlx::query(&format!("CREATE DATABASE \"{db}\""))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = with_db(&admin_url(), &db);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await
            .expect("connect test db");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("db.url"), &url).expect("write url file");
        Self {
            pool,
            dir,
            env: vec![("RETENTIOND_HMAC_KEY".into(), HMAC_KEY.into())],
        }
    }

    /// Runs SQL (several statements allowed).
    pub async fn sql(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("sql failed: {e}\n{sql}"));
    }

    /// One i64 from a query.
    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("query failed: {e}\n{sql}"))
    }

    /// Path of the url file.
    pub fn url_file(&self) -> PathBuf {
        self.dir.path().join("db.url")
    }

    /// Writes a config whose `[stores.app]` points at this database, followed by `body`.
    pub fn config(&self, body: &str) -> PathBuf {
        self.config_named("retention.toml", &format!("{}\n{body}", self.header()))
    }

    /// The standard head of a test config (daemon, audit, app store).
    pub fn header(&self) -> String {
        format!(
            "[daemon]\nbatch_size = 3\nmin_batch_size = 1\nmax_batch_size = 50\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[audit]\nstore = \"app\"\nreport_dir = \"{}\"\n\n[stores.app]\nkind = \"postgres\"\nurl_file = \"{}\"\n",
            self.dir.path().join("reports").display(),
            self.url_file().display()
        )
    }

    /// Writes `text` as a config file named `name`.
    pub fn config_named(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// Runs the binary with `--config config` and `args`.
    pub fn run(&self, config: &Path, args: &[&str]) -> Run {
        run_bin(config, args, &self.env)
    }
}

/// What a run of the binary did.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Run {
    /// Stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Panics with the output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs the binary.
pub fn run_bin(config: &Path, args: &[&str], env: &[(String, String)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retentiond"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DATABASE_URL")
        .env("RETENTIOND_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run retentiond");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The rule entry of `report` named `rule`.
pub fn rule<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["rule"] == name))
        .unwrap_or_else(|| panic!("no rule {name} in {report}"))
}

/// A counter of a rule entry.
pub fn n(report: &serde_json::Value, rule_name: &str, field: &str) -> u64 {
    rule(report, rule_name)[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} of {rule_name} in {report}"))
}
