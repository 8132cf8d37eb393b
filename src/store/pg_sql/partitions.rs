//! DDL and catalog queries for partition-aware sweeps (identifiers quoted).

use crate::config::{Ident, TableName};

/// `(schema, name, bound expression, directly under the parent)` of every leaf.
pub const LEAVES: &str =
    "SELECT n.nspname::text, c.relname::text, pg_get_expr(c.relpartbound, c.oid), \
     (i.inhparent = $1::int8::oid) FROM pg_partition_tree($1::int8::regclass) t \
     JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_inherits i ON i.inhrelid = c.oid WHERE t.isleaf ORDER BY c.relname";

/// The partition key of a partitioned table, e.g. `RANGE (at)`.
pub const PARTKEY: &str = "SELECT pg_get_partkeydef($1::int8::oid)";

/// Whether the parent has a DEFAULT partition (DETACH CONCURRENTLY is not allowed then).
pub const HAS_DEFAULT: &str =
    "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
     WHERE i.inhparent = $1::int8::oid AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT')";

/// Creates the record of leaves being detached (idempotent, serialised).
pub const DETACHING_DDL: &str = "SELECT pg_advisory_xact_lock(1919251317, 1); \
    CREATE SCHEMA IF NOT EXISTS retentiond_work; \
    CREATE TABLE IF NOT EXISTS retentiond_work.detaching ( \
      rule text NOT NULL, parent text NOT NULL, leaf_schema text NOT NULL, leaf_name text NOT NULL, \
      recorded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (parent, leaf_schema, leaf_name))";

/// Records leaf `($3, $4)` of parent `$2` (quoted name) before rule `$1` detaches it.
pub const DETACHING_ADD: &str =
    "INSERT INTO retentiond_work.detaching (rule, parent, leaf_schema, leaf_name) \
    VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";

/// The leaf `($2, $3)` of parent `$1` is finished.
pub const DETACHING_DONE: &str = "DELETE FROM retentiond_work.detaching \
    WHERE parent = $1 AND leaf_schema = $2 AND leaf_name = $3";

/// `(leaf schema, leaf name, exists, still attached, detach pending)` of every leaf an
/// earlier run recorded for parent `$1` (quoted name) and did not finish.
pub const DETACHING_LEFT: &str = "SELECT d.leaf_schema, d.leaf_name, c.oid IS NOT NULL, \
    COALESCE(i.inhrelid IS NOT NULL, false), COALESCE(i.inhdetachpending, false) \
    FROM retentiond_work.detaching d \
    LEFT JOIN pg_namespace n ON n.nspname = d.leaf_schema \
    LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = d.leaf_name \
    LEFT JOIN pg_inherits i ON i.inhrelid = c.oid \
    WHERE d.parent = $1 AND to_regclass('retentiond_work.detaching') IS NOT NULL";

/// Whether the record of leaves being detached exists.
pub const DETACHING_EXISTS: &str = "SELECT to_regclass('retentiond_work.detaching') IS NOT NULL";

/// `ALTER TABLE parent DETACH PARTITION leaf FINALIZE`: completes an interrupted
/// `DETACH … CONCURRENTLY`.
pub fn finalize(parent: &TableName, leaf: &TableName) -> String {
    format!(
        "ALTER TABLE {} DETACH PARTITION {} FINALIZE",
        parent.quoted(),
        leaf.quoted()
    )
}

/// `SELECT CAST($1 AS <type>) <= $2`: is an upper bound at or before the cutoff?
pub fn bound_before_cutoff(age_type: &str) -> String {
    format!("SELECT CAST(CAST($1 AS text) AS {age_type}) <= $2")
}

/// `ALTER TABLE parent DETACH PARTITION leaf [CONCURRENTLY]`.
pub fn detach(parent: &TableName, leaf: &TableName, concurrently: bool) -> String {
    format!(
        "ALTER TABLE {} DETACH PARTITION {}{}",
        parent.quoted(),
        leaf.quoted(),
        if concurrently { " CONCURRENTLY" } else { "" }
    )
}

/// `DROP TABLE leaf`.
pub fn drop(leaf: &TableName) -> String {
    format!("DROP TABLE {}", leaf.quoted())
}

/// `ALTER TABLE leaf SET SCHEMA archive`.
pub fn archive(leaf: &TableName, schema: &Ident) -> String {
    format!(
        "ALTER TABLE {} SET SCHEMA {}",
        leaf.quoted(),
        schema.quoted()
    )
}

/// The upper bound of `FOR VALUES FROM (…) TO (…)`, unquoted; `None` for DEFAULT,
/// MAXVALUE, list or hash bounds, and multi-column keys.
pub fn upper_bound(bound: &str) -> Option<String> {
    let to = bound
        .strip_prefix("FOR VALUES FROM (")?
        .split(") TO (")
        .nth(1)?
        .strip_suffix(')')?;
    if to.contains(',') || to.eq_ignore_ascii_case("MAXVALUE") {
        return None;
    }
    Some(to.trim_matches('\'').replace("''", "'"))
}

/// Whether `RANGE (col)` partitions on exactly `column`.
pub fn keyed_on(partkey: &str, column: &Ident) -> bool {
    let inner = partkey
        .strip_prefix("RANGE (")
        .and_then(|s| s.strip_suffix(')'));
    inner.is_some_and(|c| c == column.as_str() || c == column.quoted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(
            upper_bound("FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-02-01 00:00:00+00')")
                .as_deref(),
            Some("2026-02-01 00:00:00+00")
        );
        assert_eq!(
            upper_bound("FOR VALUES FROM (0) TO (1000)").as_deref(),
            Some("1000")
        );
        assert_eq!(
            upper_bound("FOR VALUES FROM ('2026-01-01') TO (MAXVALUE)"),
            None
        );
        assert_eq!(upper_bound("DEFAULT"), None);
        assert_eq!(upper_bound("FOR VALUES IN (1, 2)"), None);
        let at = Ident::parse("at").unwrap();
        assert!(keyed_on("RANGE (at)", &at));
        assert!(!keyed_on("RANGE (at, id)", &at));
        assert!(!keyed_on("LIST (at)", &at));
        let mixed = Ident::parse("CreatedAt").unwrap();
        assert!(keyed_on("RANGE (\"CreatedAt\")", &mixed));
    }
}
