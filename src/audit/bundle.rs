//! The offline bundle: one NDJSON file with a stretch of the chain that verifies
//! without any database or config.
//!
//! Lines, in order: a `header`; one `record` per chain record (its sequence number,
//! kind, `prev_hash`, `hash`, signature and its JSON form, from which the canonical
//! form is recomputed); one `policy` per config the runs used (its exact text); one
//! `anchor` per anchor object read from the anchor store; an `end` line with the count
//! of records and the SHA-256 of every byte before it. Records are read and written one
//! at a time: memory does not grow with the chain.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::anchor::{self, SeenAnchor};
use super::chain::{self, Kind, SignatureRule, Verification};
use super::signing::{self, PublicKey, SignatureCheck};
use super::*;
use crate::report::RunReport;

/// `format` of the header line.
pub const FORMAT: &str = "retentiond-audit-bundle-v1";

/// What `audit export` wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Exported {
    /// Records written.
    pub records: u64,
    /// First and last sequence number.
    pub first_seq: Option<i64>,
    /// Last.
    pub last_seq: Option<i64>,
    /// Config versions written.
    pub policies: u64,
    /// Anchor objects written.
    pub anchors: u64,
    /// Whether the bundle itself is signed.
    pub signed: bool,
}

/// What verifying a bundle found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BundleCheck {
    /// The chain checks.
    #[serde(flatten)]
    pub chain: Verification,
    /// First sequence number in the bundle.
    pub first_seq: Option<i64>,
    /// Last.
    pub last_seq: Option<i64>,
    /// Config versions whose text matches its SHA-256.
    pub policies: u64,
    /// Anchors compared with the bundle's records.
    pub anchors: u64,
    /// Whether the bundle's own signature (over all its bytes) was checked and valid.
    pub bundle_signed: bool,
}

/// Writes lines and hashes every byte written.
struct Hashed<W: Write> {
    out: W,
    sha: Sha256,
}

impl<W: Write> Hashed<W> {
    fn line(&mut self, v: &Value) -> std::io::Result<()> {
        let mut bytes = chain::canonical_json(v).into_bytes();
        bytes.push(b'\n');
        self.sha.update(&bytes);
        self.out.write_all(&bytes)
    }
}

impl Audit {
    /// Writes the records sealed in `[since, until)` (all when both are `None`), the
    /// configs their runs used and `anchors` to `out`.
    pub async fn export_bundle(
        &self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        anchors: &[SeenAnchor],
        out: impl Write,
    ) -> anyhow::Result<Exported> {
        let mut conn = self.pool.acquire().await?;
        // One snapshot for the whole bundle: records sealed meanwhile are not half in it.
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *conn)
            .await?;
        let result = self
            .write_bundle(&mut conn, since, until, anchors, out)
            .await;
        let _ = sqlx::query("COMMIT").execute(&mut *conn).await;
        result
    }

    async fn write_bundle(
        &self,
        conn: &mut PgConnection,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        anchors: &[SeenAnchor],
        out: impl Write,
    ) -> anyhow::Result<Exported> {
        let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT min(chain_seq), max(chain_seq) FROM ( \
               SELECT chain_seq, started_at AS at FROM retentiond.runs WHERE chain_seq IS NOT NULL \
               UNION ALL SELECT chain_seq, created_at FROM retentiond.holds WHERE chain_seq IS NOT NULL \
               UNION ALL SELECT chain_seq, released_at FROM retentiond.hold_releases WHERE chain_seq IS NOT NULL) x \
             WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::timestamptz IS NULL OR at < $2)",
        )
        .bind(since)
        .bind(until)
        .fetch_one(&mut *conn)
        .await?;
        let mut w = Hashed {
            out: std::io::BufWriter::new(out),
            sha: Sha256::new(),
        };
        let mut done = Exported {
            first_seq: first,
            last_seq: last,
            ..Default::default()
        };
        let prev_of_first: Option<String> = match first {
            Some(f) => sqlx::query_scalar(
                "SELECT prev_hash FROM retentiond.chain WHERE chain_seq = $1 LIMIT 1",
            )
            .bind(f)
            .fetch_optional(&mut *conn)
            .await?
            .flatten(),
            None => None,
        };
        w.line(&json!({
            "type": "header",
            "format": FORMAT,
            "exported_at": Utc::now(),
            "exported_by": env!("CARGO_PKG_VERSION"),
            "since": since,
            "until": until,
            "first_seq": first,
            "last_seq": last,
            "prev_hash": prev_of_first,
        }))?;
        let mut configs: Vec<String> = Vec::new();
        if let (Some(first), Some(last)) = (first, last) {
            let entries: Vec<ChainRow> =
                sqlx::query_as(
                    "SELECT chain_seq, kind, ref_id, prev_hash, hash, signature, key_id FROM retentiond.chain \
                     WHERE chain_seq BETWEEN $1 AND $2 ORDER BY chain_seq, kind, ref_id",
                )
                .bind(first)
                .bind(last)
                .fetch_all(&mut *conn)
                .await?;
            for (seq, kind, ref_id, prev_hash, hash, signature, key_id) in entries {
                let record = match Kind::parse(&kind) {
                    Some(k) => chain::record(conn, k, ref_id).await?,
                    None => None,
                };
                if let Some(c) = record
                    .as_ref()
                    .and_then(|r| r.get("config_sha256"))
                    .and_then(Value::as_str)
                {
                    if !configs.iter().any(|x| x == c) {
                        configs.push(c.to_owned());
                    }
                }
                w.line(&json!({
                    "type": "record",
                    "chain_seq": seq,
                    "kind": kind,
                    "prev_hash": prev_hash,
                    "hash": hash,
                    "signature": signature,
                    "key_id": key_id,
                    "record": record,
                }))?;
                done.records += 1;
            }
        }
        for sha in &configs {
            let text: Option<String> =
                sqlx::query_scalar("SELECT text FROM retentiond.policies WHERE sha256 = $1")
                    .bind(sha)
                    .fetch_optional(&mut *conn)
                    .await?;
            if let Some(text) = text {
                w.line(&json!({"type": "policy", "sha256": sha, "text": text}))?;
                done.policies += 1;
            }
        }
        for a in anchors {
            w.line(&json!({
                "type": "anchor",
                "key": a.key,
                "version_id": a.version_id,
                "record": a.record.as_ref().ok(),
                "error": a.record.as_ref().err(),
            }))?;
            done.anchors += 1;
        }
        let digest = hex::encode(w.sha.clone().finalize());
        // Signed when the signing key is at hand: then neither end can be cut off.
        let signed = self.signer().map(|s| s.sign_bundle(&digest));
        w.line(&json!({
            "type": "end",
            "records": done.records,
            "sha256": digest,
            "signature": signed.as_ref().map(|s| &s.signature),
            "key_id": signed.as_ref().map(|s| &s.key_id),
        }))?;
        done.signed = signed.is_some();
        w.out.flush()?;
        Ok(done)
    }
}

