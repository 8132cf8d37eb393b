//! The daemon: one cron job per rule, replica-safe, with catch-up, graceful shutdown and
//! config reload on SIGHUP.

use crate::report::Status;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Mutex, RwLock};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn, Instrument};

use crate::config::{Config, Period, Rule};
use crate::error::Error;
use crate::preflight::{self, Preflight};
use crate::startup::{self, Connect};
use crate::sweep::{Engine, Mode, RunRequest};

/// How often the daemon probes its stores (up, clock skew).
pub const PROBE_EVERY: Duration = Duration::from_secs(15);

/// Rules one daemon runs at once (the audit pool has 16 connections; a running rule
/// holds up to three).
pub const MAX_CONCURRENT_RULES: usize = 4;

/// What the daemon runs on; replaced as a whole on a successful reload.
pub struct Loaded {
    /// The engine (config, stores, audit).
    pub engine: Engine,
    /// Preflight of every enabled rule at load: the config's mistakes stop a load;
    /// rules whose store was down are missing here, and each run checks afresh.
    pub preflight: Preflight,
}

/// Shared daemon state.
pub struct Daemon {
    /// Current engine and preflight.
    pub loaded: RwLock<Arc<Loaded>>,
    /// The last reload error, shown by `/readyz` until a reload succeeds.
    pub reload_error: RwLock<Option<String>>,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Runs in flight.
    pub tracker: TaskTracker,
    /// Rules running in this process (a tick that finds its rule busy is skipped).
    pub busy: Mutex<HashMap<String, ()>>,
    /// Held by the conformance pass in progress: a tick that finds it taken is skipped,
    /// so slow passes never pile up.
    pub conformance: Mutex<()>,
    /// Rules that may run at once: each running rule holds up to three audit
    /// connections (its rule lock, its run's liveness lock, its holds lock), so rules
    /// that fire together wait here instead of exhausting the audit pool.
    pub running: Arc<tokio::sync::Semaphore>,
    config_path: PathBuf,
}

/// Loads the config and builds an engine. Every enabled rule must pass the preflight,
/// except where a store is down: the daemon then starts (or reloads) without those
/// rules' preparation, runs the others, and each of their runs checks the store again.
pub async fn load(config_path: &Path, shutdown: CancellationToken) -> Result<Loaded, Error> {
    let config = crate::startup::load_config(config_path)?;
    let rules: Vec<&Rule> = config.rules.iter().filter(|r| r.enabled).collect();
    let engine = startup::engine(config.clone(), &rules, Connect::Lazy, shutdown).await?;
    // A config that weakens a locked category never replaces the one in force.
    startup::migrate_and_check_lock(&engine.audit, &config).await?;
    let pf = preflight::check(&config, &engine.stores, &rules).await;
    for w in &pf.warnings {
        warn!(rule = %w.rule, "{}", w.message);
    }
    if !pf.ok() {
        for e in &pf.errors {
            error!(rule = %e.rule, "{}", e.message);
        }
        if !pf.errors.iter().all(|e| e.transient) {
            return Err(pf.failure());
        }
        warn!(
            rules = pf.errors.len(),
            "starting with stores down: their rules run once the store answers"
        );
    }
    Ok(Loaded {
        engine,
        preflight: pf,
    })
}

/// Runs `job` for `rule` unless `busy` says the rule is running already (the tick is
/// then skipped). The job is its own task: a panic inside it ends that task, not the
/// rule, which is marked free again either way. Returns whether the job ran.
async fn run_exclusive(
    busy: &Mutex<HashMap<String, ()>>,
    rule: &str,
    job: impl std::future::Future<Output = ()> + Send + 'static,
) -> bool {
    {
        let mut busy = busy.lock().await;
        if busy.contains_key(rule) {
            debug!(rule, "previous run still going; tick skipped");
            return false;
        }
        busy.insert(rule.to_owned(), ());
    }
    if let Err(e) = tokio::spawn(job).await {
        error!(rule, error = %e, "the rule's run panicked");
    }
    busy.lock().await.remove(rule);
    true
}

/// The interval between two consecutive firings of `rule`'s schedule after `now`.
pub fn schedule_interval(config: &Config, rule: &Rule) -> Option<chrono::TimeDelta> {
    let s = config.schedule_of(rule);
    let a = s.next_after(&Utc::now())?;
    let b = s.next_after(&a)?;
    Some(b - a)
}

impl Daemon {
    /// Runs `rule` once now if this process is not already running it and no other
    /// replica holds its lock; `trigger` is `schedule` or `catch_up`.
    pub async fn run_rule(self: &Arc<Self>, rule: String, trigger: &'static str) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let me = self.clone();
        let name = rule.clone();
        run_exclusive(&self.busy, &rule, async move {
            me.run_rule_once(name, trigger).await
        })
        .await;
    }

