//! Table sweeps end to end: the binary against a real PostgreSQL, one database per test.

use crate::common::{n, rule, TestEnv, HMAC_KEY};

fn delete_rule(name: &str, table: &str, age: &str, extra: &str) -> String {
    format!(
        "[[rules]]\nname = \"{name}\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"{table}\"\nage_column = \"{age}\"\nretain = \"30d\"\naction = \"delete\"\n{extra}\n"
    )
}

const LOGS: &str = "[categories.logs]\ndescription = \"test logs\"\n\n";

#[tokio::test]
async fn every_age_type_deletes_only_rows_past_the_cutoff() {
    let env = TestEnv::new("agetypes").await;
    env.sql(
        "CREATE TABLE t_tz (id serial PRIMARY KEY, at timestamptz);
         CREATE TABLE t_ts (id serial PRIMARY KEY, at timestamp);
         CREATE TABLE t_date (id serial PRIMARY KEY, at date);
         CREATE TABLE t_es (id serial PRIMARY KEY, at bigint);
         CREATE TABLE t_ems (id serial PRIMARY KEY, at bigint);
         INSERT INTO t_tz (at) SELECT now() - interval '40 days' FROM generate_series(1, 10);
         INSERT INTO t_tz (at) SELECT now() - interval '20 days' FROM generate_series(1, 7);
         INSERT INTO t_tz (at) VALUES (NULL), (NULL);
         INSERT INTO t_ts (at) SELECT (now() AT TIME ZONE 'UTC') - interval '40 days' FROM generate_series(1, 10);
         INSERT INTO t_ts (at) SELECT (now() AT TIME ZONE 'UTC') - interval '20 days' FROM generate_series(1, 7);
         INSERT INTO t_ts (at) VALUES (NULL), (NULL);
         INSERT INTO t_date (at) SELECT current_date - 40 FROM generate_series(1, 10);
         INSERT INTO t_date (at) SELECT current_date - 20 FROM generate_series(1, 7);
         INSERT INTO t_date (at) VALUES (NULL), (NULL);
         INSERT INTO t_es (at) SELECT extract(epoch FROM now() - interval '40 days')::bigint FROM generate_series(1, 10);
         INSERT INTO t_es (at) SELECT extract(epoch FROM now() - interval '20 days')::bigint FROM generate_series(1, 7);
         INSERT INTO t_es (at) VALUES (NULL), (NULL);
         INSERT INTO t_ems (at) SELECT (extract(epoch FROM now() - interval '40 days') * 1000)::bigint FROM generate_series(1, 10);
         INSERT INTO t_ems (at) SELECT (extract(epoch FROM now() - interval '20 days') * 1000)::bigint FROM generate_series(1, 7);
         INSERT INTO t_ems (at) VALUES (NULL), (NULL);",
    )
    .await;
    let cfg = env.config(&format!(
        "{LOGS}{}{}{}{}{}",
        delete_rule("tz", "t_tz", "at", ""),
        delete_rule("ts", "t_ts", "at", ""),
        delete_rule("date", "t_date", "at", ""),
        delete_rule("es", "t_es", "at", "age_format = \"epoch_seconds\""),
        delete_rule("ems", "t_ems", "at", "age_format = \"epoch_millis\""),
    ));
    let dry = env.run(&cfg, &["sweep", "--dry-run", "--format", "json"]);
    dry.expect_code(0);
    let dry = dry.json();
    assert_eq!(dry["mode"], "dry_run");
    for r in ["tz", "ts", "date", "es", "ems"] {
        assert_eq!(n(&dry, r, "matched"), 10, "{r} dry-run matched");
        assert_eq!(n(&dry, r, "deleted"), 0, "{r} dry-run deleted nothing");
    }
    assert_eq!(
        env.scalar("SELECT count(*) FROM t_tz").await,
        19,
        "dry-run changed nothing"
    );

    let out = env.run(&cfg, &["sweep", "--format", "json"]);
    out.expect_code(0);
    let report = out.json();
    assert_eq!(report["status"], "succeeded");
    for (r, table) in [
        ("tz", "t_tz"),
        ("ts", "t_ts"),
        ("date", "t_date"),
        ("es", "t_es"),
        ("ems", "t_ems"),
    ] {
        assert_eq!(n(&report, r, "deleted"), 10, "{r} deleted");
        assert_eq!(
            env.scalar(&format!("SELECT count(*) FROM {table} WHERE at IS NULL"))
                .await,
            2,
            "{r}: NULL ages are never due"
        );
        assert_eq!(
            env.scalar(&format!("SELECT count(*) FROM {table}")).await,
            9,
            "{r}: young and NULL rows stay"
        );
    }
    // Idempotent: the second run finds nothing.
    let again = env.run(&cfg, &["sweep", "--format", "json"]).json();
    for r in ["tz", "ts", "date", "es", "ems"] {
        assert_eq!(n(&again, r, "matched"), 0, "{r} second run");
    }
}

