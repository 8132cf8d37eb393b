//! S3 faults: a fault-injecting HTTP proxy on loopback between retentiond and the S3 server
//! returns 500s, 503 SlowDown, connection resets, and per-key errors inside 200 DeleteObjects
//! responses. Everything due goes within three runs; no row goes while its object remains.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

use crate::common::{n, TestEnv};
use crate::s3::{keys, moto, put_many};

#[derive(Default)]
struct Faults {
    requests: AtomicU64,
    errors: AtomicU64,
    resets: AtomicU64,
    key_errors: AtomicU64,
    /// Keys already failed once: each key is failed at most once, so three runs suffice.
    failed_keys: Mutex<HashSet<String>>,
}

struct Proxy {
    upstream: String,
    client: reqwest::Client,
    faults: Faults,
}

fn roll(n: u64, salt: u64) -> u64 {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x ^ (x >> 29)) % 100
}

fn s3_error(status: u16, code: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Body::from(format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected fault</Message></Error>")))
        .unwrap()
}

async fn handle(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let n = p.faults.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let mut body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap()
        .to_vec();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    // 20% of requests fail: 500, 503 SlowDown, or a connection reset mid-response.
    match roll(n, 1) {
        0..=6 => {
            p.faults.errors.fetch_add(1, Ordering::Relaxed);
            return s3_error(500, "InternalError");
        }
        7..=13 => {
            p.faults.errors.fetch_add(1, Ordering::Relaxed);
            return s3_error(503, "SlowDown");
        }
        14..=19 => {
            p.faults.resets.fetch_add(1, Ordering::Relaxed);
            let broken = futures::stream::once(async {
                Err::<axum::body::Bytes, _>(std::io::Error::other("reset"))
            });
            return Response::builder()
                .status(200)
                .header("content-length", "4096")
                .body(Body::from_stream(broken))
                .unwrap();
        }
        _ => {}
    }
    // DeleteObjects: hold back some keys and report them as failed inside a 200.
    let mut injected = Vec::new();
    let is_delete = parts.method == axum::http::Method::POST && path.contains("delete");
    if is_delete {
        let text = String::from_utf8_lossy(&body).into_owned();
        let mut kept = String::new();
        let mut rest = text.as_str();
        let mut failed = p.faults.failed_keys.lock().unwrap();
        while let Some(start) = rest.find("<Object>") {
            let end = rest[start..]
                .find("</Object>")
                .map(|e| start + e + "</Object>".len())
                .unwrap();
            let object = &rest[start..end];
            let key = object
                .split("<Key>")
                .nth(1)
                .and_then(|k| k.split("</Key>").next())
                .unwrap_or_default()
                .to_owned();
            kept.push_str(&rest[..start]);
            if roll(key.len() as u64 + n, 7) < 25 && failed.insert(key.clone()) {
                injected.push(key);
            } else {
                kept.push_str(object);
            }
            rest = &rest[end..];
        }
        kept.push_str(rest);
        if !injected.is_empty() {
            body = kept.into_bytes();
            p.faults
                .key_errors
                .fetch_add(injected.len() as u64, Ordering::Relaxed);
        }
    }
    let mut fwd = p
        .client
        .request(parts.method.clone(), format!("{}{path}", p.upstream));
    for (name, value) in &parts.headers {
        let skip = matches!(
            name.as_str(),
            "host" | "content-length" | "transfer-encoding"
        ) || (!injected.is_empty()
            && (name.as_str() == "content-md5"
                || name.as_str().starts_with("x-amz-checksum")
                || name.as_str() == "x-amz-sdk-checksum-algorithm"));
        if !skip {
            fwd = fwd.header(name, value);
        }
    }
    let up = match fwd.body(body).send().await {
        Ok(r) => r,
        Err(_) => return s3_error(502, "InternalError"),
    };
    let status = up.status();
    let headers = up.headers().clone();
    let mut bytes = up.bytes().await.unwrap_or_default().to_vec();
    if !injected.is_empty() && status.is_success() {
        let errors: String = injected
            .iter()
            .map(|k| format!("<Error><Key>{k}</Key><Code>InternalError</Code><Message>injected per-key fault</Message></Error>"))
            .collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let text = match text.rfind("</DeleteResult>") {
            Some(i) => format!("{}{errors}{}", &text[..i], &text[i..]),
            None => text.replace("<DeleteResult/>", &format!("<DeleteResult>{errors}</DeleteResult>")).replace(
                "<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>",
                &format!("<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{errors}</DeleteResult>"),
            ),
        };
        bytes = text.into_bytes();
    }
    let mut resp = Response::builder().status(status.as_u16());
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            resp = resp.header(name, value);
        }
    }
    resp.body(Body::from(bytes)).unwrap()
}

