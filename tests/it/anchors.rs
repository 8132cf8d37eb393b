//! Evidence a database superuser cannot rewrite: signed records, anchors in an Object
//! Lock bucket (moto), the offline bundle, policy history and the preservation lock.

use std::path::{Path, PathBuf};

use retentiond::audit::chain::{self, Kind};
use sqlx::Row;

use crate::common::TestEnv;
use crate::s3::{moto, Server};

const RULES: &str = "[categories.logs]\ndescription = \"API request logs\"\nmin_retain = \"30d\"\nlocked = true\n\n[[rules]]\nname = \"logs\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"logs\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"delete\"\n";

/// A database with a `logs` table, a locked Object Lock bucket for anchors, a key pair
/// made by `audit keygen`, and a config that signs and anchors every seal.
struct Evidence {
    env: TestEnv,
    server: Server,
    bucket: String,
    cfg: PathBuf,
    pubkey: PathBuf,
}

impl Evidence {
    async fn new(name: &str) -> Self {
        let mut env = TestEnv::new(name).await;
        env.sql(
            "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
             INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 5);
             INSERT INTO logs (at) SELECT now() - interval '1 day' FROM generate_series(1, 3);",
        )
        .await;
        let server = moto();
        let bucket = server.bucket(true).await;
        env.env.extend(server.env());
        let key = env.dir.path().join("signing.pem");
        let cfg = Self::write_config(&env, &server, &bucket, &key, RULES);
        env.run(&cfg, &["audit", "keygen", "--out", key.to_str().unwrap()])
            .expect_code(0);
        let pubkey = env.dir.path().join("signing.pem.pub");
        Self {
            env,
            server,
            bucket,
            cfg,
            pubkey,
        }
    }

    fn write_config(
        env: &TestEnv,
        server: &Server,
        bucket: &str,
        key: &Path,
        rules: &str,
    ) -> PathBuf {
        let head = env.header().replace(
            "[audit]\n",
            &format!(
                "[audit]\nsigning_key_file = \"{}\"\nanchor_store = \"anchors\"\nanchor_retain = \"2d\"\n",
                key.display()
            ),
        );
        let store = server
            .store(bucket)
            .replace("[stores.assets]", "[stores.anchors]")
            .replace(
                "[categories.assets]\ndescription = \"generated assets\"\n",
                "",
            );
        env.config_named("retention.toml", &format!("{head}\n{store}\n{rules}"))
    }

    fn run(&self, args: &[&str]) -> crate::common::Run {
        self.env.run(&self.cfg, args)
    }

    fn verify(&self, extra: &[&str]) -> crate::common::Run {
        let mut args = vec!["audit", "verify"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// A few sealed records: two sweeps, a hold and its release.
    fn history(&self) {
        self.run(&["sweep", "--dry-run"]).expect_code(0);
        self.run(&["sweep"]).expect_code(0);
        self.run(&[
            "hold",
            "add",
            "--subject",
            "account:7",
            "--reason",
            "litigation",
        ])
        .expect_code(0);
        self.run(&["hold", "release", "1", "--reason", "settled"])
            .expect_code(0);
    }
}

/// Recomputes every hash from record `from` on, as a superuser who edited the records
/// would: the plain chain is consistent again, the signatures are not re-made.
async fn rehash_from(env: &TestEnv, from: i64) {
    let mut conn = env.pool.acquire().await.unwrap();
    let entries: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT chain_seq, kind, ref_id FROM retentiond.chain ORDER BY chain_seq")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let mut prev = chain::GENESIS.to_owned();
    for (seq, kind, id) in entries {
        let k = Kind::parse(&kind).unwrap();
        if seq >= from {
            let canonical = chain::canonical(&mut conn, k, id).await.unwrap().unwrap();
            let hash = chain::link_hash(&prev, &canonical);
            let (table, key) = match k {
                Kind::Run => ("runs", "id"),
                Kind::Hold => ("holds", "id"),
                Kind::HoldRelease => ("hold_releases", "hold_id"),
            };
            sqlx::query(&format!(
                "UPDATE retentiond.{table} SET prev_hash = $2, hash = $3 WHERE {key} = $1"
            ))
            .bind(id)
            .bind(&prev)
            .bind(&hash)
            .execute(&mut *conn)
            .await
            .unwrap();
            prev = hash;
        } else {
            prev = sqlx::query_scalar("SELECT hash FROM retentiond.chain WHERE chain_seq = $1")
                .bind(seq)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        }
    }
}

const DISABLE: &str = "ALTER TABLE retentiond.runs DISABLE TRIGGER USER; ALTER TABLE retentiond.rule_results DISABLE TRIGGER USER; ALTER TABLE retentiond.holds DISABLE TRIGGER USER; ALTER TABLE retentiond.hold_releases DISABLE TRIGGER USER;";

// (a) The whole chain rewritten by a superuser, every hash recomputed: the database alone
// cannot tell; the anchors and the signatures can.
#[tokio::test]
async fn a_superuser_rewrite_of_the_whole_chain_is_caught_by_anchors_and_signatures() {
    let e = Evidence::new("anchor_rewrite").await;
    e.history();
    let pk = e.pubkey.to_str().unwrap();
    let ok = e.verify(&["--anchors", "--pubkey", pk]);
    ok.expect_code(0);
    assert!(ok.stdout.contains("4 of 4 records signed"), "{}", ok.stdout);
    assert!(ok.stdout.contains("anchors: 4 checked"), "{}", ok.stdout);

    // The enforcing sweep deleted 5 rows; the superuser makes it say 0, then re-hashes.
    e.env.sql(DISABLE).await;
    e.env
        .sql("UPDATE retentiond.rule_results SET deleted = 0 WHERE run_id = (SELECT run_id FROM retentiond.runs WHERE chain_seq = 2)")
        .await;
    rehash_from(&e.env, 1).await;

    e.verify(&[]).expect_code(0);
    let anchored = e.verify(&["--anchors"]);
    anchored.expect_code(4);
    assert!(
        anchored
            .stdout
            .contains("first: anchor retention-anchors/0000000000000002.json")
            && anchored.stdout.contains("the chain was rewritten"),
        "the first anchor that no longer matches is named: {}",
        anchored.stdout
    );
    let signed = e.verify(&["--pubkey", pk]);
    signed.expect_code(4);
    assert!(
        signed.stdout.contains("record 2 (run") && signed.stdout.contains("signature is not valid"),
        "{}",
        signed.stdout
    );

    // Truncation: the last two records removed; the plain chain is still consistent.
    e.env
        .sql("DELETE FROM retentiond.hold_releases; DELETE FROM retentiond.holds;")
        .await;
    e.verify(&[]).expect_code(0);
    let truncated = e.verify(&["--anchors"]);
    truncated.expect_code(4);
    assert!(
        truncated.stdout.contains("record 3")
            && truncated
                .stdout
                .contains("no longer in the chain, which ends at record 2"),
        "{}",
        truncated.stdout
    );
}

// (b) A hold release appended with a correct hash: INSERT fires no append-only trigger.
#[tokio::test]
async fn a_forged_hold_release_with_a_correct_hash_but_no_signature_is_caught() {
    let e = Evidence::new("anchor_forged").await;
    e.run(&["sweep"]).expect_code(0);
    e.run(&[
        "hold",
        "add",
        "--subject",
        "account:7",
        "--reason",
        "litigation",
    ])
    .expect_code(0);
    // The forger: a release of hold 1 at seq 3, hashed exactly as retentiond would.
    let mut conn = e.env.pool.acquire().await.unwrap();
    let head: (i64, String) = sqlx::query_as(
        "SELECT chain_seq, hash FROM retentiond.chain ORDER BY chain_seq DESC LIMIT 1",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    sqlx::query("INSERT INTO retentiond.hold_releases (hold_id, reason, actor, released_at, chain_seq) VALUES (1, 'settled', 'dpo', now(), $1)")
        .bind(head.0 + 1)
        .execute(&mut *conn)
        .await
        .unwrap();
    let canonical = chain::canonical(&mut conn, Kind::HoldRelease, 1)
        .await
        .unwrap()
        .unwrap();
    let hash = chain::link_hash(&head.1, &canonical);
    sqlx::query("UPDATE retentiond.hold_releases SET prev_hash = $1, hash = $2 WHERE hold_id = 1")
        .bind(&head.1)
        .bind(&hash)
        .execute(&mut *conn)
        .await
        .unwrap();
    let plain = e.verify(&[]);
    plain.expect_code(0);
    let hold_list = e.run(&["hold", "list"]);
    assert!(
        !hold_list.stdout.contains("litigation"),
        "the forged release took effect: {}",
        hold_list.stdout
    );

    let signed = e.verify(&["--pubkey", e.pubkey.to_str().unwrap()]);
    signed.expect_code(4);
    assert!(
        signed
            .stdout
            .contains("record 3 (release of hold 1) is not signed"),
        "{}",
        signed.stdout
    );
    // Signed with another key, claiming the right key id: still caught.
    let other = retentiond::audit::signing::Signer::generate();
    let real_id: String =
        sqlx::query_scalar("SELECT key_id FROM retentiond.runs WHERE chain_seq = 1")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    e.env.sql(DISABLE).await;
    let s = other.sign(&hash);
    sqlx::query(
        "UPDATE retentiond.hold_releases SET signature = $1, key_id = $2 WHERE hold_id = 1",
    )
    .bind(&s.signature)
    .bind(&real_id)
    .execute(&mut *conn)
    .await
    .unwrap();
    let forged = e.verify(&["--pubkey", e.pubkey.to_str().unwrap()]);
    forged.expect_code(4);
    assert!(
        forged
            .stdout
            .contains("record 3 (release of hold 1): its signature is not valid"),
        "{}",
        forged.stdout
    );
}

// (c) The bundle verifies with no database and no config; one flipped byte fails it.
#[tokio::test]
async fn the_bundle_verifies_offline_after_the_database_is_gone_and_a_flipped_byte_fails_it() {
    let e = Evidence::new("anchor_bundle").await;
    e.history();
    let bundle = e.env.dir.path().join("trail.ndjson");
    let out = e.run(&["audit", "export", "--out", bundle.to_str().unwrap()]);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("4 records (chain records 1 to 4), 1 config versions, 4 anchors"),
        "{}",
        out.stdout
    );
    let run_id: String =
        sqlx::query_scalar("SELECT run_id::text FROM retentiond.runs WHERE mode = 'enforce'")
            .fetch_one(&e.env.pool)
            .await
            .unwrap();

    // The database is dropped; the auditor has the bundle, the public key and no config.
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&e.env.pool)
        .await
        .unwrap();
    e.env.pool.close().await;
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&crate::common::admin_url())
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    let nowhere = e.env.dir.path().join("no-such-config.toml");
    let offline = |bundle: &Path| {
        crate::common::run_bin(
            &nowhere,
            &[
                "audit",
                "verify",
                "--bundle",
                bundle.to_str().unwrap(),
                "--pubkey",
                e.pubkey.to_str().unwrap(),
            ],
            &[],
        )
    };
    let ok = offline(&bundle);
    ok.expect_code(0);
    assert!(
        ok.stdout.contains("records 1 to 4") && ok.stdout.contains("4 of 4 records signed"),
        "{}",
        ok.stdout
    );
    let shown = crate::common::run_bin(
        &nowhere,
        &[
            "report",
            "show",
            &run_id,
            "--bundle",
            bundle.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    );
    shown.expect_code(0);
    assert_eq!(shown.json()["rules"][0]["deleted"], 5, "{}", shown.stdout);
    assert!(
        shown.stderr.contains("no --pubkey"),
        "unauthenticated is said: {}",
        shown.stderr
    );
    assert!(
        ok.stdout.contains("the bundle itself is signed"),
        "{}",
        ok.stdout
    );

    // Cut off the last record and re-seal the bytes: the bundle's own signature no longer
    // matches; stripped of it, the anchor of the record cut off still gives it away.
    let cut = |strip_signature: bool| {
        let mut lines: Vec<serde_json::Value> = std::fs::read_to_string(&bundle)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let last = lines.iter().rposition(|l| l["type"] == "record").unwrap();
        lines.remove(last);
        lines[0]["last_seq"] = 3.into();
        let mut end = lines.pop().unwrap();
        let mut body = String::new();
        for l in &lines {
            body.push_str(&chain::canonical_json(l));
            body.push('\n');
        }
        use sha2::Digest;
        end["sha256"] = hex::encode(sha2::Sha256::digest(body.as_bytes())).into();
        end["records"] = 3.into();
        if strip_signature {
            end["signature"] = serde_json::Value::Null;
            end["key_id"] = serde_json::Value::Null;
        }
        body.push_str(&chain::canonical_json(&end));
        body.push('\n');
        let p = e
            .env
            .dir
            .path()
            .join(format!("cut-{strip_signature}.ndjson"));
        std::fs::write(&p, body).unwrap();
        p
    };
    let r = offline(&cut(false));
    r.expect_code(4);
    assert!(
        r.stdout.contains("the bundle's own signature is not valid"),
        "{}",
        r.stdout
    );
    let r = offline(&cut(true));
    r.expect_code(4);
    assert!(
        r.stdout
            .contains("ends at record 3 but carries the anchor of record 4"),
        "{}",
        r.stdout
    );

    // One byte flipped anywhere fails it: in a record, in the end line, in the header.
    let bytes = std::fs::read(&bundle).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let deleted_at = text.find("\"deleted\":5").unwrap() + "\"deleted\":".len();
    for (what, at) in [
        ("a count", deleted_at),
        ("the last byte", bytes.len() - 3),
        ("the header", 10),
    ] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x01;
        let damaged = e.env.dir.path().join("damaged.ndjson");
        std::fs::write(&damaged, &flipped).unwrap();
        let r = offline(&damaged);
        assert_eq!(
            r.code, 4,
            "a flipped byte in {what} is caught:\n{}\n{}",
            r.stdout, r.stderr
        );
        assert!(
            r.stdout.contains("AUDIT TRAIL VIOLATION"),
            "{what}: {}",
            r.stdout
        );
    }
}

