//! What auditors read: reports (JSON schema, Markdown, HTML in a real browser),
//! conformance, the policy table, erasure.

use crate::common::{n, rule, TestEnv};

const RULES: &str = "[categories.logs]\ndescription = \"API request logs\"\nlegal_basis = \"Art. 6(1)(f)\"\n\n[[rules]]\nname = \"logs\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"logs\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"delete\"\nsubject = { kind = \"account\", column = \"account_id\" }\n";

async fn env_with_logs(name: &str) -> (TestEnv, std::path::PathBuf) {
    let env = TestEnv::new(name).await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, account_id bigint, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (account_id, at) VALUES (1, now() - interval '40 days'), (2, now() - interval '35 days'),
           (3, now() - interval '31 days'), (4, now() - interval '50 days'), (5, now() - interval '1 day');",
    )
    .await;
    let cfg = env.config(RULES);
    (env, cfg)
}

#[tokio::test]
async fn report_json_matches_the_documented_schema() {
    let (env, cfg) = env_with_logs("schema").await;
    let printed = env.run(&cfg, &["sweep", "--format", "json"]);
    printed.expect_code(0);
    let printed = printed.json();
    let schema_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let validator = jsonschema::JSONSchema::compile(&schema).expect("schema compiles");
    let shown = env
        .run(&cfg, &["report", "show", "latest", "--format", "json"])
        .json();
    for doc in [&printed, &shown] {
        if let Err(errors) = validator.validate(doc) {
            let msgs: Vec<String> = errors
                .map(|e| format!("{} at {}", e, e.instance_path))
                .collect();
            panic!("report does not match docs/report.schema.json: {msgs:?}\n{doc}");
        }
    }
    // SPEC §8 contract names.
    for k in [
        "run_id",
        "trigger",
        "mode",
        "status",
        "started_at",
        "finished_at",
        "config_sha256",
        "rules",
    ] {
        assert!(printed.get(k).is_some(), "missing {k}");
    }
    for k in [
        "rule",
        "category",
        "store",
        "cutoff",
        "matched",
        "deleted",
        "anonymised",
        "held",
        "failed",
        "bytes",
        "duration_ms",
        "samples",
        "errors",
    ] {
        assert!(
            rule(&printed, "logs").get(k).is_some(),
            "missing rules[].{k}"
        );
    }
    assert_eq!(printed["run_id"], shown["run_id"]);
    // Sample keys may be personal data: with `[audit] samples = false` they are kept
    // nowhere, printed into no pipe (stdout here is one), and shown only on request.
    env.sql("INSERT INTO logs (account_id, at) VALUES (9, now() - interval '40 days')")
        .await;
    let key = env
        .scalar("SELECT id::bigint FROM logs WHERE account_id = 9")
        .await
        .to_string();
    let dry = env.run(&cfg, &["sweep", "--dry-run", "--format", "json"]);
    assert_eq!(
        rule(&dry.json(), "logs")["samples"],
        serde_json::json!([]),
        "no samples on stdout by default"
    );
    let text = env.run(&cfg, &["sweep", "--dry-run"]);
    assert!(
        text.stdout.contains("sample keys withheld") && !text.stdout.contains("sample keys:"),
        "{}",
        text.stdout
    );
    let asked = env
        .run(
            &cfg,
            &["sweep", "--dry-run", "--format", "json", "--show-samples"],
        )
        .json();
    assert_eq!(
        rule(&asked, "logs")["samples"],
        serde_json::json!([key]),
        "--show-samples shows the operator the sample"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.rule_results WHERE samples <> '[]'")
            .await,
        0,
        "the trail keeps no samples unless [audit] samples = true"
    );
    // Copies in report_dir.
    let dir = env.dir.path().join("reports");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for ext in ["json", "md", "html"] {
        assert!(
            files.iter().any(|f| f.ends_with(ext)),
            "no .{ext} copy in {files:?}"
        );
    }
    let list = env
        .run(
            &cfg,
            &[
                "report",
                "list",
                "--format",
                "json",
                "--rule",
                "logs",
                "--status",
                "succeeded",
            ],
        )
        .json();
    // The enforcing sweep and the three dry-runs, newest first.
    let modes: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, vec!["dry_run", "dry_run", "dry_run", "enforce"]);
    let md = env.run(&cfg, &["report", "show", "latest", "--format", "markdown"]);
    assert!(
        md.stdout
            .contains("| logs | logs | public.logs | delete | succeeded |"),
        "{}",
        md.stdout
    );
}

