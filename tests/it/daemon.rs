//! The daemon: schedules, catch-up, replicas, shutdown, reload, HTTP, metrics.
//!
//! Most tests run it in this test process ([`InProcess`]): `schedule::run_daemon` on a
//! thread and runtime of its own, on a listener the test bound to port 0, reloaded and
//! stopped through channels, its log in a file beside its config. Three run the binary
//! as a child process ([`ChildDaemon`]): `schedules_fire_metrics_move_and_sigterm_exits_0`
//! (SIGTERM, and the process-wide series), `sighup_with_a_broken_file_keeps_the_old_config`
//! (SIGHUP, SIGINT) and `a_skewed_host_clock_is_reported_and_does_not_move_cutoffs`
//! (libfaketime is preloaded into the process).
//!
//! Every in-process daemon of this test binary records into the one metrics recorder of
//! the process, so each test names its store, category and rules after itself (the `tag`
//! of [`config`]) and asserts only series with those labels. Process-wide series
//! (`retentiond_build_info`) are asserted where no other daemon writes: in a child.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use tokio::sync::oneshot;

use crate::common::TestEnv;

/// Seconds a daemon gets to start (connect, preflight, migrate) and become ready. Generous:
/// on a loaded 2-core machine several daemons and builds compete for the CPU.
const STARTUP_SECS: u64 = 90;

/// Seconds the tests wait for something the daemon does on its own (a run, a reload).
const PATIENCE_SECS: u64 = 90;

/// Seconds a daemon gets to stop after SIGTERM/SIGINT or its stop future: the 10 s grace
/// period and margin.
const EXIT_SECS: u64 = 40;

/// The head of a daemon config: `[daemon]` with `daemon` (schedule, batch sizes…),
/// `[http]` on port 0 (an in-process daemon gets its listener from the test; a child logs
/// the port it bound), and the audit trail, a Postgres store (this test's database) and a
/// category, all three named `tag`. Rules follow (see [`rule`]).
fn head(env: &TestEnv, tag: &str, daemon: &str) -> String {
    format!(
        "[daemon]\n{daemon}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[audit]\nstore = \"{tag}\"\nreport_dir = \"{}\"\n\n[stores.{tag}]\nkind = \"postgres\"\nurl_file = \"{}\"\n\n[categories.{tag}]\ndescription = \"logs\"\n",
        env.dir.path().join("reports").display(),
        env.url_file().display(),
    )
}

/// [`head`] and rule `tag` on table `logs`: the config of most tests. Append more rules,
/// or keys of the last rule.
fn config(env: &TestEnv, tag: &str, daemon: &str) -> String {
    head(env, tag, daemon) + "\n" + &rule(tag, tag, "logs")
}

/// Rule `name` of store and category `tag`: delete rows of `table` whose `at` is older
/// than 30 days.
fn rule(name: &str, tag: &str, table: &str) -> String {
    format!(
        "[[rules]]\nname = \"{name}\"\ncategory = \"{tag}\"\nstore = \"{tag}\"\ntable = \"{table}\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"delete\"\n"
    )
}

/// Where the daemon of `cfg` logs.
fn log_of(cfg: &Path) -> PathBuf {
    cfg.with_extension("log")
}

/// The end of every daemon log of `env`, for failure messages.
fn logs(env: &TestEnv) -> String {
    let mut out = String::new();
    let mut paths: Vec<_> = std::fs::read_dir(env.dir.path())
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.retain(|p| p.extension().is_some_and(|x| x == "log"));
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let start = text.char_indices().rev().nth(4_000).map_or(0, |(i, _)| i);
        out += &format!("--- {} (end) ---\n{}\n", p.display(), &text[start..]);
    }
    out
}

/// `retentiond::schedule::run_daemon` in this process, on a thread and a tokio runtime of
/// its own. Its log (`warn,retentiond=info`, as a child's) goes to the file beside its
/// config, through a `tracing` dispatcher set on every thread of that runtime only, so
/// daemons running side by side in this test binary keep their logs apart.
///
/// Dropping it (a test that failed) drops the stop sender, which stops the daemon too.
struct InProcess {
    /// The port of its `/healthz`, `/readyz` and `/metrics`.
    port: u16,
    log: PathBuf,
    stop: oneshot::Sender<()>,
    reload: mpsc::UnboundedSender<()>,
    /// What `run_daemon` returned, sent once its runtime has shut down.
    done: oneshot::Receiver<Result<(), retentiond::error::Error>>,
}