// (d) Under Object Lock (compliance mode), an anchor can be neither deleted nor
// overwritten: its version stays, and a forged newer version is caught.
#[tokio::test]
async fn anchors_cannot_be_deleted_or_overwritten_under_object_lock() {
    let e = Evidence::new("anchor_locked").await;
    e.run(&["sweep"]).expect_code(0);
    let c = e.server.client();
    let key = "retention-anchors/0000000000000001.json";
    let versions = c
        .list_object_versions()
        .bucket(&e.bucket)
        .prefix(key)
        .send()
        .await
        .unwrap();
    let v = versions.versions()[0].clone();
    let version = v.version_id().unwrap().to_owned();
    // moto answers GetObjectRetention with the object's body; HEAD carries the lock.
    let head = c
        .head_object()
        .bucket(&e.bucket)
        .key(key)
        .version_id(&version)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE"),
        "anchors are locked in compliance mode"
    );
    assert!(head.object_lock_retain_until_date().is_some());
    let original = c
        .get_object()
        .bucket(&e.bucket)
        .key(key)
        .version_id(&version)
        .send()
        .await
        .unwrap();
    let original = original.body.collect().await.unwrap().into_bytes();

    let delete = c
        .delete_object()
        .bucket(&e.bucket)
        .key(key)
        .version_id(&version)
        .bypass_governance_retention(true)
        .send()
        .await;
    assert!(delete.is_err(), "a locked anchor version cannot be deleted");
    c.put_object()
        .bucket(&e.bucket)
        .key(key)
        .body(b"{\"forged\":true}".to_vec().into())
        .send()
        .await
        .unwrap();
    let still = c
        .get_object()
        .bucket(&e.bucket)
        .key(key)
        .version_id(&version)
        .send()
        .await
        .unwrap();
    assert_eq!(
        still.body.collect().await.unwrap().into_bytes(),
        original,
        "the anchored version is unchanged"
    );
    let r = e.verify(&["--anchors"]);
    r.expect_code(4);
    assert!(
        r.stdout.contains(key) && r.stdout.contains("not an anchor"),
        "the forged version is named: {}",
        r.stdout
    );
}

