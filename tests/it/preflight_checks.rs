//! Preflight checks of age columns: epoch units that do not fit, zoneless timestamps,
//! and `age_timezone` errors, against a real PostgreSQL.

use crate::common::TestEnv;

const SESSIONS: &str = "[categories.sessions]\ndescription = \"login sessions\"\n\n";

fn sessions_rule(age: &str, extra: &str) -> String {
    format!(
        "[[rules]]\nname = \"sessions\"\ncategory = \"sessions\"\nstore = \"app\"\ntable = \"sessions\"\nage_column = \"{age}\"\nretain = \"30d\"\naction = \"delete\"\n{extra}\n"
    )
}

#[tokio::test]
async fn epoch_seconds_declared_as_millis_are_refused_before_any_write() {
    let env = TestEnv::new("epochunit").await;
    env.sql(
        "CREATE TABLE sessions (id serial PRIMARY KEY, started_ms bigint);
         CREATE INDEX ON sessions (started_ms);
         -- Seconds, though the column's name and the rule say milliseconds.
         INSERT INTO sessions (started_ms)
           SELECT extract(epoch FROM now() - interval '40 days')::bigint FROM generate_series(1, 5);
         INSERT INTO sessions (started_ms)
           SELECT extract(epoch FROM now() - interval '1 day')::bigint FROM generate_series(1, 5);",
    )
    .await;
    let cfg = env.config(&format!(
        "{SESSIONS}{}",
        sessions_rule("started_ms", "age_format = \"epoch_millis\"")
    ));
    for cmd in [
        &["validate"][..],
        &["sweep"][..],
        &["sweep", "--dry-run"][..],
    ] {
        let out = env.run(&cfg, cmd);
        out.expect_code(2);
        assert!(
            out.stderr.contains("rule sessions:")
                && out
                    .stderr
                    .contains("age column started_ms holds values that decode to 1970-01-")
                && out.stderr.contains("as epoch_millis")
                && out
                    .stderr
                    .contains("they look like epoch seconds: set age_format = \"epoch_seconds\""),
            "{cmd:?}:\n{}",
            out.stderr
        );
    }
    assert_eq!(
        env.scalar("SELECT count(*) FROM sessions").await,
        10,
        "no row deleted"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'retentiond'")
            .await,
        0,
        "a refused preflight writes nothing, not even the audit schema"
    );

    // Declared right, the same rows sweep normally: the check is about units, not ages.
    let cfg = env.config(&format!(
        "{SESSIONS}{}",
        sessions_rule("started_ms", "age_format = \"epoch_seconds\"")
    ));
    env.run(&cfg, &["sweep"]).expect_code(0);
    assert_eq!(env.scalar("SELECT count(*) FROM sessions").await, 5);
}

