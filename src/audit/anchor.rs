//! Anchors: after each seal, a small JSON object with the new chain head (sequence
//! number, hash, signature) in an S3 bucket the database's owner cannot write, locked
//! in compliance mode where the bucket has Object Lock. `audit verify --anchors` proves
//! that every anchored head is still in the chain, at its number, with its hash.
//!
//! A failed anchor write is a warning and a metric, never a failed run: the next seal
//! anchors the newer head, whose hash covers every record before it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::signing::{self, PublicKey, SignatureCheck};
use crate::config::Period;
use crate::store::s3::{Protection, S3Error, S3Store};

/// `format` of an anchor object.
pub const FORMAT: &str = "retentiond-anchor-v1";

/// The content of one anchor object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorRecord {
    /// [`FORMAT`].
    pub format: String,
    /// The record's sequence number.
    pub chain_seq: i64,
    /// The record's hash: the head of the chain when it was sealed.
    pub hash: String,
    /// `run`, `hold` or `hold_release`.
    pub kind: String,
    /// The run, for a run record.
    pub run_id: Option<Uuid>,
    /// When the anchor was written.
    pub sealed_at: DateTime<Utc>,
    /// The record's signature, when signing is on.
    pub signature: Option<String>,
    /// The signing key's id.
    pub key_id: Option<String>,
}

/// One anchor object as listed and read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeenAnchor {
    /// Object key.
    pub key: String,
    /// Object version, on a versioned bucket.
    pub version_id: Option<String>,
    /// Its content, or why it could not be read as an anchor.
    pub record: Result<AnchorRecord, String>,
}

/// Where anchors are written.
#[derive(Debug)]
pub struct Anchors {
    store: S3Store,
    prefix: String,
    retain: Option<Period>,
    /// Whether the bucket has Object Lock and versioning, read once.
    bucket: tokio::sync::OnceCell<crate::store::s3::BucketInfo>,
    /// Whether a weak bucket was warned about.
    warned: std::sync::atomic::AtomicBool,
}

impl Anchors {
    /// Anchors in `store` under `prefix`, locked for `retain` where the bucket allows.
    pub fn new(store: S3Store, prefix: String, retain: Option<Period>) -> Self {
        Self {
            store,
            prefix,
            retain,
            bucket: tokio::sync::OnceCell::new(),
            warned: Default::default(),
        }
    }

    /// The store's name.
    pub fn store_name(&self) -> &str {
        &self.store.name
    }

    async fn bucket(&self) -> Result<crate::store::s3::BucketInfo, S3Error> {
        self.bucket
            .get_or_try_init(|| self.store.preflight())
            .await
            .copied()
    }

    /// The object key of the anchor of record `seq`.
    pub fn key_of(&self, seq: i64) -> String {
        format!("{}{seq:016}.json", self.prefix)
    }

    /// Writes the anchor of `record`.
    pub async fn write(&self, record: &AnchorRecord) -> Result<Protection, S3Error> {
        let bucket = self.bucket().await?;
        let until = match (bucket.object_lock, self.retain) {
            (true, Some(p)) => p.after(Utc::now()),
            (true, None) if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) => {
                tracing::warn!(store = %self.store.name, "the anchor bucket has Object Lock but [audit] anchor_retain is not set: anchors get only the bucket's default retention, if any");
                None
            }
            (false, _) if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) => {
                tracing::warn!(store = %self.store.name, "the anchor bucket has no Object Lock: its owner can delete or overwrite anchors");
                None
            }
            _ => None,
        };
        let body = serde_json::to_vec_pretty(record).expect("anchors serialize");
        self.store
            .put_locked(&self.key_of(record.chain_seq), body, until)
            .await
    }

    /// Every anchor object, every version of it, read back.
    pub async fn list(&self) -> Result<Vec<SeenAnchor>, S3Error> {
        let bucket = self.bucket().await?;
        let listed = self
            .store
            .list_all_versions(&self.prefix, bucket.versioned)
            .await?;
        let reads = listed.into_iter().map(|l| async move {
            let record = if l.delete_marker {
                Err("a delete marker: someone deleted this anchor".to_owned())
            } else {
                match self.store.get_bytes(&l.key, l.version_id.as_deref()).await {
                    Ok(bytes) => serde_json::from_slice::<AnchorRecord>(&bytes)
                        .map_err(|e| format!("not an anchor: {e}")),
                    Err(e) => Err(format!("cannot be read: {e}")),
                }
            };
            SeenAnchor {
                key: l.key,
                version_id: l.version_id,
                record,
            }
        });
        let mut seen: Vec<SeenAnchor> = stream::iter(reads).buffered(16).collect().await;
        seen.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(seen)
    }
}

