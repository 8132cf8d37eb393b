//! The context one rule runs in: its report, the run's session, progress records.

use super::*;

/// Per-rule execution context.
pub(crate) struct RuleRun<'a> {
    pub engine: &'a Engine,
    pub rule: &'a Rule,
    pub mode: Mode,
    pub as_of: Option<DateTime<Utc>>,
    pub allow_mass_delete: bool,
    pub erase: Option<(String, String)>,
    pub report: RuleReport,
    /// The session holding the run's liveness lock (`None` outside a recorded run).
    pub session: Option<crate::audit::RunSession>,
    /// Where progress is recorded (`None` outside a recorded run).
    pub progress: Option<Progress>,
}

/// How often a running rule appends its counts to the trail.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The progress record of one rule of a run.
pub(crate) struct Progress {
    pub run_id: uuid::Uuid,
    pub position: usize,
    pub last: Instant,
}

impl RuleRun<'_> {
    /// A guard for the holds lock, on the run's own session when there is a run: so no
    /// batch starts once the run's liveness lock is lost.
    pub(crate) fn hold_guard(&self) -> crate::audit::holds::HoldGuard {
        match &self.session {
            Some(s) => crate::audit::holds::HoldGuard::on_run(s.clone()),
            None => self.engine.audit.hold_guard(),
        }
    }

    pub(crate) fn error(&mut self, e: impl std::fmt::Display) {
        if self.report.errors.len() < MAX_ERRORS {
            self.report.errors.push(e.to_string());
        }
    }

    /// Tells the watch (a progress bar) how many records are done.
    pub(crate) fn watch_progress(&self) {
        if let Some(w) = &self.engine.watch {
            w.progressed(
                &self.rule.name,
                self.report.deleted + self.report.anonymised,
            );
        }
    }

    /// Appends the rule's running counts to the trail when [`PROGRESS_EVERY`] has passed
    /// since the last time; `adjust` adds what the report only gets at the end.
    pub(crate) async fn record_progress(&mut self, adjust: impl FnOnce(&mut RuleReport)) {
        self.watch_progress();
        let Some(p) = self.progress.as_mut() else {
            return;
        };
        if p.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        p.last = Instant::now();
        let (run_id, position) = (p.run_id, p.position);
        let mut report = self.report.clone();
        adjust(&mut report);
        if let Err(e) = self
            .engine
            .audit
            .record_progress(run_id, position, &report)
            .await
        {
            warn!(error = %e, "cannot record the rule's progress");
        }
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.engine.shutdown.is_cancelled()
    }

    /// Ends the rule `failed` with `message`.
    pub(crate) fn fail(&mut self, message: impl std::fmt::Display) {
        self.report.status = Status::Failed;
        self.error(message);
    }

    /// Ends the rule with `message`: `partial` when it already changed records, else
    /// `failed`.
    pub(crate) fn stop(&mut self, message: impl std::fmt::Display) {
        self.report.status = if self.report.deleted + self.report.anonymised > 0 {
            Status::Partial
        } else {
            Status::Failed
        };
        self.error(message);
    }
}
