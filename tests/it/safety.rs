//! Issue 12: no removal ever passes a protection that covers the record. One test per
//! promise, each against real PostgreSQL (and moto / Garage where objects are involved).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{n, rule, TestEnv};
use crate::s3::{keys, plain_servers, put_many};

const INVOICES: &str =
    "[categories.invoices]\nlegal_basis = \"Dutch tax law\"\nmin_retain = \"7y\"\n\n";
const PROMO: &str = "[categories.promo]\ndescription = \"marketing documents\"\n\n";
const CONTRACTS: &str = "[categories.contracts]\ndescription = \"signed contracts\"\n\n";
const LOGS: &str = "[categories.logs]\ndescription = \"test logs\"\n\n";
const SUBJECT: &str = "subject = { kind = \"account\", column = \"account_id\" }";

/// A delete rule on `table` of store `app`, aged by `created_at`.
fn table_rule(name: &str, category: &str, table: &str, retain: &str, extra: &str) -> String {
    format!(
        "[[rules]]\nname = \"{name}\"\ncategory = \"{category}\"\nstore = \"app\"\ntable = \"{table}\"\nage_column = \"created_at\"\nretain = \"{retain}\"\naction = \"delete\"\n{extra}\n"
    )
}

const DOCS: &str = "CREATE TABLE docs (id bigserial PRIMARY KEY, account_id bigint, kind text NOT NULL, created_at timestamptz NOT NULL);";

fn deleted_total(report: &serde_json::Value) -> u64 {
    report["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["deleted"].as_u64().expect("deleted"))
        .sum()
}

fn errors_of(report: &serde_json::Value, rule_name: &str) -> String {
    rule(report, rule_name)["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors of {rule_name} in {report}"))
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

// Issue 12, item 1 (precedence across rules, sweep): a rule without a floor never removes
// a row that another rule with a floor covers.
#[tokio::test]
async fn sweep_never_removes_rows_inside_another_covering_rules_floor() {
    let env = TestEnv::new("prec_floor").await;
    env.sql(&format!(
        "{DOCS}
         INSERT INTO docs (account_id, kind, created_at) SELECT 8, 'invoice', now() - interval '1 year' FROM generate_series(1, 40);
         INSERT INTO docs (account_id, kind, created_at) SELECT 8, 'promo', now() - interval '1 year' FROM generate_series(1, 40);"
    ))
    .await;
    let cfg = env.config(&format!(
        "{INVOICES}{PROMO}{}{}",
        table_rule("all-docs", "promo", "docs", "30d", ""),
        table_rule(
            "invoice-docs",
            "invoices",
            "docs",
            "7y",
            "filter = \"kind = 'invoice'\""
        ),
    ));
    let out = env.run(&cfg, &["sweep", "--rule", "all-docs", "--format", "json"]);
    out.expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM docs WHERE kind = 'invoice'")
            .await,
        40,
        "invoice-docs' 7y floor keeps every invoice, whatever all-docs says"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM docs WHERE kind = 'promo'")
            .await,
        0,
        "the promos no rule keeps are removed"
    );
    assert_eq!(
        n(&out.json(), "all-docs", "deleted"),
        40,
        "the report counts what was removed"
    );
}

// Issue 12, item 1 (precedence across rules, sweep, held subject): a rule without a
// subject never removes rows that a held subject's rule covers.
#[tokio::test]
async fn sweep_never_removes_rows_a_held_subjects_rule_covers() {
    let env = TestEnv::new("prec_hold").await;
    env.sql(&format!(
        "{DOCS}
         INSERT INTO docs (account_id, kind, created_at) SELECT 8, 'promo', now() - interval '100 days' FROM generate_series(1, 10);
         INSERT INTO docs (account_id, kind, created_at) SELECT 7, 'promo', now() - interval '100 days' FROM generate_series(1, 20);"
    ))
    .await;
    let cfg = env.config(&format!(
        "{PROMO}{}{}",
        table_rule("all-docs", "promo", "docs", "30d", ""),
        table_rule(
            "promo-docs",
            "promo",
            "docs",
            "30d",
            &format!("filter = \"kind = 'promo'\"\n{SUBJECT}")
        ),
    ));
    env.run(
        &cfg,
        &["hold", "add", "--subject", "account:8", "--reason", "x"],
    )
    .expect_code(0);
    let out = env.run(&cfg, &["sweep", "--rule", "all-docs", "--format", "json"]);
    out.expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM docs WHERE account_id = 8")
            .await,
        10,
        "account 8 is held and promo-docs covers its rows: all-docs must keep them"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM docs WHERE account_id = 7")
            .await,
        0,
        "account 7 is not held"
    );
    assert_eq!(n(&out.json(), "all-docs", "deleted"), 20);
}

