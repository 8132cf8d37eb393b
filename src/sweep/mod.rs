//! A run: the selected rules, one after another, each under its replica-safe lock,
//! each result recorded in the audit trail as it finishes.
//!
//! `sweep` decides nothing by string-building SQL and talks to no store directly beyond
//! calling `store::*`; what is due is decided in `decide` (pure) and by the statements
//! `store::pg_sql` builds.

pub mod decide;
mod objects;
mod partitions;
mod protect;
mod rule_run;
pub use protect::{overlaps, Overlap};
pub(crate) use rule_run::{Progress, RuleRun, PROGRESS_EVERY};
pub(crate) use table::error_ref;
mod table;

use crate::report::Status;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::audit::{Audit, RunStart};
use crate::config::{Config, Rule, Target};
use crate::preflight::{Preflight, Prepared};
use crate::report::{RuleReport, RunReport};
use crate::store::Stores;

/// Sample keys shown per rule.
pub const SAMPLE_SIZE: usize = 5;
/// Errors kept per rule.
pub const MAX_ERRORS: usize = 10;

/// Dry-run or enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Select and count, write nothing but the audit record.
    DryRun,
    /// Delete and anonymise.
    Enforce,
}

impl Mode {
    /// `dry_run` or `enforce`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::DryRun => "dry_run",
            Self::Enforce => "enforce",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Rule names, in config order.
    pub rules: Vec<String>,
    /// Mode.
    pub mode: Mode,
    /// Dry-run only: compute cutoffs as of this time.
    pub as_of: Option<DateTime<Utc>>,
    /// `schedule`, `manual`, `erase`, `catch_up`.
    pub trigger: String,
    /// Who or what started it.
    pub actor: String,
    /// Override `max_delete`.
    pub allow_mass_delete: bool,
    /// Take each rule's replica lock (false when the caller already holds it).
    pub lock_rules: bool,
}

/// Everything a run needs.
#[derive(Clone)]
pub struct Engine {
    /// Config.
    pub config: Arc<Config>,
    /// Connected stores.
    pub stores: Stores,
    /// Audit trail.
    pub audit: Audit,
    /// Cancelled on shutdown: no new batch starts.
    pub shutdown: CancellationToken,
    /// Watches rules as they run: a progress bar on a terminal; `None` elsewhere.
    pub watch: Option<Arc<dyn Watch>>,
}

/// Watches each rule of a run: its start, its count of due records once known, the
/// records done after every batch, its end.
pub trait Watch: Send + Sync {
    /// Rule `rule` started.
    fn started(&self, rule: &str);
    /// `total` records of `rule` are due (a count, when the rule makes one).
    fn counted(&self, rule: &str, total: u64);
    /// `done` records of `rule` are deleted or anonymised so far.
    fn progressed(&self, rule: &str, done: u64);
    /// Rule `rule` ended with `report`.
    fn finished(&self, rule: &str, report: &RuleReport);
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The report (with samples, as shown to the operator).
    pub report: RunReport,
}

/// What a finished run amounts to, for whoever turns it into an exit code (`cli`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Succeeded, or interrupted by a signal after some rule did its work.
    Done,
    /// Failed or partial, or no selected rule did its work (every rule skipped because
    /// another process ran it, or interrupted).
    Failures,
    /// A safety guard refused it (`max_delete`).
    Refused,
}

impl RunOutcome {
    /// The run's [`Verdict`].
    pub fn verdict(&self) -> Verdict {
        let idle = self
            .report
            .rules
            .iter()
            .all(|r| matches!(r.status, Status::Skipped | Status::Interrupted));
        match self.report.status {
            Status::Refused => Verdict::Refused,
            Status::Failed | Status::Partial => Verdict::Failures,
            Status::Interrupted if idle => Verdict::Failures,
            _ if idle && !self.report.rules.is_empty() => Verdict::Failures,
            _ => Verdict::Done,
        }
    }
}

/// How one rule is run.
#[derive(Debug, Clone, Default)]
pub struct RuleOptions {
    /// Dry-run cutoffs as of this time.
    pub as_of: Option<DateTime<Utc>>,
    /// Override `max_delete`.
    pub allow_mass_delete: bool,
    /// Take the rule's replica lock (runs do; plan and conformance only read).
    pub lock: bool,
    /// Erasure of one subject `(kind, id)`: every age, never past a floor or a hold.
    pub erase: Option<(String, String)>,
}

impl Engine {
    /// Runs `req` with rules already checked by `preflight`.
    pub async fn run(&self, req: &RunRequest, preflight: &Preflight) -> anyhow::Result<RunOutcome> {
        let start = RunStart {
            trigger: req.trigger.clone(),
            mode: req.mode.as_str().into(),
            actor: req.actor.clone(),
            config_sha256: self.config.sha256.clone(),
            config_text: self.config.text.clone(),
            as_of: req.as_of,
            subject_hash: None,
        };
        let opts = RuleOptions {
            as_of: req.as_of,
            allow_mass_delete: req.allow_mass_delete,
            lock: req.lock_rules,
            erase: None,
        };
        self.run_recorded(start, &req.rules, req.mode, &opts, preflight)
            .await
    }

