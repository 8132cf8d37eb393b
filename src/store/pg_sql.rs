//! SQL text for table rules, built from validated identifiers only. Pure.
//!
//! Values (cutoffs, held ids, HMAC pads, batch limits) are always bound parameters; the
//! only config text spliced in is the rule's `filter`, which is trusted operator input
//! that the preflight has compiled with `EXPLAIN`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::anonymise::{self, ColumnSql, HmacParams};
use crate::config::{AgeFormat, Ident, TableName};

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// timestamptz.
    Timestamptz(DateTime<Utc>),
    /// timestamp without time zone (UTC).
    Timestamp(NaiveDateTime),
    /// date.
    Date(NaiveDate),
    /// bigint.
    BigInt(i64),
    /// text.
    Text(String),
    /// text[].
    TextArray(Vec<String>),
    /// bytea.
    Bytea(Vec<u8>),
}

/// Parameters in placeholder order.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<Param>);

impl Params {
    /// Adds a value and returns its placeholder (`$n`).
    pub fn push(&mut self, p: Param) -> String {
        self.0.push(p);
        format!("${}", self.0.len())
    }
}

/// How the age column is compared, decided from its catalog type and `age_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeKind {
    /// timestamptz.
    Timestamptz,
    /// timestamp, read as UTC.
    Timestamp,
    /// date: due once the whole day lies before the cutoff.
    Date,
    /// integer seconds since the epoch.
    EpochSeconds,
    /// integer milliseconds since the epoch.
    EpochMillis,
}

impl AgeKind {
    /// The comparison for a column of catalog type `type_name` declared with `format`.
    pub fn resolve(type_name: &str, format: AgeFormat) -> Result<Self, String> {
        let integer = matches!(type_name, "smallint" | "integer" | "bigint")
            || type_name.starts_with("numeric");
        match (format, type_name) {
            (AgeFormat::Native, "timestamp with time zone") => Ok(Self::Timestamptz),
            (AgeFormat::Native, "timestamp without time zone") => Ok(Self::Timestamp),
            (AgeFormat::Native, "date") => Ok(Self::Date),
            (AgeFormat::Native, t) if integer => Err(format!(
                "age column is {t}: declare age_format = \"epoch_seconds\" or \"epoch_millis\""
            )),
            (AgeFormat::EpochSeconds, _) if integer => Ok(Self::EpochSeconds),
            (AgeFormat::EpochMillis, _) if integer => Ok(Self::EpochMillis),
            (AgeFormat::Native, t) => Err(format!(
                "age column is {t}: expected timestamptz, timestamp or date"
            )),
            (_, t) => Err(format!(
                "age column is {t}: epoch formats need an integer column"
            )),
        }
    }

    /// The bound value that `age < value` compares against for `cutoff`.
    ///
    /// A date is due only when its whole day is before the cutoff, so a record is never
    /// removed early because its time of day is unknown.
    pub fn cutoff_param(&self, cutoff: DateTime<Utc>) -> Param {
        match self {
            Self::Timestamptz => Param::Timestamptz(cutoff),
            Self::Timestamp => Param::Timestamp(cutoff.naive_utc()),
            Self::Date => Param::Date(cutoff.date_naive()),
            Self::EpochSeconds => Param::BigInt(cutoff.timestamp()),
            Self::EpochMillis => Param::BigInt(cutoff.timestamp_millis()),
        }
    }
}

/// What a batch statement needs to know about a rule and its table.
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    /// The table (a plain table or one leaf partition).
    pub table: &'a TableName,
    /// Age column.
    pub age_column: &'a Ident,
    /// How it compares.
    pub age_kind: AgeKind,
    /// Records older than this are due; `None` selects every age (erasure without floor).
    pub cutoff: Option<DateTime<Utc>>,
    /// Only records at least this young (`age >= not_before`): those inside a legal floor.
    pub not_before: Option<DateTime<Utc>>,
    /// Operator filter.
    pub filter: Option<&'a str>,
    /// Subject column.
    pub subject_column: Option<&'a Ident>,
    /// Held subject ids (never removed).
    pub held_ids: &'a [String],
    /// Only this subject (erasure).
    pub only_subject: Option<&'a str>,
    /// Anonymise columns: `SET` expressions and the "already anonymised" test.
    pub anonymise: &'a [(Ident, ColumnSql)],
}

/// SQL text and its parameters.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The SQL.
    pub sql: String,
    /// Bound values in order.
    pub params: Params,
}

