//! Issue 15, item 3: `export`, a subject's access and portability. Compared with the
//! database row by row; the manifest's hashes checked; the trail keeps no subject id.

use sha2::{Digest, Sha256};

use crate::common::{rule, TestEnv};
use crate::s3::{keys, plain_servers, put};

/// An id no other value in the tests spells.
const ID: &str = "987654321";

const SCHEMA: &str = "CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id bigint, amount numeric(30,10),
       big bigint, pdf bytea, tags text[], meta jsonb, issued_at timestamptz, note text, kind text NOT NULL,
       cash money, nums bigint[], blobs bytea[]);
     INSERT INTO invoices (account_id, amount, big, pdf, tags, meta, issued_at, note, kind, cash, nums, blobs) VALUES
       (987654321, 12345678901234567890.0123456789, 9007199254740993, decode(repeat('00ff10', 40), 'hex'),
        ARRAY['a', 'b \"q\"'], '{\"k\": [1, 2.50, null]}', '2026-01-02 03:04:05.678901+00', E'line\\nbreak é', 'invoice',
        12.5, ARRAY[9007199254740993, NULL], ARRAY['\\x00ff'::bytea, NULL]),
       (987654321, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'invoice', NULL, NULL, NULL),
       (987654321, 1, 1, NULL, NULL, NULL, now(), 'a promo', 'promo', NULL, NULL, NULL),
       (5, 2, 2, NULL, NULL, NULL, now(), 'another account', 'invoice', NULL, NULL, NULL);
     CREATE TABLE gens (id bigint PRIMARY KEY, account_id bigint, output_key text, created_at timestamptz NOT NULL);";

const RULES: &str = "[categories.invoices]\nmin_retain = \"7y\"\n\n\
[[rules]]\nname = \"invoices\"\ncategory = \"invoices\"\nstore = \"app\"\ntable = \"invoices\"\nage_column = \"issued_at\"\nretain = \"7y\"\naction = \"delete\"\nfilter = \"kind = 'invoice'\"\nsubject = { kind = \"account\", column = \"account_id\" }\n\n";

