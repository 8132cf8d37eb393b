//! Malformed configs: each exits 2, naming file, line, column and field, before any store
//! is touched (the store URL points nowhere reachable, so touching it would fail differently).

use crate::common::run_bin;

const BASE: &str = r#"[audit]
store = "app"

[stores.app]
kind = "postgres"
url_env = "RETENTIOND_TEST_UNREACHABLE_URL"

[stores.assets]
kind = "s3"
bucket = "b"

[categories.logs]
description = "logs"

[categories.invoices]
min_retain = "7y"
max_retain = "10y"
"#;

// BASE has 17 lines; the first line of each case is line 18.
const FIRST: usize = 18;

fn rule(body: &str) -> String {
    format!("{BASE}[[rules]]\n{body}")
}

const GOOD_RULE: &str = "name = \"r\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"public.logs\"\nage_column = \"created_at\"\nretain = \"30d\"\naction = \"delete\"\n";

/// (description, config text, expected line, expected field, words the message must contain)
fn cases() -> Vec<(&'static str, String, usize, &'static str, &'static str)> {
    let with = |from: &str, to: &str| rule(&GOOD_RULE.replace(from, to));
    vec![
        ("syntax error", format!("{BASE}[[rules]\nname = \"x\"\n"), FIRST, "rules", "expected"),
        ("unterminated string", format!("{BASE}[daemon]\nschedule = \"0 0 3 * * *\n"), FIRST + 1, "schedule", ""),
        ("unknown top-level key", format!("{BASE}[deamon]\nschedule = \"0 0 3 * * *\"\n"), FIRST, "deamon", "unknown field"),
        ("unknown rule key", rule(&format!("{GOOD_RULE}retian = \"30d\"\n")), FIRST + 8, "rules[0].retian", "unknown field"),
        ("wrong type", format!("{BASE}[daemon]\nbatch_size = \"many\"\n"), FIRST + 1, "daemon.batch_size", "invalid type"),
        ("negative batch", format!("{BASE}[daemon]\nbatch_size = -5\n"), FIRST + 1, "daemon.batch_size", ""),
        ("zero batch", format!("{BASE}[daemon]\nbatch_size = 0\n"), FIRST + 1, "daemon.batch_size", "at least 1"),
        ("bad duration", with("\"30d\"", "\"30 days\""), FIRST + 6, "rules[0].retain", "invalid duration"),
        ("bad duration unit", with("\"30d\"", "\"30x\""), FIRST + 6, "rules[0].retain", "ms, s, m, h, d, w, mo, y"),
        ("calendar batch duration", format!("{BASE}[daemon]\nmax_batch_duration = \"1mo\"\n"), FIRST + 1, "daemon.max_batch_duration", "calendar"),
        ("bad cron", rule(&format!("{GOOD_RULE}schedule = \"0 3 * * *\"\n")), FIRST + 8, "rules[0].schedule", "six fields"),
        ("bad default cron", format!("{BASE}[daemon]\nschedule = \"whenever\"\n"), FIRST + 1, "daemon.schedule", "cron"),
        ("unknown store", with("store = \"app\"", "store = \"warehouse\""), FIRST + 3, "rules[0].store", "unknown store `warehouse`"),
        ("table rule on s3 store", with("store = \"app\"", "store = \"assets\""), FIRST + 3, "rules[0].store", "not a postgres store"),
        ("unknown category", with("\"logs\"", "\"lgos\""), FIRST + 2, "rules[0].category", "unknown category `lgos`"),
        ("floor violation", rule(&GOOD_RULE.replace("\"logs\"", "\"invoices\"").replace("\"30d\"", "\"1y\"")), FIRST + 6, "rules[0].retain", "legal floor"),
        ("floor violation by days", rule(&GOOD_RULE.replace("\"logs\"", "\"invoices\"").replace("\"30d\"", "\"2556d\"")), FIRST + 6, "rules[0].retain", "legal floor"),
        ("ceiling violation", rule(&GOOD_RULE.replace("\"logs\"", "\"invoices\"").replace("\"30d\"", "\"11y\"")), FIRST + 6, "rules[0].retain", "ceiling"),
        ("hostile table", with("\"public.logs\"", "\"public.logs; DROP TABLE accounts\""), FIRST + 4, "rules[0].table", "not a valid SQL identifier"),
        ("quote in table", with("\"public.logs\"", "'lo\"gs'"), FIRST + 4, "rules[0].table", "not a valid SQL identifier"),
        ("three-part table", with("\"public.logs\"", "\"db.public.logs\""), FIRST + 4, "rules[0].table", "schema.table"),
        ("hostile column", with("\"created_at\"", "\"created_at) OR (1=1\""), FIRST + 5, "rules[0].age_column", "not a valid SQL identifier"),
        ("semicolon filter", rule(&format!("{GOOD_RULE}filter = \"true; DELETE FROM accounts\"\n")), FIRST + 8, "rules[0].filter", "`;` is not allowed"),
        ("filter breaking out of its parentheses", rule(&format!("{GOOD_RULE}filter = \"status='resolved') OR (true\"\n")), FIRST + 8, "rules[0].filter", "found `)` after `status='resolved'`"),
        ("filter with a line comment", rule(&format!("{GOOD_RULE}filter = \"a = 1 -- c\"\n")), FIRST + 8, "rules[0].filter", "comments are not allowed"),
        ("filter with a block comment", rule(&format!("{GOOD_RULE}filter = \"a = 1 /* c */\"\n")), FIRST + 8, "rules[0].filter", "comments are not allowed"),
        ("filter that writes", rule(&format!("{GOOD_RULE}filter = \"id = nextval('s')\"\n")), FIRST + 8, "rules[0].filter", "may only read"),
        ("filter with a locking subquery", rule(&format!("{GOOD_RULE}filter = \"EXISTS (SELECT 1 FROM x FOR UPDATE)\"\n")), FIRST + 8, "rules[0].filter", "plain SELECT"),
        ("zero retain in days", with("\"30d\"", "\"0d\""), FIRST + 6, "rules[0].retain", "retain must be longer than zero"),
        ("zero retain in seconds", with("\"30d\"", "\"0s\""), FIRST + 6, "rules[0].retain", "retain must be longer than zero"),
        ("zero retain in milliseconds", with("\"30d\"", "\"0ms\""), FIRST + 6, "rules[0].retain", "retain must be longer than zero"),
        ("unknown age_timezone", rule(&format!("{GOOD_RULE}age_timezone = \"Europe/Amsterdm\"\n")), FIRST + 8, "rules[0].age_timezone", "unknown time zone `Europe/Amsterdm`"),
        ("age_timezone on an epoch column", rule(&format!("{GOOD_RULE}age_format = \"epoch_seconds\"\nage_timezone = \"UTC\"\n")), FIRST + 9, "rules[0].age_timezone", "epoch values"),
        ("age_timezone on a prefix rule", format!("{BASE}[[rules]]\nname = \"o\"\ncategory = \"logs\"\nstore = \"assets\"\nprefix = \"x/\"\nretain = \"30d\"\naction = \"delete\"\nage_timezone = \"UTC\"\n"), FIRST + 7, "rules[0].age_timezone", "table rules"),
        ("unknown action", with("\"delete\"", "\"shred\""), FIRST + 7, "rules[0].action", "unknown variant"),
        ("anonymise without columns", with("\"delete\"", "\"anonymise\""), FIRST, "rules[0].anonymise", "needs"),
        ("unknown strategy", rule(&format!("{}anonymise = {{ ip = \"scramble\" }}\n", GOOD_RULE.replace("\"delete\"", "\"anonymise\""))), FIRST + 8, "rules[0].anonymise.ip", "unknown anonymise strategy"),
        ("bad max_delete", rule(&format!("{GOOD_RULE}max_delete = \"lots\"\n")), FIRST + 8, "rules[0].max_delete", "percentage"),
        ("percent over 100", rule(&format!("{GOOD_RULE}max_delete = \"120%\"\n")), FIRST + 8, "rules[0].max_delete", "percentage"),
        ("missing retain", rule(&GOOD_RULE.replace("retain = \"30d\"\n", "")), FIRST, "rules[0].retain", "missing field"),
        ("prefix key on table rule", rule(&format!("{GOOD_RULE}exclude = [\"x/\"]\n")), FIRST + 8, "rules[0].exclude", "prefix rules"),
        ("both table and prefix", rule(&format!("{GOOD_RULE}prefix = \"x/\"\n")), FIRST + 8, "rules[0].prefix", "not both"),
        ("bad listen address", format!("{BASE}[http]\nlisten = \"localhost\"\n"), FIRST + 1, "http.listen", "IP:PORT"),
        ("url in config", BASE.replace("url_env = \"RETENTIOND_TEST_UNREACHABLE_URL\"", "url = \"postgres://u:secret@h/db\""), 6, "stores.app.url", "unknown field"),
        ("audit on s3 store", BASE.replace("[audit]\nstore = \"app\"", "[audit]\nstore = \"assets\""), 2, "audit.store", "not a postgres store"),
        ("duplicate rule name", format!("{}[[rules]]\n{GOOD_RULE}", rule(GOOD_RULE)), FIRST + 9, "rules[1].name", "duplicate"),
        ("bad rule name", with("name = \"r\"", "name = \"my rule!\""), FIRST + 1, "rules[0].name", "invalid name"),
        ("bad subject column", rule(&format!("{GOOD_RULE}subject = {{ kind = \"account\", column = \"a b\" }}\n")), FIRST + 8, "rules[0].subject.column", "not a valid SQL identifier"),
        ("objects on s3 missing", rule(&format!("{GOOD_RULE}objects = {{ store = \"app\", key_columns = [\"k\"] }}\n")), FIRST + 8, "rules[0].objects.store", "not a s3 store"),
        ("bad versions", format!("{BASE}[[rules]]\nname = \"o\"\ncategory = \"logs\"\nstore = \"assets\"\nprefix = \"x/\"\nretain = \"30d\"\naction = \"delete\"\nversions = \"some\"\n"), FIRST + 7, "rules[0].versions", "unknown variant"),
        ("exclude outside prefix", format!("{BASE}[[rules]]\nname = \"o\"\ncategory = \"logs\"\nstore = \"assets\"\nprefix = \"x/\"\nretain = \"30d\"\naction = \"delete\"\nexclude = [\"y/\"]\n"), FIRST + 7, "rules[0].exclude[0]", "not under"),
        ("bad partitions mode", rule(&format!("{GOOD_RULE}partitions = \"shred\"\n")), FIRST + 8, "rules[0].partitions", "drop"),
        ("max below min", BASE.replace("max_retain = \"10y\"", "max_retain = \"1y\""), 17, "categories.invoices.max_retain", "shorter"),
    ]
}