/// Which due records one batch statement takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// At most this many, in whatever order the planner finds them (an index on the age
    /// column, typically); rows another transaction has locked are skipped.
    First(i64),
    /// Every due record in heap pages `from..to`, read in one pass in physical order: the
    /// shape of a bulk statement, cut into short transactions.
    Pages {
        /// First page.
        from: u64,
        /// Page after the last.
        to: u64,
        /// Skip rows another transaction has locked (at the price of locking each row
        /// before changing it); otherwise such a row is waited for, up to `lock_timeout`.
        skip_locked: bool,
    },
}

impl Selection<'_> {
    /// `WHERE` conditions of due records, held ones included; fills `params`.
    fn due(&self, params: &mut Params) -> String {
        let mut conds = Vec::new();
        // Without a cutoff (erasure of one subject) every age qualifies, NULL included.
        if let Some(cutoff) = self.cutoff {
            let p = params.push(self.age_kind.cutoff_param(cutoff));
            conds.push(format!("{} < {p}", self.age_column.quoted()));
        } else {
            conds.push("true".to_owned());
        }
        if let Some(nb) = self.not_before {
            let p = params.push(self.age_kind.cutoff_param(nb));
            conds.push(format!("{} >= {p}", self.age_column.quoted()));
        }
        if let Some(f) = self.filter {
            conds.push(format!("({f})"));
        }
        if let (Some(col), Some(id)) = (self.subject_column, self.only_subject) {
            let p = params.push(Param::Text(id.to_owned()));
            conds.push(format!("CAST({} AS text) = {p}", col.quoted()));
        }
        let done: Vec<&str> = self
            .anonymise
            .iter()
            .filter_map(|(_, s)| s.done_expr.as_deref())
            .collect();
        if !done.is_empty() {
            conds.push(format!("NOT ({})", done.join(" AND ")));
        }
        conds.join(" AND ")
    }

    /// Condition true for held records, or `None` when nothing is held.
    fn held(&self, params: &mut Params) -> Option<String> {
        let col = self.subject_column?;
        if self.held_ids.is_empty() {
            return None;
        }
        let p = params.push(Param::TextArray(self.held_ids.to_vec()));
        Some(format!(
            "({c} IS NOT NULL AND CAST({c} AS text) = ANY({p}))",
            c = col.quoted()
        ))
    }

    fn not_held(&self, params: &mut Params) -> String {
        self.held(params)
            .map(|h| format!(" AND NOT {h}"))
            .unwrap_or_default()
    }

    /// `SELECT due, held, oldest unheld age (timestamptz)`, in one pass over the due rows.
    /// Without `with_oldest` the third column is NULL: [`Selection::oldest`] finds it
    /// through an index on the age column far more cheaply than the pass can.
    pub fn count(&self, with_oldest: bool) -> Statement {
        let mut params = Params::default();
        let due = self.due(&mut params);
        let held_cond = self.held(&mut params);
        let held = held_cond
            .as_ref()
            .map(|h| format!("count(*) FILTER (WHERE {h})"))
            .unwrap_or_else(|| "CAST(0 AS bigint)".into());
        let oldest = if with_oldest {
            self.oldest_expr(held_cond.as_deref())
        } else {
            "CAST(NULL AS timestamptz)".into()
        };
        Statement {
            sql: format!(
                "SELECT count(*) AS due, {held} AS held, {oldest} AS oldest FROM {} WHERE {due}",
                self.table.quoted()
            ),
            params,
        }
    }

    /// `SELECT` the oldest age (timestamptz) of the due, unheld records.
    pub fn oldest(&self) -> Statement {
        self.select_due(&format!("SELECT {}", self.oldest_expr(None)), None)
    }

    /// `{head} FROM table WHERE <due> AND NOT <held>`, then `LIMIT limit` when given.
    fn select_due(&self, head: &str, limit: Option<i64>) -> Statement {
        let mut params = Params::default();
        let due = self.due(&mut params);
        let not_held = self.not_held(&mut params);
        let limit = limit
            .map(|n| format!(" LIMIT {}", params.push(Param::BigInt(n))))
            .unwrap_or_default();
        Statement {
            sql: format!(
                "{head} FROM {} WHERE {due}{not_held}{limit}",
                self.table.quoted()
            ),
            params,
        }
    }

    /// `min(age)` as timestamptz, over the rows where `held` is false when given.
    fn oldest_expr(&self, held: Option<&str>) -> String {
        let age = self.age_column.quoted();
        let min = match held {
            Some(h) => format!("min({age}) FILTER (WHERE NOT {h})"),
            None => format!("min({age})"),
        };
        match self.age_kind {
            AgeKind::Timestamptz => min,
            AgeKind::Timestamp => format!("{min} AT TIME ZONE 'UTC'"),
            AgeKind::Date => format!("CAST({min} AS timestamp) AT TIME ZONE 'UTC'"),
            AgeKind::EpochSeconds => format!("to_timestamp({min})"),
            AgeKind::EpochMillis => format!("to_timestamp({min} / 1000.0)"),
        }
    }

    /// Up to `limit` sample keys (primary key values, or ctids) of records that would go.
    pub fn sample(&self, key_columns: &[Ident], limit: i64) -> Statement {
        self.select_due(&format!("SELECT {}", key_expr(key_columns)), Some(limit))
    }

    /// The plan PostgreSQL chooses to find every due, unheld record (`EXPLAIN (FORMAT JSON)`).
    pub fn explain_due(&self) -> Statement {
        self.select_due("EXPLAIN (FORMAT JSON) SELECT 1", None)
    }

    /// The `WHERE` of one batch statement; fills `params`.
    fn batch_target(&self, batch: Batch, params: &mut Params) -> String {
        let t = self.table.quoted();
        match batch {
            Batch::First(limit) => {
                let due = self.due(params);
                let not_held = self.not_held(params);
                let lim = params.push(Param::BigInt(limit));
                format!(
                    "ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {due}{not_held} LIMIT {lim} FOR UPDATE SKIP LOCKED))"
                )
            }
            Batch::Pages {
                from,
                to,
                skip_locked,
            } => {
                let a = params.push(Param::Text(format!("({from},0)")));
                let b = params.push(Param::Text(format!("({to},0)")));
                let range = format!("ctid >= CAST({a} AS tid) AND ctid < CAST({b} AS tid)");
                let due = self.due(params);
                let not_held = self.not_held(params);
                if skip_locked {
                    format!(
                        "ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {range} AND {due}{not_held} FOR UPDATE SKIP LOCKED))"
                    )
                } else {
                    format!("{range} AND {due}{not_held}")
                }
            }
        }
    }

    /// Deletes the due, unheld records of one batch in one statement.
    pub fn delete_batch(&self, batch: Batch) -> Statement {
        let mut params = Params::default();
        let target = self.batch_target(batch, &mut params);
        Statement {
            sql: format!("DELETE FROM {} WHERE {target}", self.table.quoted()),
            params,
        }
    }

    /// Anonymises the due, unheld, not yet anonymised records of one batch.
    pub fn anonymise_batch(
        &self,
        batch: Batch,
        hmac: Option<(Vec<u8>, Vec<u8>)>,
        hmac_names: &HmacParams,
    ) -> Statement {
        let mut params = Params::default();
        // The pads go first so their placeholders match the names the SET clauses use.
        if let Some((ipad, opad)) = hmac {
            let i = params.push(Param::Bytea(ipad));
            let o = params.push(Param::Bytea(opad));
            debug_assert_eq!(
                (i.as_str(), o.as_str()),
                (hmac_names.ipad.as_str(), hmac_names.opad.as_str())
            );
        }
        let target = self.batch_target(batch, &mut params);
        let sets: Vec<String> = self
            .anonymise
            .iter()
            .map(|(c, s)| format!("{} = {}", c.quoted(), s.set_expr))
            .collect();
        Statement {
            sql: format!(
                "UPDATE {} SET {} WHERE {target}",
                self.table.quoted(),
                sets.join(", ")
            ),
            params,
        }
    }

    /// Reads up to `limit` due, unheld rows with their object keys: `(ctid, fingerprint, keys)`.
    /// Rows in `skip` (ctids whose objects failed this run) are left out.
    pub fn select_with_objects(
        &self,
        key_columns: &[Ident],
        skip: &[String],
        limit: i64,
    ) -> Statement {
        let mut params = Params::default();
        let due = self.due(&mut params);
        let not_held = self.not_held(&mut params);
        let skip_sql = if skip.is_empty() {
            String::new()
        } else {
            let p = params.push(Param::TextArray(skip.to_vec()));
            format!(" AND NOT (ctid = ANY(CAST({p} AS tid[])))")
        };
        let lim = params.push(Param::BigInt(limit));
        Statement {
            sql: format!(
                "SELECT ctid::text, {fp}, {keys} FROM {t} WHERE {due}{not_held}{skip_sql} LIMIT {lim}",
                fp = fingerprint(key_columns),
                keys = keys_array(key_columns),
                t = self.table.quoted()
            ),
            params,
        }
    }

    /// Deletes the rows in `ctids` whose key columns still hash to `fingerprints` and that
    /// are still due and unheld: a row changed since it was read stays for the next run.
    pub fn delete_rows(
        &self,
        key_columns: &[Ident],
        ctids: Vec<String>,
        fingerprints: Vec<String>,
    ) -> Statement {
        let mut params = Params::default();
        let c = params.push(Param::TextArray(ctids));
        let f = params.push(Param::TextArray(fingerprints));
        let due = self.due(&mut params);
        let not_held = self.not_held(&mut params);
        Statement {
            sql: format!(
                "DELETE FROM {t} WHERE ctid = ANY(CAST({c} AS tid[])) AND {due}{not_held} \
                 AND (ctid::text, {fp}) IN (SELECT u.t, u.f FROM unnest({c}, {f}) AS u(t, f))",
                t = self.table.quoted(),
                fp = fingerprint(key_columns)
            ),
            params,
        }
    }
}