// Issue 12, item 1 (precedence across rules, sweep, held category): a category hold on a
// rule that covers a row keeps it from every other rule.
#[tokio::test]
async fn sweep_never_removes_rows_a_held_categorys_rule_covers() {
    let env = TestEnv::new("prec_cathold").await;
    env.sql(&format!(
        "{DOCS}
         INSERT INTO docs (account_id, kind, created_at) SELECT 1, 'contract', now() - interval '100 days' FROM generate_series(1, 10);
         INSERT INTO docs (account_id, kind, created_at) SELECT 1, 'promo', now() - interval '100 days' FROM generate_series(1, 20);"
    ))
    .await;
    let cfg = env.config(&format!(
        "{PROMO}{CONTRACTS}{}{}",
        table_rule("all-docs", "promo", "docs", "30d", ""),
        table_rule(
            "contract-docs",
            "contracts",
            "docs",
            "30d",
            "filter = \"kind = 'contract'\""
        ),
    ));
    env.run(
        &cfg,
        &[
            "hold",
            "add",
            "--category",
            "contracts",
            "--reason",
            "audit",
        ],
    )
    .expect_code(0);
    env.run(&cfg, &["sweep", "--rule", "all-docs", "--format", "json"])
        .expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM docs WHERE kind = 'contract'")
            .await,
        10,
        "category contracts is held and contract-docs covers these rows"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM docs WHERE kind = 'promo'")
            .await,
        0
    );
}

// Issue 12, item 2 (erase, the issue's scenario 1): erase honours every covering rule's
// floor and each rule's filter, and reports exactly what it removed.
#[tokio::test]
async fn erase_never_removes_rows_inside_another_rules_floor() {
    let env = TestEnv::new("erase_floor").await;
    env.sql(&format!(
        "{DOCS}
         INSERT INTO docs (account_id, kind, created_at) SELECT 8, 'invoice', now() - interval '1 year' FROM generate_series(1, 40);
         INSERT INTO docs (account_id, kind, created_at) SELECT 8, 'promo', now() - interval '1 day' FROM generate_series(1, 10);
         INSERT INTO docs (account_id, kind, created_at) SELECT 9, 'invoice', now() - interval '1 year' FROM generate_series(1, 5);
         INSERT INTO docs (account_id, kind, created_at) SELECT 9, 'promo', now() - interval '1 day' FROM generate_series(1, 5);"
    ))
    .await;
    let cfg = env.config(&format!(
        "{INVOICES}{PROMO}{}{}",
        table_rule(
            "invoice-docs",
            "invoices",
            "docs",
            "7y",
            &format!("filter = \"kind = 'invoice'\"\n{SUBJECT}")
        ),
        table_rule(
            "promo-docs",
            "promo",
            "docs",
            "30d",
            &format!("filter = \"kind = 'promo'\"\n{SUBJECT}")
        ),
    ));
    let before = env.scalar("SELECT count(*) FROM docs").await;
    let out = env.run(
        &cfg,
        &["erase", "--subject", "account:8", "--format", "json"],
    );
    out.expect_code(0);
    let report = out.json();
    assert_eq!(
        env.scalar("SELECT count(*) FROM docs WHERE account_id = 8 AND kind = 'invoice'")
            .await,
        40,
        "every invoice of account 8 is inside invoice-docs' 7y floor"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM docs WHERE account_id = 8 AND kind = 'promo'")
            .await,
        0,
        "the promos of account 8 are erased, whatever their age"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM docs WHERE account_id = 9")
            .await,
        10,
        "other subjects untouched"
    );
    let gone = (before - env.scalar("SELECT count(*) FROM docs").await) as u64;
    assert_eq!(gone, 10);
    assert_eq!(
        deleted_total(&report),
        gone,
        "the report claims exactly the deletions that happened: {report}"
    );
}

// Issue 12, item 2 (erase honours each rule's filter): a row of the subject that no
// rule's filter covers is not erased.
#[tokio::test]
async fn erase_removes_only_rows_a_rules_filter_covers() {
    let env = TestEnv::new("erase_filter").await;
    env.sql(&format!(
        "{DOCS}
         INSERT INTO docs (account_id, kind, created_at) SELECT 8, 'promo', now() - interval '1 day' FROM generate_series(1, 10);
         INSERT INTO docs (account_id, kind, created_at) SELECT 8, 'draft', now() - interval '1 day' FROM generate_series(1, 7);"
    ))
    .await;
    let cfg = env.config(&format!(
        "{PROMO}{}",
        table_rule(
            "promo-docs",
            "promo",
            "docs",
            "30d",
            &format!("filter = \"kind = 'promo'\"\n{SUBJECT}")
        ),
    ));
    let out = env.run(
        &cfg,
        &["erase", "--subject", "account:8", "--format", "json"],
    );
    out.expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM docs WHERE kind = 'draft'")
            .await,
        7,
        "drafts are outside promo-docs' filter"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM docs WHERE kind = 'promo'")
            .await,
        0
    );
    assert_eq!(n(&out.json(), "promo-docs", "deleted"), 10);
}