/// `chain_seq, kind, ref_id, prev_hash, hash, signature, key_id` of the chain view.
type ChainRow = (
    i64,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// One line of a bundle, read.
struct Line {
    number: usize,
    value: Value,
}

/// Reads a bundle's lines, hashing every byte before the `end` line.
fn lines(
    path: &Path,
    mut each: impl FnMut(Line) -> Result<(), String>,
) -> Result<(Option<Value>, String), String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot open the bundle {}: {e}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut sha = Sha256::new();
    let mut buf = String::new();
    let mut number = 0;
    let mut end = None;
    loop {
        buf.clear();
        let n = reader
            .read_line(&mut buf)
            .map_err(|e| format!("line {}: cannot be read: {e}", number + 1))?;
        if n == 0 {
            break;
        }
        number += 1;
        if end.is_some() {
            return Err(format!("line {number}: text after the end line"));
        }
        let value: Value = serde_json::from_str(&buf)
            .map_err(|e| format!("line {number} is not valid JSON ({e}); the bundle is damaged"))?;
        if value.get("type").and_then(Value::as_str) == Some("end") {
            end = Some(value);
            continue;
        }
        sha.update(buf.as_bytes());
        each(Line { number, value })?;
    }
    Ok((end, hex::encode(sha.finalize())))
}

/// Verifies the bundle at `path` offline; with `keys`, every signature too.
pub fn verify_file(path: &Path, keys: &[PublicKey]) -> BundleCheck {
    verify_with(path, keys, |_| {})
}