#[tokio::test]
async fn millis_declared_as_seconds_are_refused_and_empty_or_null_columns_pass() {
    let env = TestEnv::new("epochms").await;
    env.sql(
        "CREATE TABLE sessions (id serial PRIMARY KEY, started bigint);
         CREATE INDEX ON sessions (started);",
    )
    .await;
    let cfg = env.config(&format!(
        "{SESSIONS}{}",
        sessions_rule("started", "age_format = \"epoch_seconds\"")
    ));
    // Empty, then only NULLs: nothing to judge.
    env.run(&cfg, &["validate"]).expect_code(0);
    env.sql("INSERT INTO sessions (started) VALUES (NULL), (NULL);")
        .await;
    env.run(&cfg, &["validate"]).expect_code(0);
    env.sql(
        "INSERT INTO sessions (started)
           SELECT (extract(epoch FROM now() - interval '40 days') * 1000)::bigint FROM generate_series(1, 3);",
    )
    .await;
    let out = env.run(&cfg, &["sweep"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("as epoch_seconds (in the future)")
            && out
                .stderr
                .contains("they look like epoch milliseconds: set age_format = \"epoch_millis\""),
        "{}",
        out.stderr
    );
    assert_eq!(env.scalar("SELECT count(*) FROM sessions").await, 5);
}

#[tokio::test]
async fn zoneless_age_columns_warn_until_age_timezone_is_set() {
    let env = TestEnv::new("agezone").await;
    env.sql(
        "CREATE TABLE sessions (id serial PRIMARY KEY, started_at timestamp, day date, at timestamptz);
         CREATE INDEX ON sessions (started_at);
         CREATE INDEX ON sessions (day);
         CREATE INDEX ON sessions (at);",
    )
    .await;
    for (age, type_name) in [
        ("started_at", "timestamp without time zone"),
        ("day", "date"),
    ] {
        let cfg = env.config(&format!("{SESSIONS}{}", sessions_rule(age, "")));
        let out = env.run(&cfg, &["validate"]);
        out.expect_code(0);
        assert!(
            out.stderr.contains(&format!(
                "warning: rule sessions: age column {age} is {type_name}, which holds no time zone: its values are read as UTC"
            )) && out.stderr.contains("set age_timezone"),
            "{age}:\n{}",
            out.stderr
        );
        // Setting the zone, UTC included, answers the warning.
        for zone in ["Europe/Amsterdam", "UTC"] {
            let cfg = env.config(&format!(
                "{SESSIONS}{}",
                sessions_rule(age, &format!("age_timezone = \"{zone}\""))
            ));
            let out = env.run(&cfg, &["validate"]);
            out.expect_code(0);
            assert!(
                !out.stderr.contains("warning"),
                "{age} {zone}:\n{}",
                out.stderr
            );
        }
    }
    // A timestamptz column needs no zone, and one given is pointed out as ignored.
    let cfg = env.config(&format!("{SESSIONS}{}", sessions_rule("at", "")));
    let out = env.run(&cfg, &["validate"]);
    out.expect_code(0);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let cfg = env.config(&format!(
        "{SESSIONS}{}",
        sessions_rule("at", "age_timezone = \"Europe/Amsterdam\"")
    ));
    let out = env.run(&cfg, &["validate"]);
    out.expect_code(0);
    assert!(
        out.stderr
            .contains("age_timezone = \"Europe/Amsterdam\" is ignored"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn an_unknown_zone_is_a_positioned_error_before_any_store() {
    let env = TestEnv::new("badzone").await;
    env.sql("CREATE TABLE sessions (id serial PRIMARY KEY, started_at timestamp);")
        .await;
    let body = format!(
        "{SESSIONS}{}",
        sessions_rule("started_at", "age_timezone = \"Europe/Amsterdm\"")
    );
    let cfg = env.config(&body);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("age_timezone"))
        .unwrap()
        + 1;
    for cmd in ["validate", "sweep"] {
        let out = env.run(&cfg, &[cmd]);
        out.expect_code(2);
        let expected = format!(
            "{}:{line}:16: rules[0].age_timezone: unknown time zone `Europe/Amsterdm`",
            cfg.display()
        );
        assert!(out.stderr.contains(&expected), "{cmd}:\n{}", out.stderr);
    }
    assert_eq!(
        env.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'retentiond'")
            .await,
        0
    );
}

// Issue 13, item 9: strategies whose output a column cannot hold are refused by the
// preflight (exit 2, nothing written), not discovered row by row in the first batch.
#[tokio::test]
async fn anonymise_strategies_a_column_cannot_hold_are_refused_before_any_write() {
    let env = TestEnv::new("anon_refuse").await;
    env.sql(
        "CREATE TABLE usage (
            id serial PRIMARY KEY, at timestamptz NOT NULL,
            ip text NOT NULL, ip_ok text, login varchar(20), doc json, n integer
         );
         CREATE INDEX ON usage (at);
         INSERT INTO usage (at, ip, ip_ok, login, doc, n)
           SELECT now() - interval '40 days', '10.1.2.3', '10.1.2.3', 'ann', '{}', 1 FROM generate_series(1, 5);",
    )
    .await;
    let rule = |anonymise: &str| {
        env.config(&format!(
            "[categories.usage]\ndescription = \"usage\"\n\n[[rules]]\nname = \"usage\"\ncategory = \"usage\"\nstore = \"app\"\ntable = \"usage\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"anonymise\"\nanonymise = {{ {anonymise} }}\n"
        ))
    };
    for (anonymise, expect) in [
        (
            "ip = \"truncate_ip\"",
            "strategy `truncate_ip` cannot anonymise column `ip` of type text: the column is NOT NULL",
        ),
        (
            "ip_ok = \"null\", login = \"hash\"",
            "strategy `hash` cannot anonymise column `login` of type character varying(20): it writes values of up to 69 characters and the column holds 20",
        ),
        (
            "ip_ok = \"null\", login = \"fixed:a very long replacement text\"",
            "it writes values of up to 28 characters and the column holds 20",
        ),
        (
            "doc = \"fixed:{}\"",
            "the anonymise update of columns doc does not compile",
        ),
        (
            "ip_ok = \"null\", n = \"fixed:not a number\"",
            "the anonymise update of columns ip_ok, n does not compile",
        ),
    ] {
        let cfg = rule(anonymise);
        for cmd in [&["validate"][..], &["sweep"][..]] {
            let out = env.run(&cfg, cmd);
            out.expect_code(2);
            assert!(
                out.stderr.contains("rule usage:") && out.stderr.contains(expect),
                "{anonymise} / {cmd:?}: expected `{expect}` in:\n{}",
                out.stderr
            );
        }
    }
    assert_eq!(
        env.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'retentiond'")
            .await,
        0,
        "a refused preflight writes nothing, not even the audit schema"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM usage WHERE ip = '10.1.2.3' AND ip_ok = '10.1.2.3' AND login = 'ann' AND n = 1")
            .await,
        5,
        "no row changed"
    );
    // The same table with strategies its columns can hold anonymises every due row.
    let cfg = rule("ip_ok = \"truncate_ip\", login = \"fixed:gone\", n = \"fixed:0\"");
    env.run(&cfg, &["sweep"]).expect_code(0);
    assert_eq!(
        env.scalar(
            "SELECT count(*) FROM usage WHERE ip_ok = '10.1.2.0' AND login = 'gone' AND n = 0"
        )
        .await,
        5
    );
}