// Issue 12, item 2 / found-by-reading 11 (erase with an anonymise rule): erase never
// anonymises a row inside its category floor.
#[tokio::test]
async fn erase_never_anonymises_inside_the_category_floor() {
    let env = TestEnv::new("erase_anon_floor").await;
    env.sql(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, email text, closed_at timestamptz);
         INSERT INTO accounts VALUES
           (8, 'a8@example.com', now() - interval '10 days'),
           (9, 'a9@example.com', now() - interval '2 years');",
    )
    .await;
    let cfg = env.config(
        "[categories.account_data]\nlegal_basis = \"contract\"\nmin_retain = \"1y\"\n\n[[rules]]\nname = \"closed-accounts\"\ncategory = \"account_data\"\nstore = \"app\"\ntable = \"accounts\"\nage_column = \"closed_at\"\nretain = \"1y\"\naction = \"anonymise\"\nsubject = { kind = \"account\", column = \"id\" }\nanonymise = { email = \"hash\" }\n",
    );
    let out = env.run(
        &cfg,
        &["erase", "--subject", "account:8", "--format", "json"],
    );
    out.expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM accounts WHERE id = 8 AND email = 'a8@example.com'")
            .await,
        1,
        "account 8 closed 10 days ago: inside the 1y floor, its columns stay as they are"
    );
    assert_eq!(n(&out.json(), "closed-accounts", "anonymised"), 0);
    // Past the floor, the same erase does anonymise (so the above is not vacuous).
    env.run(
        &cfg,
        &["erase", "--subject", "account:9", "--format", "json"],
    )
    .expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM accounts WHERE id = 9 AND email = 'a9@example.com'")
            .await,
        0,
        "account 9 is past its floor and is anonymised"
    );
}

fn gens_rule(name: &str, table: &str) -> String {
    table_rule(
        name,
        "assets",
        table,
        "90d",
        &format!("{SUBJECT}\nobjects = {{ store = \"assets\", key_columns = [\"output_key\"] }}"),
    )
}

const GENS: &str = "CREATE TABLE gens (id bigint PRIMARY KEY, account_id bigint, output_key text, created_at timestamptz NOT NULL);";

// Issue 12, item 3 (shared linked object, same table): an object stays while a young
// row still references it.
#[tokio::test]
async fn a_shared_object_stays_while_a_young_row_references_it() {
    for server in plain_servers() {
        let mut env = TestEnv::new("shared_obj").await;
        env.env.extend(server.env());
        let c = server.client();
        let bucket = server.bucket(false).await;
        env.sql(&format!(
            "{GENS}
             INSERT INTO gens VALUES
               (1, 1, 'g/shared.png', now() - interval '100 days'),
               (2, 1, 'g/shared.png', now() - interval '1 day'),
               (3, 1, 'g/own.png', now() - interval '100 days');"
        ))
        .await;
        put_many(&c, &bucket, vec!["g/shared.png".into(), "g/own.png".into()]).await;
        let cfg = env.config(&format!(
            "{}{}",
            server.store(&bucket),
            gens_rule("gens", "gens")
        ));
        env.run(&cfg, &["sweep", "--format", "json"]);
        assert_eq!(
            env.scalar("SELECT count(*) FROM gens WHERE id = 2").await,
            1,
            "{}: the young row stays",
            server.name
        );
        assert_eq!(
            keys(&c, &bucket, "g/").await,
            vec!["g/shared.png".to_string()],
            "{}: g/shared.png is still referenced by a young row; g/own.png goes",
            server.name
        );
        assert_eq!(
            env.scalar("SELECT count(*) FROM gens WHERE id IN (1, 3)")
                .await,
            0,
            "{}: both old rows are removed",
            server.name
        );
    }
}

// Issue 12, item 3 (shared linked object, another table): an object stays while a row of
// another table rule with objects in the same store references it.
#[tokio::test]
async fn a_shared_object_stays_while_another_tables_row_references_it() {
    for server in plain_servers() {
        let mut env = TestEnv::new("shared_obj2").await;
        env.env.extend(server.env());
        let c = server.client();
        let bucket = server.bucket(false).await;
        env.sql(&format!(
            "{GENS}
             CREATE TABLE thumbs (id bigint PRIMARY KEY, account_id bigint, output_key text, created_at timestamptz NOT NULL);
             INSERT INTO gens VALUES
               (1, 1, 'g/shared.png', now() - interval '100 days'),
               (3, 1, 'g/own.png', now() - interval '100 days');
             INSERT INTO thumbs VALUES (1, 2, 'g/shared.png', now() - interval '1 day');"
        ))
        .await;
        put_many(&c, &bucket, vec!["g/shared.png".into(), "g/own.png".into()]).await;
        let cfg = env.config(&format!(
            "{}{}{}",
            server.store(&bucket),
            gens_rule("gens", "gens"),
            gens_rule("thumbs", "thumbs")
        ));
        env.run(&cfg, &["sweep", "--rule", "gens", "--format", "json"]);
        assert_eq!(
            keys(&c, &bucket, "g/").await,
            vec!["g/shared.png".to_string()],
            "{}: thumbs still references g/shared.png",
            server.name
        );
        assert_eq!(
            env.scalar("SELECT count(*) FROM gens").await,
            0,
            "{}: the old gens rows are removed",
            server.name
        );
        assert_eq!(env.scalar("SELECT count(*) FROM thumbs").await, 1);
    }
}