#[tokio::test]
async fn boundary_rows_at_and_around_the_cutoff() {
    let env = TestEnv::new("boundary").await;
    // T is fixed, so --as-of gives an exact cutoff of T - 30 days.
    env.sql(
        "CREATE TABLE b_tz (label text, at timestamptz);
         CREATE TABLE b_ms (label text, at bigint);
         CREATE TABLE b_date (label text, at date);
         INSERT INTO b_tz VALUES
           ('before', timestamptz '2026-06-01 12:00:00Z' - interval '30 days' - interval '1 second'),
           ('at',     timestamptz '2026-06-01 12:00:00Z' - interval '30 days'),
           ('after',  timestamptz '2026-06-01 12:00:00Z' - interval '30 days' + interval '1 second');
         INSERT INTO b_ms SELECT label, (extract(epoch FROM at) * 1000)::bigint FROM b_tz;
         INSERT INTO b_date VALUES ('two days before', date '2026-04-30'), ('cutoff day', date '2026-05-02'), ('day before', date '2026-05-01');",
    )
    .await;
    let cfg = env.config(&format!(
        "{LOGS}{}{}{}",
        delete_rule("tz", "b_tz", "at", ""),
        delete_rule("ms", "b_ms", "at", "age_format = \"epoch_millis\""),
        delete_rule("date", "b_date", "at", ""),
    ));
    let out = env.run(
        &cfg,
        &[
            "sweep",
            "--dry-run",
            "--as-of",
            "2026-06-01T12:00:00Z",
            "--format",
            "json",
            "--show-samples",
        ],
    );
    out.expect_code(0);
    let r = out.json();
    assert_eq!(rule(&r, "tz")["cutoff"], "2026-05-02T12:00:00Z");
    assert_eq!(
        n(&r, "tz", "matched"),
        1,
        "only the row one second before the cutoff is due"
    );
    assert_eq!(rule(&r, "tz")["samples"].as_array().unwrap().len(), 1);
    assert_eq!(n(&r, "ms", "matched"), 1, "epoch millis: same boundary");
    // A date is due only once its whole day lies before the cutoff (2026-05-02 12:00):
    // 2026-04-30 and 2026-05-01 are; 2026-05-02 is not.
    assert_eq!(n(&r, "date", "matched"), 2);
    // Enforce uses the database clock: a row 60 s younger than the cutoff stays, one
    // second older goes.
    env.sql(
        "CREATE TABLE b_now (label text, at timestamptz);
         INSERT INTO b_now VALUES ('old', now() - interval '30 days' - interval '1 second'), ('young', now() - interval '30 days' + interval '60 seconds');",
    )
    .await;
    let cfg = env.config(&format!("{LOGS}{}", delete_rule("now", "b_now", "at", "")));
    env.run(&cfg, &["sweep"]).expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM b_now WHERE label = 'young'")
            .await,
        1
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM b_now WHERE label = 'old'")
            .await,
        0
    );
}