#[tokio::test]
async fn html_report_renders_in_a_real_browser() {
    let (env, cfg) = env_with_logs("html").await;
    for _ in 0..3 {
        env.sql("INSERT INTO logs (account_id, at) SELECT g, now() - interval '40 days' FROM generate_series(1, 7) g").await;
        env.run(&cfg, &["sweep"]).expect_code(0);
    }
    let html = env.run(&cfg, &["report", "show", "latest", "--format", "html"]);
    html.expect_code(0);
    let page = html.stdout;
    assert!(
        page.contains("<svg") && page.contains("Records removed per rule"),
        "inline chart"
    );
    assert!(
        !page.contains("<script")
            && !page.contains("http://")
            && !page.contains("https://")
            && !page.contains("<link"),
        "self-contained"
    );
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&out_dir).unwrap();
    let file = out_dir.join("report.html");
    std::fs::write(&file, &page).unwrap();
    screenshot(&file, 1280, &out_dir.join("report.png"));
}

/// Renders `file` in Debian's headless Chromium at `width` px and checks a real PNG was
/// written to `shot` (kept as a test artifact).
fn screenshot(file: &std::path::Path, width: u32, shot: &std::path::Path) {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(chromium) = chromium else {
        panic!("chromium is not installed: scripts/test installs Debian's chromium package");
    };
    let _ = std::fs::remove_file(shot);
    let profile = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--window-size={width},1400"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", file.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "chromium failed");
    let png = std::fs::read(shot).expect("screenshot written");
    assert!(
        png.len() > 10_000 && png.starts_with(b"\x89PNG"),
        "a real screenshot ({} bytes)",
        png.len()
    );
}

// #17 item 6: the report site an auditor opens: runs newest first, each linking to its
// page; removed per category per day; the latest conformance; the last `audit verify`.
#[tokio::test]
async fn the_report_site_links_every_run_and_shows_conformance_and_the_last_verify() {
    let (env, cfg) = env_with_logs("site").await;
    env.run(&cfg, &["sweep", "--dry-run"]).expect_code(0);
    env.run(&cfg, &["sweep"]).expect_code(0);
    let dir = env.dir.path().join("reports");
    let index = dir.join("index.html");
    let page = std::fs::read_to_string(&index).expect("index.html written after a run");
    assert!(
        page.contains("No <code>audit verify</code> result yet"),
        "{page}"
    );
    env.run(&cfg, &["conformance"]).expect_code(0);
    env.run(&cfg, &["audit", "verify"]).expect_code(0);
    let page = std::fs::read_to_string(&index).unwrap();
    let runs: Vec<String> =
        sqlx::query_scalar("SELECT run_id::text FROM retentiond.runs ORDER BY id DESC")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(runs.len(), 2);
    let positions: Vec<usize> = runs
        .iter()
        .map(|id| {
            let name = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .find(|n| n.contains(id.as_str()) && n.ends_with(".html"))
                .unwrap_or_else(|| panic!("the run page of {id}"));
            page.find(&format!("href=\"{name}\""))
                .unwrap_or_else(|| panic!("the index links {name}"))
        })
        .collect();
    assert!(positions[0] < positions[1], "newest first");
    assert!(
        page.contains("<svg")
            && page.contains("<title>")
            && page.contains("logs</li>")
            && page.contains(": 4 logs</title>"),
        "the chart has the category"
    );
    assert!(
        page.contains("badge ok\">verified</span> 2 records"),
        "the last verify: {page}"
    );
    assert!(
        page.contains("<td>logs</td>") && page.contains("badge ok\">0</span>"),
        "conformance per rule: {page}"
    );
    assert!(
        !page.contains("<script")
            && !page.contains("http://")
            && !page.contains("https://")
            && !page.contains("<link"),
        "self-contained"
    );
    assert!(
        page.contains("name=\"viewport\"") && page.contains("@media (max-width"),
        "made for phones too"
    );
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&out_dir).unwrap();
    let file = out_dir.join("index.html");
    std::fs::write(&file, &page).unwrap();
    screenshot(&file, 1280, &out_dir.join("site-1280.png"));
    screenshot(&file, 390, &out_dir.join("site-390.png"));
}

#[tokio::test]
async fn conformance_goes_from_4_to_0_across_a_sweep() {
    let (env, cfg) = env_with_logs("conformance").await;
    let before = env.run(&cfg, &["conformance", "--format", "json"]);
    before.expect_code(4);
    let j = before.json();
    let r = &j["rules"][0];
    assert_eq!(r["overdue"], 4);
    // 50 days old with a 30-day retain: 20 days past the cutoff.
    let past = r["oldest_overdue_age_seconds"].as_f64().unwrap();
    assert!(
        (19.9 * 86_400.0..20.1 * 86_400.0).contains(&past),
        "{past} s past the cutoff"
    );
    env.run(
        &cfg,
        &["hold", "add", "--subject", "account:4", "--reason", "case"],
    )
    .expect_code(0);
    env.run(&cfg, &["sweep"]).expect_code(0);
    let after = env.run(&cfg, &["conformance", "--format", "json"]);
    after.expect_code(0);
    let r = &after.json()["rules"][0];
    assert_eq!(r["overdue"], 0);
    assert_eq!(
        r["held"], 1,
        "held records are counted separately, not as violations"
    );
}