impl InProcess {
    /// Starts the daemon on `cfg` (`--grace-period 10s`), catching up or not.
    fn start(cfg: &Path, catch_up: bool) -> Self {
        // Bound here, so the port is known at once and stays this daemon's.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = log_of(cfg);
        let file = std::fs::File::create(&log).expect("create daemon log");
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("warn,retentiond=info"))
                .with_writer(Arc::new(file))
                .with_ansi(false)
                .finish(),
        );
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (reload, reload_rx) = mpsc::unbounded::<()>();
        let (done_tx, done) = oneshot::channel();
        let cfg = cfg.to_owned();
        std::thread::Builder::new()
            .name(format!("daemon:{port}"))
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&dispatch);
                let on_start = dispatch.clone();
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    // The runtime's threads live as long as it does: so does their default.
                    .on_thread_start(move || {
                        std::mem::forget(tracing::dispatcher::set_default(&on_start))
                    })
                    .build()
                    .expect("the daemon's runtime");
                let result = runtime.block_on(async {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    retentiond::schedule::run_daemon(
                        &cfg,
                        listener,
                        Some("10s"),
                        catch_up,
                        async {
                            let _ = stop_rx.await;
                        },
                        reload_rx,
                    )
                    .await
                });
                if let Err(e) = &result {
                    tracing::error!("the daemon returned an error: {e}");
                }
                // Every task ends with the runtime: then the listener is closed.
                runtime.shutdown_timeout(Duration::from_secs(5));
                let _ = done_tx.send(result);
            })
            .expect("spawn the daemon's thread");
        Self {
            port,
            log,
            stop,
            reload,
            done,
        }
    }

    /// Reloads the config, as SIGHUP does.
    fn reload(&self) {
        self.reload
            .unbounded_send(())
            .expect("the daemon takes reloads until it stops");
    }

    /// Stops the daemon, as SIGTERM does, and returns what it returned. Fails the test if
    /// it has not stopped within [`EXIT_SECS`].
    async fn stop(self) -> Result<(), retentiond::error::Error> {
        let _ = self.stop.send(());
        let tail = || {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let start = text.char_indices().rev().nth(4_000).map_or(0, |(i, _)| i);
            format!("--- {} (end) ---\n{}", self.log.display(), &text[start..])
        };
        match tokio::time::timeout(Duration::from_secs(EXIT_SECS), self.done).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => panic!("the daemon's thread ended without a result\n{}", tail()),
            Err(_) => panic!("the daemon did not stop within {EXIT_SECS} s\n{}", tail()),
        }
    }
}

/// `retentiond run` as a child process, its log in the file beside its config: a pipe
/// nobody reads would fill up and block the daemon, maybe while it holds a rule lock.
struct ChildDaemon {
    process: std::process::Child,
    /// The port it listens on, read from its log.
    port: u16,
}