async fn start_proxy(upstream: String) -> (String, Arc<Proxy>) {
    let proxy = Arc::new(Proxy {
        upstream,
        client: reqwest::Client::new(),
        faults: Faults::default(),
    });
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(proxy.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_due_goes_within_three_runs_through_a_faulty_network() {
    let server = moto();
    let c = server.client();
    let bucket = server.bucket(false).await;
    let (endpoint, proxy) = start_proxy(server.endpoint.clone()).await;
    let mut env = TestEnv::new("faults").await;
    env.env.extend(server.env().into_iter().map(|(k, v)| {
        if k == "S3_ENDPOINT" {
            (k, endpoint.clone())
        } else {
            (k, v)
        }
    }));
    env.sql(
        "CREATE TABLE generations (id serial PRIMARY KEY, created_at timestamptz NOT NULL, output_key text);
         INSERT INTO generations (created_at, output_key) SELECT now() - interval '100 days', 'linked/' || g FROM generate_series(1, 300) g;",
    )
    .await;
    let mut objects: Vec<String> = (1..=300).map(|g| format!("linked/{g}")).collect();
    objects.extend((1..=1500).map(|g| format!("gen/{g:05}")));
    put_many(&c, &bucket, objects).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let body = format!(
        "{}[[rules]]\nname = \"linked\"\ncategory = \"assets\"\nstore = \"app\"\ntable = \"generations\"\nage_column = \"created_at\"\nretain = \"90d\"\naction = \"delete\"\nobjects = {{ store = \"assets\", key_columns = [\"output_key\"] }}\n\n[[rules]]\nname = \"orphans\"\ncategory = \"assets\"\nstore = \"assets\"\nprefix = \"gen/\"\nretain = \"2s\"\naction = \"delete\"\n",
        server.store(&bucket)
    );
    let cfg = env.config_named(
        "retention.toml",
        &(env
            .header()
            .replace("max_batch_size = 50", "max_batch_size = 400")
            + &body),
    );
    let mut runs = 0;
    loop {
        runs += 1;
        let out = env.run(&cfg, &["sweep", "--format", "json"]);
        assert!(out.code == 0 || out.code == 1, "run {runs}: {}", out.stderr);
        let r = out.json();
        // Never a row without its object gone.
        let live: HashSet<String> =
            sqlx::query_scalar::<_, String>("SELECT output_key FROM generations")
                .fetch_all(&env.pool)
                .await
                .unwrap()
                .into_iter()
                .collect();
        let present: HashSet<String> = keys(&c, &bucket, "linked/").await.into_iter().collect();
        let queued = crate::reliability::queued_keys(&env).await;
        for g in 1..=300 {
            let k = format!("linked/{g}");
            assert!(
                live.contains(&k) || !present.contains(&k) || queued.contains(&k),
                "row of {k} removed while the object remains and is not queued for deletion"
            );
        }
        let left = live.len() + present.len() + keys(&c, &bucket, "gen/").await.len();
        if left == 0 {
            break;
        }
        assert!(
            runs < 3,
            "still {left} due after 3 runs (last: linked failed {}, orphans failed {})",
            n(&r, "linked", "failed"),
            n(&r, "orphans", "failed")
        );
    }
    let f = &proxy.faults;
    let (reqs, errors, resets, key_errors) = (
        f.requests.load(Ordering::Relaxed),
        f.errors.load(Ordering::Relaxed),
        f.resets.load(Ordering::Relaxed),
        f.key_errors.load(Ordering::Relaxed),
    );
    eprintln!("fault proxy: {reqs} requests, {errors} 5xx, {resets} resets, {key_errors} per-key errors; done in {runs} runs");
    assert!(
        errors > 0 && resets > 0 && key_errors > 0,
        "faults were injected: {errors} {resets} {key_errors}"
    );
}
