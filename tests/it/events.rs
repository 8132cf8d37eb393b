//! Issue 15: retention that starts at an event (account closure). The attacks first: an
//! event rule that removes an open or recently closed subject's rows, or a row another
//! rule's floor keeps, or a held subject's rows, or an object a young row still needs.

use crate::common::{n, rule, TestEnv};
use crate::s3::{keys, plain_servers, put_many};

const ACCOUNTS: &str = "CREATE TABLE accounts (id bigint PRIMARY KEY, closed_at timestamptz);
     INSERT INTO accounts VALUES
       (1, NULL),                              -- open
       (2, now() - interval '31 days'),        -- closed a month ago: due
       (3, now() - interval '5 days'),         -- closed recently
       (4, now() - interval '400 days');       -- closed long ago: due";

const EVENT: &str = "[events.account_closed]\nstore = \"app\"\ntable = \"accounts\"\nsubject = { kind = \"account\", column = \"id\" }\nat_column = \"closed_at\"\ndescription = \"account closure\"\n\n";

const CATEGORIES: &str = "[categories.assets]\ndescription = \"generated assets\"\n\n[categories.invoices]\nlegal_basis = \"Dutch tax law\"\nmin_retain = \"7y\"\n\n[categories.conversations]\ndescription = \"chat history\"\n\n";

/// An `after_event` delete rule on `table` with `extra` lines.
fn event_rule(name: &str, category: &str, table: &str, extra: &str) -> String {
    format!(
        "[[rules]]\nname = \"{name}\"\ncategory = \"{category}\"\nstore = \"app\"\ntable = \"{table}\"\nsubject = {{ kind = \"account\", column = \"account_id\" }}\nafter_event = \"account_closed\"\nretain = \"30d\"\naction = \"delete\"\n{extra}\n"
    )
}