impl ChildDaemon {
    /// Starts `retentiond run --grace-period 10s` and `args` on `cfg`, with `env`'s
    /// environment and `vars`, and waits until it has bound its port (any free one: the
    /// config says port 0) and logged which.
    async fn start(env: &TestEnv, cfg: &Path, args: &[&str], vars: &[(&str, &OsStr)]) -> Self {
        let log = log_of(cfg);
        let file = std::fs::File::create(&log).expect("create daemon log");
        let mut process = Command::new(env!("CARGO_BIN_EXE_retentiond"))
            .arg("--config")
            .arg(cfg)
            .args(["run", "--grace-period", "10s"])
            .args(args)
            .envs(env.env.iter().cloned())
            .envs(vars.iter().copied())
            .env("RETENTIOND_LOG", "warn,retentiond=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(STARTUP_SECS);
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let listen = text
                .lines()
                .filter(|l| l.contains("serving /healthz /readyz /metrics"))
                .find_map(|l| l.split_once(" listen=").map(|(_, a)| a.trim().to_owned()));
            if let Some(addr) = listen {
                let addr: std::net::SocketAddr = addr
                    .parse()
                    .unwrap_or_else(|e| panic!("listen address `{addr}` in the log: {e}"));
                break addr.port();
            }
            if let Some(status) = process.try_wait().unwrap() {
                panic!(
                    "the daemon exited ({status}) before it listened\n{}",
                    logs(env)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not log its port within {STARTUP_SECS} s\n{}",
                logs(env)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self { process, port }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.process.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    fn running(&mut self) -> bool {
        self.process.try_wait().unwrap().is_none()
    }

    fn wait_exit(&mut self, env: &TestEnv, secs: u64) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.process.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit within {secs} s\n{}",
                logs(env)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One request; `None` if there is no answer within 30 s (an in-process daemon's listener
/// is bound before the daemon serves: a request then waits in its backlog).
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .ok()?;
    let r = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// Polls `f` until it holds; fails after `secs` with the daemons' logs.
async fn wait_for<F: std::future::Future<Output = bool>>(
    env: &TestEnv,
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}\n{}",
            logs(env)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `promtool check metrics` (Debian's prometheus package; scripts/test installs it) finds
/// nothing to say about `text`: names, units, HELP and TYPE follow the conventions.
fn assert_promtool_clean(what: &str, text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/ensure-promtool installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics on {what}: {said}\n{text}"
    );
}

/// The value of the one sample of `name` whose labels include `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("metrics parse as Prometheus text");
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == *v))
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// The `config_sha256` of `cfg`, as `validate` reports it.
fn sha_of(env: &TestEnv, cfg: &Path) -> String {
    env.run(cfg, &["validate", "--format", "json"]).json()["config_sha256"]
        .as_str()
        .unwrap()
        .to_owned()
}

// The binary's SIGTERM: the daemon runs on schedule, exports what it did and every
// process-wide series, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_metrics_move_and_sigterm_exits_0() {
    let env = TestEnv::new("daemon").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 30);",
    )
    .await;
    let cfg = env.config_named(
        "retention.toml",
        &config(
            &env,
            "sigterm",
            "schedule = \"*/1 * * * * *\"\nbatch_size = 10",
        ),
    );
    let mut d = ChildDaemon::start(&env, &cfg, &[], &[]).await;
    let port = d.port;
    wait_for(&env, "healthz", STARTUP_SECS, || async {
        get(port, "/healthz").await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    wait_for(&env, "readyz", STARTUP_SECS, || async {
        get(port, "/readyz").await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    // Catch-up runs the rule at once; then the 1-second schedule keeps firing.
    wait_for(&env, "three scheduled runs", PATIENCE_SECS, || async {
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE trigger = 'schedule' AND status = 'succeeded'").await >= 3
    })
    .await;
    // At most once: the scheduler starts before the catch-up, so on a 1-second schedule
    // the first tick can take the rule first and the catch-up then finds it busy and is
    // skipped. That it runs exactly once is checked where no tick competes with it
    // (`sighup_with_a_broken_file_keeps_the_old_config`, on a daily schedule).
    assert!(
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE trigger = 'catch_up'")
            .await
            <= 1,
        "catch-up runs at most once"
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
            .filter(|s| s.metric == name && s.labels.get("rule").is_none_or(|r| r == "sigterm"))
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
        text.contains("retentiond_overdue_records{rule=\"sigterm\"} 0"),
        "{text}"
    );
    // The process-wide series, in a process that runs this one daemon.
    assert_eq!(
        sample(
            &text,
            "retentiond_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "retentiond_config_info",
            &[("sha256", &sha_of(&env, &cfg))]
        ),
        Some(1.0),
        "{text}"
    );
    assert_promtool_clean("a daemon that has run", &text);

    d.signal("TERM");
    assert_eq!(d.wait_exit(&env, EXIT_SECS), 0);
}

// Stopping the daemon (its stop future: what SIGTERM resolves in the binary) during a
// run: the current batch finishes, the run is recorded interrupted, the daemon returns Ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_run_records_it_interrupted_and_returns_ok() {
    let env = TestEnv::new("daemonterm").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 50000);",
    )
    .await;
    let cfg = env.config_named(
        "retention.toml",
        &config(
            &env,
            "stop_mid_run",
            "schedule = \"0 0 3 * * *\"\nbatch_size = 2\nmin_batch_size = 1\nmax_batch_size = 2",
        ),
    );
    let d = InProcess::start(&cfg, true);
    wait_for(&env, "a running catch-up run", STARTUP_SECS, || async {
        env.scalar("SELECT count(*) FROM logs").await < 49_990
    })
    .await;
    let result = d.stop().await;
    assert!(
        result.is_ok(),
        "the daemon stops cleanly within the grace period: {result:?}"
    );
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

// The binary's SIGHUP and SIGINT: a reload of a broken file keeps the old config and
// `/readyz` says why; a reload of a good one clears it; SIGINT exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_file_keeps_the_old_config() {
    let env = TestEnv::new("daemonhup").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);",
    )
    .await;
    let good = config(
        &env,
        "sighup",
        "schedule = \"0 0 3 * * *\"\nbatch_size = 10",
    );
    let cfg = env.config_named("retention.toml", &good);
    let mut d = ChildDaemon::start(&env, &cfg, &[], &[]).await;
    let port = d.port;
    wait_for(&env, "readyz", STARTUP_SECS, || async {
        get(port, "/readyz").await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    // The rule never ran, so the daemon catches up at once, exactly once: on a daily
    // schedule no tick competes with it.
    let catch_ups = "SELECT count(*) FROM retentiond.runs WHERE trigger = 'catch_up' AND finished_at IS NOT NULL";
    wait_for(&env, "the catch-up run", PATIENCE_SECS, || async {
        env.scalar(catch_ups).await >= 1
    })
    .await;
    std::fs::write(
        &cfg,
        good.replace("retain = \"30d\"", "retain = \"30 days\""),
    )
    .unwrap();
    d.signal("HUP");
    wait_for(
        &env,
        "readyz to report the failed reload",
        PATIENCE_SECS,
        || async {
            get(port, "/readyz").await.is_some_and(|(s, body)| {
                s == 503
                    && body.contains("config reload failed")
                    && body.contains("rules[0].retain")
            })
        },
    )
    .await;
    assert_eq!(
        get(port, "/healthz").await.unwrap().0,
        200,
        "still alive on the old config"
    );
    assert!(d.running());
    std::fs::write(&cfg, &good).unwrap();
    d.signal("HUP");
    wait_for(
        &env,
        "readyz after a good reload",
        PATIENCE_SECS,
        || async { get(port, "/readyz").await.is_some_and(|(s, _)| s == 200) },
    )
    .await;
    d.signal("INT");
    assert_eq!(d.wait_exit(&env, EXIT_SECS), 0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE trigger = 'catch_up'")
            .await,
        1,
        "catch-up runs once: not again after a reload"
    );
}

// (#16 e) The preservation lock after a SIGHUP: a config that lowers a locked
// category's floor is refused, and the recorded config stays in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_config_that_weakens_a_locked_category_keeps_the_old_one() {
    let env = TestEnv::new("daemonlock").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '20 days' FROM generate_series(1, 4);",
    )
    .await;
    let good = config(
        &env,
        "locked",
        // Every 2 s: runs go on after the reload, under whichever config is in force.
        "schedule = \"*/2 * * * * *\"\nbatch_size = 10",
    )
    .replace(
        "description = \"logs\"\n",
        "description = \"logs\"\nmin_retain = \"30d\"\nlocked = true\n",
    );
    let cfg = env.config_named("retention.toml", &good);
    let old_sha = sha_of(&env, &cfg);
    let mut d = ChildDaemon::start(&env, &cfg, &[], &[]).await;
    let port = d.port;
    // The catch-up run records the locked config.
    wait_for(&env, "the catch-up run", PATIENCE_SECS, || async {
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE trigger = 'catch_up' AND finished_at IS NOT NULL").await >= 1
    })
    .await;
    let weaker = good
        .replace("min_retain = \"30d\"", "min_retain = \"7d\"")
        .replace("retain = \"30d\"\naction", "retain = \"7d\"\naction");
    std::fs::write(&cfg, &weaker).unwrap();
    d.signal("HUP");
    wait_for(
        &env,
        "readyz to report the refused reload",
        PATIENCE_SECS,
        || async {
            get(port, "/readyz").await.is_some_and(|(s, body)| {
                s == 503
                    && body.contains("preservation lock")
                    && body.contains("lowers its min_retain from 30d to 7d")
            })
        },
    )
    .await;
    let finished = "SELECT count(*) FROM retentiond.runs WHERE finished_at IS NOT NULL";
    let before = env.scalar(finished).await;
    wait_for(
        &env,
        "two runs after the refused reload",
        PATIENCE_SECS,
        || async { env.scalar(finished).await >= before + 2 },
    )
    .await;
    let metrics = get(port, "/metrics").await.unwrap().1;
    assert_eq!(
        sample(&metrics, "retentiond_config_info", &[("sha256", &old_sha)]),
        Some(1.0),
        "the locked config is still the one in force:\n{metrics}"
    );
    assert!(d.running());
    d.signal("INT");
    assert_eq!(d.wait_exit(&env, EXIT_SECS), 0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM logs").await,
        4,
        "rows of 20 days under a 30-day floor stay: the runs after the reload kept the old config"
    );
    assert_eq!(
        env.scalar(&format!(
            "SELECT count(*) FROM retentiond.runs WHERE config_sha256 <> '{old_sha}'"
        ))
        .await,
        0,
        "no run used the weakened config"
    );
}