/// An invoice row as the database renders it: id, then amount, big, pdf, tags, meta,
/// issued_at and note as text.
type DbRow = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks every file the manifest lists: it exists, its SHA-256 and its row count match.
fn check_manifest(dir: &std::path::Path) -> serde_json::Value {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    for f in manifest["files"].as_array().unwrap() {
        let path = dir.join(f["path"].as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(f["sha256"], sha256_hex(&bytes), "{}", path.display());
        if let Some(rows) = f["rows"].as_u64() {
            assert_eq!(bytes.iter().filter(|b| **b == b'\n').count() as u64, rows);
        }
    }
    manifest
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn an_export_matches_the_database_row_by_row_and_the_trail_keeps_no_subject_id() {
    let env = TestEnv::new("export_rows").await;
    env.sql(SCHEMA).await;
    let cfg = env.config(RULES);
    let out = env.dir.path().join("bundle");
    let run = env.run(
        &cfg,
        &[
            "export",
            "--subject",
            &format!("account:{ID}"),
            "--out",
            out.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["trigger"], "export");
    assert_eq!(
        rule(&report, "invoices")["matched"],
        2,
        "the rule's filter: its rows only"
    );
    let manifest = check_manifest(&out);
    assert_eq!(manifest["run_id"], report["run_id"]);
    assert_eq!(manifest["subject"], format!("account:{ID}"));
    let exported = lines(&out.join("rules/invoices.ndjson"));
    // The database's own rendering of the same rows, column by column.
    let want: Vec<DbRow> =
        sqlx::query_as(
            "SELECT id, amount::text, big::text, translate(encode(pdf, 'base64'), E'\\n', ''), \
             to_jsonb(tags)::text, meta::text, to_char(issued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), note \
             FROM invoices WHERE account_id = 987654321 AND kind = 'invoice' ORDER BY ctid",
        )
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(exported.len(), want.len());
    for (row, w) in exported.iter().zip(&want) {
        assert_eq!(row["id"], w.0.to_string(), "bigint as a string: {row}");
        assert_eq!(row["account_id"], ID);
        assert_eq!(
            row["amount"].as_str(),
            w.1.as_deref(),
            "numeric keeps every digit"
        );
        assert_eq!(row["big"].as_str(), w.2.as_deref(), "2^53 + 1 survives");
        assert_eq!(row["pdf"].as_str(), w.3.as_deref(), "bytea as base64");
        let as_json = |v: &Option<String>| {
            v.as_deref()
                .map(|s| serde_json::from_str::<serde_json::Value>(s).unwrap())
        };
        assert_eq!(
            Some(row["tags"].clone()).filter(|v| !v.is_null()),
            as_json(&w.4),
            "arrays as JSON"
        );
        assert_eq!(
            Some(row["meta"].clone()).filter(|v| !v.is_null()),
            as_json(&w.5),
            "json as JSON"
        );
        match &w.6 {
            Some(t) => {
                let got = chrono::DateTime::parse_from_rfc3339(row["issued_at"].as_str().unwrap())
                    .expect("RFC 3339");
                assert_eq!(
                    got.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
                    *t
                );
            }
            None => assert!(row["issued_at"].is_null()),
        }
        assert_eq!(row["note"].as_str(), w.7.as_deref());
        assert_eq!(row["kind"], "invoice");
    }
    // money without its currency, arrays of bigint as strings and of bytea as base64.
    assert_eq!(exported[0]["cash"], "12.50");
    assert_eq!(
        exported[0]["nums"],
        serde_json::json!(["9007199254740993", null])
    );
    assert_eq!(exported[0]["blobs"], serde_json::json!(["AP8=", null]));
    assert!(exported[1]["cash"].is_null() && exported[1]["blobs"].is_null());
    // A bundle is personal data: readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&out.join("rules/invoices.ndjson")), 0o600);
    assert_eq!(mode(&out.join("manifest.json")), 0o600);
    assert_eq!(manifest["status"], "succeeded");
    // The trail: one sealed export run, with counts and a keyed pseudonym, never the id.
    let trail: String = sqlx::query_scalar(
        "SELECT string_agg(x, ' ') FROM (SELECT to_jsonb(r)::text AS x FROM retentiond.runs r \
         UNION ALL SELECT to_jsonb(x)::text FROM retentiond.rule_results x) t",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(
        !trail.contains(ID),
        "the trail holds the subject id: {trail}"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE trigger = 'export' AND subject_hash IS NOT NULL AND hash IS NOT NULL")
            .await,
        1
    );
    env.run(&cfg, &["audit", "verify"]).expect_code(0);
    // Nothing was changed.
    assert_eq!(env.scalar("SELECT count(*) FROM invoices").await, 4);
}

#[tokio::test]
async fn an_unknown_kind_is_exit_2_and_a_subject_without_data_is_an_empty_export() {
    let env = TestEnv::new("export_empty").await;
    env.sql(SCHEMA).await;
    let cfg = env.config(RULES);
    let out = env.dir.path().join("none");
    let run = env.run(
        &cfg,
        &[
            "export",
            "--subject",
            "user:1",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    run.expect_code(2);
    assert!(
        run.stderr.contains("no rule has a subject of kind `user`"),
        "{}",
        run.stderr
    );
    assert!(!out.exists(), "nothing written");
    let run = env.run(
        &cfg,
        &[
            "export",
            "--subject",
            "account:77",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    run.expect_code(0);
    let manifest = check_manifest(&out);
    assert_eq!(manifest["files"][0]["rows"], 0);
    assert_eq!(
        std::fs::read(out.join("rules/invoices.ndjson")).unwrap(),
        b""
    );
    // A second export into the same, now non-empty, directory is refused.
    let again = env.run(
        &cfg,
        &[
            "export",
            "--subject",
            "account:77",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    again.expect_code(2);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);
}

#[tokio::test]
async fn linked_objects_are_listed_copied_and_written_to_a_store() {
    for server in plain_servers() {
        let mut env = TestEnv::new("export_objects").await;
        env.env.extend(server.env());
        let c = server.client();
        let bucket = server.bucket(false).await;
        env.sql(&format!(
            "{SCHEMA}
             INSERT INTO gens VALUES (1, {ID}, 'g/a b.png', now()), (2, {ID}, '../escape', now()),
               (3, {ID}, 'g/missing.png', now()), (4, 5, 'g/other.png', now());"
        ))
        .await;
        put(&c, &bucket, "g/a b.png", "picture one").await;
        put(&c, &bucket, "../escape", "a key that is not a path").await;
        put(&c, &bucket, "g/other.png", "someone else's").await;
        let body = format!(
            "{}{RULES}[[rules]]\nname = \"gens\"\ncategory = \"assets\"\nstore = \"app\"\ntable = \"gens\"\nage_column = \"created_at\"\nretain = \"30d\"\naction = \"delete\"\nsubject = {{ kind = \"account\", column = \"account_id\" }}\nobjects = {{ store = \"assets\", key_columns = [\"output_key\"] }}\n",
            server.store(&bucket)
        );
        let cfg = env.config(&body);
        let out = env.dir.path().join("with-objects");
        let run = env.run(
            &cfg,
            &[
                "export",
                "--subject",
                &format!("account:{ID}"),
                "--out",
                out.to_str().unwrap(),
                "--with-objects",
            ],
        );
        run.expect_code(0);
        let manifest = check_manifest(&out);
        let listed = lines(&out.join("objects.ndjson"));
        let keys_listed: Vec<&str> = listed.iter().map(|o| o["key"].as_str().unwrap()).collect();
        assert_eq!(
            keys_listed,
            vec!["../escape", "g/a b.png", "g/missing.png"],
            "{}",
            server.name
        );
        for o in &listed {
            match o["key"].as_str().unwrap() {
                "g/missing.png" => assert_eq!(o["exists"], false),
                key => {
                    assert_eq!(o["exists"], true);
                    assert!(o["etag"].is_string() && o["last_modified"].is_string());
                    let file = out.join(o["file"].as_str().unwrap());
                    assert!(
                        file.starts_with(out.join("objects")),
                        "a key never leaves objects/"
                    );
                    let body = std::fs::read(&file).unwrap();
                    assert_eq!(o["size"], body.len() as u64);
                    let want = if key == "g/a b.png" {
                        "picture one"
                    } else {
                        "a key that is not a path"
                    };
                    assert_eq!(body, want.as_bytes(), "{}", server.name);
                }
            }
        }
        assert!(manifest["files"].as_array().unwrap().len() >= 4);
        // The same bundle to an s3 store of the config that no rule uses.
        let exports = server.bucket(false).await;
        let cfg = env.config(&format!(
            "[stores.exports]\nkind = \"s3\"\nbucket = \"{exports}\"\nregion = \"{}\"\nendpoint_env = \"S3_ENDPOINT\"\nforce_path_style = true\n\n{body}",
            server.region
        ));
        let subject = format!("account:{ID}");
        let to_store = [
            "export",
            "--subject",
            &subject,
            "--out",
            "s3://exports/req-1",
            "--with-objects",
        ];
        env.run(&cfg, &to_store).expect_code(0);
        let stored = keys(&c, &exports, "req-1/").await;
        for want in [
            "req-1/manifest.json",
            "req-1/rules/gens.ndjson",
            "req-1/objects.ndjson",
        ] {
            assert!(
                stored.contains(&want.to_string()),
                "{}: {stored:?}",
                server.name
            );
        }
        assert_eq!(
            stored.len(),
            manifest["files"].as_array().unwrap().len() + 1,
            "{stored:?}"
        );
        // A prefix that holds something already is refused: bundles never mix.
        let again = env.run(&cfg, &to_store);
        again.expect_code(2);
        assert!(
            again.stderr.contains("already holds objects"),
            "{}",
            again.stderr
        );
        assert_eq!(keys(&c, &exports, "req-1/").await, stored);
        assert_eq!(
            env.scalar("SELECT count(*) FROM gens").await,
            4,
            "nothing removed"
        );
    }
}

// Issue 15, item 4: the monthly batch of requests, one run per subject and one summary.
#[tokio::test]
async fn a_subjects_file_erases_and_exports_each_subject_in_its_own_run() {
    let env = TestEnv::new("subjects_file").await;
    env.sql(
        "CREATE TABLE notes (id bigserial PRIMARY KEY, account_id bigint, created_at timestamptz NOT NULL);
         INSERT INTO notes (account_id, created_at) SELECT a, now() FROM generate_series(1, 4) a, generate_series(1, 3);",
    )
    .await;
    let cfg = env.config(
        "[categories.notes]\ndescription = \"notes\"\n\n[[rules]]\nname = \"notes\"\ncategory = \"notes\"\nstore = \"app\"\ntable = \"notes\"\nage_column = \"created_at\"\nretain = \"1y\"\naction = \"delete\"\nsubject = { kind = \"account\", column = \"account_id\" }\n",
    );
    let bad = env.dir.path().join("bad.txt");
    std::fs::write(&bad, "account:1\nnot a subject\n").unwrap();
    let run = env.run(&cfg, &["erase", "--subjects-file", bad.to_str().unwrap()]);
    run.expect_code(2);
    assert!(run.stderr.contains("bad.txt:2"), "{}", run.stderr);
    assert_eq!(
        env.scalar("SELECT count(*) FROM notes").await,
        12,
        "nothing erased"
    );
    let file = env.dir.path().join("requests.txt");
    std::fs::write(&file, "# December requests\naccount:1\n\naccount:3\n").unwrap();
    let out = env.dir.path().join("exports");
    let run = env.run(
        &cfg,
        &[
            "export",
            "--subjects-file",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    run.expect_code(0);
    let subjects = run.json()["subjects"].as_array().unwrap().clone();
    assert_eq!(subjects.len(), 2);
    for (dir, n) in [("account%3A1", 3), ("account%3A3", 3)] {
        let m = check_manifest(&out.join(dir));
        assert_eq!(m["files"][0]["rows"], n);
    }
    let run = env.run(&cfg, &["erase", "--subjects-file", file.to_str().unwrap()]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("erasure of 2 subject(s)"),
        "{}",
        run.stdout
    );
    let left: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT account_id FROM notes ORDER BY 1")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(left, vec![2, 4]);
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE trigger = 'erase'")
            .await,
        2,
        "one run per subject"
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM retentiond.runs WHERE trigger = 'export'")
            .await,
        2
    );
}