// (e, CLI) and (f): a locked category cannot be weakened, from a config the trail
// recorded; lengthening is allowed; `policy history` and `policy diff` show it.
#[tokio::test]
async fn a_locked_category_cannot_be_weakened_and_policy_diff_shows_the_change() {
    let e = Evidence::new("anchor_lock").await;
    e.env
        .sql("CREATE TABLE logs2 (id serial PRIMARY KEY, at timestamptz)")
        .await;
    let key = e.env.dir.path().join("signing.pem");
    let rewrite = |rules: &str| Evidence::write_config(&e.env, &e.server, &e.bucket, &key, rules);
    // The rule keeps 35 days over the category's 30-day floor.
    let base = RULES.replace("retain = \"30d\"\naction", "retain = \"35d\"\naction");
    rewrite(&base);
    e.run(&["sweep", "--dry-run"]).expect_code(0);
    let locked_run: String = sqlx::query_scalar("SELECT run_id::text FROM retentiond.runs")
        .fetch_one(&e.env.pool)
        .await
        .unwrap();
    let first_sha = e.run(&["validate", "--format", "json"]).json()["config_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    for (weaker, change) in [
        (
            base.replace("min_retain = \"30d\"", "min_retain = \"7d\""),
            "lowers its min_retain from 30d to 7d",
        ),
        (
            base.replace("retain = \"35d\"\naction", "retain = \"31d\"\naction"),
            "lowers the retain of rule logs from 35d to 31d",
        ),
        (
            base.replace("locked = true", "locked = false"),
            "sets locked = false",
        ),
        (base.replace("locked = true\n", ""), "sets locked = false"),
        (
            base.replace("category = \"logs\"", "category = \"other\"")
                + "[categories.other]\ndescription = \"x\"\n",
            "moves rule logs to category other",
        ),
        // Same name and retain, another table: what the lock covers moved away.
        (
            base.replace("table = \"logs\"", "table = \"logs2\""),
            "changes `table` of rule logs",
        ),
        // An unlocked rule joining the locked rule's table with a shorter retain.
        (
            base.clone()
                + "[categories.scratch]\ndescription = \"x\"\n[[rules]]\nname = \"purge\"\ncategory = \"scratch\"\nstore = \"app\"\ntable = \"logs\"\nage_column = \"at\"\nretain = \"1d\"\naction = \"delete\"\n",
            "adds or shortens rule purge",
        ),
    ] {
        rewrite(&weaker);
        for cmd in [&["sweep"][..], &["validate"][..]] {
            let r = e.run(cmd);
            r.expect_code(2);
            assert!(
                r.stderr.contains(change) && r.stderr.contains(&locked_run),
                "{cmd:?} names the change and the run that locked it: {}",
                r.stderr
            );
        }
    }
    assert_eq!(
        e.env.scalar("SELECT count(*) FROM logs").await,
        8,
        "nothing was removed"
    );
    // Longer is allowed, and becomes the new floor.
    let longer = base
        .replace("\"30d\"", "\"60d\"")
        .replace("\"35d\"", "\"60d\"");
    rewrite(&longer);
    e.run(&["sweep"]).expect_code(0);
    rewrite(&base);
    let back = e.run(&["sweep"]);
    back.expect_code(2);
    assert!(
        back.stderr
            .contains("lowers its min_retain from 60d to 30d"),
        "{}",
        back.stderr
    );

    rewrite(&longer);
    let history = e.run(&["policy", "history", "--format", "json"]);
    history.expect_code(0);
    let versions = history.json();
    let versions = versions.as_array().unwrap();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(versions[0]["sha256"], first_sha.as_str());
    assert_eq!(versions[0]["first_run"], locked_run.as_str());
    assert_eq!(versions[1]["current"], true);
    assert_eq!(versions[0]["locked"], serde_json::json!(["logs"]));
    let diff = e.run(&["policy", "diff", &first_sha[..12], "current"]);
    diff.expect_code(0);
    assert!(
        diff.stdout.contains("rule logs: retain from 35d to 60d")
            && diff
                .stdout
                .contains("category logs: floor (min_retain) from 30d to 60d"),
        "{}",
        diff.stdout
    );
    // The stored text is the config's own bytes: its SHA-256 is the runs' config_sha256.
    let row = sqlx::query("SELECT text FROM retentiond.policies WHERE sha256 = $1")
        .bind(&first_sha)
        .fetch_one(&e.env.pool)
        .await
        .unwrap();
    let text: String = row.get("text");
    assert!(text.contains("locked = true"));

    // A superuser deletes the policy history to take the lock out of the check: that is
    // a violation, and no config is accepted until the trail is repaired.
    e.env
        .sql("ALTER TABLE retentiond.policies DISABLE TRIGGER USER; DELETE FROM retentiond.policies;")
        .await;
    let v = e.verify(&["--pubkey", e.pubkey.to_str().unwrap()]);
    v.expect_code(4);
    assert!(
        v.stdout.contains("missing from the policy history"),
        "{}",
        v.stdout
    );
    rewrite(
        &base
            .replace("locked = true\n", "")
            .replace("\"30d\"", "\"1d\"")
            .replace("\"35d\"", "\"1d\""),
    );
    let r = e.run(&["sweep"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("missing from the trail's policy history"),
        "{}",
        r.stderr
    );
    assert_eq!(
        e.env.scalar("SELECT count(*) FROM logs").await,
        8,
        "nothing was removed"
    );
}

// A failed anchor write is a warning, never a failed run, and the next seal closes the
// gap: its anchor covers every record before it.
#[tokio::test]
async fn a_failed_anchor_write_does_not_fail_the_run_and_the_next_seal_closes_the_gap() {
    let mut env = TestEnv::new("anchor_gap").await;
    env.sql(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); CREATE INDEX ON logs (at);
         INSERT INTO logs (at) SELECT now() - interval '40 days' FROM generate_series(1, 5);",
    )
    .await;
    let server = moto();
    env.env.extend(server.env());
    // The anchor bucket does not exist yet.
    let bucket = format!("rtd-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let key = env.dir.path().join("signing.pem");
    let cfg = Evidence::write_config(&env, &server, &bucket, &key, RULES);
    env.run(&cfg, &["audit", "keygen", "--out", key.to_str().unwrap()])
        .expect_code(0);
    let first = env.run(&cfg, &["sweep"]);
    first.expect_code(0);
    assert!(
        first.stderr.contains("could not be anchored"),
        "{}",
        first.stderr
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM logs").await,
        0,
        "the run did its work"
    );
    server
        .client()
        .create_bucket()
        .bucket(&bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    server.region.as_str(),
                ))
                .build(),
        )
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let none = env.run(&cfg, &["audit", "verify", "--anchors"]);
    none.expect_code(4);
    assert!(
        none.stdout.contains("no anchor in store `anchors`"),
        "{}",
        none.stdout
    );
    env.run(&cfg, &["sweep"]).expect_code(0);
    let closed = env.run(&cfg, &["audit", "verify", "--anchors"]);
    closed.expect_code(0);
    assert!(
        closed.stdout.contains("the latest anchors record 2"),
        "{}",
        closed.stdout
    );
}