async fn account_ids_left(env: &TestEnv, table: &str) -> Vec<i64> {
    sqlx::query_scalar(&format!(
        "SELECT DISTINCT account_id FROM {table} ORDER BY 1"
    ))
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

// A row is due when its subject's event happened more than `retain` ago: the rows of
// closed accounts 2 and 4 go, whatever their own age (a row written yesterday included);
// those of the open account 1, the recently closed account 3 and an account with no
// event row at all (5) stay. The report states the event.
#[tokio::test]
async fn an_event_rule_removes_exactly_the_rows_of_subjects_closed_longer_than_retain() {
    let env = TestEnv::new("event_rows").await;
    env.sql(&format!(
        "{ACCOUNTS};
         CREATE TABLE conversations (id bigserial PRIMARY KEY, account_id bigint, created_at timestamptz NOT NULL);
         INSERT INTO conversations (account_id, created_at)
           SELECT a, now() - (d || ' days')::interval FROM generate_series(1, 5) a, generate_series(0, 600, 100) d;"
    ))
    .await;
    let cfg = env.config(&format!(
        "{EVENT}{CATEGORIES}{}",
        event_rule("closed-conversations", "conversations", "conversations", "")
    ));
    let dry = env.run(&cfg, &["sweep", "--dry-run", "--format", "json"]);
    dry.expect_code(0);
    assert_eq!(
        n(&dry.json(), "closed-conversations", "matched"),
        14,
        "{}",
        dry.stdout
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM conversations").await,
        35,
        "a dry-run removes nothing"
    );
    let out = env.run(&cfg, &["sweep", "--format", "json"]);
    out.expect_code(0);
    let report = out.json();
    assert_eq!(n(&report, "closed-conversations", "deleted"), 14);
    let details = &rule(&report, "closed-conversations")["details"];
    assert_eq!(details["after_event"], "account_closed");
    assert_eq!(details["retention"], "30d after account closure");
    assert_eq!(account_ids_left(&env, "conversations").await, vec![1, 3, 5]);
    assert_eq!(env.scalar("SELECT count(*) FROM conversations").await, 21);
    // The policy states the event.
    let policy = env.run(&cfg, &["policy", "--format", "markdown"]);
    policy.expect_code(0);
    assert!(
        policy.stdout.contains("30 days after account closure"),
        "{}",
        policy.stdout
    );
}

// Floors and holds win over an event rule: an invoice stays seven years after its own
// date (the invoices rule's floor covers the table), whatever the account did; a held
// closed account keeps its rows.
#[tokio::test]
async fn floors_and_holds_win_over_an_event_rule() {
    let env = TestEnv::new("event_floor").await;
    env.sql(&format!(
        "{ACCOUNTS};
         CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id bigint, issued_on date NOT NULL);
         INSERT INTO invoices (account_id, issued_on) VALUES
           (2, current_date - 100), (2, current_date - 3000), (4, current_date - 200), (4, current_date - 2600);
         CREATE TABLE conversations (id bigserial PRIMARY KEY, account_id bigint, created_at timestamptz NOT NULL);
         INSERT INTO conversations (account_id, created_at) SELECT a, now() FROM generate_series(1, 4) a;"
    ))
    .await;
    let cfg = env.config(&format!(
        "{EVENT}{CATEGORIES}{}{}[[rules]]\nname = \"invoices\"\ncategory = \"invoices\"\nstore = \"app\"\ntable = \"invoices\"\nage_column = \"issued_on\"\nage_timezone = \"UTC\"\nretain = \"7y\"\naction = \"delete\"\nsubject = {{ kind = \"account\", column = \"account_id\" }}\n",
        event_rule("closed-invoices", "conversations", "invoices", ""),
        event_rule("closed-conversations", "conversations", "conversations", ""),
    ));
    env.run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "account:4",
            "--reason",
            "litigation",
            "--actor",
            "dpo",
        ],
    )
    .expect_code(0);
    let out = env.run(
        &cfg,
        &[
            "sweep",
            "--rule",
            "closed-invoices",
            "--rule",
            "closed-conversations",
            "--format",
            "json",
        ],
    );
    out.expect_code(0);
    let report = out.json();
    // Account 2's invoice of 3000 days ago is past the 7-year floor: it goes. Its
    // invoice of 100 days ago is inside the floor: it stays. Account 4 is held.
    let left: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT account_id, (current_date - issued_on)::int FROM invoices ORDER BY 1, 2",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(left, vec![(2, 100), (4, 200), (4, 2600)], "{report}");
    assert_eq!(n(&report, "closed-invoices", "deleted"), 1);
    assert_eq!(
        rule(&report, "closed-invoices")["details"]["kept_by_other_rules"]["invoices"],
        1,
        "{report}"
    );
    assert_eq!(account_ids_left(&env, "conversations").await, vec![1, 3, 4]);
    assert_eq!(n(&report, "closed-conversations", "held"), 1);
}

// `plan --as-of +31d` shows what a closure today will remove in a month; today's plan
// shows none of it.
#[tokio::test]
async fn plan_as_of_shows_what_a_closure_will_remove() {
    let env = TestEnv::new("event_plan").await;
    env.sql(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, closed_at timestamptz);
         INSERT INTO accounts VALUES (7, now()), (8, NULL);
         CREATE TABLE conversations (id bigserial PRIMARY KEY, account_id bigint, created_at timestamptz NOT NULL);
         INSERT INTO conversations (account_id, created_at) SELECT a, now() FROM generate_series(7, 8) a, generate_series(1, 6);",
    )
    .await;
    let cfg = env.config(&format!(
        "{EVENT}{CATEGORIES}{}",
        event_rule("closed-conversations", "conversations", "conversations", "")
    ));
    let now = env.run(&cfg, &["plan", "--format", "json"]);
    now.expect_code(0);
    let later = env.run(&cfg, &["plan", "--as-of", "+31d", "--format", "json"]);
    later.expect_code(0);
    let due = |v: &serde_json::Value| rule(v, "closed-conversations")["due"].as_u64().unwrap();
    assert_eq!(due(&now.json()), 0, "{}", now.stdout);
    assert_eq!(due(&later.json()), 6, "{}", later.stdout);
    assert_eq!(
        rule(&later.json(), "closed-conversations")["retain"],
        "30d after account closure"
    );
    assert_eq!(env.scalar("SELECT count(*) FROM conversations").await, 12);
}

