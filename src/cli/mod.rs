//! Command handlers: load config, connect, preflight, call the library, print, exit.

pub mod args;
mod commands;
mod progress;

use chrono::{DateTime, NaiveDate, Utc};

pub use args::Cli;
use args::Command;

use crate::config::Period;

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

/// SPEC §5: 0 done, 1 failures, 3 refused.
impl From<crate::sweep::Verdict> for Exit {
    fn from(v: crate::sweep::Verdict) -> Self {
        match v {
            crate::sweep::Verdict::Done => Exit::Ok,
            crate::sweep::Verdict::Failures => Exit::Failures,
            crate::sweep::Verdict::Refused => Exit::Refused,
        }
    }
}

/// The one mapping from a library error's kind to an exit code.
impl From<crate::error::Error> for Fail {
    fn from(e: crate::error::Error) -> Self {
        Self {
            code: match e.kind {
                crate::error::ErrorKind::Usage => Exit::Usage,
                crate::error::ErrorKind::Unavailable => Exit::Failures,
            },
            message: e.message,
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
        Command::Export(a) => commands::export(&config_path, a).await,
        Command::Policy(a) => commands::policy(&config_path, a).await,
        Command::Migrate => commands::migrate(&config_path).await,
        Command::Completions { shell } => commands::completions(shell),
        Command::Man => commands::man(),
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
