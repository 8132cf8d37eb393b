//! SQL text for table rules, built from validated identifiers only. Pure.
//!
//! Values (cutoffs, held ids, HMAC pads, batch limits) are always bound parameters; the
//! only config text spliced in is the rule's `filter`, which is trusted operator input
//! that the preflight has compiled with `EXPLAIN`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::anonymise::{self, ColumnSql, HmacParams};
use chrono_tz::Tz;

use crate::config::{naive_cutoff, Age, AgeFormat, Ident, TableName};

mod catalog;
mod export;
pub mod partitions;
mod queue;
mod selection;
#[cfg(test)]
mod tests;

pub use catalog::*;
pub use export::SubjectRows;
pub use queue::*;

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
    /// What the rows' age is measured from.
    pub age: &'a Age,
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
    pub(crate) fn eq(&self, col: &str, p: &str) -> String {
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
    /// What its rows' age is measured from.
    pub age: Age,
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
    fn cond(&self, params: &mut Params, table: &TableName) -> Option<String> {
        if !self.keeps_anything() {
            return None;
        }
        let mut why = Vec::new();
        if self.category_held {
            why.push("true".to_owned());
        }
        if let Some(f) = self.floor_from {
            let p = params.push(self.age_kind.cutoff_param(f));
            let a = age_sql(&self.age, table);
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

pub(crate) fn keys_array(cols: &[Ident]) -> String {
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

/// The age of a row of `table` as SQL: its own column, or the time its subject's event
/// happened (NULL while it has not, so the row is never due). The event is read in one
/// correlated subquery on the event table: with several rows for a subject, the latest
/// event counts, and none while any of them has not happened.
pub fn age_sql(age: &Age, table: &TableName) -> String {
    match age {
        Age::Column(c) => c.quoted(),
        Age::Event(e) => {
            let at = format!("retentiond_event.{}", e.at.quoted());
            format!(
                "(SELECT CASE WHEN bool_or({at} IS NULL) THEN NULL ELSE max({at}) END \
                 FROM {} AS retentiond_event WHERE retentiond_event.{} = {}.{})",
                e.table.quoted(),
                e.key.quoted(),
                table.quoted(),
                e.subject.quoted()
            )
        }
    }
}

/// `age < p` for the rows of `table`. For an `after_event` rule: the subject has an
/// event before `p` and none that has not happened or happened since, the same rows
/// `age_sql(..) < p` selects. Both are correlated on the event's subject column, so an
/// index on it makes each a probe per row, whatever the size of the event table.
pub fn due_before(age: &Age, table: &TableName, p: &str) -> String {
    match age {
        Age::Column(c) => format!("{} < {p}", c.quoted()),
        Age::Event(e) => {
            let ev = "retentiond_event";
            let at = format!("{ev}.{}", e.at.quoted());
            let same = format!(
                "{ev}.{} = {}.{}",
                e.key.quoted(),
                table.quoted(),
                e.subject.quoted()
            );
            let from = format!("FROM {} AS {ev}", e.table.quoted());
            format!(
                "EXISTS (SELECT 1 {from} WHERE {same} AND {at} < {p}) \
                 AND NOT EXISTS (SELECT 1 {from} WHERE {same} AND ({at} IS NULL OR {at} >= {p}))"
            )
        }
    }
}