// Linked objects of an event rule go with their rows, and an object a row of an open
// account still references stays.
#[tokio::test]
async fn an_event_rule_removes_linked_objects_and_keeps_those_still_referenced() {
    for server in plain_servers() {
        let mut env = TestEnv::new("event_objects").await;
        env.env.extend(server.env());
        let c = server.client();
        let bucket = server.bucket(false).await;
        env.sql(&format!(
            "{ACCOUNTS};
             CREATE TABLE generations (id bigint PRIMARY KEY, account_id bigint, output_key text, created_at timestamptz NOT NULL);
             INSERT INTO generations VALUES
               (1, 2, 'g/closed.png', now()),
               (2, 2, 'g/shared.png', now()),
               (3, 1, 'g/shared.png', now()),
               (4, 1, 'g/open.png', now());"
        ))
        .await;
        put_many(
            &c,
            &bucket,
            vec![
                "g/closed.png".into(),
                "g/shared.png".into(),
                "g/open.png".into(),
            ],
        )
        .await;
        let cfg = env.config(&format!(
            "{EVENT}{}{}",
            server.store(&bucket),
            event_rule(
                "closed-generations",
                "assets",
                "generations",
                "objects = { store = \"assets\", key_columns = [\"output_key\"] }"
            )
        ));
        let out = env.run(&cfg, &["sweep", "--format", "json"]);
        out.expect_code(0);
        assert_eq!(
            account_ids_left(&env, "generations").await,
            vec![1],
            "{}",
            server.name
        );
        assert_eq!(
            keys(&c, &bucket, "g/").await,
            vec!["g/open.png".to_string(), "g/shared.png".to_string()],
            "{}: the closed account's own object goes; the one an open account's row shares stays",
            server.name
        );
    }
}

// Config mistakes are positioned and exit 2 before any store is touched.
#[tokio::test]
async fn event_config_mistakes_are_positioned_and_exit_2() {
    let env = TestEnv::new("event_config").await;
    let cases = [
        (
            event_rule(
                "r",
                "conversations",
                "conversations",
                "age_column = \"created_at\"",
            ),
            "mutually exclusive",
        ),
        (
            event_rule("r", "conversations", "conversations", "")
                .replace("account_closed\"", "account_gone\""),
            "unknown event `account_gone`",
        ),
        (
            event_rule("r", "conversations", "conversations", "").replace(
                "subject = { kind = \"account\", column = \"account_id\" }\n",
                "",
            ),
            "needs `subject`",
        ),
        (
            event_rule("r", "conversations", "conversations", "")
                .replace("kind = \"account\"", "kind = \"user\""),
            "differs from the kind of event",
        ),
        (
            event_rule(
                "r",
                "conversations",
                "conversations",
                "partitions = \"drop\"",
            ),
            "after_event",
        ),
    ];
    for (text, want) in cases {
        let cfg = env.config(&format!("{EVENT}{CATEGORIES}{text}"));
        let out = env.run(&cfg, &["validate"]);
        out.expect_code(2);
        assert!(
            out.stderr.contains(want) && out.stderr.contains("retention.toml:"),
            "want `{want}` with a position:\n{}",
            out.stderr
        );
    }
}

// The preflight refuses an event whose table or columns do not fit, before any write.
#[tokio::test]
async fn the_preflight_refuses_an_event_that_does_not_fit() {
    let env = TestEnv::new("event_preflight").await;
    env.sql(
        "CREATE TABLE accounts (id text PRIMARY KEY, closed_at date);
         CREATE TABLE conversations (id bigserial PRIMARY KEY, account_id bigint, created_at timestamptz NOT NULL);
         INSERT INTO conversations (account_id, created_at) VALUES (1, now());",
    )
    .await;
    let cfg = env.config(&format!(
        "{EVENT}{CATEGORIES}{}",
        event_rule("closed-conversations", "conversations", "conversations", "")
    ));
    let out = env.run(&cfg, &["sweep"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("expected timestamp with time zone"),
        "{}",
        out.stderr
    );
    env.sql("ALTER TABLE accounts ALTER COLUMN closed_at TYPE timestamptz")
        .await;
    let out = env.run(&cfg, &["sweep"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("types must be the same"),
        "{}",
        out.stderr
    );
    assert_eq!(env.scalar("SELECT count(*) FROM conversations").await, 1);
}