#[tokio::test]
async fn keyless_composite_key_and_mixed_case_tables() {
    let env = TestEnv::new("keys").await;
    env.sql(
        r#"CREATE SCHEMA "AuditLogs";
         CREATE TABLE "AuditLogs"."ApiLog" ("Id" serial PRIMARY KEY, "CreatedAt" timestamptz NOT NULL);
         CREATE TABLE nokey (msg text, at timestamptz);
         CREATE TABLE composite (tenant int, seq int, at timestamptz, PRIMARY KEY (tenant, seq));
         INSERT INTO "AuditLogs"."ApiLog" ("CreatedAt") SELECT now() - (g || ' days')::interval FROM generate_series(1, 60) g;
         INSERT INTO nokey SELECT 'm' || g, now() - (g || ' days')::interval FROM generate_series(1, 60) g;
         INSERT INTO nokey SELECT 'dup', now() - interval '45 days' FROM generate_series(1, 5);
         INSERT INTO composite SELECT g % 3, g, now() - (g || ' days')::interval FROM generate_series(1, 60) g;"#,
    )
    .await;
    let cfg = env.config(&format!(
        "{LOGS}{}{}{}",
        delete_rule("mixed", "AuditLogs.ApiLog", "CreatedAt", ""),
        delete_rule("nokey", "nokey", "at", ""),
        delete_rule("composite", "public.composite", "at", ""),
    ));
    let out = env.run(&cfg, &["sweep", "--format", "json"]);
    out.expect_code(0);
    let r = out.json();
    // Days 30..60 are past the 30-day cutoff (day 30 by the milliseconds since insert).
    assert_eq!(n(&r, "mixed", "deleted"), 31);
    assert_eq!(
        n(&r, "nokey", "deleted"),
        36,
        "duplicate rows in a keyless table all go"
    );
    assert_eq!(n(&r, "composite", "deleted"), 31);
    assert_eq!(
        env.scalar(r#"SELECT count(*) FROM "AuditLogs"."ApiLog""#)
            .await,
        29
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM nokey WHERE at < now() - interval '30 days'")
            .await,
        0
    );
    assert_eq!(env.scalar("SELECT count(*) FROM composite").await, 29);
    // One page: PostgreSQL reads it whole, so the batch walks its pages (multi-batch
    // walks of both kinds are in `page_walk_removes_exactly_what_is_due_…`).
    assert_eq!(rule(&r, "mixed")["details"]["batch_walk"], "pages");
}

#[tokio::test]
async fn holds_keep_subjects_and_categories_until_released() {
    let env = TestEnv::new("holds").await;
    env.sql(
        "CREATE TABLE msgs (id serial PRIMARY KEY, account_id bigint, at timestamptz);
         INSERT INTO msgs (account_id, at) SELECT (g % 3) + 1, now() - interval '40 days' FROM generate_series(1, 30) g;
         INSERT INTO msgs (account_id, at) VALUES (NULL, now() - interval '40 days');",
    )
    .await;
    let cfg = env.config(&format!(
        "{LOGS}{}",
        delete_rule(
            "msgs",
            "msgs",
            "at",
            "subject = { kind = \"account\", column = \"account_id\" }"
        )
    ));
    env.run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "account:2",
            "--reason",
            "litigation 2026-17",
            "--actor",
            "dpo",
        ],
    )
    .expect_code(0);
    let cat = env.run(
        &cfg,
        &[
            "hold",
            "add",
            "--category",
            "logs",
            "--reason",
            "regulator inquiry",
            "--actor",
            "dpo",
        ],
    );
    cat.expect_code(0);
    let cat_id: String = cat.stdout.split_whitespace().nth(1).unwrap().to_owned();

    // Category hold: nothing removed, everything due is counted as held.
    let r = env.run(&cfg, &["sweep", "--format", "json"]);
    r.expect_code(0);
    let r = r.json();
    assert_eq!(n(&r, "msgs", "deleted"), 0);
    assert_eq!(n(&r, "msgs", "held"), 31);
    assert_eq!(env.scalar("SELECT count(*) FROM msgs").await, 31);

    env.run(
        &cfg,
        &[
            "hold",
            "release",
            &cat_id,
            "--reason",
            "inquiry closed",
            "--actor",
            "dpo",
        ],
    )
    .expect_code(0);
    // Subject hold: account 2's rows stay and are counted; NULL-subject rows are not held.
    let r = env.run(&cfg, &["sweep", "--format", "json"]).json();
    assert_eq!(n(&r, "msgs", "deleted"), 21);
    assert_eq!(n(&r, "msgs", "held"), 10);
    assert_eq!(
        env.scalar("SELECT count(*) FROM msgs WHERE account_id = 2")
            .await,
        10
    );
    assert_eq!(env.scalar("SELECT count(*) FROM msgs").await, 10);

    let list = env.run(&cfg, &["hold", "list", "--format", "json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1, "one active hold left");
    let subject_hold = list[0]["id"].to_string();
    env.run(
        &cfg,
        &["hold", "release", &subject_hold, "--reason", "settled"],
    )
    .expect_code(0);
    env.run(
        &cfg,
        &["hold", "release", &subject_hold, "--reason", "again"],
    )
    .expect_code(2);
    let r = env.run(&cfg, &["sweep", "--format", "json"]).json();
    assert_eq!(n(&r, "msgs", "deleted"), 10);
    // Every hold change is in the chain.
    env.run(&cfg, &["audit", "verify"]).expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.holds WHERE hash IS NOT NULL")
            .await,
        2
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.hold_releases WHERE hash IS NOT NULL")
            .await,
        2
    );
}

