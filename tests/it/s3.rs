//! Object storage end to end, against a real S3-compatible server: moto for the whole
//! suite (versioning, Object Lock, multipart), Garage for what needs neither.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, ObjectLockLegalHoldStatus, ObjectLockMode, VersioningConfiguration,
};
use aws_sdk_s3::Client;

use crate::common::{n, rule, TestEnv};

/// An S3 server the tests can use.
#[derive(Clone)]
pub struct Server {
    pub name: &'static str,
    pub endpoint: String,
    pub key: String,
    pub secret: String,
    pub region: String,
}

pub fn moto() -> Server {
    Server {
        name: "moto",
        endpoint: std::env::var("RETENTIOND_TEST_S3_ENDPOINT")
            .unwrap_or_else(|_| "http://127.0.0.1:9100".into()),
        key: "test".into(),
        secret: "test".into(),
        region: "eu-central-1".into(),
    }
}

/// Garage, when the test script provides it.
pub fn garage() -> Option<Server> {
    if std::env::var("RETENTIOND_SKIP_GARAGE").is_ok_and(|v| v == "1") {
        eprintln!("RETENTIOND_SKIP_GARAGE=1: skipping the Garage variant");
        return None;
    }
    let endpoint = std::env::var("RETENTIOND_TEST_GARAGE_ENDPOINT").ok()?;
    Some(Server {
        name: "garage",
        endpoint,
        key: std::env::var("RETENTIOND_TEST_GARAGE_ACCESS_KEY_ID").expect("garage key id"),
        secret: std::env::var("RETENTIOND_TEST_GARAGE_SECRET_ACCESS_KEY").expect("garage secret"),
        region: std::env::var("RETENTIOND_TEST_GARAGE_REGION").unwrap_or_else(|_| "garage".into()),
    })
}

/// Servers for tests that need no versioning or Object Lock. CI provides Garage; running
/// without it is allowed only when explicitly skipped.
pub fn plain_servers() -> Vec<Server> {
    let mut v = vec![moto()];
    match garage() {
        Some(g) => v.push(g),
        None if std::env::var("RETENTIOND_SKIP_GARAGE").is_ok_and(|v| v == "1") => {}
        None => panic!("RETENTIOND_TEST_GARAGE_ENDPOINT is not set: run the suite with scripts/test (or set RETENTIOND_SKIP_GARAGE=1)"),
    }
    v
}

impl Server {
    pub fn client(&self) -> Client {
        let creds =
            aws_sdk_s3::config::Credentials::new(&self.key, &self.secret, None, None, "test");
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(creds)
            .http_client(retentiond::store::s3::https_client())
            .force_path_style(true)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        Client::from_conf(conf)
    }

    /// A fresh bucket; `lock` enables Object Lock (and so versioning).
    pub async fn bucket(&self, lock: bool) -> String {
        let name = format!("rtd-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let c = self.client();
        let mut req = c.create_bucket().bucket(&name);
        if self.region != "us-east-1" && self.name != "garage" {
            req = req.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        self.region.as_str(),
                    ))
                    .build(),
            );
        }
        if lock {
            req = req.object_lock_enabled_for_bucket(true);
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("create bucket on {}: {e:?}", self.name));
        name
    }

    /// Env for the binary.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("S3_ENDPOINT".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), self.key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            ("AWS_REGION".into(), self.region.clone()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }

    /// The `[stores.assets]` section.
    pub fn store(&self, bucket: &str) -> String {
        format!(
            "[stores.assets]\nkind = \"s3\"\nbucket = \"{bucket}\"\nregion = \"{}\"\nendpoint_env = \"S3_ENDPOINT\"\nforce_path_style = true\nmax_in_flight = 4\n\n[categories.assets]\ndescription = \"generated assets\"\n\n",
            self.region
        )
    }
}

pub async fn put(c: &Client, bucket: &str, key: &str, body: &str) -> Option<String> {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"))
        .version_id()
        .map(str::to_owned)
}