/// What `audit verify --anchors` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AnchorCheck {
    /// Anchor objects (versions) read.
    pub anchors: u64,
    /// The highest anchored sequence number.
    pub latest_anchored: Option<i64>,
    /// Problems, the first anchor that no longer matches first.
    pub violations: Vec<String>,
}

/// Compares `seen` with the chain as `chain` (seq → hash) has it. With `keys`, each
/// anchor's signature must be valid as well.
pub fn compare(
    seen: &[SeenAnchor],
    chain: &HashMap<i64, String>,
    head: Option<i64>,
    keys: &[PublicKey],
) -> AnchorCheck {
    let mut check = AnchorCheck::default();
    let mut ordered: Vec<&SeenAnchor> = seen.iter().collect();
    ordered.sort_by_key(|s| s.record.as_ref().map(|r| r.chain_seq).unwrap_or(i64::MAX));
    for s in ordered {
        check.anchors += 1;
        let name = match &s.version_id {
            Some(v) => format!("anchor {} (version {v})", s.key),
            None => format!("anchor {}", s.key),
        };
        let r = match &s.record {
            Ok(r) => r,
            Err(why) => {
                check.violations.push(format!("{name}: {why}"));
                continue;
            }
        };
        check.latest_anchored = check.latest_anchored.max(Some(r.chain_seq));
        match chain.get(&r.chain_seq) {
            None => check.violations.push(format!(
                "{name}: record {} (hash {}) is no longer in the chain{}; the chain was truncated or rewritten",
                r.chain_seq,
                short(&r.hash),
                head.map(|h| format!(", which ends at record {h}")).unwrap_or_else(|| ", which is empty".into())
            )),
            Some(h) if *h != r.hash => check.violations.push(format!(
                "{name}: record {} has hash {} in the chain but {} when it was anchored at {}; the chain was rewritten",
                r.chain_seq,
                short(h),
                short(&r.hash),
                r.sealed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            Some(_) => {}
        }
        if !keys.is_empty() {
            match signing::check(keys, &r.hash, r.signature.as_deref(), r.key_id.as_deref()) {
                SignatureCheck::Valid | SignatureCheck::Unsigned => {}
                SignatureCheck::Invalid => check
                    .violations
                    .push(format!("{name}: its signature is not valid")),
                SignatureCheck::UnknownKey => check.violations.push(format!(
                    "{name}: signed by key {} which is not among the public keys given",
                    r.key_id.as_deref().unwrap_or("?")
                )),
            }
        }
    }
    check
}

/// The chain's hashes at the anchored sequence numbers, and its head.
pub async fn chain_at(
    conn: &mut PgConnection,
    seen: &[SeenAnchor],
) -> Result<(HashMap<i64, String>, Option<i64>), sqlx::Error> {
    let seqs: Vec<i64> = seen
        .iter()
        .filter_map(|s| s.record.as_ref().ok().map(|r| r.chain_seq))
        .collect();
    let rows: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT chain_seq, hash FROM retentiond.chain WHERE chain_seq = ANY($1)")
            .bind(&seqs)
            .fetch_all(&mut *conn)
            .await?;
    let head: Option<i64> = sqlx::query_scalar("SELECT max(chain_seq) FROM retentiond.chain")
        .fetch_one(&mut *conn)
        .await?;
    Ok((
        rows.into_iter()
            .map(|(s, h)| (s, h.unwrap_or_default()))
            .collect(),
        head,
    ))
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(seq: i64, hash: &str) -> SeenAnchor {
        SeenAnchor {
            key: format!("a/{seq:016}.json"),
            version_id: None,
            record: Ok(AnchorRecord {
                format: FORMAT.into(),
                chain_seq: seq,
                hash: hash.into(),
                kind: "run".into(),
                run_id: None,
                sealed_at: Utc::now(),
                signature: None,
                key_id: None,
            }),
        }
    }

    #[test]
    fn the_first_anchor_that_no_longer_matches_is_named_first() {
        let chain: HashMap<i64, String> = [(1, "aa".to_owned()), (2, "bx".to_owned())]
            .into_iter()
            .collect();
        let seen = [anchor(3, "cc"), anchor(1, "aa"), anchor(2, "bb")];
        let c = compare(&seen, &chain, Some(2), &[]);
        assert_eq!(c.anchors, 3);
        assert_eq!(c.latest_anchored, Some(3));
        assert_eq!(c.violations.len(), 2, "{:?}", c.violations);
        assert!(
            c.violations[0].contains("record 2 has hash bx"),
            "{:?}",
            c.violations
        );
        assert!(
            c.violations[1].contains("no longer in the chain"),
            "{:?}",
            c.violations
        );
        let ok = compare(&seen[1..2], &chain, Some(2), &[]);
        assert!(ok.violations.is_empty());
    }
}
