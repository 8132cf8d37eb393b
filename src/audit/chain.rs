//! The hash chain over every sealed audit record, and its verification.
//!
//! Encoding (also in `docs/audit-trail.md`): a record's canonical form is its JSON with
//! object keys sorted and no whitespace (serde_json's `Map` is ordered), timestamps as
//! RFC 3339 UTC. `hash = hex(SHA-256(prev_hash || "\n" || canonical))`; the first
//! record's `prev_hash` is 64 zeros. Appends are serialized by an advisory transaction
//! lock, so runs of different rules finishing at once still form one chain.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, Row};

use super::signing::{self, PublicKey, SignatureCheck, Signed, Signer};
use crate::report::RunReport;

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const CHAIN_LOCK_CLASS: i32 = 0x5254_4e33; // "RTN3"

/// What a chain record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A run with its rule results.
    Run,
    /// A hold being placed.
    Hold,
    /// A hold being released.
    HoldRelease,
}

impl Kind {
    /// The name of the kind in the chain view and in anchors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Hold => "hold",
            Self::HoldRelease => "hold_release",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "run" => Some(Self::Run),
            "hold" => Some(Self::Hold),
            "hold_release" => Some(Self::HoldRelease),
            _ => None,
        }
    }
}

/// `hex(SHA-256(prev || "\n" || canonical))`.
pub fn link_hash(prev: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// Fields of a run in canonical form version 1. Frozen: a field added to reports later
/// is not hashed, so existing records keep verifying after an upgrade.
pub const RUN_FIELDS_V1: &[&str] = &[
    "run_id",
    "trigger",
    "mode",
    "status",
    "started_at",
    "finished_at",
    "config_sha256",
    "actor",
    "host",
    "version",
    "as_of",
    "subject_hash",
    "error",
    "chain_seq",
    "rules",
];
/// Fields of a rule result in canonical form version 1 (frozen).
pub const RULE_FIELDS_V1: &[&str] = &[
    "rule",
    "category",
    "store",
    "place",
    "action",
    "status",
    "cutoff",
    "matched",
    "deleted",
    "anonymised",
    "held",
    "failed",
    "bytes",
    "duration_ms",
    "samples",
    "errors",
    "details",
];

/// Writes `v` as JSON with every object's keys sorted and no whitespace, whatever
/// serde_json's map ordering is compiled as.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&m[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

fn pick(v: &Value, fields: &[&str]) -> serde_json::Map<String, Value> {
    fields
        .iter()
        .map(|f| ((*f).to_owned(), v.get(*f).cloned().unwrap_or(Value::Null)))
        .collect()
}

/// The canonical form of a run (version 1): the frozen fields of the report and of each
/// rule, plus `"kind": "run"`.
pub fn canonical_run(report: &RunReport) -> String {
    canonical_run_value(&serde_json::to_value(report).expect("reports serialize"))
}

/// [`canonical_run`] of a report in its JSON form.
pub fn canonical_run_value(v: &Value) -> String {
    let mut m = pick(v, RUN_FIELDS_V1);
    let rules: Vec<Value> = v["rules"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| Value::Object(pick(r, RULE_FIELDS_V1)))
                .collect()
        })
        .unwrap_or_default();
    m.insert("rules".into(), Value::Array(rules));
    m.insert("kind".into(), json!("run"));
    canonical_json(&Value::Object(m))
}

/// The canonical form of a record of `kind` from its JSON form (a run's report, or a
/// hold's or release's fields as [`record`] reads them): what its hash covers.
pub fn canonical_of(kind: Kind, record: &Value) -> String {
    match kind {
        Kind::Run => canonical_run_value(record),
        Kind::Hold | Kind::HoldRelease => canonical_json(record),
    }
}

/// Canonical form of record `id` of `kind`, read through `conn` (inside the sealing
/// transaction when sealing).
pub async fn canonical(
    conn: &mut PgConnection,
    kind: Kind,
    id: i64,
) -> Result<Option<String>, sqlx::Error> {
    Ok(record(conn, kind, id)
        .await?
        .map(|v| canonical_of(kind, &v)))
}