pub async fn put_many(c: &Client, bucket: &str, keys: Vec<String>) {
    use futures::stream::StreamExt;
    futures::stream::iter(keys)
        .map(|k| {
            let c = c.clone();
            let b = bucket.to_owned();
            async move {
                put(&c, &b, &k, "data-data-data").await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

pub async fn keys(c: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let r = c
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        out.extend(
            r.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        if !r.is_truncated().unwrap_or(false) {
            break;
        }
        token = r.next_continuation_token().map(str::to_owned);
    }
    out.sort();
    out
}

/// `(key, version, is_delete_marker)` of every version under `prefix`.
pub async fn versions(c: &Client, bucket: &str, prefix: &str) -> Vec<(String, String, bool)> {
    let r = c
        .list_object_versions()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut v: Vec<_> = r
        .versions()
        .iter()
        .map(|x| {
            (
                x.key().unwrap().to_owned(),
                x.version_id().unwrap_or("").to_owned(),
                false,
            )
        })
        .chain(r.delete_markers().iter().map(|m| {
            (
                m.key().unwrap().to_owned(),
                m.version_id().unwrap_or("").to_owned(),
                true,
            )
        }))
        .collect();
    v.sort();
    v
}

/// Keys no S3 client should struggle with, and some that many do.
pub fn odd_keys() -> Vec<String> {
    vec![
        "gen/with space.png".into(),
        "gen/plus+sign.png".into(),
        "gen/percent%20literal.png".into(),
        "gen/hash#tag.png".into(),
        "gen/question?.png".into(),
        "gen/ümlaut-日本語-emoji-🎉.png".into(),
        format!("gen/{}", "k".repeat(996)),
    ]
}

fn prefix_rule(extra: &str) -> String {
    format!("[[rules]]\nname = \"orphans\"\ncategory = \"assets\"\nstore = \"assets\"\nprefix = \"gen/\"\nretain = \"2s\"\naction = \"delete\"\n{extra}\n")
}

#[tokio::test]
async fn prefix_rule_deletes_old_objects_with_any_key_name() {
    for server in plain_servers() {
        let mut env = TestEnv::new("s3prefix").await;
        env.env.extend(server.env());
        let c = server.client();
        let bucket = server.bucket(false).await;
        let mut old: Vec<String> = (0..1_050).map(|i| format!("gen/old/{i:05}.png")).collect();
        old.extend(odd_keys());
        put_many(&c, &bucket, old.clone()).await;
        put(&c, &bucket, "gen/pinned/keep.png", "pinned").await;
        put(&c, &bucket, "other/outside.png", "outside").await;
        let upload = c
            .create_multipart_upload()
            .bucket(&bucket)
            .key("gen/big.bin")
            .send()
            .await
            .unwrap();
        // The old objects are past `retain` once the young one is put; the dry-run and the
        // sweep then have `retain` (6 s, room for a loaded CI machine) before it is too.
        tokio::time::sleep(std::time::Duration::from_millis(6_500)).await;
        put(&c, &bucket, "gen/young.png", "young").await;
        let cfg = env.config(&format!(
            "{}{}",
            server.store(&bucket),
            prefix_rule("exclude = [\"gen/pinned/\"]\nabort_multipart_after = \"1s\"")
                .replace("retain = \"2s\"", "retain = \"6s\"")
        ));

        let dry = env.run(
            &cfg,
            &["sweep", "--dry-run", "--format", "json", "--show-samples"],
        );
        dry.expect_code(0);
        let dry = dry.json();
        assert_eq!(
            n(&dry, "orphans", "matched"),
            old.len() as u64,
            "{}: dry-run matched",
            server.name
        );
        assert_eq!(
            n(&dry, "orphans", "bytes"),
            old.len() as u64 * 14,
            "{}: dry-run bytes",
            server.name
        );
        assert!(!rule(&dry, "orphans")["samples"]
            .as_array()
            .unwrap()
            .is_empty());
        assert_eq!(
            keys(&c, &bucket, "gen/").await.len(),
            old.len() + 2,
            "{}: dry-run deleted nothing",
            server.name
        );

        let out = env.run(&cfg, &["sweep", "--format", "json"]);
        out.expect_code(0);
        let r = out.json();
        assert_eq!(
            n(&r, "orphans", "deleted"),
            old.len() as u64,
            "{}",
            server.name
        );
        assert_eq!(n(&r, "orphans", "failed"), 0);
        assert_eq!(n(&r, "orphans", "bytes"), old.len() as u64 * 14);
        assert_eq!(
            keys(&c, &bucket, "gen/").await,
            vec![
                "gen/pinned/keep.png".to_string(),
                "gen/young.png".to_string()
            ],
            "{}",
            server.name
        );
        assert_eq!(keys(&c, &bucket, "other/").await.len(), 1);
        assert_eq!(
            rule(&r, "orphans")["details"]["multipart_aborted"],
            1,
            "{}",
            server.name
        );
        let uploads = c
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        assert!(
            uploads
                .uploads()
                .iter()
                .all(|u| u.upload_id() != upload.upload_id()),
            "{}: upload aborted",
            server.name
        );
        // Idempotent: nothing that was due then is left (as of a moment before the young
        // object could itself expire).
        let again = env
            .run(
                &cfg,
                &["sweep", "--dry-run", "--as-of=-4s", "--format", "json"],
            )
            .json();
        assert_eq!(
            n(&again, "orphans", "matched"),
            0,
            "{}: idempotent",
            server.name
        );
    }
}

#[tokio::test]
async fn versioned_bucket_with_object_lock() {
    let server = moto();
    let mut env = TestEnv::new("s3lock").await;
    env.env.extend(server.env());
    let c = server.client();
    let bucket = server.bucket(true).await;
    // Old generation.
    put(&c, &bucket, "gen/expired.png", "v1").await;
    put(&c, &bucket, "gen/expired.png", "v2").await;
    let noncurrent_old = put(&c, &bucket, "gen/mixed.png", "old").await.unwrap();
    let held = put(&c, &bucket, "gen/held.png", "held").await.unwrap();
    c.put_object_legal_hold()
        .bucket(&bucket)
        .key("gen/held.png")
        .version_id(&held)
        .legal_hold(
            aws_sdk_s3::types::ObjectLockLegalHold::builder()
                .status(ObjectLockLegalHoldStatus::On)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let retained = c
        .put_object()
        .bucket(&bucket)
        .key("gen/retained.png")
        .body(ByteStream::from_static(b"gov"))
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
        .object_lock_mode(ObjectLockMode::Governance)
        .object_lock_retain_until_date(aws_smithy_types::DateTime::from_secs(
            chrono::Utc::now().timestamp() + 86_400,
        ))
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_owned();
    put(&c, &bucket, "gen/user-deleted.png", "x").await;
    c.delete_object()
        .bucket(&bucket)
        .key("gen/user-deleted.png")
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3_100)).await;
    // Young generation.
    let young_current = put(&c, &bucket, "gen/mixed.png", "new").await.unwrap();
    put(&c, &bucket, "gen/young.png", "young").await;

    let cfg = env.config(&format!(
        "{}{}",
        server.store(&bucket),
        prefix_rule("versions = \"all\"")
    ));
    let out = env.run(&cfg, &["sweep", "--format", "json"]);
    out.expect_code(0);
    let r = out.json();
    assert_eq!(rule(&r, "orphans")["details"]["versioned"], true);
    assert_eq!(rule(&r, "orphans")["details"]["object_lock"], true);
    assert_eq!(
        n(&r, "orphans", "held"),
        2,
        "legal hold and governance retention are held, not failed"
    );
    assert_eq!(n(&r, "orphans", "failed"), 0);
    // expired: 2 versions; mixed: 1 noncurrent; user-deleted: version + marker.
    assert_eq!(n(&r, "orphans", "deleted"), 5);
    let left = versions(&c, &bucket, "gen/").await;
    assert!(
        left.iter().all(|(_, _, marker)| !marker),
        "no delete marker is left behind: {left:?}"
    );
    let left_keys: Vec<(&str, &str)> = left
        .iter()
        .map(|(k, v, _)| (k.as_str(), v.as_str()))
        .collect();
    assert!(left_keys.contains(&("gen/held.png", held.as_str())));
    assert!(left_keys.contains(&("gen/retained.png", retained.as_str())));
    assert!(left_keys.contains(&("gen/mixed.png", young_current.as_str())));
    assert!(
        !left_keys.contains(&("gen/mixed.png", noncurrent_old.as_str())),
        "old noncurrent version is due"
    );
    assert!(left_keys.iter().any(|(k, _)| *k == "gen/young.png"));
    assert!(!left_keys
        .iter()
        .any(|(k, _)| *k == "gen/expired.png" || *k == "gen/user-deleted.png"));
    assert_eq!(left.len(), 4);

    // versions = "current" keeps the history: a delete marker, old versions untouched.
    let bucket2 = server.bucket(false).await;
    c.put_bucket_versioning()
        .bucket(&bucket2)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    put(&c, &bucket2, "gen/a.png", "1").await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let cfg = env.config(&format!(
        "{}{}",
        server.store(&bucket2),
        prefix_rule("versions = \"current\"")
    ));
    let r = env.run(&cfg, &["sweep", "--format", "json"]);
    r.expect_code(0);
    let v = versions(&c, &bucket2, "gen/").await;
    assert_eq!(
        v.iter().filter(|x| x.2).count(),
        1,
        "a delete marker hides the key: {v:?}"
    );
    assert_eq!(
        v.iter().filter(|x| !x.2).count(),
        1,
        "the version is kept as history"
    );
}

/// An object written before versioning was enabled has the version id "null". When that
/// version is due and the key has a young current version, `versions = "all"` must delete
/// it by `VersionId=null`: a key-only delete would add a delete marker that hides the
/// young current version and leave the old data in place.
#[tokio::test]
async fn null_version_is_deleted_by_its_version_id_not_hidden_by_a_marker() {
    let server = moto();
    let mut env = TestEnv::new("s3null").await;
    env.env.extend(server.env());
    let c = server.client();
    let bucket = server.bucket(false).await;
    // Unversioned when written: this becomes the "null" version.
    put(&c, &bucket, "k/old.bin", "old-data").await;
    c.put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // The old version is past `retain` once the young one is put; the sweep then has
    // `retain` (8 s, room for a loaded machine) before the young one is too.
    tokio::time::sleep(std::time::Duration::from_millis(8_500)).await;
    let young = put(&c, &bucket, "k/old.bin", "young-data")
        .await
        .expect("a put on a versioned bucket returns a version id");
    assert_ne!(young, "null");
    let before = versions(&c, &bucket, "k/").await;
    let mut expected_before = vec![
        ("k/old.bin".to_string(), "null".to_string(), false),
        ("k/old.bin".to_string(), young.clone(), false),
    ];
    expected_before.sort();
    assert_eq!(
        before, expected_before,
        "setup: the key has a \"null\" version and a young current version"
    );

    let cfg = env.config(&format!(
        "{}[[rules]]\nname = \"nulls\"\ncategory = \"assets\"\nstore = \"assets\"\nprefix = \"k/\"\nretain = \"8s\"\naction = \"delete\"\nversions = \"all\"\n",
        server.store(&bucket)
    ));
    let out = env.run(&cfg, &["sweep", "--format", "json"]);
    out.expect_code(0);
    let r = out.json();
    let cutoff = &rule(&r, "nulls")["cutoff"];
    assert_eq!(rule(&r, "nulls")["details"]["versioned"], true, "{r}");
    let left = versions(&c, &bucket, "k/").await;
    assert!(
        !left.iter().any(|(_, _, marker)| *marker),
        "REGRESSION: the \"null\" version was deleted by key, which added a delete marker \
         hiding the young current version (it must be deleted with VersionId=null): {left:?}"
    );
    assert!(
        !left.iter().any(|(_, v, _)| v == "null"),
        "REGRESSION: the due \"null\" version (old data) is still there: {left:?}"
    );
    assert_eq!(
        left,
        vec![("k/old.bin".to_string(), young.clone(), false)],
        "exactly the young current version is left (cutoff {cutoff}; if it is gone too, \
         the sweep started more than `retain` after it was put)"
    );
    assert_eq!(n(&r, "nulls", "failed"), 0, "{r}");
    assert_eq!(
        n(&r, "nulls", "deleted"),
        1,
        "only the old \"null\" version is due (cutoff {cutoff}): {r}"
    );
    let body = c
        .get_object()
        .bucket(&bucket)
        .key("k/old.bin")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET of the key after the sweep (the young current version must still be visible): {e:?}"))
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(
        &body[..],
        b"young-data",
        "GET returns the young current version"
    );
}

async fn linked_objects_case(server: Server) {
    let mut env = TestEnv::new("s3linked").await;
    env.env.extend(server.env());
    let c = server.client();
    let bucket = server.bucket(false).await;
    env.sql(
        "CREATE TABLE generations (id serial PRIMARY KEY, account_id bigint, created_at timestamptz NOT NULL, output_key text, input_keys text[] NOT NULL DEFAULT '{}');
         INSERT INTO generations (account_id, created_at, output_key, input_keys)
           SELECT 1, now() - interval '100 days', 'generated/' || g || '.png', ARRAY['uploads/' || g || '-a.jpg', 'uploads/' || g || '-b.jpg'] FROM generate_series(1, 40) g;
         INSERT INTO generations (account_id, created_at, output_key, input_keys) VALUES
           (2, now() - interval '100 days', 'generated/held.png', '{}'),
           (1, now() - interval '100 days', 'generated/already-gone.png', '{}'),
           (1, now() - interval '1 day', 'generated/young.png', ARRAY['uploads/young.jpg']),
           (1, now() - interval '100 days', NULL, '{}');",
    )
    .await;
    let mut present: Vec<String> = (1..=40)
        .flat_map(|g| {
            vec![
                format!("generated/{g}.png"),
                format!("uploads/{g}-a.jpg"),
                format!("uploads/{g}-b.jpg"),
            ]
        })
        .collect();
    present.extend([
        "generated/held.png".into(),
        "generated/young.png".into(),
        "uploads/young.jpg".into(),
        "generated/unlinked.png".into(),
    ]);
    put_many(&c, &bucket, present).await;
    let cfg = env.config(&format!(
        "{}[[rules]]\nname = \"generations\"\ncategory = \"assets\"\nstore = \"app\"\ntable = \"generations\"\nage_column = \"created_at\"\nretain = \"90d\"\naction = \"delete\"\nsubject = {{ kind = \"account\", column = \"account_id\" }}\nobjects = {{ store = \"assets\", key_columns = [\"output_key\", \"input_keys\"] }}\n",
        server.store(&bucket)
    ));
    env.run(
        &cfg,
        &[
            "hold",
            "add",
            "--subject",
            "account:2",
            "--reason",
            "dispute",
        ],
    )
    .expect_code(0);
    let dry = env
        .run(&cfg, &["sweep", "--dry-run", "--format", "json"])
        .json();
    assert_eq!(n(&dry, "generations", "matched"), 42, "{}", server.name);
    assert_eq!(n(&dry, "generations", "held"), 1);
    let out = env.run(&cfg, &["sweep", "--format", "json"]);
    out.expect_code(0);
    let r = out.json();
    assert_eq!(
        n(&r, "generations", "deleted"),
        42,
        "{}: 40 with objects, 1 whose object was already gone, 1 without keys",
        server.name
    );
    assert_eq!(n(&r, "generations", "held"), 1);
    assert_eq!(
        rule(&r, "generations")["details"]["objects_deleted"],
        120,
        "{}",
        server.name
    );
    assert_eq!(env.scalar("SELECT count(*) FROM generations").await, 2);
    let mut left = keys(&c, &bucket, "").await;
    left.sort();
    assert_eq!(
        left,
        vec![
            "generated/held.png",
            "generated/unlinked.png",
            "generated/young.png",
            "uploads/young.jpg"
        ],
        "{}",
        server.name
    );
    // Invariant: every remaining row's objects still exist.
    let rows: Vec<(Option<String>, Vec<String>)> =
        sqlx::query_as("SELECT output_key, input_keys FROM generations")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    for (out_key, inputs) in rows {
        for k in out_key.into_iter().chain(inputs) {
            assert!(
                left.contains(&k),
                "{}: row points at missing {k}",
                server.name
            );
        }
    }
}

#[tokio::test]
async fn linked_objects_go_first_and_rows_follow() {
    for server in plain_servers() {
        linked_objects_case(server).await;
    }
}

#[tokio::test]
async fn missing_bucket_fails_the_preflight_with_exit_2() {
    let server = moto();
    let mut env = TestEnv::new("s3missing").await;
    env.env.extend(server.env());
    let cfg = env.config(&format!(
        "{}{}",
        server.store("rtd-no-such-bucket-anywhere"),
        prefix_rule("")
    ));
    let out = env.run(&cfg, &["sweep"]);
    out.expect_code(2);
    assert!(out.stderr.contains("not reachable"), "{}", out.stderr);
    assert_eq!(
        env.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'retentiond'")
            .await,
        0
    );
}

#[tokio::test]
async fn tag_filter_limits_a_prefix_rule() {
    let server = moto();
    let mut env = TestEnv::new("s3tags").await;
    env.env.extend(server.env());
    let c = server.client();
    let bucket = server.bucket(false).await;
    for (key, tag) in [
        ("gen/a.png", "short"),
        ("gen/b.png", "long"),
        ("gen/c.png", ""),
    ] {
        let mut req = c
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(ByteStream::from_static(b"x"));
        if !tag.is_empty() {
            req = req.tagging(format!("retention={tag}"));
        }
        req.send().await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let cfg = env.config(&format!(
        "{}{}",
        server.store(&bucket),
        prefix_rule("tags = { retention = \"short\" }")
    ));
    let r = env.run(&cfg, &["sweep", "--format", "json"]);
    r.expect_code(0);
    assert_eq!(n(&r.json(), "orphans", "deleted"), 1);
    assert_eq!(
        keys(&c, &bucket, "gen/").await,
        vec!["gen/b.png".to_string(), "gen/c.png".to_string()]
    );
}

#[tokio::test]
async fn erase_removes_a_subjects_rows_and_their_objects_first() {
    for server in plain_servers() {
        let mut env = TestEnv::new("s3erase").await;
        env.env.extend(server.env());
        let c = server.client();
        let bucket = server.bucket(false).await;
        env.sql(
            "CREATE TABLE generations (id serial PRIMARY KEY, account_id bigint, created_at timestamptz NOT NULL, output_key text);
             INSERT INTO generations (account_id, created_at, output_key) VALUES
               (5, now() - interval '1 day', 'generated/5/young.png'), (5, now() - interval '200 days', 'generated/5/old.png'),
               (6, now() - interval '1 day', 'generated/6/keep.png');",
        )
        .await;
        put_many(
            &c,
            &bucket,
            vec![
                "generated/5/young.png".into(),
                "generated/5/old.png".into(),
                "generated/6/keep.png".into(),
            ],
        )
        .await;
        let cfg = env.config(&format!(
            "{}[[rules]]\nname = \"generations\"\ncategory = \"assets\"\nstore = \"app\"\ntable = \"generations\"\nage_column = \"created_at\"\nretain = \"90d\"\naction = \"delete\"\nsubject = {{ kind = \"account\", column = \"account_id\" }}\nobjects = {{ store = \"assets\", key_columns = [\"output_key\"] }}\n",
            server.store(&bucket)
        ));
        let e = env.run(
            &cfg,
            &["erase", "--subject", "account:5", "--format", "json"],
        );
        e.expect_code(0);
        let j = e.json();
        assert_eq!(
            n(&j, "generations", "deleted"),
            2,
            "{}: young and old rows of the subject",
            server.name
        );
        assert_eq!(rule(&j, "generations")["details"]["objects_deleted"], 2);
        assert_eq!(
            keys(&c, &bucket, "generated/").await,
            vec!["generated/6/keep.png".to_string()],
            "{}",
            server.name
        );
        assert_eq!(env.scalar("SELECT count(*) FROM generations").await, 1);
    }
}

#[tokio::test]
async fn reports_are_copied_to_an_s3_prefix() {
    let server = moto();
    let mut env = TestEnv::new("s3reports").await;
    env.env.extend(server.env());
    let c = server.client();
    let bucket = server.bucket(false).await;
    env.sql("CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz); INSERT INTO logs (at) VALUES (now() - interval '40 days');").await;
    let text = env.header().replace("[audit]\nstore = \"app\"", "[audit]\nstore = \"app\"\nreport_store = \"assets\"\nreport_prefix = \"retention-reports/\"")
        + &server.store(&bucket)
        + "[[rules]]\nname = \"logs\"\ncategory = \"assets\"\nstore = \"app\"\ntable = \"logs\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"delete\"\n";
    let cfg = env.config_named("retention.toml", &text);
    let out = env.run(&cfg, &["sweep", "--format", "json"]);
    out.expect_code(0);
    let run_id = out.json()["run_id"].as_str().unwrap().to_owned();
    let copies = keys(&c, &bucket, "retention-reports/").await;
    assert_eq!(
        copies.len(),
        4,
        "three copies and the site's index: {copies:?}"
    );
    assert!(
        copies.contains(&"retention-reports/index.html".to_owned()),
        "{copies:?}"
    );
    let index = c
        .get_object()
        .bucket(&bucket)
        .key("retention-reports/index.html")
        .send()
        .await
        .unwrap();
    let index =
        String::from_utf8(index.body.collect().await.unwrap().into_bytes().to_vec()).unwrap();
    assert!(
        index.contains(&format!("{run_id}.html")),
        "the index links the run: {index}"
    );
    for ext in ["json", "md", "html"] {
        assert!(
            copies
                .iter()
                .any(|k| k.ends_with(&format!("{run_id}.{ext}"))),
            "{ext} copy of {run_id}: {copies:?}"
        );
    }
    let json_key = copies.iter().find(|k| k.ends_with(".json")).unwrap();
    let body = c
        .get_object()
        .bucket(&bucket)
        .key(json_key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let copy: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(copy["run_id"], run_id.as_str());
    assert!(
        copy["hash"].as_str().is_some_and(|h| h.len() == 64),
        "the copy carries the sealed hash"
    );
}

// #17 item 7 trimmed the SDK to one TLS stack (rustls on ring, the platform's roots):
// HTTPS endpoints still work, and a certificate nobody vouches for is refused.
#[tokio::test]
async fn s3_over_https_verifies_the_servers_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    // A CA, and a server certificate for 127.0.0.1 it signed.
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(dir.path())
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-www", "-state", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "server.pem", "-key", "server.key"])
        .current_dir(dir.path())
        .stdout(std::fs::File::create(p("server.log")).unwrap())
        .stderr(std::fs::File::create(p("server.err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "openssl s_server did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let env = TestEnv::new("s3tls").await;
    let text = env.header().replace(
        "[audit]\nstore = \"app\"",
        "[audit]\nstore = \"app\"\nanchor_store = \"assets\"",
    ) + &moto().store("tls-bucket");
    let cfg = env.config_named("retention.toml", &text);
    env.run(&cfg, &["migrate"]).expect_code(0);
    let mut vars: Vec<(String, String)> = moto().env();
    vars.retain(|(k, _)| k != "S3_ENDPOINT");
    vars.push(("S3_ENDPOINT".into(), format!("https://127.0.0.1:{port}")));
    // What the server logged while `audit verify --anchors` talked to it.
    let session = |extra: &[(String, String)]| {
        let before = std::fs::read(p("server.err")).unwrap().len();
        // The server is no S3: once the handshake is done, the client only retries; give
        // it 5 s, then stop it.
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_retentiond"))
            .arg("--config")
            .arg(&cfg)
            .args(["audit", "verify", "--anchors"])
            .envs(vars.iter().chain(extra).cloned())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        String::from_utf8_lossy(&std::fs::read(p("server.err")).unwrap()[before..]).into_owned()
    };
    let untrusted = session(&[]);
    assert!(
        untrusted.contains("alert unknown ca"),
        "the client refused an unknown CA: {untrusted}"
    );
    // Trusted through the platform's way to add a root (SSL_CERT_FILE): the handshake
    // completes (the server reads the client's Finished), with no unknown-CA alert.
    let trusted = session(&[("SSL_CERT_FILE".into(), p("ca.pem").display().to_string())]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        !trusted.contains("unknown ca") && trusted.contains("SSL_accept:SSLv3/TLS read finished"),
        "a certificate of a trusted CA is accepted: {trusted}"
    );
}