#[tokio::test]
async fn erase_respects_holds_and_removes_linked_rows() {
    let (env, cfg) = env_with_logs("erase").await;
    env.sql("INSERT INTO logs (account_id, at) VALUES (1, now() - interval '1 day'), (1, NULL), (2, now());").await;
    env.run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "account:2",
            "--reason",
            "litigation",
        ],
    )
    .expect_code(0);
    let dry = env.run(
        &cfg,
        &[
            "erase",
            "--subject",
            "account:1",
            "--dry-run",
            "--format",
            "json",
        ],
    );
    dry.expect_code(0);
    assert_eq!(
        n(&dry.json(), "logs", "matched"),
        3,
        "every age, NULL included"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM logs WHERE account_id = 1")
            .await,
        3
    );
    let e = env.run(
        &cfg,
        &["erase", "--subject", "account:1", "--format", "json"],
    );
    e.expect_code(0);
    assert_eq!(n(&e.json(), "logs", "deleted"), 3);
    assert_eq!(
        env.scalar("SELECT count(*) FROM logs WHERE account_id = 1")
            .await,
        0
    );
    let held = env
        .run(
            &cfg,
            &["erase", "--subject", "account:2", "--format", "json"],
        )
        .json();
    assert_eq!(n(&held, "logs", "deleted"), 0);
    assert_eq!(n(&held, "logs", "held"), 2);
    assert_eq!(
        env.scalar("SELECT count(*) FROM logs WHERE account_id = 2")
            .await,
        2
    );
    env.run(&cfg, &["erase", "--subject", "nobody"])
        .expect_code(2);
    env.run(&cfg, &["erase", "--subject", "user:1"])
        .expect_code(2);
}

#[tokio::test]
async fn policy_lists_every_category_of_the_shipped_config() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("retention.toml");
    let out = crate::common::run_bin(&shipped, &["policy", "--format", "markdown"], &[]);
    out.expect_code(0);
    let config = retentiond::config::Config::load(&shipped).unwrap();
    for (name, c) in &config.categories {
        assert!(
            out.stdout.contains(&format!("| {name} |")),
            "category {name} missing:\n{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(&c.legal_basis.replace('|', "\\|")),
            "legal basis of {name}"
        );
    }
    // The seed policies' promises, in the words a policy would quote.
    for promise in [
        "| request_logs | API request logs: method, path, status, latency, key id, IP, user agent | public.request_logs | up to 30 days | deleted |",
        "| api_interactions | API interactions with message content (prompts and responses), model, token counts, IP, user agent | public.api_interactions | up to 90 days | deleted |",
        "up to 90 days | deleted, with the files it points to",
        "| up to 7 years after `issued_on` | deleted |",
        "kept at least 7 years",
        "up to 30 days after `closed_at` | anonymised: display_name (null), last_ip (truncate_ip); pseudonymised (still personal data): email (hash)",
        "up to 30 days | anonymised: ip (truncate_ip), user_agent (null); pseudonymised (still personal data): api_key_id (hash)",
        "up to 1 year after `resolved_at` | deleted",
        "up to 30 days after `deleted_at` | deleted",
        "unfinished uploads aborted after 7 days",
    ] {
        assert!(out.stdout.contains(promise), "missing `{promise}` in:\n{}", out.stdout);
    }
    let html = crate::common::run_bin(&shipped, &["policy", "--format", "html"], &[]);
    assert!(html.stdout.contains("<table>") && html.stdout.contains("kept at least 7 years"));
}

#[tokio::test]
async fn json_logs_carry_run_id_and_rule_on_every_line_of_a_run() {
    let (env, cfg) = env_with_logs("jsonlogs").await;
    let out = env.run(
        &cfg,
        &[
            "--log-format",
            "json",
            "--log-level",
            "retentiond=debug",
            "sweep",
        ],
    );
    out.expect_code(0);
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let in_rule: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.to_string().contains("\"name\":\"rule\""))
        .collect();
    assert!(!in_rule.is_empty(), "rule lines logged:\n{}", out.stderr);
    for l in in_rule {
        let spans = l["spans"].as_array().unwrap();
        assert!(
            spans.iter().any(|s| s["run_id"].is_string()),
            "no run_id: {l}"
        );
        assert!(spans.iter().any(|s| s["rule"] == "logs"), "no rule: {l}");
    }
}

// Issue 13, item 6: a keyed hash is pseudonymisation, not anonymisation: `policy` says so
// per column.
#[tokio::test]
async fn policy_calls_hashed_columns_pseudonymised() {
    let env = crate::common::TestEnv::new("pseudonymised").await;
    let cfg = env.config(
        "[categories.usage]\ndescription = \"usage\"\n\n[[rules]]\nname = \"usage\"\ncategory = \"usage\"\nstore = \"app\"\ntable = \"usage\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"anonymise\"\nanonymise = { ip = \"null\", key_id = \"hash\" }\n",
    );
    let out = env.run(&cfg, &["policy"]);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("anonymised: ip (null); pseudonymised (still personal data): key_id (hash)"),
        "{}",
        out.stdout
    );
}