    async fn run_rule_once(self: Arc<Self>, rule: String, trigger: &'static str) {
        let Ok(_permit) = self.running.clone().acquire_owned().await else {
            return;
        };
        if self.shutdown.is_cancelled() {
            return;
        }
        let loaded = self.loaded.read().await.clone();
        let engine = &loaded.engine;
        let result = async {
            let lock = match engine.audit.try_lock_rule(&rule).await {
                Ok(Some(l)) => l,
                Ok(None) => {
                    debug!(rule, "another replica runs this rule; tick skipped");
                    return;
                }
                Err(e) => {
                    warn!(rule, error = %e, "cannot take the rule lock");
                    return;
                }
            };
            let req = RunRequest {
                rules: vec![rule.clone()],
                mode: Mode::Enforce,
                as_of: None,
                trigger: trigger.into(),
                actor: format!("retentiond@{}", crate::audit::hostname()),
                allow_mass_delete: false,
                lock_rules: false,
            };
            // The preflight again, for this rule now: a store that was down may be
            // back (or one may be down now), and partitions come and go between runs.
            let rule_now: Vec<&Rule> = engine.config.rule(&rule).into_iter().collect();
            let pf = preflight::check(&engine.config, &engine.stores, &rule_now).await;
            for e in &pf.errors {
                warn!(rule, "preflight: {}", e.message);
            }
            match engine.run(&req, &pf).await {
                Ok(outcome) => {
                    if outcome.report.status != Status::Succeeded {
                        warn!(rule, status = %outcome.report.status, run_id = %outcome.report.run_id, "run did not succeed");
                    }
                }
                Err(e) => error!(rule, error = %format!("{e:#}"), "run failed"),
            }
            lock.release().await;
            if let Some(r) = engine.config.rule(&rule) {
                crate::metrics::next_run(&engine.config, r);
                if !self.shutdown.is_cancelled() {
                    crate::conformance::check_rule(engine, r, &pf, None).await;
                }
            }
        }
        .instrument(tracing::info_span!("scheduled", rule = %rule, trigger))
        .await;
        result
    }

    /// Schedules every enabled rule of the current config; returns the jobs' ids.
    async fn schedule_all(
        self: &Arc<Self>,
        sched: &JobScheduler,
    ) -> anyhow::Result<Vec<uuid::Uuid>> {
        let loaded = self.loaded.read().await.clone();
        let mut ids = Vec::new();
        for rule in loaded.engine.config.rules.iter().filter(|r| r.enabled) {
            let expr = loaded.engine.config.schedule_of(rule).expr.clone();
            let me = self.clone();
            let name = rule.name.clone();
            let job = Job::new_async_tz(expr.as_str(), Utc, move |_id, _sched| {
                let me = me.clone();
                let name = name.clone();
                Box::pin(async move {
                    let tracker = me.tracker.clone();
                    tracker.spawn(async move { me.run_rule(name, "schedule").await });
                })
            })
            .map_err(|e| anyhow::anyhow!("rule {}: cannot schedule `{expr}`: {e}", rule.name))?;
            ids.push(
                sched
                    .add(job)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot add job: {e}"))?,
            );
            info!(rule = %rule.name, schedule = %expr, "scheduled");
        }
        let expr = loaded
            .engine
            .config
            .daemon
            .conformance_schedule
            .expr
            .clone();
        let me = self.clone();
        let job = Job::new_async_tz(expr.as_str(), Utc, move |_id, _sched| {
            let me = me.clone();
            Box::pin(async move {
                let tracker = me.tracker.clone();
                tracker.spawn(async move { me.check_conformance().await });
            })
        })
        .map_err(|e| anyhow::anyhow!("cannot schedule conformance_schedule `{expr}`: {e}"))?;
        ids.push(
            sched
                .add(job)
                .await
                .map_err(|e| anyhow::anyhow!("cannot add job: {e}"))?,
        );
        info!(schedule = %expr, "conformance scheduled");
        Ok(ids)
    }

    /// Runs, once, every rule whose last successful enforcing run is older than its
    /// schedule interval (or that never ran).
    async fn catch_up(self: &Arc<Self>) {
        let loaded = self.loaded.read().await.clone();
        for rule in loaded.engine.config.rules.iter().filter(|r| r.enabled) {
            let Some(interval) = schedule_interval(&loaded.engine.config, rule) else {
                continue;
            };
            let last = loaded
                .engine
                .audit
                .last_success(&rule.name)
                .await
                .ok()
                .flatten();
            let overdue = match last {
                None => true,
                Some(t) => Utc::now() - t > interval,
            };
            if overdue {
                info!(rule = %rule.name, last_success = ?last, "catching up: last successful run is older than the schedule interval");
                let me = self.clone();
                let name = rule.name.clone();
                self.tracker
                    .spawn(async move { me.run_rule(name, "catch_up").await });
            }
        }
    }