#[test]
fn malformed_configs_name_line_column_and_field_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    // Every store points at a listener of this test: if any case touched a store, it
    // would connect here. Zero connections means zero statements, zero requests.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let port = trap.local_addr().unwrap().port();
    let env = vec![
        (
            "RETENTIOND_TEST_UNREACHABLE_URL".to_string(),
            format!("postgres://u:secret@127.0.0.1:{port}/db"),
        ),
        (
            "S3_ENDPOINT".to_string(),
            format!("http://127.0.0.1:{port}"),
        ),
    ];
    let cases = cases();
    assert!(cases.len() >= 40, "at least 40 cases, got {}", cases.len());
    let mut failures = Vec::new();
    for (i, (what, text, line, field, words)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("case{i}.toml"));
        std::fs::write(&path, &text).unwrap();
        let out = run_bin(&path, &["sweep"], &env);
        let msg = out.stderr.trim().to_owned();
        let prefix = format!("error: {}:{line}:", path.display());
        let column_ok = msg
            .strip_prefix(&prefix)
            .and_then(|after| after.split(':').next())
            .and_then(|c| c.parse::<usize>().ok())
            .is_some_and(|c| c >= 1);
        let ok = out.code == 2
            && msg.starts_with(&prefix)
            && column_ok
            && msg.contains(&format!(": {field}:"))
            && msg.contains(words)
            && !msg.contains("secret");
        if !ok {
            failures.push(format!("{what} (exit {}): expected line {line}, field `{field}`, words `{words}`; got:\n  {msg}", out.code));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn shipped_config_validates_offline_syntax() {
    // The shipped file parses (the preflight needs the stores, which other tests cover).
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("retention.toml");
    retentiond::config::Config::load(&path).expect("shipped config");
}

#[test]
fn missing_file_is_exit_2() {
    let out = run_bin(
        std::path::Path::new("/nonexistent/retention.toml"),
        &["validate"],
        &[],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("/nonexistent/retention.toml"),
        "{}",
        out.stderr
    );
}
