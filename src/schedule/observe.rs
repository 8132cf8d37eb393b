//! What the daemon watches besides its rules: conformance, store probes, and the series
//! every alert needs from the first scrape.

use super::*;

impl Daemon {
    /// Counts what is overdue for every enabled rule (read-only: a preflight and a
    /// dry-run selection per rule, nothing recorded), for the overdue metrics.
    pub(super) async fn check_conformance(self: Arc<Self>) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let Ok(_pass) = self.conformance.try_lock() else {
            debug!("the previous conformance pass is still going; tick skipped");
            return;
        };
        let loaded = self.loaded.read().await.clone();
        let engine = &loaded.engine;
        let rules: Vec<&Rule> = engine.config.rules.iter().filter(|r| r.enabled).collect();
        let pf = preflight::check(&engine.config, &engine.stores, &rules).await;
        let results = crate::conformance::check(engine, &pf, None).await;
        crate::conformance::publish(engine, &results).await;
        let overdue: u64 = results.iter().map(|r| r.overdue).sum();
        let failed = results.iter().filter(|r| r.error.is_some()).count();
        info!(
            rules = results.len(),
            overdue, failed, "conformance checked"
        );
    }

    /// The series every alert needs, from the first scrape (at start and after each
    /// reload): build and config info, and per enabled rule its info, last success
    /// (from the trail), next run and counters at 0.
    pub(super) async fn init_series(&self, replaced: Option<&Config>) {
        let loaded = self.loaded.read().await.clone();
        let engine = &loaded.engine;
        crate::metrics::init_process(&engine.config.sha256, replaced.map(|c| c.sha256.as_str()));
        if let Some(old) = replaced {
            // The old config's rule series read 0 (then the new ones 1): no rule is
            // described twice, and a removed rule no longer looks enabled.
            for rule in old.rules.iter().filter(|r| r.enabled) {
                crate::metrics::retire_rule(old, rule);
            }
        }
        for rule in engine.config.rules.iter().filter(|r| r.enabled) {
            let last = match engine.audit.last_success(&rule.name).await {
                Ok(t) => t,
                Err(e) => {
                    warn!(rule = %rule.name, error = %e, "cannot read the rule's last success from the trail");
                    None
                }
            };
            crate::metrics::init_rule(&engine.config, rule, last);
        }
    }

    /// Every [`PROBE_EVERY`]: whether each store answers (`retentiond_store_up`), and how
    /// far this host's clock is from each database's (`retentiond_clock_skew_seconds`,
    /// a warning above [`crate::metrics::SKEW_WARN_SECS`] when it starts).
    pub(super) async fn probe_stores(self: Arc<Self>) {
        let mut skewed: std::collections::HashSet<String> = Default::default();
        loop {
            let loaded = self.loaded.read().await.clone();
            for p in loaded.engine.stores.probe().await {
                let skew = p
                    .clock
                    .map(|db| (Utc::now() - db).num_milliseconds() as f64 / 1000.0);
                crate::metrics::record_store(&p.name, p.up, skew);
                match skew {
                    Some(s) if s.abs() > crate::metrics::SKEW_WARN_SECS => {
                        if skewed.insert(p.name.clone()) {
                            warn!(store = %p.name, skew_seconds = s, "this host's clock is {s:.1} s off the database's; cutoffs use the database clock");
                        }
                    }
                    _ => {
                        skewed.remove(&p.name);
                    }
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
        }
    }
}

impl crate::http::Readiness for Daemon {
    /// A failed reload, audit migrations not applied, a store that does not answer.
    async fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(e) = self.reload_error.read().await.clone() {
            problems.push(format!(
                "config reload failed (running on the previous config): {e}"
            ));
        }
        let loaded = self.loaded.read().await.clone();
        let engine = &loaded.engine;
        if !engine.audit.migrations_applied().await {
            problems.push("audit migrations are not applied".into());
        }
        for store in engine.stores.probe().await {
            if !store.up {
                problems.push(format!("store {} is not reachable", store.name));
            }
        }
        problems
    }
}
