//! SQL text for table rules, built from validated identifiers only. Pure.
//!
//! Values (cutoffs, held ids, HMAC pads, batch limits) are always bound parameters; the
//! only config text spliced in is the rule's `filter`, which is trusted operator input
//! that the preflight has compiled with `EXPLAIN`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::anonymise::{self, ColumnSql, HmacParams};
use chrono_tz::Tz;

use crate::config::{naive_cutoff, AgeFormat, Ident, TableName};

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
    /// bigint[].
    BigIntArray(Vec<i64>),
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
    /// timestamp, read as wall-clock time in the rule's `age_timezone`.
    Timestamp(Tz),
    /// date in the rule's `age_timezone`: due once the whole day lies before the cutoff.
    Date(Tz),
    /// integer seconds since the epoch.
    EpochSeconds,
    /// integer milliseconds since the epoch.
    EpochMillis,
}

impl AgeKind {
    /// The comparison for a column of catalog type `type_name` declared with `format`.
    /// A naive column (`timestamp`, `date`) is read in `zone` (UTC when `None`).
    pub fn resolve(type_name: &str, format: AgeFormat, zone: Option<Tz>) -> Result<Self, String> {
        let zone = zone.unwrap_or(Tz::UTC);
        let integer = matches!(type_name, "smallint" | "integer" | "bigint")
            || type_name.starts_with("numeric");
        match (format, type_name) {
            (AgeFormat::Native, "timestamp with time zone") => Ok(Self::Timestamptz),
            (AgeFormat::Native, "timestamp without time zone") => Ok(Self::Timestamp(zone)),
            (AgeFormat::Native, "date") => Ok(Self::Date(zone)),
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
    /// removed early because its time of day is unknown. A naive value is compared with
    /// the latest wall-clock time before which every reading of it in its zone (DST
    /// gaps and repeated hours included) is an instant before the cutoff
    /// ([`crate::config::naive_cutoff`]): never early, at most an hour late.
    pub fn cutoff_param(&self, cutoff: DateTime<Utc>) -> Param {
        match self {
            Self::Timestamptz => Param::Timestamptz(cutoff),
            Self::Timestamp(tz) => Param::Timestamp(naive_cutoff(cutoff, *tz)),
            Self::Date(tz) => Param::Date(naive_cutoff(cutoff, *tz).date()),
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
    /// How the subject column compares with ids.
    pub subject_type: SubjectType,
    /// Held subject ids (never removed), in the column's canonical spelling.
    pub held_ids: &'a [String],
    /// Only this subject (erasure), in the column's canonical spelling.
    pub only_subject: Option<&'a str>,
    /// Anonymise columns: `SET` expressions and the "already anonymised" test.
    pub anonymise: &'a [(Ident, ColumnSql)],
    /// What the other rules covering the same table keep: never removed.
    pub keeps: &'a [Keep],
    /// Rows (ctids as text) that index-walk batches leave out: they could not be changed
    /// this run (blocked, failed).
    pub skip: &'a [String],
}

/// How a subject column is compared with ids given as text (`KIND:ID`): in the
/// column's own type, so `account:042` matches 42 and an upper-case uuid matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectType {
    /// smallint, integer or bigint (the bound).
    Integer(i64, i64),
    /// uuid.
    Uuid,
    /// text, varchar, char.
    #[default]
    Text,
    /// Any other type: compared as its text output.
    Other,
}

impl SubjectType {
    /// The comparison for a column of catalog type `type_name`.
    pub fn of(type_name: &str) -> Self {
        match type_name {
            "smallint" => Self::Integer(i64::from(i16::MIN), i64::from(i16::MAX)),
            "integer" => Self::Integer(i64::from(i32::MIN), i64::from(i32::MAX)),
            "bigint" => Self::Integer(i64::MIN, i64::MAX),
            "uuid" => Self::Uuid,
            "text" => Self::Text,
            t if t.starts_with("character varying") || t.starts_with("character") => Self::Text,
            _ => Self::Other,
        }
    }

    /// `id` as the column spells it, or why no value of the column can equal it.
    pub fn normalise(&self, id: &str) -> Result<String, String> {
        match self {
            Self::Integer(lo, hi) => match id.trim().parse::<i64>() {
                Ok(v) if (*lo..=*hi).contains(&v) => Ok(v.to_string()),
                Ok(_) => Err(format!(
                    "`{id}` is out of the subject column's integer range"
                )),
                Err(_) => Err(format!(
                    "`{id}` is not an integer, and the subject column is one"
                )),
            },
            Self::Uuid => uuid::Uuid::parse_str(id.trim())
                .map(|u| u.hyphenated().to_string())
                .map_err(|_| format!("`{id}` is not a uuid, and the subject column is one")),
            Self::Text | Self::Other => Ok(id.to_owned()),
        }
    }

    /// The ids of `ids` that a value of the column can equal, canonically spelt.
    pub fn normalise_all<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let mut out: Vec<String> = ids
            .into_iter()
            .filter_map(|id| self.normalise(id).ok())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// `col` equals one of the ids bound to `p` (text[]).
    fn any(&self, col: &str, p: &str) -> String {
        match self {
            Self::Integer(..) => format!("{col} = ANY(CAST({p} AS bigint[]))"),
            Self::Uuid => format!("{col} = ANY(CAST({p} AS uuid[]))"),
            Self::Text => format!("{col} = ANY(CAST({p} AS text[]))"),
            Self::Other => format!("CAST({col} AS text) = ANY(CAST({p} AS text[]))"),
        }
    }

    /// `col` equals the id bound to `p` (text).
    fn eq(&self, col: &str, p: &str) -> String {
        match self {
            Self::Integer(..) => format!("{col} = CAST({p} AS bigint)"),
            Self::Uuid => format!("{col} = CAST({p} AS uuid)"),
            Self::Text => format!("{col} = CAST({p} AS text)"),
            Self::Other => format!("CAST({col} AS text) = CAST({p} AS text)"),
        }
    }
}

/// What another rule covering the same table keeps (precedence across rules: retention
/// wins over removal). A row this rule covers (its `filter` is true) is kept while the
/// rule's category floor has not passed for it, while its subject is held, or while the
/// rule's category is held.
#[derive(Debug, Clone)]
pub struct Keep {
    /// The covering rule.
    pub rule: String,
    /// Its filter (`None`: every row).
    pub filter: Option<String>,
    /// Its age column and how it compares.
    pub age_column: Ident,
    /// How its age column compares.
    pub age_kind: AgeKind,
    /// Rows aged at or after this (or with no age) are inside its category's floor.
    pub floor_from: Option<DateTime<Utc>>,
    /// Its subject column, how it compares, and the held ids of its subject kind.
    pub subject: Option<(Ident, SubjectType, Vec<String>)>,
    /// Its category is held: it keeps every row it covers.
    pub category_held: bool,
}

impl Keep {
    /// Whether this rule can keep any row now.
    pub fn keeps_anything(&self) -> bool {
        self.category_held
            || self.floor_from.is_some()
            || self
                .subject
                .as_ref()
                .is_some_and(|(_, _, ids)| !ids.is_empty())
    }

    /// True for the rows this rule keeps; `None` when it keeps nothing now.
    fn cond(&self, params: &mut Params) -> Option<String> {
        if !self.keeps_anything() {
            return None;
        }
        let mut why = Vec::new();
        if self.category_held {
            why.push("true".to_owned());
        }
        if let Some(f) = self.floor_from {
            let p = params.push(self.age_kind.cutoff_param(f));
            let a = self.age_column.quoted();
            why.push(format!("{a} IS NULL OR {a} >= {p}"));
        }
        if let Some((col, ty, ids)) = &self.subject {
            if !ids.is_empty() {
                let p = params.push(Param::TextArray(ids.clone()));
                let c = col.quoted();
                why.push(format!("{c} IS NOT NULL AND {}", ty.any(&c, &p)));
            }
        }
        let why = why
            .iter()
            .map(|w| format!("({w})"))
            .collect::<Vec<_>>()
            .join(" OR ");
        Some(match &self.filter {
            Some(f) => format!("(COALESCE(({f}), false) AND ({why}))"),
            None => format!("({why})"),
        })
    }
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Exactly these rows (ctids as text), if they are still due: one part of a batch
    /// that failed and is being split to find the rows that cannot be changed.
    Rows(Vec<String>),
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
            conds.push(self.subject_type.eq(&col.quoted(), &p));
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
        let c = col.quoted();
        Some(format!(
            "({c} IS NOT NULL AND {})",
            self.subject_type.any(&c, &p)
        ))
    }

    /// ` AND NOT <held> AND NOT <kept by another rule>`: what may go of the due rows.
    fn not_held(&self, params: &mut Params) -> String {
        let mut out = self
            .held(params)
            .map(|h| format!(" AND NOT {h}"))
            .unwrap_or_default();
        for k in self.keeps {
            if let Some(c) = k.cond(params) {
                out.push_str(&format!(" AND NOT {c}"));
            }
        }
        out
    }

    /// Conditions true for the rows each covering rule keeps, `(rule, condition)`.
    fn kept(&self, params: &mut Params) -> Vec<(String, String)> {
        self.keeps
            .iter()
            .filter_map(|k| Some((k.rule.clone(), k.cond(params)?)))
            .collect()
    }

    /// `SELECT due, held, oldest removable age (timestamptz), kept, kept by rule 1, …` in
    /// one pass over the due rows. `due` counts every due row, `held` those of held
    /// subjects, `kept` the others that a covering rule keeps ([`Selection::kept_rules`]
    /// names the rules of the last columns, in order; a row kept by several is counted
    /// under each). Without `with_oldest` the third column is NULL: [`Selection::oldest`]
    /// finds it through an index on the age column far more cheaply than the pass can.
    pub fn count(&self, with_oldest: bool) -> Statement {
        let mut params = Params::default();
        let due = self.due(&mut params);
        let held_cond = self.held(&mut params);
        let kept = self.kept(&mut params);
        let held = held_cond
            .as_ref()
            .map(|h| format!("count(*) FILTER (WHERE {h})"))
            .unwrap_or_else(|| "CAST(0 AS bigint)".into());
        let not_held = held_cond
            .as_ref()
            .map(|h| format!("NOT {h}"))
            .unwrap_or_else(|| "true".into());
        let any_kept = if kept.is_empty() {
            "false".to_owned()
        } else {
            kept.iter()
                .map(|(_, c)| c.as_str())
                .collect::<Vec<_>>()
                .join(" OR ")
        };
        let removable = format!("{not_held} AND NOT ({any_kept})");
        let oldest = if with_oldest {
            self.oldest_expr(Some(&removable))
        } else {
            "CAST(NULL AS timestamptz)".into()
        };
        let mut cols = vec![
            "count(*) AS due".to_owned(),
            format!("{held} AS held"),
            format!("{oldest} AS oldest"),
            format!("count(*) FILTER (WHERE {not_held} AND ({any_kept})) AS kept"),
        ];
        cols.extend(
            kept.iter()
                .map(|(_, c)| format!("count(*) FILTER (WHERE {not_held} AND {c})")),
        );
        Statement {
            sql: format!(
                "SELECT {} FROM {} WHERE {due}",
                cols.join(", "),
                self.table.quoted()
            ),
            params,
        }
    }

    /// The covering rules that keep something now, in the order of `count`'s last columns.
    pub fn kept_rules(&self) -> Vec<String> {
        self.kept(&mut Params::default())
            .into_iter()
            .map(|(r, _)| r)
            .collect()
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

    /// `min(age)` as timestamptz, over the rows where `only` is true when given.
    fn oldest_expr(&self, only: Option<&str>) -> String {
        let age = self.age_column.quoted();
        let min = match only {
            Some(c) => format!("min({age}) FILTER (WHERE {c})"),
            None => format!("min({age})"),
        };
        match self.age_kind {
            AgeKind::Timestamptz => min,
            // Zone names are validated at load (`chrono_tz`): letters, digits, `/_+-`.
            AgeKind::Timestamp(tz) => format!("{min} AT TIME ZONE '{}'", tz.name()),
            AgeKind::Date(tz) => format!("CAST({min} AS timestamp) AT TIME ZONE '{}'", tz.name()),
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
    fn batch_target(&self, batch: &Batch, params: &mut Params) -> String {
        let t = self.table.quoted();
        match batch {
            Batch::First(limit) => {
                let due = self.due(params);
                let not_held = self.not_held(params);
                let skip = if self.skip.is_empty() {
                    String::new()
                } else {
                    let p = params.push(Param::TextArray(self.skip.to_vec()));
                    format!(" AND NOT (ctid = ANY(CAST({p} AS tid[])))")
                };
                let lim = params.push(Param::BigInt(*limit));
                format!(
                    "ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {due}{not_held}{skip} LIMIT {lim} FOR UPDATE SKIP LOCKED))"
                )
            }
            Batch::Rows(ctids) => {
                let c = params.push(Param::TextArray(ctids.clone()));
                let due = self.due(params);
                let not_held = self.not_held(params);
                format!("ctid = ANY(CAST({c} AS tid[])) AND {due}{not_held}")
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
                if *skip_locked {
                    format!(
                        "ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {range} AND {due}{not_held} FOR UPDATE SKIP LOCKED))"
                    )
                } else {
                    format!("{range} AND {due}{not_held}")
                }
            }
        }
    }

    /// Counts the rows one batch would take now: `SELECT count(*)`.
    pub fn count_batch(&self, batch: &Batch) -> Statement {
        let mut params = Params::default();
        let target = self.batch_target(batch, &mut params);
        Statement {
            sql: format!(
                "SELECT count(*) FROM {} WHERE {target}",
                self.table.quoted()
            ),
            params,
        }
    }

    /// Deletes the due, unheld records of one batch in one statement.
    pub fn delete_batch(&self, batch: &Batch) -> Statement {
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
        batch: &Batch,
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

    /// The ctids (as text) of the rows `batch` would take: to split a batch that failed.
    pub fn batch_rows(&self, batch: &Batch) -> Statement {
        let mut params = Params::default();
        let target = self.batch_target(batch, &mut params);
        Statement {
            sql: format!(
                "SELECT ctid::text FROM {} WHERE {target}",
                self.table.quoted()
            ),
            params,
        }
    }

    /// Deletes the due, unheld rows of one batch and, in the same statement (so in the
    /// same transaction), queues their object keys for deletion: `SELECT count(*)` of
    /// the rows deleted. A crash leaves either the rows with their objects, or the keys
    /// queued for the next run; never a row pointing at a missing object.
    pub fn delete_batch_queued(&self, batch: &Batch, queue: &QueueTarget<'_>) -> Statement {
        let mut params = Params::default();
        let target = self.batch_target(batch, &mut params);
        let s = params.push(Param::Text(queue.objects_store.to_owned()));
        let r = params.push(Param::Text(queue.rule.to_owned()));
        let c = params.push(Param::Text(queue.category.to_owned()));
        let k = params.push(Param::Text(queue.subject_kind.unwrap_or("").to_owned()));
        let subject = self
            .subject_column
            .map(|col| format!("CAST({} AS text)", col.quoted()))
            .unwrap_or_else(|| "CAST(NULL AS text)".into());
        Statement {
            sql: format!(
                "WITH gone AS (DELETE FROM {t} WHERE {target} RETURNING {keys} AS keys, {subject} AS subject_id), \
                 queued AS (INSERT INTO {PENDING_TABLE} (objects_store, rule, category, subject_kind, subject_id, key) \
                 SELECT {s}, {r}, {c}, NULLIF({k}, ''), g.subject_id, u.key FROM gone g CROSS JOIN LATERAL unnest(g.keys) AS u(key)) \
                 SELECT count(*) FROM gone",
                t = self.table.quoted(),
                keys = keys_array(queue.key_columns),
            ),
            params,
        }
    }
}

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
            subject_type: SubjectType::of("bigint"),
            held_ids: &held,
            only_subject: None,
            anonymise: &[],
            keeps: &[],
            skip: &[],
        };
        let st = sel.delete_batch(&Batch::First(500));
        assert!(st.sql.contains("FROM \"public\".\"ApiLog\""), "{}", st.sql);
        assert!(st.sql.contains("\"CreatedAt\" < $1"));
        assert!(st.sql.contains("(status = 'resolved')"));
        assert!(st.sql.contains(
            "AND NOT (\"account_id\" IS NOT NULL AND \"account_id\" = ANY(CAST($2 AS bigint[])))"
        ), "{}", st.sql);
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
            subject_type: SubjectType::default(),
            held_ids: &[],
            only_subject: None,
            anonymise: &[],
            keeps: &[],
            skip: &[],
        };
        let waiting = sel.delete_batch(&Batch::Pages {
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
        let skipping = sel.delete_batch(&Batch::Pages {
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
    fn another_rules_floor_and_holds_keep_what_it_covers() {
        let table = TableName::parse("public.docs").unwrap();
        let age = ident("created_at");
        let cutoff = Utc::now();
        let keep = Keep {
            rule: "invoice-docs".into(),
            filter: Some("kind = 'invoice'".into()),
            age_column: ident("issued_on"),
            age_kind: AgeKind::Date(Tz::UTC),
            floor_from: Some(cutoff),
            subject: Some((
                ident("account_id"),
                SubjectType::of("integer"),
                vec!["8".into()],
            )),
            category_held: false,
        };
        assert!(keep.keeps_anything());
        let keeps = [keep];
        let sel = Selection {
            table: &table,
            age_column: &age,
            age_kind: AgeKind::Timestamptz,
            cutoff: Some(cutoff),
            not_before: None,
            filter: None,
            subject_column: None,
            subject_type: SubjectType::default(),
            held_ids: &[],
            only_subject: None,
            anonymise: &[],
            keeps: &keeps,
            skip: &[],
        };
        let st = sel.delete_batch(&Batch::First(10));
        assert!(
            st.sql.contains(
                "AND NOT (COALESCE((kind = 'invoice'), false) AND ((\"issued_on\" IS NULL OR \"issued_on\" >= $2) OR (\"account_id\" IS NOT NULL AND \"account_id\" = ANY(CAST($3 AS bigint[])))))"
            ),
            "{}",
            st.sql
        );
        // The count reports the kept rows under the rule that keeps them.
        assert_eq!(sel.kept_rules(), vec!["invoice-docs".to_string()]);
        let count = sel.count(false);
        assert!(
            count.sql.contains(") AS kept, count(*) FILTER"),
            "{}",
            count.sql
        );
        // A rule that keeps nothing now adds nothing.
        let idle = Keep {
            rule: "promo".into(),
            filter: None,
            age_column: ident("created_at"),
            age_kind: AgeKind::Timestamptz,
            floor_from: None,
            subject: Some((ident("account_id"), SubjectType::Text, vec![])),
            category_held: false,
        };
        assert!(!idle.keeps_anything());
        assert_eq!(idle.cond(&mut Params::default()), None);
    }

    #[test]
    fn subject_ids_are_compared_in_the_columns_type() {
        let uuid = SubjectType::of("uuid");
        assert_eq!(
            uuid.normalise("0E8F1C2A-3B4D-4E5F-8A9B-0C1D2E3F4A5B")
                .unwrap(),
            "0e8f1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
        );
        assert!(uuid.normalise("42").is_err());
        let int = SubjectType::of("integer");
        assert_eq!(int.normalise("042").unwrap(), "42");
        assert!(int.normalise("abc").is_err());
        assert!(int.normalise("99999999999").is_err());
        assert_eq!(SubjectType::of("character varying(64)"), SubjectType::Text);
        assert_eq!(SubjectType::of("text").normalise("A-1").unwrap(), "A-1");
        assert_eq!(
            int.normalise_all(&["7".to_string(), "x".into(), "007".into()]),
            vec!["7".to_string()]
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
            AgeKind::Date(Tz::UTC).cutoff_param(c),
            Param::Date(NaiveDate::from_ymd_opt(2026, 10, 23).unwrap())
        );
        assert!(AgeKind::resolve("bigint", AgeFormat::Native, None).is_err());
        assert!(AgeKind::resolve("text", AgeFormat::Native, None).is_err());
        assert!(
            AgeKind::resolve("timestamp with time zone", AgeFormat::EpochMillis, None).is_err()
        );
        assert_eq!(
            AgeKind::resolve("integer", AgeFormat::EpochSeconds, None).unwrap(),
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

/// The settings that decide whether the server logs bind parameters, in the order
/// `log_statement, log_min_duration_statement, log_min_duration_sample,
/// log_parameter_max_length, log_parameter_max_length_on_error, pgaudit.log_parameter`
/// (NULL where the server has no such setting).
pub const PARAMETER_LOGGING: &str = "SELECT current_setting('log_statement', true), \
     current_setting('log_min_duration_statement', true), current_setting('log_min_duration_sample', true), \
     current_setting('log_parameter_max_length', true), current_setting('log_parameter_max_length_on_error', true), \
     current_setting('pgaudit.log_parameter', true)";

/// The smallest and largest value of an epoch age column, and the database clock, in one
/// statement (the preflight's unit check).
pub fn epoch_range(table: &TableName, column: &Ident) -> Statement {
    let c = column.quoted();
    Statement {
        sql: format!(
            "SELECT min({c})::float8, max({c})::float8, now() FROM {}",
            table.quoted()
        ),
        params: Params::default(),
    }
}

/// `EXPLAIN` of a rule's filter on its table: it compiles, or the preflight refuses it.
/// The filter passed `config::check_filter` (one expression, no comments, no statement).
pub fn explain_filter(table: &TableName, filter: &str) -> Statement {
    Statement {
        sql: format!("EXPLAIN SELECT 1 FROM {} WHERE ({filter})", table.quoted()),
        params: Params::default(),
    }
}

/// Whether schema `$1` exists (an `archive:` target).
pub fn schema_exists(schema: &Ident) -> Statement {
    let mut params = Params::default();
    let p = params.push(Param::Text(schema.as_str().to_owned()));
    Statement {
        sql: format!("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {p})"),
        params,
    }
}

/// `ANALYZE table`, after a large delete (`vacuum = "analyze"`).
pub fn analyze(table: &TableName) -> String {
    format!("ANALYZE {}", table.quoted())
}

/// `(pages now, reltuples, relpages, server_version_num)` of the table whose quoted name
/// is bound to `$1`: what choosing a batch walk needs.
pub fn heap_shape(table: &TableName) -> Statement {
    let mut params = Params::default();
    let t = params.push(Param::Text(table.quoted()));
    Statement {
        sql: format!(
            "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int8, \
             c.reltuples::float8, c.relpages::int8, current_setting('server_version_num')::int4 \
             FROM pg_class c WHERE c.oid = CAST({t} AS regclass)"
        ),
        params,
    }
}

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
    pub const DETACHING_EXISTS: &str =
        "SELECT to_regclass('retentiond_work.detaching') IS NOT NULL";

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