/// Seconds the replica test runs: 8 in CI, `RETENTIOND_SOAK_SECS=60` for the soak.
fn soak_secs() -> u64 {
    std::env::var("RETENTIOND_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

/// Finished enforcing runs of `rule`, as `(started_at, finished_at)`, in order.
async fn runs_of(
    env: &TestEnv,
    rule: &str,
) -> Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    // Both ends are truncated to milliseconds: `finished_at` breaks a tie of `started_at`.
    sqlx::query_as(
        "SELECT r.started_at, r.finished_at FROM retentiond.runs r JOIN retentiond.rule_results x USING (run_id) \
         WHERE r.mode = 'enforce' AND r.finished_at IS NOT NULL AND x.rule = $1 ORDER BY r.started_at, r.finished_at",
    )
    .bind(rule)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_never_run_a_rule_at_the_same_time() {
    let env = TestEnv::new("replicas").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         CREATE TABLE logs2 (LIKE logs INCLUDING ALL);",
    )
    .await;
    // Two rules, so runs of different rules finish concurrently and must still form one chain.
    let text = config(
        &env,
        "replicas",
        "schedule = \"*/1 * * * * *\"\nbatch_size = 5\nmin_batch_size = 1\nmax_batch_size = 5",
    ) + "\n"
        + &rule("replicas-2", "replicas", "logs2");
    let rules = [("replicas", "logs"), ("replicas-2", "logs2")];
    let mut daemons = Vec::new();
    let mut cfgs = Vec::new();
    for i in 0..3 {
        let cfg = env.config_named(&format!("replica{i}.toml"), &text);
        daemons.push(InProcess::start(&cfg, true));
        cfgs.push(cfg);
    }
    // The soak starts once all three replicas are up: starting (connect, preflight, three
    // concurrent migrations) can take seconds on a loaded machine.
    for (i, d) in daemons.iter().enumerate() {
        let port = d.port;
        wait_for(
            &env,
            &format!("replica{i} to be ready"),
            STARTUP_SECS,
            || async { get(port, "/readyz").await.is_some_and(|(s, _)| s == 200) },
        )
        .await;
    }
    let soak = Duration::from_secs(soak_secs());
    let started = Instant::now();
    // Keep feeding due rows so runs take real time (60 batches of 5 rows at least) and
    // would overlap without the lock. A table is refilled once it is empty, so the feed
    // follows the sweep's pace: a fixed rate faster than a loaded machine deletes would
    // keep one run going for the whole soak, and leave the count of runs to chance.
    let mut fed = [0i64; 2];
    while started.elapsed() < soak {
        for (i, (_, table)) in rules.iter().enumerate() {
            if env.scalar(&format!("SELECT count(*) FROM {table}")).await == 0 {
                env.sql(&format!(
                    "INSERT INTO {table} (at) SELECT now() - interval '40 days' FROM generate_series(1, 300)"
                ))
                .await;
                fed[i] += 300;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The rules keep running: each reaches at least one run per 2 s of soak, and every row
    // fed is removed. How many ticks fit into a fixed time depends on the scheduler and the
    // machine's load, so this is a lower bound reached within a generous deadline, not a
    // count after a fixed sleep.
    let want = (soak_secs() / 2).max(2) as usize;
    let deadline = Instant::now() + Duration::from_secs(PATIENCE_SECS);
    loop {
        let mut state = Vec::new();
        for (rule_name, table) in rules {
            let ran = runs_of(&env, rule_name).await.len();
            let left = env.scalar(&format!("SELECT count(*) FROM {table}")).await;
            state.push((rule_name, ran, left));
        }
        if state.iter().all(|&(_, ran, left)| ran >= want && left == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{PATIENCE_SECS} s after the soak, the rules have not each run {want} times and \
             removed every row fed: (rule, runs, rows left) {state:?}\n{}",
            logs(&env)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed().as_secs();
    for result in futures::future::join_all(daemons.into_iter().map(InProcess::stop)).await {
        assert!(result.is_ok(), "a replica stopped cleanly: {result:?}");
    }
    let mut total = 0;
    for (i, (rule_name, _)) in rules.into_iter().enumerate() {
        // Every row fed was removed by a recorded run, once.
        assert_eq!(
            env.scalar(&format!(
                "SELECT coalesce(sum(deleted), 0)::bigint FROM retentiond.rule_results WHERE rule = '{rule_name}'"
            ))
            .await,
            fed[i],
            "{rule_name}: rows deleted by the recorded runs"
        );
        let runs = runs_of(&env, rule_name).await;
        assert!(
            runs.len() >= want,
            "{rule_name}: ticks ran: {} (at least {want})",
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
    let v = env.run(&cfgs[0], &["audit", "verify", "--format", "json"]);
    v.expect_code(0);
    // Every sealed run is in the chain: those above, plus any run a stop interrupted
    // before its first rule (sealed `interrupted`, without rule results).
    let sealed = env
        .scalar("SELECT count(*) FROM retentiond.runs WHERE hash IS NOT NULL")
        .await;
    assert!(sealed as usize >= total);
    assert_eq!(v.json()["records"].as_i64().unwrap(), sealed);
    eprintln!("replicas: {total} runs of 2 rules in {elapsed} s ({} s fed, {fed:?} rows) on 3 daemons, none overlapping, one intact chain", soak_secs());
}

// Issue 13, item 10: 30 rules on the same cron second, on one audit store, all run: no
// pool timeout, no "cannot read holds", every table emptied, every run recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_rules_on_the_same_second_all_run() {
    let env = TestEnv::new("thirty_rules").await;
    let mut sql = String::new();
    let mut rules = String::new();
    for i in 0..30 {
        sql += &format!(
            "CREATE TABLE logs_{i} (id serial PRIMARY KEY, account_id bigint, at timestamptz);
             INSERT INTO logs_{i} (account_id, at) SELECT g, now() - interval '40 days' FROM generate_series(1, 40) g;\n"
        );
        rules += &format!(
            "\n{}subject = {{ kind = \"account\", column = \"account_id\" }}\nschedule = \"*/5 * * * * *\"\n",
            rule(&format!("thirty-{i}"), "thirty", &format!("logs_{i}"))
        );
    }
    env.sql(&sql).await;
    let cfg = env.config_named(
        "retention.toml",
        &(head(
            &env,
            "thirty",
            "batch_size = 3\nmin_batch_size = 1\nmax_batch_size = 50",
        ) + &rules),
    );
    env.run(&cfg, &["migrate"]).expect_code(0);
    let d = InProcess::start(&cfg, true);
    wait_for(&env, "every table emptied", 120, || async {
        let mut left = 0;
        for i in 0..30 {
            left += env.scalar(&format!("SELECT count(*) FROM logs_{i}")).await;
        }
        left == 0
    })
    .await;
    wait_for(&env, "a succeeded run of every rule", 60, || async {
        env.scalar(
            "SELECT count(DISTINCT x.rule) FROM retentiond.rule_results x JOIN retentiond.runs r USING (run_id) WHERE x.status = 'succeeded' AND r.hash IS NOT NULL",
        )
        .await
            == 30
    })
    .await;
    let result = d.stop().await;
    assert!(result.is_ok(), "the daemon stopped cleanly: {result:?}");
    // The whole log, not only its end (`logs`).
    let log = std::fs::read_to_string(log_of(&cfg)).unwrap();
    // It is this daemon's log, runs included: what it lacks, the daemon did not say.
    assert!(
        log.contains("retentiond is running") && log.contains("run finished"),
        "{log}"
    );
    for bad in ["PoolTimedOut", "pool timed out", "cannot read holds"] {
        assert!(!log.contains(bad), "`{bad}` in the daemon log:\n{log}");
    }
    assert_eq!(
        env.scalar(
            "SELECT count(*) FROM retentiond.rule_results WHERE status IN ('failed', 'partial')"
        )
        .await,
        0,
        "no rule failed\n{}",
        logs(&env)
    );
    env.run(&cfg, &["audit", "verify"]).expect_code(0);
}

// Issue 13, item 7: a rule whose conformance check fails does not export
// `overdue = 0`: the overdue gauge stays absent, and the failure is exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_conformance_check_never_exports_zero_overdue() {
    let env = TestEnv::new("conf_fail").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 5);",
    )
    .await;
    // The filter compiles (the preflight's EXPLAIN passes) but fails on every row.
    let text = config(
        &env,
        "conf_fail",
        "schedule = \"0 0 3 * * *\"\nbatch_size = 10",
    ) + "filter = \"1 / (id - id) = 0\"\n";
    let cfg = env.config_named("retention.toml", &text);
    let d = InProcess::start(&cfg, true);
    let port = d.port;
    wait_for(&env, "the failure exported", PATIENCE_SECS, || async {
        get(port, "/metrics").await.is_some_and(|(_, t)| {
            t.contains("retentiond_conformance_check_ok{rule=\"conf_fail\"} 0")
        })
    })
    .await;
    let (_, text) = get(port, "/metrics").await.expect("metrics");
    assert!(
        !text.contains("retentiond_overdue_records{rule=\"conf_fail\"}"),
        "no overdue figure from a check that failed:\n{text}"
    );
    assert!(
        text.contains("retentiond_conformance_failures_total{rule=\"conf_fail\"}"),
        "{text}"
    );
    assert_eq!(env.scalar("SELECT count(*) FROM logs").await, 5);
    let result = d.stop().await;
    assert!(result.is_ok(), "the daemon stopped cleanly: {result:?}");
}

// Issue 13, item 11: one store down stops only its own rules. The daemon starts with a
// Postgres store nobody listens on, runs the other rule on schedule, records each run of
// the broken rule as failed with the reason, and `/readyz` names the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_stops_only_its_own_rules() {
    let env = TestEnv::new("store_down").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 30);",
    )
    .await;
    // A Unix socket in a directory that does not exist: no other test can bring up a
    // server there (a free TCP port could be taken by one).
    std::fs::write(
        env.dir.path().join("down.url"),
        format!(
            "postgres://postgres@localhost/postgres?host={}",
            env.dir.path().join("no-such-dir").display()
        ),
    )
    .unwrap();
    let cfg = env.config_named(
        "retention.toml",
        &(config(
            &env,
            "store_down",
            "schedule = \"*/1 * * * * *\"\nbatch_size = 10",
        ) + &format!(
            "\n[stores.down]\nkind = \"postgres\"\nurl_file = \"{}\"\n\n[[rules]]\nname = \"far\"\ncategory = \"store_down\"\nstore = \"down\"\ntable = \"logs\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"delete\"\n",
            env.dir.path().join("down.url").display()
        )),
    );
    let d = InProcess::start(&cfg, true);
    let port = d.port;
    wait_for(
        &env,
        "readyz to name the store that is down",
        STARTUP_SECS,
        || async {
            get(port, "/readyz")
                .await
                .is_some_and(|(s, body)| s == 503 && body.contains("store down is not reachable"))
        },
    )
    .await;
    wait_for(
        &env,
        "the healthy rule to run on schedule",
        PATIENCE_SECS,
        || async {
            env.scalar(
                "SELECT count(*) FROM retentiond.runs r JOIN retentiond.rule_results x USING (run_id)
                 WHERE x.rule = 'store_down' AND r.trigger = 'schedule' AND x.status = 'succeeded'",
            )
            .await
                >= 2
        },
    )
    .await;
    assert_eq!(env.scalar("SELECT count(*) FROM logs").await, 0);
    wait_for(
        &env,
        "the broken rule's runs recorded as failed",
        PATIENCE_SECS,
        || async {
            env.scalar(
                "SELECT count(*) FROM retentiond.rule_results
                 WHERE rule = 'far' AND status = 'failed'
                   AND errors::text LIKE '%store `down` is not reachable%'",
            )
            .await
                >= 2
        },
    )
    .await;
    assert!(
        get(port, "/healthz").await.is_some_and(|(s, _)| s == 200),
        "the daemon keeps running"
    );
    let result = d.stop().await;
    assert!(result.is_ok(), "the daemon stopped cleanly: {result:?}");
}

// Issue 13, item 11: the partition list is read at each run. A leaf attached after the
// daemon started, full of expired rows, is swept by the next scheduled run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_attached_after_start_is_swept() {
    let env = TestEnv::new("late_leaf").await;
    env.sql(
        "CREATE TABLE logs (id bigserial, at timestamptz NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE INDEX ON logs (at);
         CREATE TABLE logs_now PARTITION OF logs FOR VALUES FROM (now() - interval '20 days') TO (now() + interval '20 days');
         INSERT INTO logs (at) SELECT now() - interval '1 day' FROM generate_series(1, 10);",
    )
    .await;
    let cfg = env.config_named(
        "retention.toml",
        &config(
            &env,
            "late_leaf",
            "schedule = \"*/1 * * * * *\"\nbatch_size = 10",
        ),
    );
    let d = InProcess::start(&cfg, true);
    let port = d.port;
    wait_for(&env, "readyz", STARTUP_SECS, || async {
        get(port, "/readyz").await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    wait_for(&env, "two scheduled runs", PATIENCE_SECS, || async {
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE trigger = 'schedule' AND status = 'succeeded'")
            .await
            >= 2
    })
    .await;
    env.sql(
        "CREATE TABLE logs_old (LIKE logs INCLUDING DEFAULTS);
         INSERT INTO logs_old (at) SELECT now() - interval '40 days' FROM generate_series(1, 25);
         ALTER TABLE logs ATTACH PARTITION logs_old FOR VALUES FROM (now() - interval '60 days') TO (now() - interval '25 days');",
    )
    .await;
    wait_for(
        &env,
        "the new leaf's expired rows to go",
        PATIENCE_SECS,
        || async { env.scalar("SELECT count(*) FROM logs_old").await == 0 },
    )
    .await;
    assert_eq!(
        env.scalar("SELECT count(*) FROM logs_now").await,
        10,
        "young rows kept"
    );
    let result = d.stop().await;
    assert!(result.is_ok(), "the daemon stopped cleanly: {result:?}");
}

// Issue 19: a daemon exports every series an alert needs from its first scrape, before
// any rule has run; conformance is counted on its own schedule between runs; the output
// passes `promtool check metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_daemon_exports_every_alerting_series_from_the_first_scrape() {
    let env = TestEnv::new("first_scrape").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 12);",
    )
    .await;
    // The rule runs at 03:00 on 1 January and is not caught up: nothing runs here.
    let cfg = env.config_named(
        "retention.toml",
        &config(
            &env,
            "first_scrape",
            "schedule = \"0 0 3 1 1 *\"\nbatch_size = 10\nconformance_schedule = \"*/2 * * * * *\"",
        ),
    );
    let d = InProcess::start(&cfg, false);
    let port = d.port;
    // The first answer of /metrics.
    let deadline = Instant::now() + Duration::from_secs(STARTUP_SECS);
    let text = loop {
        if let Some((200, body)) = get(port, "/metrics").await {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no /metrics within {STARTUP_SECS} s\n{}",
            logs(&env)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rule = [("rule", "first_scrape")];
    assert_eq!(
        sample(
            &text,
            "retentiond_rule_last_success_timestamp_seconds",
            &rule
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "retentiond_rule_never_succeeded", &rule),
        Some(1.0),
        "{text}"
    );
    let next =
        sample(&text, "retentiond_rule_next_run_timestamp_seconds", &rule).expect("next run");
    assert!(next > chrono::Utc::now().timestamp() as f64, "{text}");
    assert_eq!(
        sample(
            &text,
            "retentiond_rule_info",
            &[
                ("rule", "first_scrape"),
                ("category", "first_scrape"),
                ("store", "first_scrape"),
                ("action", "delete"),
                ("schedule", "0 0 3 1 1 *")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "retentiond_records_removed_total",
            &[("rule", "first_scrape"), ("action", "delete")]
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "retentiond_rule_failures_total", &rule),
        Some(0.0),
        "{text}"
    );
    // Every daemon of this process sets it; that one of its own does is checked in
    // `schedules_fire_metrics_move_and_sigterm_exits_0`.
    assert_eq!(
        sample(
            &text,
            "retentiond_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{text}"
    );
    // This daemon's config: its hash is this test's alone (the config names its files).
    assert_eq!(
        sample(
            &text,
            "retentiond_config_info",
            &[("sha256", &sha_of(&env, &cfg))]
        ),
        Some(1.0),
        "{text}"
    );
    assert_promtool_clean("a daemon's first scrape", &text);
    // The store probe and the conformance check at start follow within seconds.
    wait_for(
        &env,
        "store_up and the overdue count from the check at start",
        PATIENCE_SECS,
        || async {
            get(port, "/metrics").await.is_some_and(|(_, t)| {
                let store = [("store", "first_scrape")];
                sample(&t, "retentiond_store_up", &store) == Some(1.0)
                    && sample(&t, "retentiond_overdue_records", &rule) == Some(12.0)
                    && sample(&t, "retentiond_clock_skew_seconds", &store).is_some()
            })
        },
    )
    .await;
    // More rows fall due; no rule runs; the conformance schedule counts them.
    env.sql("INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 5)")
        .await;
    wait_for(
        &env,
        "the scheduled conformance check to count 17",
        PATIENCE_SECS,
        || async {
            get(port, "/metrics")
                .await
                .is_some_and(|(_, t)| sample(&t, "retentiond_overdue_records", &rule) == Some(17.0))
        },
    )
    .await;
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.runs").await,
        0,
        "nothing ran"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM logs").await,
        17,
        "the check removes nothing"
    );
    let result = d.stop().await;
    assert!(result.is_ok(), "the daemon stopped cleanly: {result:?}");
}

// Issue 19, item 4: with this host's clock an hour ahead of the database's (faketime),
// the preflight and the daemon warn, `/metrics` exports the skew, and relative times
// (`--as-of +7d`) count from the database clock, as cutoffs do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_host_clock_is_reported_and_does_not_move_cutoffs() {
    let env = TestEnv::new("skew").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 3);",
    )
    .await;
    let cfg = env.config_named(
        "retention.toml",
        &config(&env, "skew", "schedule = \"0 0 3 * * *\"\nbatch_size = 10"),
    );
    let skewed = |args: &[&str]| {
        let out = Command::new("faketime")
            .args(["-f", "+1h", env!("CARGO_BIN_EXE_retentiond"), "--config"])
            .arg(&cfg)
            .args(args)
            .envs(env.env.iter().cloned())
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("RETENTIOND_LOG", "warn")
            .output()
            .expect("faketime (scripts/ensure-promtool installs it)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, stderr) = skewed(&["validate"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("this host's clock is 36") && stderr.contains("s off the database's"),
        "the preflight warns: {stderr}"
    );
    // The cutoff of a dry-run as of +7d is the same with and without the skew.
    let cutoff = |json: &str| {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        chrono::DateTime::parse_from_rfc3339(v["rules"][0]["cutoff"].as_str().unwrap()).unwrap()
    };
    let (code, out, stderr) = skewed(&["plan", "--as-of", "+7d", "--format", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let with_skew = cutoff(&out);
    let plain = env.run(&cfg, &["plan", "--as-of", "+7d", "--format", "json"]);
    plain.expect_code(0);
    let without = cutoff(&plain.stdout);
    assert!(
        (with_skew - without).num_seconds().abs() < 60,
        "--as-of +7d counts from the database clock: {with_skew} vs {without}"
    );
    // The daemon exports the skew.
    // libfaketime preloaded into the daemon itself (the `faketime` wrapper would take
    // the SIGTERM meant for it).
    let lib = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime (scripts/ensure-promtool installs it)");
    let mut d = ChildDaemon::start(
        &env,
        &cfg,
        &["--no-catch-up"],
        &[
            ("LD_PRELOAD", lib.as_os_str()),
            ("FAKETIME", OsStr::new("+1h")),
            ("FAKETIME_DONT_FAKE_MONOTONIC", OsStr::new("1")),
        ],
    )
    .await;
    let port = d.port;
    wait_for(&env, "the skew on /metrics", STARTUP_SECS, || async {
        get(port, "/metrics").await.is_some_and(|(_, t)| {
            sample(&t, "retentiond_clock_skew_seconds", &[("store", "skew")])
                .is_some_and(|s| (s - 3600.0).abs() < 60.0)
        })
    })
    .await;
    assert!(
        std::fs::read_to_string(log_of(&cfg))
            .unwrap()
            .contains("s off the database's"),
        "the daemon warns\n{}",
        logs(&env)
    );
    d.signal("TERM");
    assert_eq!(d.wait_exit(&env, EXIT_SECS), 0);
}

// Issue 14: the daemon takes its listener, its shutdown and its reloads, so it runs in
// this test process on port 0 and is reloaded and stopped without a signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_in_process_and_reloads_and_stops_without_signals() {
    let env = TestEnv::new("in_process").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 9);",
    )
    .await;
    let good = config(
        &env,
        "in_process",
        "schedule = \"0 0 3 1 1 *\"\nbatch_size = 10",
    );
    let cfg = env.config_named("retention.toml", &good);
    let d = InProcess::start(&cfg, true);
    let port = d.port;
    wait_for(&env, "readyz", STARTUP_SECS, || async {
        get(port, "/readyz").await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    // Catch-up runs the rule, which never succeeded.
    wait_for(&env, "the catch-up run", PATIENCE_SECS, || async {
        env.scalar("SELECT count(*) FROM logs").await == 0
    })
    .await;
    // A broken file, then a reload: the old config stays and /readyz says why.
    std::fs::write(&cfg, "[daemon\n").unwrap();
    d.reload();
    wait_for(
        &env,
        "readyz to report the failed reload",
        PATIENCE_SECS,
        || async {
            get(port, "/readyz")
                .await
                .is_some_and(|(s, body)| s == 503 && body.contains("config reload failed"))
        },
    )
    .await;
    assert_eq!(
        get(port, "/healthz").await.map(|(s, _)| s),
        Some(200),
        "still alive on the old config"
    );
    // The good file again: the next reload clears it.
    std::fs::write(&cfg, &good).unwrap();
    d.reload();
    wait_for(
        &env,
        "readyz after a good reload",
        PATIENCE_SECS,
        || async { get(port, "/readyz").await.is_some_and(|(s, _)| s == 200) },
    )
    .await;
    let result = d.stop().await;
    assert!(result.is_ok(), "the daemon stopped cleanly: {result:?}");
    assert!(
        get(port, "/healthz").await.is_none(),
        "the listener is closed after shutdown"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE trigger = 'catch_up' AND status = 'succeeded'")
            .await,
        1
    );
}