/// [`verify_file`], handing each run record's JSON form to `on_run` in the same pass
/// (what `report show --bundle` renders is what was verified).
pub fn verify_with(path: &Path, keys: &[PublicKey], mut on_run: impl FnMut(&Value)) -> BundleCheck {
    let mut check = BundleCheck::default();
    let mut signatures = SignatureRule::new(keys);
    let mut hashes: HashMap<i64, String> = HashMap::new();
    let mut anchors: Vec<SeenAnchor> = Vec::new();
    let mut header: Option<Value> = None;
    let mut expected: Option<i64> = None;
    let mut prev: Option<String> = None;
    let read = lines(path, |line| {
        let v = &mut check.chain;
        let ty = line.value.get("type").and_then(Value::as_str).unwrap_or("");
        if header.is_none() {
            if ty != "header" || line.value.get("format").and_then(Value::as_str) != Some(FORMAT) {
                return Err(format!(
                    "{} is not a retentiond audit bundle ({FORMAT})",
                    path.display()
                ));
            }
            prev = line
                .value
                .get("prev_hash")
                .and_then(Value::as_str)
                .map(str::to_owned);
            expected = line.value.get("first_seq").and_then(Value::as_i64);
            if expected == Some(1) {
                prev = Some(chain::GENESIS.to_owned());
            }
            header = Some(line.value);
            return Ok(());
        }
        match ty {
            "record" => {
                check_record(v, &mut signatures, &line, &mut expected, &mut prev);
                if line.value.get("kind").and_then(Value::as_str) == Some("run") {
                    on_run(line.value.get("record").unwrap_or(&Value::Null));
                }
                if let (Some(seq), Some(h)) = (
                    line.value.get("chain_seq").and_then(Value::as_i64),
                    line.value.get("hash").and_then(Value::as_str),
                ) {
                    hashes.insert(seq, h.to_owned());
                    check.first_seq = check.first_seq.or(Some(seq));
                    check.last_seq = Some(seq);
                }
            }
            "policy" => {
                let sha = line
                    .value
                    .get("sha256")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let text = line.value.get("text").and_then(Value::as_str).unwrap_or("");
                if hex::encode(Sha256::digest(text.as_bytes())) == sha {
                    check.policies += 1;
                } else {
                    v.violations.push(format!(
                        "line {}: the config text does not match its SHA-256 {sha}; it was edited",
                        line.number
                    ));
                }
            }
            "anchor" => anchors.push(SeenAnchor {
                key: line
                    .value
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                version_id: line
                    .value
                    .get("version_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                record: match line.value.get("record").filter(|r| !r.is_null()) {
                    Some(r) => {
                        serde_json::from_value(r.clone()).map_err(|e| format!("not an anchor: {e}"))
                    }
                    None => Err(line
                        .value
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("unreadable")
                        .to_owned()),
                },
            }),
            other => v
                .violations
                .push(format!("line {}: unknown line type `{other}`", line.number)),
        }
        Ok(())
    });
    let v = &mut check.chain;
    match read {
        Err(e) => v.violations.insert(0, e),
        Ok((None, _)) => v
            .violations
            .insert(0, "the bundle has no end line: it was cut short".into()),
        Ok((Some(end), digest)) => {
            if end.get("sha256").and_then(Value::as_str) != Some(digest.as_str()) {
                v.violations.insert(
                    0,
                    "the bundle's SHA-256 does not match its end line: its bytes were changed"
                        .into(),
                );
            }
            if !keys.is_empty() {
                let get = |k: &str| end.get(k).and_then(Value::as_str);
                match signing::check_bundle(keys, &digest, get("signature"), get("key_id")) {
                    SignatureCheck::Valid => check.bundle_signed = true,
                    SignatureCheck::Unsigned => {}
                    SignatureCheck::Invalid => v.violations.push(
                        "the bundle's own signature is not valid: it was changed after export"
                            .into(),
                    ),
                    SignatureCheck::UnknownKey => v.violations.push(format!(
                        "the bundle is signed by key {}, which is not among the public keys given",
                        get("key_id").unwrap_or("?")
                    )),
                }
            }
            if end.get("records").and_then(Value::as_u64) != Some(v.records) {
                v.violations.push(format!(
                    "the end line counts {} records but the bundle has {}",
                    end.get("records").and_then(Value::as_u64).unwrap_or(0),
                    v.records
                ));
            }
        }
    }
    if let Some(h) = header.as_ref() {
        let said = h.get("last_seq").and_then(Value::as_i64);
        if said != check.last_seq {
            v.violations.push(format!(
                "the header says the bundle ends at record {} but its last record is {}",
                said.map(|s| s.to_string()).unwrap_or_else(|| "none".into()),
                check
                    .last_seq
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into())
            ));
        }
    }
    v.head_hash = check.last_seq.and_then(|s| hashes.get(&s).cloned());
    signatures.finish(v);
    // An export without `--until` ends at the chain's head: an anchor beyond its last
    // record means records were cut off its end.
    let open_ended = header
        .as_ref()
        .is_some_and(|h| h.get("until").is_none_or(Value::is_null));
    if open_ended {
        if let Some(beyond) = anchors
            .iter()
            .filter_map(|a| a.record.as_ref().ok())
            .filter(|r| check.last_seq.is_none_or(|l| r.chain_seq > l))
            .map(|r| r.chain_seq)
            .max()
        {
            v.violations.push(format!(
                "the bundle ends at record {} but carries the anchor of record {beyond}: records were cut off its end",
                check.last_seq.map(|s| s.to_string()).unwrap_or_else(|| "none".into())
            ));
        }
    }
    // Anchors of records in the bundle must match them; others are outside its range.
    let inside: Vec<SeenAnchor> = anchors
        .into_iter()
        .filter(|a| match &a.record {
            Ok(r) => {
                check.first_seq.is_some_and(|f| r.chain_seq >= f)
                    && check.last_seq.is_some_and(|l| r.chain_seq <= l)
            }
            Err(_) => true,
        })
        .collect();
    let anchored = anchor::compare(&inside, &hashes, check.last_seq, keys);
    check.anchors = anchored.anchors;
    v.violations.extend(anchored.violations);
    check
}

