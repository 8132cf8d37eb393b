//! `retention.toml`: loaded once, validated into typed values, positioned errors.
//!
//! Loading never touches a store. Anything wrong in the file — syntax, a wrong type, an
//! unknown key, a bad duration or cron expression, an unknown store or category, a
//! `retain` below its category's legal floor, a hostile identifier — becomes one
//! [`ConfigError`] naming file, line, column and field.

mod error;
mod filter;
mod ident;
mod period;
mod raw;
mod rule;
mod strategy;
mod validate;
mod zone;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

pub use error::{line_col, ConfigError, FieldPath, Locator};
pub use filter::check_filter;
pub use ident::{Ident, IdentError, TableName};
pub use period::{Period, PeriodError};
pub use strategy::Strategy;
pub use zone::{naive_cutoff, parse_zone};

use raw::*;

pub use rule::{
    Action, Age, AgeFormat, EventAge, MaxDelete, Objects, PartitionMode, PrefixTarget, Rule,
    Subject, TableTarget, Target, Versions,
};

/// Default batch size when `[daemon] batch_size` is not set.
pub const DEFAULT_BATCH_SIZE: u32 = 5_000;
/// Default target duration of one batch.
pub const DEFAULT_MAX_BATCH_DURATION_MS: u64 = 250;
/// Default conformance schedule (on the hour, every hour).
pub const DEFAULT_CONFORMANCE_SCHEDULE: &str = "0 0 * * * *";

/// Default cron schedule (03:00:00 every day).
pub const DEFAULT_SCHEDULE: &str = "0 0 3 * * *";
/// Default listen address of the HTTP endpoints.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9187";
/// DeleteObjects requests in flight per S3 store unless configured.
pub const DEFAULT_S3_IN_FLIGHT: u32 = 8;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// SHA-256 (hex) of the file's bytes, recorded with every run.
    pub sha256: String,
    /// The file's text, stored once in the trail's policy history.
    pub text: String,
    /// `[daemon]`.
    pub daemon: Daemon,
    /// `[http]`.
    pub http: Http,
    /// Name of the environment variable holding the HMAC key for `hash`.
    pub hmac_key_env: String,
    /// `[audit]`.
    pub audit: Audit,
    /// `[stores.*]` by name.
    pub stores: BTreeMap<String, StoreConfig>,
    /// `[categories.*]` by name.
    pub categories: BTreeMap<String, Category>,
    /// `[events.*]` by name.
    pub events: BTreeMap<String, Event>,
    /// `[[rules]]` in file order.
    pub rules: Vec<Rule>,
}

/// `[events.NAME]`: a table that records when something happened to a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The postgres store of the table.
    pub store: String,
    /// The table.
    pub table: TableName,
    /// Whose event it is: the subject kind and the column holding its id.
    pub subject: Subject,
    /// When it happened; NULL while it has not.
    pub at_column: Ident,
    /// How the policy states it (default: the event's name).
    pub description: String,
}

/// `[daemon]`.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// Default schedule for rules without one.
    pub schedule: Schedule,
    /// When the daemon counts what is overdue for the conformance metrics (read-only).
    pub conformance_schedule: Schedule,
    /// Rows per batch to start with.
    pub batch_size: u32,
    /// Smallest batch adaptive sizing may shrink to.
    pub min_batch_size: u32,
    /// Largest batch adaptive sizing may grow to.
    pub max_batch_size: u32,
    /// Target duration of one batch.
    pub max_batch_duration: std::time::Duration,
    /// Time a shutdown may take before the process gives up waiting (default 30 s).
    pub grace_period: std::time::Duration,
}

/// `[http]`.
#[derive(Debug, Clone)]
pub struct Http {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
}

/// `[audit]`.
#[derive(Debug, Clone)]
pub struct Audit {
    /// The Postgres store holding the `retentiond` schema.
    pub store: String,
    /// Where JSON / Markdown / HTML copies of run reports are written.
    pub report_dir: Option<PathBuf>,
    /// An S3 store receiving report copies.
    pub report_store: Option<String>,
    /// Key prefix of report copies in `report_store`.
    pub report_prefix: String,
    /// Whether sample keys are stored in the trail (they may be personal data).
    pub samples: bool,
    /// Where the Ed25519 key that signs every sealed record comes from.
    pub signing_key: Option<KeySource>,
    /// Where each new chain head is anchored outside the database.
    pub anchor: Option<Anchor>,
}

/// Where a secret key is read from: never the config itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The environment variable of this name.
    Env(String),
    /// This file.
    File(PathBuf),
}

/// `[audit] anchor_store`, `anchor_prefix`, `anchor_retain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The S3 store anchors are written to.
    pub store: String,
    /// Key prefix of anchor objects.
    pub prefix: String,
    /// Object Lock retention of each anchor (when the bucket has Object Lock).
    pub retain: Option<Period>,
}

/// A cron schedule with seconds, parsed at load.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As written.
    pub expr: String,
    /// Parsed.
    pub cron: croner::Cron,
}