#[tokio::test]
async fn legal_floor_is_never_crossed() {
    let env = TestEnv::new("floor").await;
    env.sql(
        "CREATE TABLE invoices (id text PRIMARY KEY, account_id bigint, issued_on date);
         INSERT INTO invoices VALUES
           ('old', 1, current_date - interval '8 years'),
           ('six', 1, current_date - interval '6 years'),
           ('edge', 1, current_date - interval '7 years' + interval '2 days'),
           ('other', 2, current_date - interval '6 years');",
    )
    .await;
    let body = "[categories.invoices]\nlegal_basis = \"Dutch tax law\"\nmin_retain = \"7y\"\n\n[[rules]]\nname = \"invoices\"\ncategory = \"invoices\"\nstore = \"app\"\ntable = \"invoices\"\nage_column = \"issued_on\"\nretain = \"7y\"\naction = \"delete\"\nsubject = { kind = \"account\", column = \"account_id\" }\n";
    let cfg = env.config(body);
    let r = env.run(&cfg, &["sweep", "--format", "json"]);
    r.expect_code(0);
    assert_eq!(n(&r.json(), "invoices", "deleted"), 1);
    assert_eq!(
        env.scalar("SELECT count(*) FROM invoices").await,
        3,
        "nothing younger than 7 years goes"
    );

    // Erasure of account 1 ignores age but not the floor: both remaining invoices stay,
    // and the report says when the first becomes erasable.
    let e = env.run(
        &cfg,
        &["erase", "--subject", "account:1", "--format", "json"],
    );
    e.expect_code(0);
    let e = e.json();
    assert_eq!(e["trigger"], "erase");
    assert_eq!(n(&e, "invoices", "deleted"), 0);
    assert_eq!(rule(&e, "invoices")["details"]["kept_within_floor"], 2);
    let erasable = rule(&e, "invoices")["details"]["erasable_from"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected = chrono::Utc::now().date_naive() + chrono::Days::new(2);
    assert!(
        erasable.starts_with(&expected.to_string()),
        "erasable_from {erasable}, expected {expected}"
    );
    assert_eq!(env.scalar("SELECT count(*) FROM invoices").await, 3);
    // The subject is stored only as a keyed hash.
    let stored: String =
        sqlx::query_scalar("SELECT subject_hash FROM retentiond.runs WHERE trigger = 'erase'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        retentiond::anonymise::pseudonym(HMAC_KEY.as_bytes(), "account:1")
    );
    assert_eq!(
        env.scalar(
            "SELECT count(*) FROM retentiond.runs WHERE row_to_json(runs)::text LIKE '%account:1%'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn max_delete_guard_refuses_and_can_be_overridden() {
    let env = TestEnv::new("guard").await;
    env.sql(
        "CREATE TABLE tickets (id serial PRIMARY KEY, status text, resolved_at timestamptz);
         INSERT INTO tickets (status, resolved_at) SELECT 'resolved', now() - interval '40 days' FROM generate_series(1, 30);
         INSERT INTO tickets (status, resolved_at) SELECT 'open', now() - interval '40 days' FROM generate_series(1, 10);
         INSERT INTO tickets (status, resolved_at) SELECT 'resolved', now() - interval '1 day' FROM generate_series(1, 60);",
    )
    .await;
    let cfg = env.config(&format!(
        "{LOGS}{}",
        delete_rule(
            "tickets",
            "tickets",
            "resolved_at",
            "filter = \"status = 'resolved'\"\nmax_delete = \"20%\""
        )
    ));
    let r = env.run(&cfg, &["sweep", "--format", "json"]);
    r.expect_code(3);
    let j = r.json();
    assert_eq!(j["status"], "refused");
    assert_eq!(rule(&j, "tickets")["status"], "refused");
    assert_eq!(n(&j, "tickets", "matched"), 30);
    assert_eq!(
        env.scalar("SELECT count(*) FROM tickets").await,
        100,
        "refused: nothing removed"
    );
    let stored: String =
        sqlx::query_scalar("SELECT status FROM retentiond.runs ORDER BY id DESC LIMIT 1")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(stored, "refused");

    let r = env.run(&cfg, &["sweep", "--allow-mass-delete", "--format", "json"]);
    r.expect_code(0);
    assert_eq!(
        n(&r.json(), "tickets", "deleted"),
        30,
        "the filter keeps open tickets"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM tickets WHERE status = 'open'")
            .await,
        10
    );

    let cfg = env.config(&format!(
        "{LOGS}{}",
        delete_rule("tickets", "tickets", "resolved_at", "max_delete = 5")
    ));
    env.sql("INSERT INTO tickets (status, resolved_at) SELECT 'resolved', now() - interval '40 days' FROM generate_series(1, 6);").await;
    env.run(&cfg, &["sweep"]).expect_code(3);
}

#[tokio::test]
async fn anonymise_every_strategy_once() {
    let env = TestEnv::new("anon").await;
    env.sql(
        "CREATE TABLE people (
            id serial PRIMARY KEY, created_at timestamptz NOT NULL,
            email text, name text, ip inet, ip_text text, ip6 inet, mail text, note text, token text, ref uuid, kid bigint
         );
         CREATE TABLE tickets (id serial PRIMARY KEY, created_at timestamptz NOT NULL, email text);
         INSERT INTO people (created_at, email, name, ip, ip_text, ip6, mail, note, token, ref, kid) VALUES
          (now() - interval '40 days', 'ann@example.com', 'Ann', '192.168.1.77', '10.1.2.3', '2001:db8:abcd:12:1::7', 'ann@mail.example.org', 'vip', 't0k', gen_random_uuid(), 42),
          (now() - interval '40 days', 'bob@example.com', 'Bob', '10.9.8.7', '2001:db8:1:2::1', NULL, 'bob@b.example', 'x', 'tok', gen_random_uuid(), 7),
          (now() - interval '1 day', 'cy@example.com', 'Cy', '8.8.8.8', '8.8.4.4', NULL, 'cy@c.example', 'y', 'tok', gen_random_uuid(), 9);
         INSERT INTO tickets (created_at, email) VALUES (now() - interval '40 days', 'ann@example.com');",
    )
    .await;
    let body = format!(
        "{LOGS}[[rules]]\nname = \"people\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"people\"\nage_column = \"created_at\"\nretain = \"30d\"\naction = \"anonymise\"\n\
         anonymise = {{ email = \"hash\", name = \"null\", ip = \"truncate_ip\", ip_text = \"truncate_ip\", ip6 = \"truncate_ip\", mail = \"email_domain\", note = \"fixed:redacted\", token = \"random\", ref = \"random\", kid = \"hash\" }}\n\n\
         [[rules]]\nname = \"tickets\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"tickets\"\nage_column = \"created_at\"\nretain = \"30d\"\naction = \"anonymise\"\nanonymise = {{ email = \"hash\" }}\n"
    );
    let cfg = env.config(&body);
    let r = env.run(&cfg, &["sweep", "--format", "json"]);
    r.expect_code(0);
    let j = r.json();
    assert_eq!(n(&j, "people", "anonymised"), 2);
    assert_eq!(n(&j, "people", "deleted"), 0);
    let row = |id: i32| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_as::<_, (Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>)>(
                "SELECT email, name, host(ip), ip_text, host(ip6), mail, note, token FROM people WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let ann = row(1).await;
    assert_eq!(
        ann.0.as_deref(),
        Some(retentiond::anonymise::pseudonym(HMAC_KEY.as_bytes(), "ann@example.com").as_str())
    );
    assert_eq!(ann.1, None);
    assert_eq!(ann.2.as_deref(), Some("192.168.1.0"));
    assert_eq!(ann.3.as_deref(), Some("10.1.2.0"));
    assert_eq!(ann.4.as_deref(), Some("2001:db8:abcd::"));
    assert_eq!(ann.5.as_deref(), Some("mail.example.org"));
    assert_eq!(ann.6.as_deref(), Some("redacted"));
    assert!(ann.7.as_deref().unwrap().starts_with("rnd:"));
    let bob = row(2).await;
    assert_eq!(
        bob.3.as_deref(),
        Some("2001:db8:1::"),
        "IPv6 in a text column to its /48"
    );
    let cy = row(3).await;
    assert_eq!(
        cy.0.as_deref(),
        Some("cy@example.com"),
        "young rows are untouched"
    );
    assert_eq!(cy.2.as_deref(), Some("8.8.8.8"));
    // Pseudonyms join across tables.
    assert_eq!(
        env.scalar("SELECT count(*) FROM people p JOIN tickets t USING (email)")
            .await,
        1
    );
    assert_ne!(env.scalar("SELECT kid FROM people WHERE id = 1").await, 42);
    // An anonymised row is never selected again.
    let again = env.run(&cfg, &["sweep", "--format", "json"]).json();
    assert_eq!(n(&again, "people", "matched"), 0);
    assert_eq!(n(&again, "tickets", "matched"), 0);
    // The trail holds no personal data.
    assert_eq!(env.scalar("SELECT count(*) FROM retentiond.rule_results WHERE row_to_json(rule_results)::text LIKE '%example%'").await, 0);
}

#[tokio::test]
async fn preflight_catches_missing_tables_columns_and_bad_filters_before_any_write() {
    let env = TestEnv::new("preflight").await;
    env.sql("CREATE TABLE present (id int, at timestamptz, label text, n int);")
        .await;
    let cases = [
        (delete_rule("r", "absent", "at", ""), "table public.absent does not exist"),
        (delete_rule("r", "present", "created", ""), "column public.present.created does not exist"),
        (delete_rule("r", "present", "label", ""), "expected timestamptz, timestamp or date"),
        (delete_rule("r", "present", "n", ""), "declare age_format"),
        (delete_rule("r", "present", "at", "filter = \"no_such_column = 1\""), "does not compile"),
        (delete_rule("r", "present", "at", "subject = { kind = \"account\", column = \"who\" }"), "column public.present.who does not exist"),
        (
            "[[rules]]\nname = \"r\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"present\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"anonymise\"\nanonymise = { n = \"email_domain\" }\n".to_string(),
            "email_domain needs a text column",
        ),
    ];
    for (rule_text, expected) in cases {
        let cfg = env.config(&format!("{LOGS}{rule_text}"));
        for cmd in [&["validate"][..], &["sweep"][..]] {
            let out = env.run(&cfg, cmd);
            assert_eq!(out.code, 2, "{expected}: {cmd:?}\n{}", out.stderr);
            assert!(
                out.stderr.contains("rule r:") && out.stderr.contains(expected),
                "{expected}:\n{}",
                out.stderr
            );
        }
    }
    assert_eq!(
        env.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'retentiond'")
            .await,
        0,
        "a failed preflight writes nothing, not even the audit schema"
    );
    // A missing index is a warning with the statement to run, not an error.
    let cfg = env.config(&format!("{LOGS}{}", delete_rule("r", "present", "at", "")));
    let out = env.run(&cfg, &["validate"]);
    out.expect_code(0);
    assert!(out.stderr.contains("CREATE INDEX CONCURRENTLY IF NOT EXISTS \"present_at_idx\" ON \"public\".\"present\" (\"at\");"), "{}", out.stderr);
    // --as-of is refused on an enforcing sweep.
    env.run(&cfg, &["sweep", "--as-of", "2026-01-01"])
        .expect_code(2);
    env.run(&cfg, &["sweep", "--rule", "nope"]).expect_code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writer_is_never_blocked_longer_than_a_batch() {
    let env = TestEnv::new("concurrent").await;
    env.sql(
        "CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL, payload text);
         CREATE INDEX ON events (at);
         INSERT INTO events (at, payload) SELECT now() - interval '40 days', repeat('x', 200) FROM generate_series(1, 60000);
         INSERT INTO events (at, payload) SELECT now() - interval '1 day', 'young' FROM generate_series(1, 1000);",
    )
    .await;
    let cfg = env.config_named(
        "retention.toml",
        &(env.header().replace(
            "batch_size = 3\nmin_batch_size = 1\nmax_batch_size = 50",
            "batch_size = 500\nmax_batch_duration = \"100ms\"",
        ) + &format!("{LOGS}{}", delete_rule("events", "events", "at", ""))),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let pool = env.pool.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut worst = std::time::Duration::ZERO;
            let mut ops = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = std::time::Instant::now();
                sqlx::query("INSERT INTO events (at, payload) VALUES (now(), 'new')")
                    .execute(&pool)
                    .await
                    .unwrap();
                // Touch due rows too: the sweep must skip rows the application holds, and the
                // application must never wait on the sweep for long.
                sqlx::query("UPDATE events SET payload = 'touched' WHERE id = (SELECT id FROM events WHERE at < now() - interval '30 days' ORDER BY id DESC LIMIT 1)")
                    .execute(&pool)
                    .await
                    .unwrap();
                worst = worst.max(t.elapsed());
                ops += 1;
            }
            (worst, ops)
        })
    };
    let cfg2 = cfg.clone();
    let envv = env.env.clone();
    let out = tokio::task::spawn_blocking(move || {
        crate::common::run_bin(&cfg2, &["sweep", "--format", "json"], &envv)
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, ops) = writer.await.unwrap();
    out.expect_code(0);
    let j = out.json();
    let longest = rule(&j, "events")["details"]["longest_batch_ms"]
        .as_u64()
        .unwrap();
    assert!(
        ops > 5,
        "the writer kept working during the sweep ({ops} ops)"
    );
    assert!(
        worst.as_millis() as u64 <= longest.max(100) * 2 + 500,
        "a writer statement waited {worst:?}; the longest batch took {longest} ms"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM events WHERE at > now() - interval '30 days'")
            .await as u64,
        1000 + ops
    );
}

/// The page walk (the plan of a bulk DELETE, cut into batches) must keep every promise
/// the index walk keeps: young rows, NULL ages, held subjects and rows outside the filter
/// stay, whatever page they share with due rows.
#[tokio::test]
async fn page_walk_removes_exactly_what_is_due_and_the_index_walk_takes_few_rows() {
    let env = TestEnv::new("pagewalk").await;
    // Due and young rows alternate, so every page holds both; account 8 is held; rows of
    // kind 'keep' are outside the filter.
    env.sql(
        "CREATE TABLE wide (id bigint PRIMARY KEY, account_id bigint, kind text, at timestamptz, payload text);
         CREATE INDEX ON wide (at);
         INSERT INTO wide SELECT g, g % 50, CASE WHEN g % 10 = 4 THEN 'keep' ELSE 'log' END,
                CASE WHEN g % 2 = 0 THEN now() - interval '40 days' - g * interval '1 second'
                     WHEN g % 97 = 0 THEN NULL
                     ELSE now() - interval '29 days' END,
                repeat('p', 100)
           FROM generate_series(1, 20000) g;
         CREATE TABLE narrow (id bigint PRIMARY KEY, at timestamptz NOT NULL);
         CREATE INDEX ON narrow (at);
         INSERT INTO narrow SELECT g, CASE WHEN g % 100 = 0 THEN now() - interval '40 days' ELSE now() END
           FROM generate_series(1, 100000) g;
         ANALYZE wide; ANALYZE narrow;",
    )
    .await;
    let due_unheld = "SELECT count(*) FROM wide WHERE at < now() - interval '30 days' AND kind <> 'keep' AND account_id <> 8";
    let expected = env.scalar(due_unheld).await;
    let kept_young = env
        .scalar("SELECT count(*) FROM wide WHERE at >= now() - interval '30 days' OR at IS NULL")
        .await;
    let held = env
        .scalar("SELECT count(*) FROM wide WHERE account_id = 8 AND at < now() - interval '30 days' AND kind <> 'keep'")
        .await;
    assert!(expected > 5000 && kept_young > 5000 && held > 0);
    let cfg = env.config_named(
        "retention.toml",
        &(env.header().replace(
            "batch_size = 3\nmin_batch_size = 1\nmax_batch_size = 50",
            "batch_size = 500\nmin_batch_size = 100\nmax_batch_size = 2000",
        ) + &format!(
            "{LOGS}{}{}",
            delete_rule(
                "wide",
                "wide",
                "at",
                "filter = \"kind <> 'keep'\"\nsubject = { kind = \"account\", column = \"account_id\" }"
            ),
            delete_rule("narrow", "narrow", "at", "")
        )),
    );
    env.run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "account:8",
            "--reason",
            "audit",
            "--actor",
            "dpo",
        ],
    )
    .expect_code(0);
    let out = env.run(&cfg, &["sweep", "--format", "json"]);
    out.expect_code(0);
    let j = out.json();
    let wide = rule(&j, "wide");
    assert_eq!(wide["details"]["batch_walk"], "pages", "{wide}");
    assert!(
        wide["details"]["batches"].as_u64().unwrap() > 1,
        "the walk was cut into batches: {wide}"
    );
    assert_eq!(n(&j, "wide", "deleted"), expected as u64);
    assert_eq!(
        env.scalar(due_unheld).await,
        0,
        "every due, unheld row went"
    );
    assert_eq!(
        env.scalar(
            "SELECT count(*) FROM wide WHERE at >= now() - interval '30 days' OR at IS NULL"
        )
        .await,
        kept_young,
        "young rows and NULL ages stay"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM wide WHERE account_id = 8 AND at < now() - interval '30 days' AND kind <> 'keep'")
            .await,
        held,
        "held rows stay"
    );
    assert!(
        env.scalar(
            "SELECT count(*) FROM wide WHERE kind = 'keep' AND at < now() - interval '30 days'"
        )
        .await
            > 0,
        "rows outside the filter stay"
    );
    let narrow = rule(&j, "narrow");
    assert_eq!(narrow["details"]["batch_walk"], "index", "{narrow}");
    assert!(
        narrow["details"]["batches"].as_u64().unwrap() > 1,
        "{narrow}"
    );
    assert_eq!(n(&j, "narrow", "deleted"), 1000);
    assert_eq!(env.scalar("SELECT count(*) FROM narrow").await, 99_000);
}

