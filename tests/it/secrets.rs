//! Secrets never appear in logs, reports, errors or the audit trail.

use crate::common::{run_bin, TestEnv};
use crate::s3::moto;

#[tokio::test]
async fn no_output_or_record_contains_a_secret() {
    let mut env = TestEnv::new("secrets").await;
    let pg_password = format!(
        "pg-S3cr3t-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let s3_secret = format!(
        "s3-S3cr3t-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let role = format!(
        "rtd_role_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    env.sql(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{pg_password}' SUPERUSER;
         CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz, ip text);
         INSERT INTO logs (at, ip) SELECT now() - interval '40 days', '10.0.0.1' FROM generate_series(1, 20);"
    ))
    .await;
    let server = moto();
    let bucket = server.bucket(false).await;
    let c = server.client();
    crate::s3::put(&c, &bucket, "gen/a.png", "x").await;
    // The store URL carries the password; the S3 secret comes from the environment.
    let url = std::fs::read_to_string(env.url_file()).unwrap();
    let with_password = url.replacen(
        "postgres://postgres@",
        &format!("postgres://{role}:{pg_password}@"),
        1,
    );
    std::fs::write(env.url_file(), &with_password).unwrap();
    env.env.extend(server.env().into_iter().map(|(k, v)| {
        if k == "AWS_SECRET_ACCESS_KEY" {
            (k, s3_secret.clone())
        } else {
            (k, v)
        }
    }));
    env.env.push(("RETENTIOND_LOG".into(), "debug".into()));
    let body = format!(
        "{}[[rules]]\nname = \"logs\"\ncategory = \"assets\"\nstore = \"app\"\ntable = \"logs\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"anonymise\"\nanonymise = {{ ip = \"hash\" }}\n\n[[rules]]\nname = \"orphans\"\ncategory = \"assets\"\nstore = \"assets\"\nprefix = \"gen/\"\nretain = \"30d\"\naction = \"delete\"\n",
        server.store(&bucket)
    );
    let cfg = env.config(&body);
    // Every record is signed with a key from the environment (#16): the seed must never
    // show, nor the PEM form of the same key.
    let seed =
        uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
    env.env
        .push(("RETENTIOND_SIGNING_KEY".into(), seed.clone()));
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[audit]\n",
        "[audit]\nsigning_key_env = \"RETENTIOND_SIGNING_KEY\"\n",
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let pem = retentiond::audit::signing::Signer::parse(&seed)
        .expect("a 64-hex-digit seed is a key")
        .to_pem();
    let pem_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let bundle = env.dir.path().join("bundle.ndjson");
    let mut outputs = Vec::new();
    for args in [
        &["validate"][..],
        &["sweep", "--dry-run"],
        &["sweep", "--format", "json"],
        &["--log-format", "json", "sweep"],
        &["report", "show", "latest", "--format", "html"],
        &["plan"],
        &["hold", "add", "--subject", "account:1", "--reason", "test"],
        &["audit", "pubkey"],
        &["audit", "verify", "--format", "json"],
        &["audit", "export", "--out", bundle.to_str().unwrap()],
    ] {
        let mut cmd = vec!["--log-level", "debug"];
        cmd.extend_from_slice(args);
        let out = run_bin(&cfg, &cmd, &env.env);
        assert!(out.code == 0, "{args:?}: {}", out.stderr);
        outputs.push(out.stdout);
        outputs.push(out.stderr);
    }
    // Failing connections must not echo the URL either.
    let bad = with_password
        .replace("127.0.0.1", "127.0.0.2")
        .replace(":5432", ":1");
    std::fs::write(env.url_file(), &bad).unwrap();
    let out = run_bin(&cfg, &["sweep"], &env.env);
    assert_ne!(out.code, 0);
    outputs.push(out.stdout);
    outputs.push(out.stderr);
    std::fs::write(
        env.url_file(),
        "postgres://u:{pg}@[bad".replace("{pg}", &pg_password),
    )
    .unwrap();
    let out = run_bin(&cfg, &["validate"], &env.env);
    assert_eq!(out.code, 2);
    outputs.push(out.stderr);
    outputs.push(std::fs::read_to_string(&bundle).unwrap());
    // A key that does not parse is exit 2, and the error names the variable, not it.
    let mut broken = env.env.clone();
    broken.retain(|(k, _)| k != "RETENTIOND_SIGNING_KEY");
    let bad_key = format!("{}zz", &seed[..62]);
    broken.push(("RETENTIOND_SIGNING_KEY".into(), bad_key.clone()));
    std::fs::write(env.url_file(), &with_password).unwrap();
    let out = run_bin(&cfg, &["sweep"], &broken);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("RETENTIOND_SIGNING_KEY"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(&bad_key[..40]),
        "the malformed key leaked: {}",
        out.stderr
    );
    outputs.push(out.stdout);
    outputs.push(out.stderr);
    // Reports on disk and the whole audit trail.
    for entry in std::fs::read_dir(env.dir.path().join("reports")).unwrap() {
        outputs.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let trail: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(r)::text FROM retentiond.runs r UNION ALL SELECT row_to_json(x)::text FROM retentiond.rule_results x",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    outputs.extend(trail);
    let all = outputs.join("\n");
    assert!(all.len() > 2_000, "the runs produced output to check");
    assert!(!all.contains(&pg_password), "the database password leaked");
    assert!(!all.contains(&s3_secret), "the S3 secret leaked");
    assert!(
        !all.contains(crate::common::HMAC_KEY),
        "the HMAC key leaked"
    );
    assert!(!all.contains(&seed), "the signing key leaked");
    assert!(!all.contains(&pem_body), "the signing key leaked as PEM");
    assert!(
        all.contains("BEGIN PUBLIC KEY"),
        "`audit pubkey` printed the public half"
    );
    env.sql(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .await;
}

// Issue 13, item 12: the `hash` strategy sends the HMAC pads as bind parameters. A
// server that would write parameters to its log is refused (exit 2, nothing changed);
// with log_parameter_max_length = 0 the same rule runs.
#[tokio::test]
async fn hash_is_refused_against_a_server_that_logs_parameters() {
    let env = TestEnv::new("hash_log").await;
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    env.sql(&format!(
        "CREATE TABLE logs (id serial PRIMARY KEY, at timestamptz, email text);
         INSERT INTO logs (at, email) SELECT now() - interval '40 days', 'a@example.com' FROM generate_series(1, 5);
         ALTER DATABASE \"{db}\" SET log_statement = 'mod';"
    ))
    .await;
    let cfg = env.config(
        "[categories.logs]\ndescription = \"logs\"\n\n[[rules]]\nname = \"logs\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"logs\"\nage_column = \"at\"\nretain = \"30d\"\naction = \"anonymise\"\nanonymise = { email = \"hash\" }\n",
    );
    let out = env.run(&cfg, &["sweep"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("log_statement = mod")
            && out.stderr.contains("log_parameter_max_length"),
        "{}",
        out.stderr
    );
    assert_eq!(
        env.scalar("SELECT count(*) FROM logs WHERE email = 'a@example.com'")
            .await,
        5,
        "nothing was anonymised"
    );
    env.sql(&format!(
        "ALTER DATABASE \"{db}\" SET log_parameter_max_length = 0;"
    ))
    .await;
    env.run(&cfg, &["sweep"]).expect_code(0);
    assert_eq!(
        env.scalar("SELECT count(*) FROM logs WHERE email = 'a@example.com'")
            .await,
        0
    );
}