fn check_record(
    v: &mut Verification,
    signatures: &mut SignatureRule<'_>,
    line: &Line,
    expected: &mut Option<i64>,
    prev: &mut Option<String>,
) {
    v.records += 1;
    let get = |k: &str| line.value.get(k).and_then(Value::as_str);
    let seq = line
        .value
        .get("chain_seq")
        .and_then(Value::as_i64)
        .unwrap_or(-1);
    let kind = get("kind").unwrap_or("");
    let what = format!("line {}, {kind} record {seq}", line.number);
    if *expected != Some(seq) {
        v.violations.push(format!(
            "{what}: expected record {}; records are missing, repeated or reordered",
            expected
                .map(|e| e.to_string())
                .unwrap_or_else(|| "none".into())
        ));
    }
    *expected = Some(seq.max(expected.unwrap_or(seq)) + 1);
    let prev_hash = get("prev_hash").unwrap_or("");
    if prev.as_deref().is_some_and(|p| p != prev_hash) {
        v.violations.push(format!(
            "{what}: prev_hash does not match the hash of the record before it"
        ));
    }
    let hash = get("hash").unwrap_or("");
    let record = line.value.get("record").cloned().unwrap_or(Value::Null);
    match Kind::parse(kind) {
        Some(k) => {
            let recomputed = chain::link_hash(prev_hash, &chain::canonical_of(k, &record));
            if recomputed != hash {
                v.violations.push(format!(
                    "{what}: content does not match its hash; the record was edited"
                ));
            }
            if record.get("chain_seq").and_then(Value::as_i64) != Some(seq) {
                v.violations
                    .push(format!("{what}: the record's own chain_seq is not {seq}"));
            }
            if k == Kind::Run {
                check_report_extras(v, &what, &record, prev_hash, hash);
            }
        }
        None => v.violations.push(format!("{what}: unknown kind `{kind}`")),
    }
    signatures.check(v, seq, &what, hash, get("signature"), get("key_id"));
    *prev = Some(hash.to_owned());
}

/// The report fields the canonical form does not cover must repeat covered ones, so a
/// report rendered from a bundle says nothing the hash does not.
fn check_report_extras(v: &mut Verification, what: &str, r: &Value, prev_hash: &str, hash: &str) {
    let mut bad = Vec::new();
    if r.get("hash").and_then(Value::as_str) != Some(hash) {
        bad.push("hash".to_owned());
    }
    if r.get("prev_hash").and_then(Value::as_str) != Some(prev_hash) {
        bad.push("prev_hash".to_owned());
    }
    if r.get("schema").and_then(Value::as_str) != Some(REPORT_SCHEMA) {
        bad.push("schema".to_owned());
    }
    for (i, rule) in r
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for extra in ["blocked", "referenced"] {
            let shown = rule.get(extra).and_then(Value::as_u64).unwrap_or(0);
            let hashed = rule
                .get("details")
                .and_then(|d| d.get(extra))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if shown != hashed {
                bad.push(format!("rules[{i}].{extra}"));
            }
        }
    }
    if !bad.is_empty() {
        v.violations.push(format!(
            "{what}: the report's {} differ from what its hash covers; the report was edited",
            bad.join(", ")
        ));
    }
}

/// Picks the run matching `run` (a full id or a unique prefix; `latest` for the last)
/// from the run records of a bundle as [`verify_with`] hands them over.
#[derive(Debug)]
pub struct RunPicker<'a> {
    run: &'a str,
    found: Vec<Value>,
}

impl<'a> RunPicker<'a> {
    /// Looks for `run`.
    pub fn new(run: &'a str) -> Self {
        Self {
            run,
            found: Vec::new(),
        }
    }

    /// Offers one run record.
    pub fn offer(&mut self, r: &Value) {
        if self.run == "latest" {
            self.found = vec![r.clone()];
        } else if r
            .get("run_id")
            .and_then(Value::as_str)
            .is_some_and(|id| id.starts_with(self.run))
            && self.found.len() < 2
        {
            self.found.push(r.clone());
        }
    }

    /// The one run that matched, if any.
    pub fn picked(mut self) -> Result<Option<RunReport>, String> {
        match self.found.len() {
            0 => Ok(None),
            1 => serde_json::from_value(self.found.remove(0))
                .map(Some)
                .map_err(|e| format!("the run in the bundle cannot be read as a report: {e}")),
            _ => Err(format!(
                "`{}` matches more than one run in the bundle; give more of the id",
                self.run
            )),
        }
    }
}
