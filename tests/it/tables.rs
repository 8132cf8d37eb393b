//! Text tables line up: `plan`, `conformance`, `hold list`, `report list` and `report
//! show`, with long rule names and six-digit counts. Every cell of a column starts (text)
//! or ends (numbers) where its header does, in every row.

use crate::common::TestEnv;

const LONG: &str = "closed-account-generations-of-the-eu-region-tenants";

/// `1234567` as the tables print it: `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn utc(v: &serde_json::Value) -> String {
    match v.as_str() {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
        None => "-".into(),
    }
}

enum Col {
    /// Text: starts where the header starts.
    Left(&'static str),
    /// A number: ends where the header ends.
    Right(&'static str),
}

/// Checks that, below the header line that names every column of `cols`, row `i` of
/// `rows` has each of its cells in its column's place.
fn assert_lined_up(what: &str, text: &str, cols: &[Col], rows: &[Vec<String>]) {
    let lines: Vec<&str> = text.lines().collect();
    let names: Vec<&str> = cols
        .iter()
        .map(|c| match c {
            Col::Left(n) | Col::Right(n) => *n,
        })
        .collect();
    let h = lines
        .iter()
        .position(|l| names.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("{what}: no header naming {names:?} in:\n{text}"));
    let header = lines[h];
    assert!(!rows.is_empty(), "{what}: rows to check");
    for (i, row) in rows.iter().enumerate() {
        let line = lines
            .get(h + 1 + i)
            .unwrap_or_else(|| panic!("{what}: row {i} missing in:\n{text}"));
        for (col, value) in cols.iter().zip(row) {
            match col {
                Col::Left(name) => {
                    let at = header.find(name).unwrap();
                    assert!(
                        line.get(at..).is_some_and(|rest| rest.starts_with(value.as_str()))
                            && (at == 0 || line.as_bytes()[at - 1] == b' '),
                        "{what}: `{value}` does not start at column {at} ({name}) in row {i}:\n{text}"
                    );
                }
                Col::Right(name) => {
                    let end = header.find(name).unwrap() + name.len();
                    assert!(
                        line.get(..end).is_some_and(|head| head.ends_with(value.as_str()))
                            && !matches!(line.as_bytes().get(end), Some(b) if *b != b' '),
                        "{what}: `{value}` does not end at column {end} ({name}) in row {i}:\n{text}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn every_text_table_lines_up_with_long_names_and_six_digit_counts() {
    let env = TestEnv::new("tables").await;
    env.sql(
        "CREATE TABLE generations (id serial PRIMARY KEY, account_id bigint, at timestamptz NOT NULL);
         CREATE INDEX ON generations (at);
         INSERT INTO generations (account_id, at) SELECT g % 1000, now() - interval '100 days' FROM generate_series(1, 123456) g;
         INSERT INTO generations (account_id, at) SELECT 5, now() - interval '1 day' FROM generate_series(1, 20);
         CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz NOT NULL);
         CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 7);",
    )
    .await;
    let head = env.header().replace(
        "batch_size = 3\nmin_batch_size = 1\nmax_batch_size = 50",
        "batch_size = 20000\nmin_batch_size = 1000\nmax_batch_size = 50000",
    );
    let cfg = env.config_named(
        "retention.toml",
        &format!(
            "{head}\n[categories.generated]\ndescription = \"generated assets\"\n\n[categories.logs]\ndescription = \"logs\"\n\n\
             [[rules]]\nname = \"{LONG}\"\ncategory = \"generated\"\nstore = \"app\"\ntable = \"generations\"\nage_column = \"at\"\nretain = \"90d\"\naction = \"delete\"\nschedule = \"0 0 3 * * *\"\nsubject = {{ kind = \"account\", column = \"account_id\" }}\n\n\
             [[rules]]\nname = \"logs\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"logs\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"delete\"\nschedule = \"0 */15 * * * *\"\n"
        ),
    );

    // plan (both as of one instant: cutoffs and next runs then match to the second)
    let as_of = chrono::Utc::now().to_rfc3339();
    let text = env.run(&cfg, &["plan", "--as-of", &as_of]);
    text.expect_code(0);
    let json = env
        .run(&cfg, &["plan", "--as-of", &as_of, "--format", "json"])
        .json();
    let rows: Vec<Vec<String>> = json["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            vec![
                r["rule"].as_str().unwrap().to_owned(),
                utc(&r["cutoff"]),
                thousands(r["due"].as_u64().unwrap()),
                thousands(r["held"].as_u64().unwrap()),
                r["schedule"].as_str().unwrap().to_owned(),
                utc(&r["next_runs"][0]),
            ]
        })
        .collect();
    assert_eq!(rows[0][2], "123,456", "six digits, with a separator");
    assert_lined_up(
        "plan",
        &text.stdout,
        &[
            Col::Left("RULE"),
            Col::Left("CUTOFF"),
            Col::Right("DUE"),
            Col::Right("HELD"),
            Col::Left("SCHEDULE"),
            Col::Left("NEXT RUN"),
        ],
        &rows,
    );

    // conformance (exit 4: records are overdue)
    let text = env.run(&cfg, &["conformance"]);
    text.expect_code(4);
    let json = env.run(&cfg, &["conformance", "--format", "json"]).json();
    let rows: Vec<Vec<String>> = json["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            vec![
                r["rule"].as_str().unwrap().to_owned(),
                thousands(r["overdue"].as_u64().unwrap()),
                thousands(r["held"].as_u64().unwrap()),
                r["oldest_overdue_age"].as_str().unwrap_or("-").to_owned(),
            ]
        })
        .collect();
    assert_eq!(rows[0][1], "123,456");
    assert_lined_up(
        "conformance",
        &text.stdout,
        &[
            Col::Left("RULE"),
            Col::Right("OVERDUE"),
            Col::Right("HELD"),
            Col::Left("OLDEST OVERDUE"),
        ],
        &rows,
    );

    // hold list
    env.run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "account:7",
            "--reason",
            "litigation hold requested by counsel, case 2026-118",
            "--actor",
            "dpo",
        ],
    )
    .expect_code(0);
    env.run(
        &cfg,
        &[
            "hold",
            "add",
            "--category",
            "logs",
            "--reason",
            "audit",
            "--actor",
            "a-much-longer-actor-name",
        ],
    )
    .expect_code(0);
    let text = env.run(&cfg, &["hold", "list"]);
    text.expect_code(0);
    let json = env.run(&cfg, &["hold", "list", "--format", "json"]).json();
    let rows: Vec<Vec<String>> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            vec![
                h["id"].as_i64().unwrap().to_string(),
                h["actor"].as_str().unwrap().to_owned(),
                h["reason"].as_str().unwrap().to_owned(),
            ]
        })
        .collect();
    assert_eq!(rows.len(), 2);
    assert_lined_up(
        "hold list",
        &text.stdout,
        &[Col::Right("ID"), Col::Left("BY"), Col::Left("REASON")],
        &rows,
    );

    // report list and report show, after a sweep
    env.run(&cfg, &["sweep"]).expect_code(0);
    let text = env.run(&cfg, &["report", "list"]);
    text.expect_code(0);
    let json = env
        .run(&cfg, &["report", "list", "--format", "json"])
        .json();
    let rows: Vec<Vec<String>> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let sum = |f: &str| {
                r["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x[f].as_u64().unwrap())
                    .sum::<u64>()
            };
            vec![
                r["run_id"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
                thousands(sum("deleted")),
                thousands(sum("held")),
            ]
        })
        .collect();
    assert!(rows[0][2].len() >= 7, "six digits deleted: {rows:?}");
    assert_lined_up(
        "report list",
        &text.stdout,
        &[
            Col::Left("RUN"),
            Col::Left("STATUS"),
            Col::Right("DELETED"),
            Col::Right("HELD"),
        ],
        &rows,
    );
    let text = env.run(&cfg, &["report", "show", "latest"]);
    text.expect_code(0);
    let json = env
        .run(&cfg, &["report", "show", "latest", "--format", "json"])
        .json();
    let rows: Vec<Vec<String>> = json["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            vec![
                x["rule"].as_str().unwrap().to_owned(),
                x["status"].as_str().unwrap().to_owned(),
                thousands(x["matched"].as_u64().unwrap()),
                thousands(x["deleted"].as_u64().unwrap()),
                thousands(x["held"].as_u64().unwrap()),
            ]
        })
        .collect();
    // Markdown and HTML: the same counts with separators; a table rule's bytes are n/a.
    let deleted = rows[0][3].clone();
    assert!(deleted.contains(','), "{rows:?}");
    for format in ["markdown", "html"] {
        let out = env.run(&cfg, &["report", "show", "latest", "--format", format]);
        out.expect_code(0);
        assert!(
            out.stdout.contains(&deleted) && out.stdout.contains("n/a"),
            "{format}: expected `{deleted}` and `n/a` in:\n{}",
            out.stdout
        );
    }
    assert!(text.stdout.contains("n/a"), "{}", text.stdout);
    assert_lined_up(
        "report show",
        &text.stdout,
        &[
            Col::Left("RULE"),
            Col::Left("STATUS"),
            Col::Right("MATCHED"),
            Col::Right("DELETED"),
            Col::Right("HELD"),
        ],
        &rows,
    );
}
