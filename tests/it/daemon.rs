//! The daemon as a child process: schedules, replicas, signals, reload, HTTP, metrics.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::TestEnv;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(env: &TestEnv, port: u16, schedule: &str, batch: &str) -> String {
    env.header()
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""))
        .replace("batch_size = 3\nmin_batch_size = 1\nmax_batch_size = 50", batch)
        + &format!(
            "schedule = \"{schedule}\"\n\n[categories.logs]\ndescription = \"logs\"\n\n[[rules]]\nname = \"logs\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"logs\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"delete\"\n"
        )
        .replacen("\n[http]", "", 0)
}

/// Puts the daemon schedule into `[daemon]` (the header ends it before `[http]`).
fn with_schedule(text: String) -> String {
    // Move the trailing `schedule = …` line (appended after [audit]/[stores]) into [daemon].
    let (head, rest) = text.split_once("schedule = ").unwrap();
    let (sched, tail) = rest.split_once('\n').unwrap();
    head.replacen("[daemon]\n", &format!("[daemon]\nschedule = {sched}\n"), 1) + tail
}

fn spawn(env: &TestEnv, cfg: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .arg("--config")
        .arg(cfg)
        .args(["run", "--grace-period", "10s"])
        .envs(env.env.iter().cloned())
        .env("RETENTIOND_LOG", "warn,retentiond=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

async fn wait_for<F: std::future::Future<Output = bool>>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn wait_exit(child: &mut Child, secs: u64) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "daemon did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_metrics_move_and_sigterm_exits_0() {
    let env = TestEnv::new("daemon").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 30);",
    )
    .await;
    let port = free_port();
    let cfg = env.config_named(
        "retention.toml",
        &with_schedule(config(&env, port, "*/1 * * * * *", "batch_size = 10")),
    );
    let mut d = spawn(&env, &cfg);
    wait_for("healthz", 20, || async {
        get(port, "/healthz").await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    wait_for("readyz", 10, || async {
        get(port, "/readyz").await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    // Catch-up runs the rule at once; then the 1-second schedule keeps firing.
    wait_for("three scheduled runs", 20, || async {
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE trigger = 'schedule' AND status = 'succeeded'").await >= 3
    })
    .await;
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE trigger = 'catch_up'")
            .await,
        1,
        "catch-up runs once"
    );
    assert_eq!(env.scalar("SELECT count(*) FROM logs").await, 0);

    let (status, text) = get(port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("metrics parse as Prometheus text");
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && s.labels.get("rule").is_none_or(|r| r == "logs"))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum::<f64>()
    };
    assert_eq!(value("retentiond_records_removed_total"), 30.0, "{text}");
    assert!(
        value("retentiond_rule_last_success_timestamp_seconds") > 1.7e9,
        "{text}"
    );
    assert!(
        text.contains("retentiond_run_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("retentiond_overdue_records{rule=\"logs\"} 0"),
        "{text}"
    );

    signal(&d, "TERM");
    assert_eq!(wait_exit(&mut d, 15), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_run_records_interrupted_and_exits_0() {
    let env = TestEnv::new("daemonterm").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 50000);",
    )
    .await;
    let port = free_port();
    let cfg = env.config_named(
        "retention.toml",
        &with_schedule(config(
            &env,
            port,
            "0 0 3 * * *",
            "batch_size = 2\nmin_batch_size = 1\nmax_batch_size = 2",
        )),
    );
    let mut d = spawn(&env, &cfg);
    wait_for("a running catch-up run", 20, || async {
        env.scalar("SELECT count(*) FROM logs").await < 49_990
    })
    .await;
    signal(&d, "TERM");
    assert_eq!(wait_exit(&mut d, 15), 0, "exit 0 within the grace period");
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
    assert!(
        env.scalar("SELECT count(*) FROM logs").await > 0,
        "it stopped taking batches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_file_keeps_the_old_config() {
    let env = TestEnv::new("daemonhup").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);",
    )
    .await;
    let port = free_port();
    let good = with_schedule(config(&env, port, "0 0 3 * * *", "batch_size = 10"));
    let cfg = env.config_named("retention.toml", &good);
    let mut d = spawn(&env, &cfg);
    wait_for("readyz", 20, || async {
        get(port, "/readyz").await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    std::fs::write(
        &cfg,
        good.replace("retain = \"30d\"", "retain = \"30 days\""),
    )
    .unwrap();
    signal(&d, "HUP");
    wait_for("readyz to report the failed reload", 10, || async {
        get(port, "/readyz").await.is_some_and(|(s, body)| {
            s == 503 && body.contains("config reload failed") && body.contains("rules[0].retain")
        })
    })
    .await;
    assert_eq!(
        get(port, "/healthz").await.unwrap().0,
        200,
        "still alive on the old config"
    );
    assert!(d.try_wait().unwrap().is_none());
    std::fs::write(&cfg, &good).unwrap();
    signal(&d, "HUP");
    wait_for("readyz after a good reload", 10, || async {
        get(port, "/readyz").await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    signal(&d, "INT");
    assert_eq!(wait_exit(&mut d, 15), 0);
}

/// Seconds the replica test runs: 8 in CI, `RETENTIOND_SOAK_SECS=60` for the soak.
fn soak_secs() -> u64 {
    std::env::var("RETENTIOND_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_never_run_a_rule_at_the_same_time() {
    let env = TestEnv::new("replicas").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         CREATE TABLE logs2 (LIKE logs INCLUDING ALL);",
    )
    .await;
    let batch = "batch_size = 5\nmin_batch_size = 1\nmax_batch_size = 5";
    // Two rules, so runs of different rules finish concurrently and must still form one chain.
    let second = "\n[[rules]]\nname = \"logs2\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"logs2\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"delete\"\n";
    let mut daemons = Vec::new();
    for i in 0..3 {
        let text = with_schedule(config(&env, free_port(), "*/1 * * * * *", batch)) + second;
        let cfg = env.config_named(&format!("replica{i}.toml"), &text);
        daemons.push(spawn(&env, &cfg));
    }
    // Keep feeding due rows so runs take real time and would overlap without the lock.
    let deadline = Instant::now() + Duration::from_secs(soak_secs());
    while Instant::now() < deadline {
        env.sql(
            "INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 300);
             INSERT INTO logs2 (at) SELECT now() - interval '40 days' FROM generate_series(1, 300);",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for d in &daemons {
        signal(d, "TERM");
    }
    for d in &mut daemons {
        assert_eq!(wait_exit(d, 20), 0);
    }
    let mut total = 0;
    for rule_name in ["logs", "logs2"] {
        let runs: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT r.started_at, r.finished_at FROM retentiond.runs r JOIN retentiond.rule_results x USING (run_id) \
             WHERE r.mode = 'enforce' AND r.finished_at IS NOT NULL AND x.rule = $1 ORDER BY r.started_at",
        )
        .bind(rule_name)
        .fetch_all(&env.pool)
        .await
        .unwrap();
        assert!(
            runs.len() as u64 >= soak_secs() / 2,
            "{rule_name}: ticks ran: {}",
            runs.len()
        );
        // A run's record starts after its rule lock is taken and ends before it is
        // released: records of one rule never overlap, whichever replica wrote them.
        for w in runs.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "{rule_name}: runs overlap: {:?} and {:?}",
                w[0],
                w[1]
            );
        }
        total += runs.len();
    }
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.rule_results WHERE status = 'skipped'")
            .await,
        0,
        "skipped ticks are not recorded"
    );
    // Runs of both rules, finishing concurrently on three replicas, form one intact chain.
    let cfg = env.config_named(
        "verify.toml",
        &with_schedule(config(&env, free_port(), "*/1 * * * * *", batch)),
    );
    let v = crate::common::run_bin(&cfg, &["audit", "verify", "--format", "json"], &env.env);
    v.expect_code(0);
    // Every sealed run is in the chain: those above, plus any run a SIGTERM interrupted
    // before its first rule (sealed `interrupted`, without rule results).
    let sealed = env
        .scalar("SELECT count(*) FROM retentiond.runs WHERE hash IS NOT NULL")
        .await;
    assert!(sealed as usize >= total);
    assert_eq!(v.json()["records"].as_i64().unwrap(), sealed);
    eprintln!("replicas: {total} runs of 2 rules in {} s on 3 daemons, none overlapping, one intact chain", soak_secs());
}