/// A page batch meets a due row the application keeps locked: it waits no longer than
/// `max_batch_duration`, then does the same pages again skipping that row. The rule
/// succeeds, the locked row stays, and the next run removes it once it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_walk_skips_a_row_the_application_has_locked() {
    let env = TestEnv::new("pagelock").await;
    env.sql(
        "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL);
         INSERT INTO events SELECT g, CASE WHEN g % 2 = 0 THEN now() - interval '40 days' ELSE now() END
           FROM generate_series(1, 4000) g;
         ANALYZE events;",
    )
    .await;
    let cfg = env.config_named(
        "retention.toml",
        &(env.header().replace(
            "batch_size = 3\nmin_batch_size = 1\nmax_batch_size = 50",
            "batch_size = 500\nmax_batch_duration = \"100ms\"",
        ) + &format!("{LOGS}{}", delete_rule("events", "events", "at", ""))),
    );
    let mut holder = env.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM events WHERE id = 1000 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let (cfg2, envv) = (cfg.clone(), env.env.clone());
    let out = tokio::task::spawn_blocking(move || {
        crate::common::run_bin(&cfg2, &["sweep", "--format", "json"], &envv)
    })
    .await
    .unwrap();
    out.expect_code(0);
    let j = out.json();
    assert_eq!(rule(&j, "events")["status"], "succeeded");
    assert_eq!(rule(&j, "events")["details"]["batch_walk"], "pages");
    assert_eq!(n(&j, "events", "deleted"), 1999);
    assert_eq!(
        env.scalar("SELECT count(*) FROM events WHERE id = 1000")
            .await,
        1
    );
    holder.commit().await.unwrap();
    let again = env.run(&cfg, &["sweep", "--format", "json"]);
    again.expect_code(0);
    assert_eq!(n(&again.json(), "events", "deleted"), 1);
    assert_eq!(env.scalar("SELECT count(*) FROM events").await, 2000);
}