impl Schedule {
    /// Parses a six-field cron expression (seconds first).
    pub fn parse(expr: &str) -> Result<Self, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .build()
            .parse(expr)
            .map_err(|e| format!("invalid cron expression `{expr}`: {e}; expected six fields with seconds first, e.g. \"0 0 3 * * *\""))?;
        Ok(Self {
            expr: expr.to_owned(),
            cron,
        })
    }

    /// The next time after `t` the schedule fires.
    pub fn next_after(
        &self,
        t: &chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.cron.find_next_occurrence(t, false).ok()
    }
}

/// `[stores.NAME]`.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// A PostgreSQL database.
    Postgres(PostgresStore),
    /// An S3-compatible bucket.
    S3(S3Store),
}

/// A Postgres store: the URL comes from an env var or a file, never from the config.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// Environment variable holding the URL.
    pub url_env: Option<String>,
    /// File holding the URL.
    pub url_file: Option<PathBuf>,
    /// Pool size.
    pub max_connections: u32,
}

/// An S3 store; credentials come from the standard AWS chain.
#[derive(Debug, Clone)]
pub struct S3Store {
    /// Bucket.
    pub bucket: String,
    /// Region (default `us-east-1`).
    pub region: String,
    /// Environment variable holding a custom endpoint URL.
    pub endpoint_env: Option<String>,
    /// Path-style addressing (MinIO, Garage, moto).
    pub force_path_style: bool,
    /// DeleteObjects requests in flight.
    pub max_in_flight: u32,
}

/// `[categories.NAME]`.
#[derive(Debug, Clone)]
pub struct Category {
    /// Name.
    pub name: String,
    /// What the data is.
    pub description: String,
    /// GDPR legal basis.
    pub legal_basis: String,
    /// Legal floor: nothing of this category is removed sooner.
    pub min_retain: Option<Period>,
    /// Ceiling: no rule may keep it longer.
    pub max_retain: Option<Period>,
    /// Preservation lock: once a run has recorded it, no later config may shorten the
    /// category's terms, remove it or its rules, or unlock it.
    pub locked: bool,
}

impl Config {
    /// Reads and validates a config file. Touches no store.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            field: "(file)".into(),
            message: format!("cannot read the config file: {e}"),
        })?;
        let text = String::from_utf8(bytes.clone()).map_err(|e| {
            let (line, column) = line_col(
                &String::from_utf8_lossy(&bytes),
                e.utf8_error().valid_up_to(),
            );
            ConfigError {
                file: path.to_owned(),
                line,
                column,
                field: "(document)".into(),
                message: "the file is not valid UTF-8".into(),
            }
        })?;
        Self::parse(path, &text)
    }

    /// Validates config `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let loc = Locator::new(path, text);
        let raw: RawConfig = deserialize(&loc, text)?;
        let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
        validate::validate(&loc, raw, path, sha256, text)
    }

    /// The category of `rule`.
    pub fn category_of(&self, rule: &Rule) -> &Category {
        &self.categories[&rule.category]
    }

    /// The schedule `rule` follows.
    pub fn schedule_of<'a>(&'a self, rule: &'a Rule) -> &'a Schedule {
        rule.schedule.as_ref().unwrap_or(&self.daemon.schedule)
    }

    /// Finds a rule by name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

fn deserialize(loc: &Locator<'_>, text: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().clone();
        let inner = err.into_inner();
        let offset = inner.span().map(|s| s.start).unwrap_or(0);
        let message = inner.message().trim().to_owned();
        let mut field = path_to_string(&path);
        if let Some(missing) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            field = if field.is_empty() {
                missing.to_owned()
            } else {
                format!("{field}.{missing}")
            };
        }
        if field.is_empty() || field == "?" || field.ends_with('.') {
            field = error::key_on_line(text, offset).unwrap_or_else(|| "(document)".into());
        }
        if field.is_empty() {
            field = "(document)".into();
        }
        loc.at_offset(offset, &field, message)
    })
}

fn path_to_string(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name `{name}`: expected 1-64 characters of a-z, A-Z, 0-9, `-` or `_`"
        ))
    }
}

fn unknown_store(name: &str, kind: &str, stores: &BTreeMap<String, StoreConfig>) -> String {
    let known: Vec<&str> = stores
        .iter()
        .filter(|(_, s)| {
            matches!(
                (kind, s),
                ("postgres", StoreConfig::Postgres(_)) | ("s3", StoreConfig::S3(_))
            )
        })
        .map(|(n, _)| n.as_str())
        .collect();
    match stores.get(name) {
        Some(_) => format!(
            "store `{name}` is not a {kind} store; {kind} stores: {}",
            known.join(", ")
        ),
        None => format!(
            "unknown store `{name}`; {kind} stores: {}",
            known.join(", ")
        ),
    }
}

fn parse_max_delete(raw: RawMaxDelete) -> Result<MaxDelete, String> {
    match raw {
        RawMaxDelete::Count(n) => Ok(MaxDelete::Count(n)),
        RawMaxDelete::Text(s) => {
            let bad = || {
                format!("invalid max_delete `{s}`: expected a count (e.g. 10000) or a percentage (e.g. \"20%\")")
            };
            if let Some(p) = s.strip_suffix('%') {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(bad());
                }
                Ok(MaxDelete::Percent(p))
            } else {
                s.trim().parse().map(MaxDelete::Count).map_err(|_| bad())
            }
        }
    }
}

#[cfg(test)]
mod tests;