// Issue 12, item 3 (a row that cannot be deleted, with linked objects): a row kept by a
// foreign key keeps its object, does not stop the rest of its batch, and is counted as
// `blocked` with SQLSTATE and constraint but no row values.
#[tokio::test]
async fn a_row_blocked_by_a_foreign_key_keeps_its_object_and_not_its_batch() {
    for server in plain_servers() {
        let mut env = TestEnv::new("blocked_obj").await;
        env.env.extend(server.env());
        let c = server.client();
        let bucket = server.bucket(false).await;
        env.sql(&format!(
            "{GENS}
             CREATE TABLE gen_likes (id bigint PRIMARY KEY, gen_id bigint CONSTRAINT gen_likes_gen_fk REFERENCES gens (id) ON DELETE RESTRICT);
             INSERT INTO gens SELECT 900000 + g, 1, 'g/k' || g || '.png', now() - interval '100 days' FROM generate_series(1, 5) g;
             INSERT INTO gen_likes VALUES (777777, 900003);"
        ))
        .await;
        let all: Vec<String> = (1..=5).map(|g| format!("g/k{g}.png")).collect();
        put_many(&c, &bucket, all).await;
        let cfg = env.config(&format!(
            "{}{}",
            server.store(&bucket),
            gens_rule("gens", "gens")
        ));
        let out = env.run(&cfg, &["sweep", "--format", "json"]);
        assert!(
            out.code == 0 || out.code == 1,
            "{}: the run finishes (exit {})\n{}",
            server.name,
            out.code,
            out.stderr
        );
        assert_eq!(
            env.scalar("SELECT count(*) FROM gens").await,
            1,
            "{}: the 4 unreferenced due rows go; only the blocked one stays",
            server.name
        );
        assert_eq!(
            env.scalar("SELECT count(*) FROM gens WHERE id = 900003")
                .await,
            1
        );
        assert_eq!(
            keys(&c, &bucket, "g/").await,
            vec!["g/k3.png".to_string()],
            "{}: the blocked row's object stays, the other 4 go",
            server.name
        );
        let r = out.json();
        assert_eq!(n(&r, "gens", "blocked"), 1, "{}: {r}", server.name);
        assert_eq!(n(&r, "gens", "deleted"), 4);
        let errors = errors_of(&r, "gens");
        assert!(
            errors.contains("23503") && errors.contains("gen_likes_gen_fk"),
            "{}: SQLSTATE and constraint named: {errors}",
            server.name
        );
        for value in ["900003", "777777", "g/k3.png"] {
            assert!(
                !errors.contains(value),
                "{}: no row value ({value}) in errors: {errors}",
                server.name
            );
        }
    }
}

// Issue 12, item 3 (a row that cannot be deleted, plain table): one row kept by a foreign
// key among 100 due rows does not stop the other 99.
#[tokio::test]
async fn a_row_blocked_by_a_foreign_key_does_not_stop_the_other_rows() {
    let env = TestEnv::new("blocked_plain").await;
    env.sql(
        "CREATE TABLE notes (id bigint PRIMARY KEY, created_at timestamptz NOT NULL);
         CREATE TABLE note_refs (id bigint PRIMARY KEY, note_id bigint CONSTRAINT note_refs_note_fk REFERENCES notes (id) ON DELETE RESTRICT);
         INSERT INTO notes SELECT 500000 + g, now() - interval '100 days' FROM generate_series(1, 100) g;
         INSERT INTO note_refs VALUES (666666, 500050);",
    )
    .await;
    let cfg = env.config(&format!(
        "{LOGS}{}",
        table_rule("notes", "logs", "notes", "30d", "")
    ));
    let out = env.run(&cfg, &["sweep", "--format", "json"]);
    assert!(
        out.code == 0 || out.code == 1,
        "the run finishes (exit {})\n{}",
        out.code,
        out.stderr
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM notes").await,
        1,
        "99 rows deleted, the referenced one stays"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM notes WHERE id = 500050")
            .await,
        1
    );
    let r = out.json();
    assert_eq!(n(&r, "notes", "blocked"), 1, "{r}");
    assert_eq!(n(&r, "notes", "deleted"), 99);
    let errors = errors_of(&r, "notes");
    assert!(
        errors.contains("23503") && errors.contains("note_refs_note_fk"),
        "SQLSTATE and constraint named: {errors}"
    );
    for value in ["500050", "666666"] {
        assert!(
            !errors.contains(value),
            "no row value ({value}) in errors: {errors}"
        );
    }
}