    /// The keyed pseudonym a subject is recorded as (`erase` and `export`).
    pub fn subject_pseudonym(&self, kind: &str, id: &str) -> String {
        let key = std::env::var(&self.config.hmac_key_env).unwrap_or_default();
        crate::anonymise::pseudonym(key.as_bytes(), &format!("{kind}:{id}"))
    }

    /// Erases subject `kind:id` across `rules`; recorded with trigger `erase` and the
    /// subject only as a keyed hash.
    pub async fn erase(
        &self,
        rules: &[String],
        kind: &str,
        id: &str,
        mode: Mode,
        actor: &str,
        preflight: &Preflight,
    ) -> anyhow::Result<RunOutcome> {
        let start = RunStart {
            trigger: "erase".into(),
            mode: mode.as_str().into(),
            actor: actor.into(),
            config_sha256: self.config.sha256.clone(),
            config_text: self.config.text.clone(),
            as_of: None,
            subject_hash: Some(self.subject_pseudonym(kind, id)),
        };
        let opts = RuleOptions {
            as_of: None,
            allow_mass_delete: true,
            lock: true,
            erase: Some((kind.into(), id.into())),
        };
        self.run_recorded(start, rules, mode, &opts, preflight)
            .await
    }

    async fn run_recorded(
        &self,
        start: RunStart,
        rules: &[String],
        mode: Mode,
        opts: &RuleOptions,
        preflight: &Preflight,
    ) -> anyhow::Result<RunOutcome> {
        let handle = self
            .audit
            .begin_run(&start)
            .await
            .map_err(|e| anyhow::anyhow!("failed to record the run start: {e}"))?;
        let span = info_span!("run", run_id = %handle.run_id, mode = mode.as_str(), trigger = %start.trigger);
        let mut rules_out = Vec::new();
        let mut record_errors: Vec<String> = Vec::new();
        let mut interrupted = false;
        async {
            info!(rules = rules.len(), "run started");
            for (position, name) in rules.iter().enumerate() {
                let Some(rule) = self.config.rule(name) else {
                    continue;
                };
                if self.shutdown.is_cancelled() {
                    interrupted = true;
                    break;
                }
                let report = self
                    .run_rule(
                        rule,
                        mode,
                        opts,
                        preflight
                            .prepared
                            .get(name)
                            .ok_or_else(|| preflight.refusal(name)),
                        Some((handle.session(), handle.run_id, position)),
                    )
                    .instrument(info_span!("rule", rule = %rule.name))
                    .await;
                interrupted |= report.status == Status::Interrupted;
                if let Err(e) = self
                    .audit
                    .record_rule(&handle, position, &report, self.config.audit.samples)
                    .await
                {
                    warn!(error = %e, "failed to record a rule result");
                    record_errors.push(format!("rule {}: result not recorded: {e}", rule.name));
                }
                rules_out.push(report);
            }
        }
        .instrument(span.clone())
        .await;
        // A result the trail could not take fails the run: the record must be complete.
        let status = if record_errors.is_empty() {
            run_status(&rules_out, interrupted)
        } else {
            Status::Failed
        };
        let error = (!record_errors.is_empty()).then(|| record_errors.join("; "));
        let stored = self
            .audit
            .finish_run(handle, status.as_str(), error.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("failed to record the run end: {e}"))?;
        span.in_scope(|| info!(status = %stored.status, "run finished"));
        // Copies are the sealed record: verifiable, with samples only when the trail keeps them.
        crate::report::copy_out(&self.config, &self.stores, &stored).await;
        crate::report::site::refresh(&self.config, &self.stores, &self.audit).await;
        crate::metrics::record_run(&stored);
        // The operator sees samples even when the trail does not keep them.
        let mut report = stored;
        for r in report.rules.iter_mut() {
            if let Some(shown) = rules_out.iter().find(|s| s.rule == r.rule) {
                r.samples = shown.samples.clone();
            }
        }
        Ok(RunOutcome { report })
    }

    /// Evaluates one rule without recording a run (plan, conformance): the same
    /// selection a dry-run makes.
    pub async fn evaluate(
        &self,
        rule: &Rule,
        mode: Mode,
        as_of: Option<DateTime<Utc>>,
        prepared: Option<&Prepared>,
    ) -> RuleReport {
        let opts = RuleOptions {
            as_of,
            ..Default::default()
        };
        let prepared = prepared.ok_or_else(|| "the rule did not pass the preflight".to_owned());
        self.run_rule(rule, mode, &opts, prepared, None).await
    }