    /// SIGHUP: load the file again; keep the old config when the new one is invalid.
    async fn reload(self: &Arc<Self>, sched: &JobScheduler, jobs: &mut Vec<uuid::Uuid>) {
        info!(config = %self.config_path.display(), "reloading the config");
        match load(&self.config_path, self.shutdown.clone()).await {
            Ok(new) => {
                let replaced = self.loaded.read().await.engine.config.clone();
                *self.loaded.write().await = Arc::new(new);
                *self.reload_error.write().await = None;
                self.init_series(Some(&replaced)).await;
                for id in jobs.drain(..) {
                    let _ = sched.remove(&id).await;
                }
                match self.schedule_all(sched).await {
                    Ok(ids) => *jobs = ids,
                    Err(e) => error!(error = %e, "rescheduling after reload failed"),
                }
                info!("config reloaded");
            }
            Err(e) => {
                error!(error = %e.message, "the new config is invalid; keeping the old one");
                *self.reload_error.write().await = Some(e.message);
            }
        }
    }
}

/// `retentiond run`.
///
/// The caller hands it what ties it to a process: the listener for `/healthz`,
/// `/readyz` and `/metrics` (bound to `[http] listen` by `cli`), a future that resolves
/// on shutdown (SIGTERM/SIGINT) and a stream with an item per reload (SIGHUP).
pub async fn run_daemon(
    config_path: &Path,
    listener: tokio::net::TcpListener,
    grace: Option<&str>,
    catch_up: bool,
    stop: impl std::future::Future<Output = ()>,
    reload: impl futures::Stream<Item = ()> + Unpin,
) -> Result<(), Error> {
    let shutdown = CancellationToken::new();
    // Before anything records a series (the anchor failures' zero, recovery's seals).
    let metrics = crate::http::install_metrics().map_err(Error::unavailable)?;
    let loaded = load(config_path, shutdown.clone()).await?;
    let grace = match grace {
        Some(g) => Period::parse(g).map_err(Error::usage)?.as_std(),
        None => loaded.engine.config.daemon.grace_period,
    };
    crate::startup::migrate_and_recover(&loaded.engine.audit).await?;
    let daemon = Arc::new(Daemon {
        loaded: RwLock::new(Arc::new(loaded)),
        reload_error: RwLock::new(None),
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
        busy: Mutex::new(HashMap::new()),
        conformance: Mutex::new(()),
        running: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_RULES)),
        config_path: config_path.to_owned(),
    });
    daemon.init_series(None).await;
    tokio::spawn(daemon.clone().probe_stores());
    // The overdue gauges from the first minutes, not from the first scheduled check.
    daemon.tracker.spawn(daemon.clone().check_conformance());
    if let Ok(listen) = listener.local_addr() {
        info!(%listen, "serving /healthz /readyz /metrics");
    }
    let http = tokio::spawn(crate::http::serve(
        listener,
        daemon.clone(),
        metrics,
        shutdown.clone(),
    ));

    let sched = JobScheduler::new()
        .await
        .map_err(|e| Error::unavailable(format!("scheduler: {e}")))?;
    let mut jobs = daemon
        .schedule_all(&sched)
        .await
        .map_err(Error::unavailable)?;
    sched
        .start()
        .await
        .map_err(|e| Error::unavailable(format!("scheduler: {e}")))?;
    // Ready: migrations applied, preflight passed, scheduler running.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    info!("retentiond is running");
    if catch_up {
        daemon.catch_up().await;
    }

    tokio::pin!(stop);
    // A reload stream that ended stays ended (never polled again).
    let mut reload = futures::StreamExt::fuse(reload);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(()) = futures::StreamExt::next(&mut reload) => daemon.reload(&sched, &mut jobs).await,
        }
    }
    info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: no new batches; waiting for the current ones"
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    let mut sched = sched;
    let _ = sched.shutdown().await;
    daemon.tracker.close();
    if tokio::time::timeout(grace, daemon.tracker.wait())
        .await
        .is_err()
    {
        warn!("grace period over with runs still going; they will be recorded as interrupted at the next start");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    info!("stopped");
    Ok(())
}

mod observe;

#[cfg(test)]
mod tests;