// Issue 12, item 4 / 9 (dangerous configs): a filter that is not exactly one boolean
// expression is refused with exit 2 by validate, dry-run and sweep, before any write.
#[tokio::test]
async fn a_filter_that_breaks_out_of_its_parentheses_is_refused() {
    let env = TestEnv::new("filter_breakout").await;
    env.sql(
        "CREATE TABLE tickets (id serial PRIMARY KEY, status text, created_at timestamptz NOT NULL);
         INSERT INTO tickets (status, created_at) SELECT 'resolved', now() - interval '40 days' FROM generate_series(1, 10);
         INSERT INTO tickets (status, created_at) SELECT 'resolved', now() - interval '1 day' FROM generate_series(1, 10);
         INSERT INTO tickets (status, created_at) SELECT 'open', now() - interval '40 days' FROM generate_series(1, 10);",
    )
    .await;
    let with_filter = |filter: &str| {
        env.config(&format!(
            "{LOGS}{}",
            table_rule(
                "tickets",
                "logs",
                "tickets",
                "30d",
                &format!("filter = {}", toml_string(filter))
            )
        ))
    };
    // A sound filter passes (so the refusals below are about the filter).
    let good = with_filter("status = 'resolved'");
    env.run(&good, &["validate"]).expect_code(0);

    let cfg = with_filter("status='resolved') OR (true");
    env.run(&cfg, &["validate"]).expect_code(2);
    env.run(&cfg, &["sweep", "--dry-run"]).expect_code(2);
    env.run(&cfg, &["sweep"]).expect_code(2);
    assert_eq!(
        env.scalar("SELECT count(*) FROM tickets").await,
        30,
        "nothing deleted"
    );
    for bad in [
        "status = 'resolved'; DELETE FROM tickets",
        "status = 'resolved' -- and the rest",
        "status = 'resolved' /* c */",
        "true) OR (status IS NULL",
        // sqlparser reads `%--` as one operator, PostgreSQL as `%` and a comment: the
        // next line then leaves the parentheses (found by review).
        "id %--'\n1 = 0) OR (true OR 0 %--'\n-1 = 0",
    ] {
        let cfg = with_filter(bad);
        let v = env.run(&cfg, &["validate"]);
        assert_eq!(v.code, 2, "validate of filter {bad:?}: {}", v.stderr);
        assert!(
            v.stderr.contains("filter"),
            "refused for the filter: {}",
            v.stderr
        );
        let s = env.run(&cfg, &["sweep"]);
        assert_eq!(s.code, 2, "sweep with filter {bad:?}: {}", s.stderr);
    }
    assert_eq!(
        env.scalar("SELECT count(*) FROM tickets").await,
        30,
        "nothing deleted"
    );
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

// Issue 12, item 5 / 9 (dangerous configs): a retain of zero is refused with exit 2.
#[tokio::test]
async fn a_zero_retain_is_refused() {
    let env = TestEnv::new("zero_retain").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO logs (created_at) SELECT now() - interval '1 second' FROM generate_series(1, 10);",
    )
    .await;
    for zero in ["0d", "0s", "0ms"] {
        let cfg = env.config(&format!(
            "{LOGS}{}",
            table_rule("logs", "logs", "logs", zero, "")
        ));
        let v = env.run(&cfg, &["validate"]);
        assert_eq!(v.code, 2, "validate with retain {zero}: {}", v.stderr);
        let s = env.run(&cfg, &["sweep"]);
        assert_eq!(s.code, 2, "sweep with retain {zero}: {}", s.stderr);
        assert_eq!(
            env.scalar("SELECT count(*) FROM logs").await,
            10,
            "retain {zero}: table untouched"
        );
    }
}

// Issue 12, item 6 (prefix rules): a prefix rule never deletes an object that a row of a
// table rule with objects in that store references (young rows, held subjects' rows).
#[tokio::test]
async fn a_prefix_rule_never_deletes_an_object_a_row_references() {
    for server in plain_servers() {
        let mut env = TestEnv::new("prefix_ref").await;
        env.env.extend(server.env());
        let c = server.client();
        let bucket = server.bucket(false).await;
        env.sql(&format!(
            "{GENS}
             INSERT INTO gens VALUES
               (1, 1, 'generated/a.png', now() - interval '1 day'),
               (2, 5, 'generated/b.png', now() - interval '100 days');"
        ))
        .await;
        put_many(
            &c,
            &bucket,
            vec![
                "generated/a.png".into(),
                "generated/b.png".into(),
                "generated/orphan.png".into(),
            ],
        )
        .await;
        let cfg = env.config(&format!(
            "{}{}[[rules]]\nname = \"orphans\"\ncategory = \"assets\"\nstore = \"assets\"\nprefix = \"generated/\"\nretain = \"6s\"\naction = \"delete\"\n",
            server.store(&bucket),
            gens_rule("gens", "gens"),
        ));
        env.run(
            &cfg,
            &[
                "hold",
                "add",
                "--subject",
                "account:5",
                "--reason",
                "dispute",
            ],
        )
        .expect_code(0);
        tokio::time::sleep(Duration::from_millis(6_500)).await;
        let out = env.run(&cfg, &["sweep", "--rule", "orphans", "--format", "json"]);
        out.expect_code(0);
        assert_eq!(
            keys(&c, &bucket, "generated/").await,
            vec!["generated/a.png".to_string(), "generated/b.png".to_string()],
            "{}: referenced objects stay, the orphan goes",
            server.name
        );
        assert_eq!(env.scalar("SELECT count(*) FROM gens").await, 2);
        let r = out.json();
        assert_eq!(n(&r, "orphans", "referenced"), 2, "{}: {r}", server.name);
        assert_eq!(n(&r, "orphans", "deleted"), 1);
    }
}