/// Record `id` of `kind` in its JSON form: a run's full report, a hold's or a release's
/// fields.
pub async fn record(
    conn: &mut PgConnection,
    kind: Kind,
    id: i64,
) -> Result<Option<Value>, sqlx::Error> {
    let ts = |v: Option<chrono::DateTime<chrono::Utc>>| {
        v.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    };
    match kind {
        Kind::Run => {
            let Some(row) = sqlx::query("SELECT * FROM retentiond.runs WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
            else {
                return Ok(None);
            };
            let report = super::report_from_row(conn, &row).await?;
            Ok(Some(
                serde_json::to_value(&report).expect("reports serialize"),
            ))
        }
        Kind::Hold => {
            let Some(r) = sqlx::query("SELECT * FROM retentiond.holds WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(json!({
                "kind": "hold",
                "id": r.try_get::<i64, _>("id")?,
                "chain_seq": r.try_get::<Option<i64>, _>("chain_seq")?,
                "subject_kind": r.try_get::<Option<String>, _>("subject_kind")?,
                "subject_id": r.try_get::<Option<String>, _>("subject_id")?,
                "category": r.try_get::<Option<String>, _>("category")?,
                "reason": r.try_get::<String, _>("reason")?,
                "actor": r.try_get::<String, _>("actor")?,
                "created_at": ts(r.try_get("created_at")?),
                "expires_at": ts(r.try_get("expires_at")?),
            })))
        }
        Kind::HoldRelease => {
            let Some(r) = sqlx::query("SELECT * FROM retentiond.hold_releases WHERE hold_id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(json!({
                "kind": "hold_release",
                "hold_id": r.try_get::<i64, _>("hold_id")?,
                "chain_seq": r.try_get::<Option<i64>, _>("chain_seq")?,
                "reason": r.try_get::<String, _>("reason")?,
                "actor": r.try_get::<String, _>("actor")?,
                "released_at": ts(r.try_get("released_at")?),
            })))
        }
    }
}

/// A record just sealed: its place in the chain, hash and signature.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// What it is.
    pub kind: Kind,
    /// Sequence number.
    pub seq: i64,
    /// Hash.
    pub hash: String,
    /// Signature, when signing is on.
    pub signed: Option<Signed>,
}

/// Appends record `id` of `kind` to the chain: takes the chain lock, assigns the next
/// sequence number, hashes the canonical form with the previous hash, signs the hash
/// with `signer`, stores all of it in one statement.
pub async fn seal(
    conn: &mut PgConnection,
    kind: Kind,
    id: i64,
    signer: Option<&Signer>,
) -> Result<Sealed, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
        .bind(CHAIN_LOCK_CLASS)
        .execute(&mut *conn)
        .await?;
    let head: Option<(i64, String)> = sqlx::query_as(
        "SELECT chain_seq, hash FROM retentiond.chain ORDER BY chain_seq DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let (seq, prev) = match head {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS.to_owned()),
    };
    // chain_seq is part of the canonical form: write it first, then hash.
    let (table, key) = table_of(kind);
    sqlx::query(&format!(
        "UPDATE retentiond.{table} SET chain_seq = $2 WHERE {key} = $1"
    ))
    .bind(id)
    .bind(seq)
    .execute(&mut *conn)
    .await?;
    let canonical = canonical(conn, kind, id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let hash = link_hash(&prev, &canonical);
    let signed = signer.map(|s| s.sign(&hash));
    sqlx::query(&format!(
        "UPDATE retentiond.{table} SET prev_hash = $2, hash = $3, signature = $4, key_id = $5 WHERE {key} = $1"
    ))
    .bind(id)
    .bind(&prev)
    .bind(&hash)
    .bind(signed.as_ref().map(|s| &s.signature))
    .bind(signed.as_ref().map(|s| &s.key_id))
    .execute(&mut *conn)
    .await?;
    Ok(Sealed {
        kind,
        seq,
        hash,
        signed,
    })
}

fn table_of(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Run => ("runs", "id"),
        Kind::Hold => ("holds", "id"),
        Kind::HoldRelease => ("hold_releases", "hold_id"),
    }
}