/// Primary key columns joined as text, or the ctid for keyless tables.
pub fn key_expr(key_columns: &[Ident]) -> String {
    if key_columns.is_empty() {
        "ctid::text".into()
    } else {
        let cols: Vec<String> = key_columns
            .iter()
            .map(|c| format!("CAST({} AS text)", c.quoted()))
            .collect();
        format!("concat_ws(',', {})", cols.join(", "))
    }
}

fn fingerprint(cols: &[Ident]) -> String {
    let list: Vec<String> = cols.iter().map(Ident::quoted).collect();
    format!("md5(CAST(ROW({}) AS text))", list.join(", "))
}

fn keys_array(cols: &[Ident]) -> String {
    let mut expr = "CAST(ARRAY[] AS text[])".to_owned();
    for c in cols {
        expr = format!("{expr} || {}", c.quoted());
    }
    format!("array_remove({expr}, NULL)")
}

/// The SQL of every anonymise column, given the catalog's types.
pub fn anonymise_columns(
    columns: &[(Ident, crate::anonymise::Strategy)],
    describe: impl Fn(&Ident) -> Option<(String, bool)>,
) -> Result<(Vec<(Ident, ColumnSql)>, bool), String> {
    let names = hmac_names();
    let mut out = Vec::new();
    let mut uses_hmac = false;
    for (col, strategy) in columns {
        let (type_name, nullable) =
            describe(col).ok_or_else(|| format!("column `{col}` does not exist"))?;
        let target = anonymise::Target {
            column: col,
            type_name: &type_name,
            nullable,
            strategy,
        };
        out.push((col.clone(), anonymise::column_sql(&target, &names)?));
        uses_hmac |= matches!(strategy, crate::anonymise::Strategy::Hash);
    }
    if out.iter().all(|(_, s)| s.done_expr.is_none()) {
        return Err("no column's strategy leaves a recognisable value, so anonymised rows could not be told apart: add a `null`, `fixed:`, `truncate_ip`, `email_domain`, or a `hash`/`random` on a text column".into());
    }
    Ok((out, uses_hmac))
}