/// A child process of the binary, killed if the test panics while it runs.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts the binary like `common::run_bin` does, without waiting for it.
fn spawn_bin(env: &TestEnv, config: &std::path::Path, args: &[&str]) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retentiond"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DATABASE_URL")
        .env("RETENTIOND_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &env.env {
        cmd.env(k, v);
    }
    Running(Some(cmd.spawn().expect("start retentiond")))
}

// Issue 12, item 7 (holds apply at once): a hold placed while a sweep is running protects
// the subject's rows from the batches that follow, in the same run.
#[tokio::test]
async fn a_hold_placed_during_a_sweep_protects_at_once() {
    let env = TestEnv::new("hold_at_once").await;
    // ~22 rows per page, so a batch of 20 rows is one page (page walk) or 20 rows (index
    // walk): some 140 batches, each slowed by the statement trigger.
    env.sql(
        "CREATE TABLE stream (id bigserial PRIMARY KEY, account_id bigint NOT NULL, pad text, created_at timestamptz NOT NULL);
         INSERT INTO stream (account_id, pad, created_at)
           SELECT (g % 30) + 1, repeat('x', 300), now() - interval '100 days' FROM generate_series(1, 3000) g;
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
    let cfg = env.config_named(
        "retention.toml",
        &format!(
            "{header}\n{LOGS}{}",
            table_rule("stream", "logs", "stream", "30d", SUBJECT)
        ),
    );
    let mut sweep = spawn_bin(&env, &cfg, &["sweep", "--format", "json"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = env.scalar("SELECT count(*) FROM stream").await;
        if left < 3000 {
            assert!(
                left >= 1500,
                "the sweep went too fast to place a hold mid-run ({left} rows left)"
            );
            break;
        }
        if let Some(status) = sweep.0.as_mut().unwrap().try_wait().unwrap() {
            panic!("the sweep exited ({status}) before deleting anything");
        }
        assert!(
            Instant::now() < deadline,
            "the sweep never started deleting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.run(
        &cfg,
        &["hold", "add", "--subject", "account:7", "--reason", "r"],
    )
    .expect_code(0);
    let kept = env
        .scalar("SELECT count(*) FROM stream WHERE account_id = 7")
        .await;
    assert!(
        kept > 0,
        "account 7 still has rows when the hold is placed (else the test proves nothing)"
    );
    let out = sweep.0.take().unwrap().wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(0),
        "sweep: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM stream WHERE account_id = 7")
            .await,
        kept,
        "no row of account 7 was removed after `hold add` returned"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM stream WHERE account_id <> 7")
            .await,
        0,
        "every other account's rows are gone"
    );
}

// Issue 12, item 8 (subject ids in their column's type, uuid): a hold on the upper-case
// spelling of a uuid keeps its rows.
#[tokio::test]
async fn a_hold_on_an_upper_case_uuid_keeps_its_rows() {
    let env = TestEnv::new("uuid_hold").await;
    env.sql(
        "CREATE TABLE udocs (id serial PRIMARY KEY, owner uuid, created_at timestamptz NOT NULL);
         INSERT INTO udocs (owner, created_at) SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', now() - interval '100 days' FROM generate_series(1, 5);
         INSERT INTO udocs (owner, created_at) SELECT 'b1eebc99-9c0b-4ef8-bb6d-6bb9bd380a22', now() - interval '100 days' FROM generate_series(1, 5);",
    )
    .await;
    let cfg = env.config(&format!(
        "{LOGS}{}",
        table_rule(
            "udocs",
            "logs",
            "udocs",
            "30d",
            "subject = { kind = \"user\", column = \"owner\" }"
        )
    ));
    env.run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "user:A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "--reason",
            "case",
        ],
    )
    .expect_code(0);
    env.run(&cfg, &["sweep", "--format", "json"]).expect_code(0);
    assert_eq!(
        env.scalar(
            "SELECT count(*) FROM udocs WHERE owner = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"
        )
        .await,
        5,
        "the held uuid's rows stay, however it was spelled"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM udocs").await,
        5,
        "the other owner's rows go"
    );
}

// Issue 12, item 8 (subject ids in their column's type, integer): a hold on `account:042`
// keeps account 42's rows.
#[tokio::test]
async fn a_hold_on_a_zero_padded_integer_id_keeps_its_rows() {
    let env = TestEnv::new("int_hold").await;
    env.sql(
        "CREATE TABLE msgs (id serial PRIMARY KEY, account_id bigint, created_at timestamptz NOT NULL);
         INSERT INTO msgs (account_id, created_at) SELECT 42, now() - interval '100 days' FROM generate_series(1, 5);
         INSERT INTO msgs (account_id, created_at) SELECT 43, now() - interval '100 days' FROM generate_series(1, 5);",
    )
    .await;
    let cfg = env.config(&format!(
        "{LOGS}{}",
        table_rule("msgs", "logs", "msgs", "30d", SUBJECT)
    ));
    env.run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "account:042",
            "--reason",
            "case",
        ],
    )
    .expect_code(0);
    env.run(&cfg, &["sweep", "--format", "json"]).expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM msgs WHERE account_id = 42")
            .await,
        5,
        "account:042 is account 42 in a bigint column"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM msgs WHERE account_id = 43")
            .await,
        0
    );
}