/// One row of the `retentiond.chain` view.
struct ChainEntry {
    chain_seq: Option<i64>,
    kind: String,
    ref_id: i64,
    prev_hash: Option<String>,
    hash: Option<String>,
    signature: Option<String>,
    key_id: Option<String>,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for ChainEntry {
    fn from_row(r: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            chain_seq: r.try_get("chain_seq")?,
            kind: r.try_get("kind")?,
            ref_id: r.try_get("ref_id")?,
            prev_hash: r.try_get("prev_hash")?,
            hash: r.try_get("hash")?,
            signature: r.try_get("signature")?,
            key_id: r.try_get("key_id")?,
        })
    }
}

/// The outcome of `audit verify`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verification {
    /// Records checked.
    pub records: u64,
    /// Hash of the last record (anchor it elsewhere to detect a rewritten chain).
    pub head_hash: Option<String>,
    /// Records that carry a signature.
    pub signed: u64,
    /// Whether signatures were checked (`--pubkey`).
    pub signatures_checked: bool,
    /// Problems, first one first.
    pub violations: Vec<String>,
}

/// Checks record signatures in chain order: once one record is validly signed, every
/// later record must be too; an invalid signature is a violation anywhere.
#[derive(Debug)]
pub struct SignatureRule<'k> {
    keys: &'k [PublicKey],
    first_signed: Option<i64>,
}

impl<'k> SignatureRule<'k> {
    /// Checks against `keys` (none: signatures are only counted).
    pub fn new(keys: &'k [PublicKey]) -> Self {
        Self {
            keys,
            first_signed: None,
        }
    }

    /// Checks record `seq` (`what`); a problem is pushed to `v`.
    pub fn check(
        &mut self,
        v: &mut Verification,
        seq: i64,
        what: &str,
        hash: &str,
        signature: Option<&str>,
        key_id: Option<&str>,
    ) {
        if signature.is_some() {
            v.signed += 1;
        }
        if self.keys.is_empty() {
            return;
        }
        v.signatures_checked = true;
        match signing::check(self.keys, hash, signature, key_id) {
            SignatureCheck::Valid => {
                self.first_signed.get_or_insert(seq);
            }
            SignatureCheck::Unsigned => {
                if let Some(first) = self.first_signed {
                    v.violations.push(format!(
                        "record {seq} ({what}) is not signed, but record {first} and every record after it must be; it was added outside retentiond"
                    ));
                }
            }
            SignatureCheck::Invalid => v.violations.push(format!(
                "record {seq} ({what}): its signature is not valid for its hash; the record was forged or rewritten"
            )),
            SignatureCheck::UnknownKey => v.violations.push(format!(
                "record {seq} ({what}) is signed by key {}, which is not among the public keys given; it was forged, or pass that key's --pubkey too",
                key_id.unwrap_or("?")
            )),
        }
    }

    /// After the last record: with keys given, at least one record must be signed.
    pub fn finish(&self, v: &mut Verification) {
        if !self.keys.is_empty() && self.first_signed.is_none() {
            v.violations.push(if v.records == 0 {
                "the chain is empty, but a public key was given: the records were deleted, or this is not the trail the key signs".into()
            } else {
                "no record is signed by the public key given: the chain was re-created without signatures, or signing was never turned on".into()
            });
        }
    }
}

