//! Run reports: the JSON contract (SPEC §8), text for operators, Markdown and HTML for auditors.

mod html;
pub mod site;
pub mod table;
mod text;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use html::render_html;
pub use text::{render_markdown, render_text};

/// Version of the JSON report schema (`docs/report.schema.json`).
pub const REPORT_SCHEMA: &str = "retentiond.run-report/1";

/// The status of a run or of one of its rules. It serializes to the strings the report
/// JSON and the audit trail's canonical form have always used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A run not sealed yet.
    Running,
    /// Everything due was done.
    Succeeded,
    /// Some was done, some failed.
    Partial,
    /// Nothing could be done; also what a report nobody filled in says (never success).
    #[default]
    Failed,
    /// A safety guard (`max_delete`) refused it.
    Refused,
    /// Another process was running the rule.
    Skipped,
    /// Stopped by a signal or a killed process.
    Interrupted,
}

impl Status {
    /// The status as the trail and the JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Refused => "refused",
            Self::Skipped => "skipped",
            Self::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "partial" => Self::Partial,
            "failed" => Self::Failed,
            "refused" => Self::Refused,
            "skipped" => Self::Skipped,
            "interrupted" => Self::Interrupted,
            other => return Err(format!("unknown status `{other}`")),
        })
    }
}

/// One run, as stored in the audit trail and printed by `sweep --format json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    /// Schema identifier.
    pub schema: String,
    /// Run id.
    pub run_id: String,
    /// `schedule`, `manual`, `erase` or `catch_up`.
    pub trigger: String,
    /// `dry_run` or `enforce`.
    pub mode: String,
    /// `running`, `succeeded`, `partial`, `failed`, `interrupted` or `refused`.
    pub status: Status,
    /// Start (UTC).
    pub started_at: DateTime<Utc>,
    /// End (UTC).
    pub finished_at: Option<DateTime<Utc>>,
    /// SHA-256 of the config file.
    pub config_sha256: String,
    /// Who or what started the run.
    pub actor: String,
    /// Host it ran on.
    pub host: String,
    /// retentiond version.
    pub version: String,
    /// The `--as-of` time of a dry-run.
    pub as_of: Option<DateTime<Utc>>,
    /// Keyed hash of the erased subject (erase runs only).
    pub subject_hash: Option<String>,
    /// Run-level error.
    pub error: Option<String>,
    /// Position in the audit hash chain.
    pub chain_seq: Option<i64>,
    /// Hash of the previous chain record.
    pub prev_hash: Option<String>,
    /// Hash of this record.
    pub hash: Option<String>,
    /// Per-rule results, in config order.
    pub rules: Vec<RuleReport>,
}

/// One rule's result within a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RuleReport {
    /// Rule name.
    pub rule: String,
    /// Category.
    pub category: String,
    /// Store.
    pub store: String,
    /// Table or `s3://bucket/prefix`.
    pub place: String,
    /// `delete` or `anonymise`.
    pub action: String,
    /// `succeeded`, `partial`, `failed`, `refused`, `skipped` or `interrupted`.
    pub status: Status,
    /// Records older than this were due.
    pub cutoff: Option<DateTime<Utc>>,
    /// Due records that were not held (the records acted on, or that a dry-run would act on).
    pub matched: u64,
    /// Records (rows or object versions) removed.
    pub deleted: u64,
    /// Rows anonymised.
    pub anonymised: u64,
    /// Due records kept by a hold (retentiond hold or Object Lock).
    pub held: u64,
    /// Records that could not be processed; retried next run.
    pub failed: u64,
    /// Due rows the database refused to delete (a foreign key, a trigger, a CHECK); they
    /// stay, and do not stop the other rows. Kept in `details` in the trail.
    #[serde(default)]
    pub blocked: u64,
    /// Prefix rules: due objects kept because a row of a table rule still references
    /// them. Kept in `details` in the trail.
    #[serde(default)]
    pub referenced: u64,
    /// Bytes of object data removed (or, in a dry-run, that would be).
    pub bytes: u64,
    /// Wall time.
    pub duration_ms: u64,
    /// A few keys of matched records (shown to operators; stored only with `[audit] samples = true`).
    pub samples: Vec<String>,
    /// First errors.
    pub errors: Vec<String>,
    /// Extra facts: linked objects removed, multipart uploads aborted, partitions dropped, guard limits.
    #[serde(default)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl RunReport {
    /// Totals over rules: `(matched, deleted, anonymised, held, failed, bytes)`.
    pub fn totals(&self) -> (u64, u64, u64, u64, u64, u64) {
        self.rules.iter().fold((0, 0, 0, 0, 0, 0), |t, r| {
            (
                t.0 + r.matched,
                t.1 + r.deleted,
                t.2 + r.anonymised,
                t.3 + r.held,
                t.4 + r.failed,
                t.5 + r.bytes,
            )
        })
    }
}