// Issue 13, item 9: one row the strategy cannot write does not stop the rule: the batch
// is split, the other rows are anonymised, the bad one is counted `failed` with its
// SQLSTATE and no value, and stays for the next run.
#[tokio::test]
async fn one_bad_row_does_not_stop_an_anonymise_rule() {
    let env = TestEnv::new("bad_row").await;
    env.sql(
        "CREATE TABLE usage (id serial PRIMARY KEY, at timestamptz NOT NULL, ip text);
         INSERT INTO usage (at, ip) SELECT now() - interval '40 days', '10.1.2.' || g FROM generate_series(1, 20) g;
         INSERT INTO usage (at, ip) VALUES (now() - interval '40 days', '1:2:3:4:5:6:7:8:9');",
    )
    .await;
    let cfg = env.config(
        "[categories.usage]\ndescription = \"usage\"\n\n[[rules]]\nname = \"usage\"\ncategory = \"usage\"\nstore = \"app\"\ntable = \"usage\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"anonymise\"\nanonymise = { ip = \"truncate_ip\" }\n",
    );
    let out = env.run(&cfg, &["sweep", "--format", "json"]);
    out.expect_code(1);
    let r = out.json();
    assert_eq!(n(&r, "usage", "anonymised"), 20);
    assert_eq!(n(&r, "usage", "failed"), 1);
    let errors = rule(&r, "usage")["errors"].to_string();
    assert!(errors.contains("22P02"), "{errors}");
    assert!(
        !errors.contains("1:2:3:4:5:6:7:8:9") && !out.stderr.contains("1:2:3:4:5:6:7:8:9"),
        "no row value in the report or the log: {errors}"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM usage WHERE ip LIKE '10.1.2.0'")
            .await,
        20
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM usage WHERE ip = '1:2:3:4:5:6:7:8:9'")
            .await,
        1
    );
}
