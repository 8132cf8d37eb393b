//! Command handlers: load config, connect, preflight, call the library, print, exit.

pub mod args;
mod commands;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

pub use args::Cli;
use args::Command;

use crate::audit::Audit;
use crate::config::{Config, Period, StoreConfig};
use crate::store::{postgres, Stores};

/// Exit codes (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// The run finished with failures.
    Failures = 1,
    /// Bad usage or configuration (preflight failures included).
    Usage = 2,
    /// Refused by a safety guard.
    Refused = 3,
    /// A conformance or audit-verification violation.
    Violation = 4,
}

/// An error that ends the command with an exit code.
#[derive(Debug)]
pub struct Fail {
    /// Exit code.
    pub code: Exit,
    /// Message printed to stderr.
    pub message: String,
}

impl Fail {
    /// Exit 2.
    pub fn usage(m: impl std::fmt::Display) -> Self {
        Self {
            code: Exit::Usage,
            message: m.to_string(),
        }
    }

    /// Exit 1.
    pub fn runtime(m: impl std::fmt::Display) -> Self {
        Self {
            code: Exit::Failures,
            message: m.to_string(),
        }
    }
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Self {
        Self::runtime(format!("{e:#}"))
    }
}

/// Result of a command.
pub type CmdResult = Result<Exit, Fail>;

/// Runs the parsed command line.
pub async fn dispatch(cli: Cli) -> CmdResult {
    let config_path = cli.config.clone();
    match cli.command {
        Command::Run(a) => commands::run_daemon(&config_path, a).await,
        Command::Sweep(a) => commands::sweep(&config_path, a).await,
        Command::Validate(a) => commands::validate(&config_path, a).await,
        Command::Plan(a) => commands::plan(&config_path, a).await,
        Command::Report(r) => commands::report(&config_path, r).await,
        Command::Audit(a) => commands::audit(&config_path, a).await,
        Command::Conformance(a) => commands::conformance(&config_path, a).await,
        Command::Hold(h) => commands::hold(&config_path, h).await,
        Command::Erase(a) => commands::erase(&config_path, a).await,
        Command::Policy(a) => commands::policy(&config_path, a),
        Command::Migrate => commands::migrate(&config_path).await,
    }
}

/// Loads the config; a mistake is exit 2 before any store is touched.
pub fn load_config(path: &Path) -> Result<Arc<Config>, Fail> {
    Config::load(path).map(Arc::new).map_err(Fail::usage)
}

/// Connects to the audit store.
pub async fn connect_audit(config: &Config) -> Result<Audit, Fail> {
    let name = &config.audit.store;
    let Some(StoreConfig::Postgres(pg)) = config.stores.get(name) else {
        return Err(Fail::usage(format!(
            "audit store `{name}` is not a postgres store"
        )));
    };
    let url = postgres::store_url(name, pg).map_err(Fail::usage)?;
    let opts = postgres::connect_options(name, &url).map_err(Fail::usage)?;
    Audit::connect(opts)
        .await
        .map_err(|e| store_fail(crate::store::StoreError::connect(name, &e)))
}

/// Connects the stores `rules` need (and the report store).
pub async fn connect_stores(
    config: &Config,
    rules: &[&crate::config::Rule],
) -> Result<Stores, Fail> {
    open_stores(config, rules, false).await
}

/// [`connect_stores`] for the daemon: Postgres pools connect on first use, so a store
/// that is down stops only its own rules.
pub async fn connect_stores_lazy(
    config: &Config,
    rules: &[&crate::config::Rule],
) -> Result<Stores, Fail> {
    open_stores(config, rules, true).await
}

async fn open_stores(
    config: &Config,
    rules: &[&crate::config::Rule],
    lazy: bool,
) -> Result<Stores, Fail> {
    let mut names: Vec<String> = rules.iter().map(|r| r.store.clone()).collect();
    for r in rules {
        if let crate::config::Target::Table(t) = &r.target {
            if let Some(o) = &t.objects {
                names.push(o.store.clone());
            }
        }
    }
    // Before an object is deleted, every table that can reference it is asked: the
    // stores of all table rules whose `objects` use an object store involved here.
    for r in &config.rules {
        if let crate::config::Target::Table(t) = &r.target {
            if t.objects.as_ref().is_some_and(|o| names.contains(&o.store)) {
                names.push(r.store.clone());
            }
        }
    }
    if let Some(rs) = &config.audit.report_store {
        names.push(rs.clone());
    }
    names.sort();
    names.dedup();
    let stores = if lazy {
        Stores::connect_lazy(config, Some(&names)).await
    } else {
        Stores::connect(config, Some(&names)).await
    };
    stores.map_err(store_fail)
}

/// A store that cannot be reached is an outage (exit 1: a supervisor should retry); a
/// store whose settings are unusable is a configuration mistake (exit 2).
pub fn store_fail(e: crate::store::StoreError) -> Fail {
    match e {
        crate::store::StoreError::Config { .. } => Fail::usage(e),
        crate::store::StoreError::Connect { .. } => Fail::runtime(e),
    }
}

/// Parses a time: RFC 3339, `YYYY-MM-DD` (midnight UTC), `now`, or `+7d` / `-2h` from now.
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(rest) = s.strip_prefix('+') {
        return Period::parse(rest)
            .ok()
            .and_then(|p| p.after(now))
            .ok_or_else(|| bad_time(s));
    }
    if let Some(rest) = s.strip_prefix('-') {
        return Period::parse(rest)
            .ok()
            .and_then(|p| p.before(now))
            .ok_or_else(|| bad_time(s));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(bad_time(s))
}

fn bad_time(s: &str) -> String {
    format!("invalid time `{s}`: expected RFC 3339 (2026-12-01T00:00:00Z), a date (2026-12-01), `now`, or an offset (+7d, -2h)")
}

/// The actor recorded for a manual command.
pub fn actor(explicit: Option<String>) -> String {
    explicit
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "cli".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times() {
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap();
        assert_eq!(
            parse_time("+7d", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
        );
        assert_eq!(
            parse_time("-1mo", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 10, 22, 12, 0, 0).unwrap()
        );
        assert_eq!(
            parse_time("2027-01-01", now).unwrap(),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            parse_time("2027-01-01T10:00:00+01:00", now).unwrap(),
            Utc.with_ymd_and_hms(2027, 1, 1, 9, 0, 0).unwrap()
        );
        assert!(parse_time("next tuesday", now).is_err());
    }
}