impl RuleReport {
    /// `bytes` as the human-readable reports print it: `n/a` for a table rule without
    /// linked objects (rows are not measured in bytes), else the bytes freed.
    pub fn bytes_text(&self) -> String {
        let measured = self.bytes > 0
            || self.place.starts_with("s3://")
            || self.details.contains_key("objects_deleted")
            || self.details.contains_key("objects_store");
        if measured {
            text::bytes(self.bytes)
        } else {
            "n/a".into()
        }
    }
}

impl RunReport {
    /// The report without sample keys, as the trail keeps it with `[audit] samples = false`.
    pub fn without_samples(&self) -> RunReport {
        let mut r = self.clone();
        for rule in &mut r.rules {
            rule.samples.clear();
        }
        r
    }
}

/// Writes JSON, Markdown and HTML copies of `report` to `[audit] report_dir` and, when
/// configured, to `report_store`/`report_prefix`. Failures are logged, never fatal: the
/// audit trail in Postgres is the record; copies are conveniences.
pub async fn copy_out(
    config: &crate::config::Config,
    stores: &crate::store::Stores,
    report: &RunReport,
) {
    let stem = site::stem(report);
    let json = serde_json::to_vec_pretty(report).unwrap_or_default();
    let md = render_markdown(report).into_bytes();
    let html = render_html(report, std::slice::from_ref(report)).into_bytes();
    if let Some(dir) = &config.audit.report_dir {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join(format!("{stem}.json")), &json)?;
            std::fs::write(dir.join(format!("{stem}.md")), &md)?;
            std::fs::write(dir.join(format!("{stem}.html")), &html)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(dir = %dir.display(), error = %e, "failed to write report copies");
        }
    }
    if let Some(store) = &config.audit.report_store {
        if let Some(s3) = stores.s3.get(store) {
            for (ext, body, ct) in [
                ("json", json, "application/json"),
                ("md", md, "text/markdown"),
                ("html", html, "text/html"),
            ] {
                let key = format!("{}{stem}.{ext}", config.audit.report_prefix);
                if let Err(e) = s3.put(&key, body, ct).await {
                    tracing::warn!(error = %e, "failed to copy a report to object storage");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn statuses_keep_the_strings_of_the_trail_and_the_json() {
        for (status, text) in [
            (Status::Running, "running"),
            (Status::Succeeded, "succeeded"),
            (Status::Partial, "partial"),
            (Status::Failed, "failed"),
            (Status::Refused, "refused"),
            (Status::Skipped, "skipped"),
            (Status::Interrupted, "interrupted"),
        ] {
            assert_eq!(status.as_str(), text);
            assert_eq!(text.parse::<Status>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{text}\"")
            );
            assert_eq!(
                serde_json::from_str::<Status>(&format!("\"{text}\"")).unwrap(),
                status
            );
        }
        assert!("done".parse::<Status>().is_err());
        assert_eq!(
            Status::default(),
            Status::Failed,
            "an unfilled report never says success"
        );
    }
}