/// Placeholders the HMAC pads take: always the first two parameters of an anonymise batch.
pub fn hmac_names() -> HmacParams {
    HmacParams {
        ipad: "$1".into(),
        opad: "$2".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(s: &str) -> Ident {
        Ident::parse(s).unwrap()
    }

    #[test]
    fn delete_batch_quotes_everything_and_binds_values() {
        let table = TableName::parse("public.ApiLog").unwrap();
        let age = ident("CreatedAt");
        let subj = ident("account_id");
        let held = vec!["42".to_string()];
        let sel = Selection {
            table: &table,
            age_column: &age,
            age_kind: AgeKind::Timestamptz,
            cutoff: Some(Utc::now()),
            not_before: None,
            filter: Some("status = 'resolved'"),
            subject_column: Some(&subj),
            held_ids: &held,
            only_subject: None,
            anonymise: &[],
        };
        let st = sel.delete_batch(Batch::First(500));
        assert!(st.sql.contains("FROM \"public\".\"ApiLog\""), "{}", st.sql);
        assert!(st.sql.contains("\"CreatedAt\" < $1"));
        assert!(st.sql.contains("(status = 'resolved')"));
        assert!(st.sql.contains(
            "AND NOT (\"account_id\" IS NOT NULL AND CAST(\"account_id\" AS text) = ANY($2))"
        ));
        assert!(st.sql.contains("LIMIT $3 FOR UPDATE SKIP LOCKED"));
        assert_eq!(st.params.0.len(), 3);
        assert_eq!(st.params.0[2], Param::BigInt(500));
    }

    #[test]
    fn page_batches_read_one_range_and_bind_it() {
        let table = TableName::parse("public.logs").unwrap();
        let age = ident("at");
        let sel = Selection {
            table: &table,
            age_column: &age,
            age_kind: AgeKind::Timestamptz,
            cutoff: Some(Utc::now()),
            not_before: None,
            filter: None,
            subject_column: None,
            held_ids: &[],
            only_subject: None,
            anonymise: &[],
        };
        let waiting = sel.delete_batch(Batch::Pages {
            from: 80,
            to: 160,
            skip_locked: false,
        });
        assert_eq!(
            waiting.sql,
            "DELETE FROM \"public\".\"logs\" WHERE ctid >= CAST($1 AS tid) AND ctid < CAST($2 AS tid) AND \"at\" < $3"
        );
        assert_eq!(waiting.params.0[0], Param::Text("(80,0)".into()));
        assert_eq!(waiting.params.0[1], Param::Text("(160,0)".into()));
        let skipping = sel.delete_batch(Batch::Pages {
            from: 80,
            to: 160,
            skip_locked: true,
        });
        assert!(
            skipping
                .sql
                .ends_with("ctid < CAST($2 AS tid) AND \"at\" < $3 FOR UPDATE SKIP LOCKED))"),
            "{}",
            skipping.sql
        );
    }

    #[test]
    fn age_kinds_bind_the_right_cutoff() {
        use chrono::TimeZone;
        let c = Utc.with_ymd_and_hms(2026, 10, 23, 10, 30, 0).unwrap();
        assert_eq!(
            AgeKind::EpochMillis.cutoff_param(c),
            Param::BigInt(c.timestamp_millis())
        );
        assert_eq!(
            AgeKind::EpochSeconds.cutoff_param(c),
            Param::BigInt(c.timestamp())
        );
        assert_eq!(
            AgeKind::Date.cutoff_param(c),
            Param::Date(NaiveDate::from_ymd_opt(2026, 10, 23).unwrap())
        );
        assert!(AgeKind::resolve("bigint", AgeFormat::Native).is_err());
        assert!(AgeKind::resolve("text", AgeFormat::Native).is_err());
        assert!(AgeKind::resolve("timestamp with time zone", AgeFormat::EpochMillis).is_err());
        assert_eq!(
            AgeKind::resolve("integer", AgeFormat::EpochSeconds).unwrap(),
            AgeKind::EpochSeconds
        );
    }

    #[test]
    fn anonymise_needs_a_recognisable_column() {
        let cols = vec![(ident("id"), crate::anonymise::Strategy::Random)];
        let err = anonymise_columns(&cols, |_| Some(("uuid".into(), true))).unwrap_err();
        assert!(err.contains("recognisable"));
        let cols = vec![(ident("ip"), crate::anonymise::Strategy::TruncateIp)];
        assert!(anonymise_columns(&cols, |_| Some(("inet".into(), true))).is_ok());
    }
}

/// `ANALYZE table`, after a large delete (`vacuum = "analyze"`).
pub fn analyze(table: &TableName) -> String {
    format!("ANALYZE {}", table.quoted())
}

/// `(pages now, reltuples, relpages, server_version_num)` of the table whose quoted name
/// is bound to `$1`: what choosing a batch walk needs.
pub const HEAP_SHAPE: &str =
    "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int8, \
     c.reltuples::float8, c.relpages::int8, current_setting('server_version_num')::int4 \
     FROM pg_class c WHERE c.oid = CAST($1 AS regclass)";

/// `SELECT count(*) FROM table`: the guard's percentage base, a partition's row count.
pub fn count_rows(table: &TableName) -> String {
    format!("SELECT count(*) FROM {}", table.quoted())
}

/// DDL and catalog queries for partition-aware sweeps (identifiers quoted).
pub mod partitions {
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
                upper_bound(
                    "FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-02-01 00:00:00+00')"
                )
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
}
