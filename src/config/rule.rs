//! A validated rule: what it removes (a table or a prefix), when, and how.

use super::*;

/// What a rule does to due records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Remove.
    Delete,
    /// Overwrite identifying columns.
    Anonymise,
}
impl Action {
    /// `delete` or `anonymise`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Anonymise => "anonymise",
        }
    }
}
/// How the age column stores time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeFormat {
    /// timestamptz, timestamp or date (the last two read in the rule's `age_timezone`,
    /// UTC when unset), decided by the column's type.
    Native,
    /// Integer seconds since the epoch.
    EpochSeconds,
    /// Integer milliseconds since the epoch.
    EpochMillis,
}
/// The `max_delete` safety guard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxDelete {
    /// At most this many records per run.
    Count(u64),
    /// At most this percentage of the table per run.
    Percent(f64),
}
impl MaxDelete {
    /// Whether removing `due` of `total` records exceeds the guard.
    pub fn exceeded(&self, due: u64, total: u64) -> bool {
        match *self {
            Self::Count(n) => due > n,
            Self::Percent(p) => (due as f64) > (total as f64) * p / 100.0,
        }
    }
}
impl std::fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}
/// Whose record a row is, for holds and erasure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Kind, e.g. `account`.
    pub kind: String,
    /// Column holding the id.
    pub column: Ident,
}
/// Objects a table row points at.
#[derive(Debug, Clone)]
pub struct Objects {
    /// The S3 store.
    pub store: String,
    /// Columns holding keys, `text` or `text[]`.
    pub key_columns: Vec<Ident>,
}
/// What happens to whole partitions that are past the cutoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionMode {
    /// Detach, then drop.
    Drop,
    /// Detach and keep.
    Detach,
    /// Detach and move to this schema.
    Archive(Ident),
}
/// A rule over a Postgres table.
#[derive(Debug, Clone)]
pub struct TableTarget {
    /// The table.
    pub table: TableName,
    /// What a row's age is measured from: its own column, or its subject's event.
    pub age: Age,
    /// How the age column stores time.
    pub age_format: AgeFormat,
    /// The zone `timestamp` and `date` age values are local time of (`age_timezone`);
    /// `None` when not set, which means UTC.
    pub age_timezone: Option<chrono_tz::Tz>,
    /// Extra SQL condition: trusted operator input, parsed at load as exactly one SQL
    /// expression ([`check_filter`]) and compiled by the preflight.
    pub filter: Option<String>,
    /// Subject column for holds and erasure.
    pub subject: Option<Subject>,
    /// Columns and strategies, for `anonymise`.
    pub anonymise: Vec<(Ident, Strategy)>,
    /// Linked objects.
    pub objects: Option<Objects>,
    /// Partition handling; `None` means row deletes everywhere.
    pub partitions: Option<PartitionMode>,
    /// Run `ANALYZE` after a large delete.
    pub vacuum_analyze: bool,
}

/// What a table rule's clock starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Age {
    /// The row's own column (`age_column`).
    Column(Ident),
    /// The time its subject's event happened (`after_event`): a row is due when the
    /// event happened more than `retain` ago, never while it has not happened.
    Event(Box<EventAge>),
}

/// An `after_event` rule's event, resolved against `[events]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAge {
    /// The event's name (`[events.NAME]`).
    pub event: String,
    /// The table that records it, in the rule's store.
    pub table: TableName,
    /// Its subject column, matched with the rule's subject column.
    pub key: Ident,
    /// The rule's subject column.
    pub subject: Ident,
    /// When it happened (timestamp with time zone); NULL while it has not.
    pub at: Ident,
    /// How the policy states it, e.g. "account closure".
    pub description: String,
}

impl TableTarget {
    /// The age column of a rule that ages rows by their own column.
    pub fn age_column(&self) -> Option<&Ident> {
        match &self.age {
            Age::Column(c) => Some(c),
            Age::Event(_) => None,
        }
    }
}

/// Which object versions a prefix rule removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// Every version and delete marker of an expired key.
    All,
    /// Only current versions (a versioned bucket keeps the history).
    Current,
}
/// A rule over an S3 prefix.
#[derive(Debug, Clone)]
pub struct PrefixTarget {
    /// Key prefix.
    pub prefix: String,
    /// Prefixes left alone.
    pub exclude: Vec<String>,
    /// Which versions go.
    pub versions: Versions,
    /// Abort incomplete multipart uploads older than this.
    pub abort_multipart_after: Option<Period>,
    /// Only objects carrying all these tags.
    pub tags: BTreeMap<String, String>,
    /// Remove versions under governance-mode retention (never by default).
    pub bypass_governance_retention: bool,
}
/// Where a rule applies.
#[derive(Debug, Clone)]
pub enum Target {
    /// A Postgres table.
    Table(TableTarget),
    /// An S3 prefix.
    Prefix(PrefixTarget),
}
/// `[[rules]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// Category name.
    pub category: String,
    /// Store name.
    pub store: String,
    /// Keep records this long.
    pub retain: Period,
    /// What happens to due records.
    pub action: Action,
    /// Own schedule, else `[daemon] schedule`.
    pub schedule: Option<Schedule>,
    /// Safety guard.
    pub max_delete: Option<MaxDelete>,
    /// Disabled rules are validated but never run.
    pub enabled: bool,
    /// Table or prefix.
    pub target: Target,
}
impl Rule {
    /// The table or `s3://bucket/prefix` the rule works on (bucket filled by the caller).
    pub fn place(&self, config: &Config) -> String {
        match &self.target {
            Target::Table(t) => t.table.to_string(),
            Target::Prefix(p) => match config.stores.get(&self.store) {
                Some(StoreConfig::S3(s)) => format!("s3://{}/{}", s.bucket, p.prefix),
                _ => p.prefix.clone(),
            },
        }
    }

    /// `retain`, with what an `after_event` rule counts it from: `30d after account
    /// closure`.
    pub fn retention(&self) -> String {
        match &self.target {
            Target::Table(TableTarget {
                age: Age::Event(e), ..
            }) => format!("{} after {}", self.retain, e.description),
            _ => self.retain.to_string(),
        }
    }

    /// The subject of a table rule, if any.
    pub fn subject(&self) -> Option<&Subject> {
        match &self.target {
            Target::Table(t) => t.subject.as_ref(),
            Target::Prefix(_) => None,
        }
    }
}