// Issue 12, item 8 (subject ids in their column's type, erase): an id that cannot be cast
// to a rule's subject column is an error for erase (exit 2, naming the rule), and
// nothing is erased anywhere.
#[tokio::test]
async fn erase_of_an_id_that_does_not_fit_the_column_type_is_refused() {
    let env = TestEnv::new("erase_badid").await;
    env.sql(
        "CREATE TABLE msgs (id serial PRIMARY KEY, account_id bigint, created_at timestamptz NOT NULL);
         CREATE TABLE notes (id serial PRIMARY KEY, account_id text, created_at timestamptz NOT NULL);
         INSERT INTO msgs (account_id, created_at) SELECT 1, now() - interval '1 day' FROM generate_series(1, 5);
         INSERT INTO notes (account_id, created_at) SELECT 'abc', now() - interval '1 day' FROM generate_series(1, 5);",
    )
    .await;
    let cfg = env.config(&format!(
        "{LOGS}{}{}",
        table_rule("int-msgs", "logs", "msgs", "30d", SUBJECT),
        table_rule("text-notes", "logs", "notes", "30d", SUBJECT)
    ));
    let out = env.run(
        &cfg,
        &["erase", "--subject", "account:abc", "--format", "json"],
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM notes").await,
        5,
        "a refused erase removes nothing, not even where the id fits"
    );
    out.expect_code(2);
    assert!(
        out.stderr.contains("int-msgs"),
        "the error names the rule whose column cannot hold `abc`: {}",
        out.stderr
    );
    assert_eq!(env.scalar("SELECT count(*) FROM msgs").await, 5);
}

// Issue 12, item 1 (precedence across rules, partitions): an expired partition that holds
// a row another rule keeps (its floor) is not dropped; its other rows go row by row.
#[tokio::test]
async fn a_partition_with_a_row_another_rule_keeps_is_not_dropped() {
    let env = TestEnv::new("part_prec").await;
    env.sql(
        "CREATE TABLE pdocs (id bigserial, account_id bigint, kind text NOT NULL, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at);
         DO $$
         DECLARE d timestamptz := date_trunc('day', now());
         BEGIN
           EXECUTE format('CREATE TABLE pdocs_old PARTITION OF pdocs FOR VALUES FROM (%L) TO (%L)', d - interval '400 days', d - interval '200 days');
           EXECUTE format('CREATE TABLE pdocs_mid PARTITION OF pdocs FOR VALUES FROM (%L) TO (%L)', d - interval '200 days', d - interval '100 days');
           EXECUTE format('CREATE TABLE pdocs_new PARTITION OF pdocs FOR VALUES FROM (%L) TO (%L)', d - interval '100 days', d + interval '100 days');
         END $$;
         INSERT INTO pdocs (account_id, kind, created_at) VALUES (1, 'invoice', now() - interval '300 days');
         INSERT INTO pdocs (account_id, kind, created_at) SELECT 1, 'promo', now() - interval '300 days' - (g || ' minutes')::interval FROM generate_series(1, 20) g;
         INSERT INTO pdocs (account_id, kind, created_at) SELECT 1, 'promo', now() - interval '150 days' FROM generate_series(1, 20);
         INSERT INTO pdocs (account_id, kind, created_at) SELECT 1, 'promo', now() - interval '50 days' FROM generate_series(1, 5);
         INSERT INTO pdocs (account_id, kind, created_at) SELECT 1, 'promo', now() - interval '1 day' FROM generate_series(1, 10);",
    )
    .await;
    let cfg = env.config(&format!(
        "{INVOICES}{PROMO}{}{}",
        table_rule(
            "promo-parts",
            "promo",
            "pdocs",
            "30d",
            "partitions = \"drop\""
        ),
        table_rule(
            "invoice-parts",
            "invoices",
            "pdocs",
            "7y",
            "filter = \"kind = 'invoice'\""
        ),
    ));
    let out = env.run(
        &cfg,
        &["sweep", "--rule", "promo-parts", "--format", "json"],
    );
    out.expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM pdocs WHERE kind = 'invoice'")
            .await,
        1,
        "the invoice inside invoice-parts' 7y floor survives"
    );
    assert_eq!(
        env.scalar(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'pdocs'::regclass AND inhrelid = to_regclass('public.pdocs_old')"
        )
        .await,
        1,
        "the partition holding it is not dropped (nor detached): {}",
        out.stdout
    );
    assert_eq!(
        env.scalar(
            "SELECT count(*) FROM pdocs WHERE kind = 'promo' AND created_at < now() - interval '30 days'"
        )
        .await,
        0,
        "the due promos go (row by row where their partition must stay)"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM pdocs WHERE kind = 'promo'")
            .await,
        10,
        "young rows stay"
    );
}