/// Recomputes the whole chain and checks it is complete; with `keys`, checks every
/// record's signature.
pub async fn verify(
    conn: &mut PgConnection,
    keys: &[PublicKey],
) -> Result<Verification, sqlx::Error> {
    // `audit verify` migrates nothing: a trail from before signatures has no such columns.
    let columns = if super::has_column(conn, "chain", "signature").await? {
        "signature, key_id"
    } else {
        "NULL::text AS signature, NULL::text AS key_id"
    };
    let entries: Vec<ChainEntry> = sqlx::query_as(&format!(
        "SELECT chain_seq, kind, ref_id, prev_hash, hash, {columns} FROM retentiond.chain ORDER BY chain_seq, kind, ref_id"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let mut v = Verification::default();
    let mut signatures = SignatureRule::new(keys);
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_owned();
    for ChainEntry {
        chain_seq: seq,
        kind,
        ref_id,
        prev_hash,
        hash,
        signature,
        key_id,
    } in entries
    {
        v.records += 1;
        let seq = seq.unwrap_or(-1);
        let what = describe(conn, &kind, ref_id).await?;
        if seq != expected_seq {
            v.violations.push(if seq > expected_seq {
                format!("record {expected_seq} is missing: the chain jumps to {seq} ({what}); records were deleted")
            } else {
                format!("record {seq} ({what}) appears twice or out of order; records were inserted or reordered")
            });
        }
        if prev_hash.as_deref() != Some(prev.as_str()) {
            v.violations.push(format!(
                "record {seq} ({what}): prev_hash does not match the hash of the record before it; records were reordered, inserted or deleted"
            ));
        }
        match Kind::parse(&kind) {
            Some(k) => {
                let canonical = canonical(conn, k, ref_id).await?.unwrap_or_default();
                let recomputed = link_hash(prev_hash.as_deref().unwrap_or(""), &canonical);
                if hash.as_deref() != Some(recomputed.as_str()) {
                    v.violations.push(format!("record {seq} ({what}): content does not match its hash; the record was edited"));
                }
            }
            None => v
                .violations
                .push(format!("record {seq}: unknown kind `{kind}`")),
        }
        signatures.check(
            &mut v,
            seq,
            &what,
            hash.as_deref().unwrap_or_default(),
            signature.as_deref(),
            key_id.as_deref(),
        );
        prev = hash.unwrap_or_default();
        expected_seq = seq.max(expected_seq) + 1;
    }
    v.head_hash = (v.records > 0).then(|| prev.clone());
    signatures.finish(&mut v);
    // Completeness: every finished record must be in the chain.
    let unsealed: Vec<String> = sqlx::query_scalar(
        "SELECT 'run ' || run_id::text FROM retentiond.runs WHERE status <> 'running' AND hash IS NULL \
         UNION ALL SELECT 'hold ' || id FROM retentiond.holds WHERE hash IS NULL \
         UNION ALL SELECT 'release of hold ' || hold_id FROM retentiond.hold_releases WHERE hash IS NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    for u in unsealed {
        v.violations.push(format!(
            "{u} is finished but not in the chain; it was inserted outside retentiond"
        ));
    }
    // A run left `running` whose liveness lock nobody holds was never sealed: its
    // process is gone (or lost its session) and no recovery has recorded it yet.
    let running: Vec<(i64, uuid::Uuid)> = sqlx::query_as(
        "SELECT id, run_id FROM retentiond.runs WHERE status = 'running' ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (id, run_id) in running {
        if super::try_run_lock(conn, id).await? {
            sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                .bind(super::RUN_LOCK_CLASS)
                .bind(super::lock_key(id))
                .execute(&mut *conn)
                .await?;
            v.violations.push(format!(
                "run {run_id} was never sealed: no process holds it any more; the next `sweep` or `run` records it as interrupted"
            ));
        }
    }
    let orphans: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT x.run_id::text FROM retentiond.rule_results x LEFT JOIN retentiond.runs r ON r.run_id = x.run_id WHERE r.run_id IS NULL",
    )
    .fetch_all(&mut *conn)
    .await?;
    for o in orphans {
        v.violations.push(format!(
            "rule results of run {o} remain but the run record is gone; it was deleted"
        ));
    }
    Ok(v)
}

async fn describe(conn: &mut PgConnection, kind: &str, id: i64) -> Result<String, sqlx::Error> {
    Ok(match kind {
        "run" => {
            let run_id: Option<uuid::Uuid> =
                sqlx::query_scalar("SELECT run_id FROM retentiond.runs WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?;
            format!(
                "run {}",
                run_id
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| format!("#{id}"))
            )
        }
        "hold" => format!("hold {id}"),
        _ => format!("release of hold {id}"),
    })
}

#[cfg(test)]
mod tests;
