//! The durable queue of linked objects whose rows are gone, and the reference check.

use crate::config::{Ident, TableName};

/// Where a linked-object rule queues the keys of the rows it deletes.
#[derive(Debug, Clone, Copy)]
pub struct QueueTarget<'a> {
    /// The s3 store of the objects.
    pub objects_store: &'a str,
    /// The rule.
    pub rule: &'a str,
    /// Its category (a category hold keeps the queued objects).
    pub category: &'a str,
    /// Its subject kind (a subject hold keeps the queued objects).
    pub subject_kind: Option<&'a str>,
    /// Key columns (text or text[]).
    pub key_columns: &'a [Ident],
}

/// The durable queue of objects whose rows are gone, in the rule's own database.
pub const PENDING_TABLE: &str = "retentiond_work.pending_objects";

/// Creates the queue (idempotent; serialised so that concurrent first runs cannot race).
pub const PENDING_DDL: &str = "SELECT pg_advisory_xact_lock(1919251317, 0); \
    CREATE SCHEMA IF NOT EXISTS retentiond_work; \
    CREATE TABLE IF NOT EXISTS retentiond_work.pending_objects ( \
      id bigserial PRIMARY KEY, objects_store text NOT NULL, rule text NOT NULL, \
      category text NOT NULL, subject_kind text, subject_id text, key text NOT NULL, \
      queued_at timestamptz NOT NULL DEFAULT now()); \
    CREATE INDEX IF NOT EXISTS pending_objects_key ON retentiond_work.pending_objects (objects_store, key)";

/// Whether the queue exists (`$1` unused).
pub const PENDING_EXISTS: &str =
    "SELECT to_regclass('retentiond_work.pending_objects') IS NOT NULL";

/// `(id, key, category, subject_kind, subject_id)` of queued objects of store `$1` after id
/// `$2`, oldest first, at most `$3`.
pub const PENDING_NEXT: &str = "SELECT id, key, category, subject_kind, subject_id \
    FROM retentiond_work.pending_objects WHERE objects_store = $1 AND id > $2 ORDER BY id LIMIT $3";

/// Removes the queue entries `$1` (bigint[]): their objects are gone, or a row still
/// references them (whoever deletes that row queues the key again).
pub const PENDING_DONE: &str = "DELETE FROM retentiond_work.pending_objects WHERE id = ANY($1)";

/// `(id, key, category, subject_kind, subject_id)` of every queue entry of store `$1` for
/// the keys `$2` (text[]): a key shared by rows of several subjects has one entry each,
/// and its object stays while any of them is held.
pub const PENDING_OF_KEYS: &str = "SELECT id, key, category, subject_kind, subject_id \
    FROM retentiond_work.pending_objects WHERE objects_store = $1 AND key = ANY($2)";

/// The keys of `$2` (text[]) queued for deletion in store `$1` (a prefix rule leaves them
/// to the queue, which honours the holds of the rows they belonged to).
pub const PENDING_QUEUED: &str = "SELECT DISTINCT key FROM retentiond_work.pending_objects \
    WHERE objects_store = $1 AND key = ANY($2)";

/// The keys of `$1` (text[]) that a row of `table` references in one of `columns`
/// (`(column, is text[])`).
pub fn referenced_keys(table: &TableName, columns: &[(Ident, bool)]) -> String {
    let t = table.quoted();
    columns
        .iter()
        .map(|(c, array)| {
            let c = c.quoted();
            if *array {
                format!(
                    "SELECT u.k FROM {t} CROSS JOIN LATERAL unnest({c}) AS u(k) \
                     WHERE {c} && CAST($1 AS text[]) AND u.k = ANY(CAST($1 AS text[]))"
                )
            } else {
                format!("SELECT CAST({c} AS text) FROM {t} WHERE {c} = ANY(CAST($1 AS text[]))")
            }
        })
        .collect::<Vec<_>>()
        .join(" UNION ")
}