// Issue 12, item 9 (naive timestamps): an application that stores local wall-clock time
// west of UTC in a `timestamp` column loses no row early once `age_timezone` says so.
// Read as UTC, a Los Angeles row 2 hours younger than the cutoff looks 6 hours past it.
#[tokio::test]
async fn a_naive_timestamp_is_read_in_its_age_timezone() {
    let env = TestEnv::new("naive_tz").await;
    env.sql(
        "CREATE TABLE visits (id bigserial PRIMARY KEY, created_at timestamp NOT NULL);
         INSERT INTO visits (created_at) SELECT (now() AT TIME ZONE 'America/Los_Angeles') - interval '30 days' + interval '2 hours' FROM generate_series(1, 7);
         INSERT INTO visits (created_at) SELECT (now() AT TIME ZONE 'America/Los_Angeles') - interval '31 days' FROM generate_series(1, 3);",
    )
    .await;
    let cfg = env.config(&format!(
        "{LOGS}{}",
        table_rule(
            "visits",
            "logs",
            "visits",
            "30d",
            "age_timezone = \"America/Los_Angeles\""
        ),
    ));
    let dry = env.run(&cfg, &["sweep", "--dry-run", "--format", "json"]);
    dry.expect_code(0);
    assert_eq!(
        n(&dry.json(), "visits", "matched"),
        3,
        "only the rows past the cutoff in Los Angeles time are due"
    );
    env.run(&cfg, &["sweep", "--format", "json"]).expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM visits").await,
        7,
        "the rows 2 hours short of 30 days in Los Angeles stay"
    );
    // The same rows read as UTC would all be due: the zone is what keeps them.
    let utc = env.config_named(
        "utc.toml",
        &format!(
            "{}{LOGS}{}",
            env.header(),
            table_rule("visits", "logs", "visits", "30d", "")
        ),
    );
    let dry = env.run(&utc, &["sweep", "--dry-run", "--format", "json"]);
    assert_eq!(n(&dry.json(), "visits", "matched"), 7);
}

// Issue 12, item 3 (found by review): an object whose rows are gone waits in the queue
// while a hold covers any of the rows it belonged to, even when the queue has it under
// another subject too; a prefix rule over the same keys leaves it to the queue.
#[tokio::test]
async fn a_queued_object_of_a_held_subject_stays_until_the_hold_is_released() {
    for server in plain_servers() {
        let mut env = TestEnv::new("queued_held").await;
        env.env.extend(server.env());
        let c = server.client();
        let bucket = server.bucket(false).await;
        env.sql(GENS).await;
        put_many(
            &c,
            &bucket,
            vec!["g/shared.png".into(), "g/free.png".into()],
        )
        .await;
        let cfg = env.config(&format!(
            "{}{}{}",
            server.store(&bucket),
            gens_rule("gens", "gens"),
            "[[rules]]\nname = \"orphans\"\ncategory = \"assets\"\nstore = \"assets\"\nprefix = \"g/\"\nretain = \"1s\"\naction = \"delete\"\n"
        ));
        // Rows of accounts 7 and 8 pointing at g/shared.png were deleted by a run that
        // stopped before its objects went: the queue holds the key once per row.
        env.run(&cfg, &["sweep", "--dry-run", "--rule", "gens"])
            .expect_code(0);
        env.sql(
            "SELECT pg_advisory_xact_lock(1919251317, 0);
             CREATE SCHEMA IF NOT EXISTS retentiond_work;
             CREATE TABLE IF NOT EXISTS retentiond_work.pending_objects (id bigserial PRIMARY KEY, objects_store text NOT NULL, rule text NOT NULL, category text NOT NULL, subject_kind text, subject_id text, key text NOT NULL, queued_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO retentiond_work.pending_objects (objects_store, rule, category, subject_kind, subject_id, key) VALUES
               ('assets', 'gens', 'assets', 'account', '7', 'g/shared.png'),
               ('assets', 'gens', 'assets', 'account', '8', 'g/shared.png'),
               ('assets', 'gens', 'assets', 'account', '7', 'g/free.png');",
        )
        .await;
        env.run(
            &cfg,
            &["hold", "add", "--subject", "account:8", "--reason", "case"],
        )
        .expect_code(0);
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        // The prefix rule first: it must leave queued keys alone.
        env.run(&cfg, &["sweep", "--rule", "orphans", "--format", "json"])
            .expect_code(0);
        assert_eq!(
            keys(&c, &bucket, "g/").await,
            vec!["g/free.png".to_string(), "g/shared.png".to_string()],
            "{}: the prefix rule leaves queued objects to the queue",
            server.name
        );
        env.run(&cfg, &["sweep", "--rule", "gens", "--format", "json"])
            .expect_code(0);
        assert_eq!(
            keys(&c, &bucket, "g/").await,
            vec!["g/shared.png".to_string()],
            "{}: account 8 is held, so its queued object stays; the free one goes",
            server.name
        );
        let id = env
            .scalar("SELECT id FROM retentiond.holds ORDER BY id DESC LIMIT 1")
            .await;
        env.run(
            &cfg,
            &["hold", "release", &id.to_string(), "--reason", "closed"],
        )
        .expect_code(0);
        env.run(&cfg, &["sweep", "--rule", "gens"]).expect_code(0);
        assert!(
            keys(&c, &bucket, "g/").await.is_empty(),
            "{}: released, the queued object goes",
            server.name
        );
        assert_eq!(
            env.scalar("SELECT count(*) FROM retentiond_work.pending_objects")
                .await,
            0
        );
    }
}