    async fn run_rule(
        &self,
        rule: &Rule,
        mode: Mode,
        opts: &RuleOptions,
        prepared: Result<&Prepared, String>,
        run: Option<(crate::audit::RunSession, uuid::Uuid, usize)>,
    ) -> RuleReport {
        let (session, progress) = match run {
            Some((s, run_id, position)) => (
                Some(s),
                Some(Progress {
                    run_id,
                    position,
                    last: Instant::now(),
                }),
            ),
            None => (None, None),
        };
        let started = Instant::now();
        let mut rr = RuleRun {
            engine: self,
            rule,
            mode,
            as_of: opts.as_of,
            allow_mass_delete: opts.allow_mass_delete,
            erase: opts.erase.clone(),
            session,
            progress,
            report: RuleReport {
                rule: rule.name.clone(),
                category: rule.category.clone(),
                store: rule.store.clone(),
                place: rule.place(&self.config),
                action: rule.action.as_str().into(),
                status: Status::Succeeded,
                ..Default::default()
            },
        };
        let lock = if opts.lock {
            match self.audit.try_lock_rule(&rule.name).await {
                Ok(Some(lock)) => Some(lock),
                Ok(None) => {
                    rr.report.status = Status::Skipped;
                    rr.error("another retentiond process is running this rule now");
                    tracing::debug!("rule locked by another process; skipped");
                    return rr.report;
                }
                Err(e) => {
                    rr.report.status = Status::Failed;
                    rr.error(format!("cannot take the rule lock: {e}"));
                    return rr.report;
                }
            }
        } else {
            None
        };
        if let Some(w) = &self.watch {
            w.started(&rule.name);
        }
        match (prepared, &rule.target) {
            (Ok(Prepared::Table(p)), Target::Table(t)) => table::run(&mut rr, t, p).await,
            (Ok(Prepared::Prefix(b)), Target::Prefix(p)) => {
                objects::run_prefix(&mut rr, p, *b).await
            }
            (Err(why), _) => {
                rr.report.status = Status::Failed;
                rr.error(why);
            }
            _ => {
                rr.report.status = Status::Failed;
                rr.error("the rule's preparation does not match its target");
            }
        }
        if let Some(lock) = lock {
            lock.release().await;
        }
        rr.report.duration_ms = started.elapsed().as_millis() as u64;
        if let Some(w) = &self.watch {
            w.finished(&rule.name, &rr.report);
        }
        info!(
            status = %rr.report.status, matched = rr.report.matched, deleted = rr.report.deleted,
            anonymised = rr.report.anonymised, held = rr.report.held, failed = rr.report.failed,
            "rule finished"
        );
        rr.report
    }
}

/// How many rows of `t` a hold on `target` covers now (the rule's filter applied).
pub async fn count_covered(
    pg: &crate::store::PgStore,
    t: &crate::config::TableTarget,
    target: &crate::audit::holds::HoldTarget,
) -> Result<u64, String> {
    use crate::audit::holds::HoldTarget;
    use crate::store::pg_sql::{AgeKind, Selection, SubjectType};
    let info = pg
        .describe(&t.table)
        .await
        .map_err(|e| crate::preflight::db_message(&e))?
        .ok_or_else(|| format!("table {} does not exist", t.table))?;
    let (subject_type, id) = match (target, &t.subject) {
        (HoldTarget::Subject { id, .. }, Some(s)) => {
            let ty = protect::subject_type(&info, s);
            let id = ty
                .normalise(id)
                .map_err(|e| format!("the hold protects nothing in {}: subject {e}", t.table))?;
            (ty, Some(id))
        }
        _ => (SubjectType::default(), None),
    };
    let sel = Selection {
        table: &t.table,
        age: &t.age,
        age_kind: AgeKind::Timestamptz,
        cutoff: None,
        not_before: None,
        filter: t.filter.as_deref(),
        subject_column: t.subject.as_ref().map(|s| &s.column),
        subject_type,
        held_ids: &[],
        only_subject: id.as_deref(),
        anonymise: &[],
        keeps: &[],
        skip: &[],
    };
    let row = pg
        .fetch_one(&sel.count(false))
        .await
        .map_err(|e| crate::preflight::db_message(&e))?;
    let n: i64 = sqlx::Row::try_get(&row, 0).map_err(|e| e.to_string())?;
    Ok(n.max(0) as u64)
}

/// The run's status from its rules' statuses.
pub fn run_status(rules: &[RuleReport], interrupted: bool) -> Status {
    let count = |s: Status| rules.iter().filter(|r| r.status == s).count();
    if interrupted {
        Status::Interrupted
    } else if count(Status::Refused) > 0 {
        Status::Refused
    } else if !rules.is_empty() && count(Status::Failed) == rules.len() {
        Status::Failed
    } else if count(Status::Failed) > 0 || count(Status::Partial) > 0 {
        Status::Partial
    } else {
        Status::Succeeded
    }
}

#[cfg(test)]
mod tests;
