//! Run records: begin, rule results, progress, finish and seal, and recovery of runs
//! a dead process left `running`.

use super::*;

/// How a run was started.
#[derive(Debug, Clone)]
pub struct RunStart {
    /// `schedule`, `manual`, `erase`, `catch_up`.
    pub trigger: String,
    /// `dry_run` or `enforce`.
    pub mode: String,
    /// Who or what.
    pub actor: String,
    /// SHA-256 of the config.
    pub config_sha256: String,
    /// The config's text (stored once per distinct config: the policy history).
    pub config_text: String,
    /// Dry-run `--as-of`.
    pub as_of: Option<DateTime<Utc>>,
    /// Keyed hash of the subject of an erase run.
    pub subject_hash: Option<String>,
}

/// The details as stored: the counts that came after canonical form version 1 froze its
/// fields (`blocked`, `referenced`) travel inside `details`, so the chain covers them.
fn details_with_counts(r: &RuleReport) -> serde_json::Map<String, serde_json::Value> {
    let mut d = r.details.clone();
    if r.blocked > 0 {
        d.insert("blocked".into(), r.blocked.into());
    }
    if r.referenced > 0 {
        d.insert("referenced".into(), r.referenced.into());
    }
    d
}

/// Attempts to record a rule's result before the run gives up on it.
const RECORD_ATTEMPTS: u32 = 5;

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505")
}

impl Audit {
    /// Records a new run as `running` and takes its liveness lock.
    pub async fn begin_run(&self, start: &RunStart) -> Result<RunHandle, sqlx::Error> {
        let run_id = Uuid::now_v7();
        // Take the liveness lock before the row exists, so a recovery can never see a
        // `running` row whose lock is free while its process is alive.
        // The callers checked the preservation lock when they loaded the config; a config
        // that another process locked since is refused here, before anything is written.
        self.recheck_preservation_lock(&start.config_sha256, &start.config_text)
            .await?;
        let mut conn = self.pool.acquire().await?;
        self.record_policy(&mut conn, &start.config_sha256, &start.config_text)
            .await?;
        let id: i64 = sqlx::query_scalar("SELECT nextval('retentiond.runs_id_seq')")
            .fetch_one(&mut *conn)
            .await?;
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(RUN_LOCK_CLASS)
            .bind(lock_key(id))
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO retentiond.runs (id, run_id, trigger, mode, actor, host, version, config_sha256, as_of, subject_hash, started_at) \
             VALUES ($10, $1, $2, $3, $4, $5, $6, $7, $8, $9, date_trunc('milliseconds', clock_timestamp()))",
        )
        .bind(run_id)
        .bind(&start.trigger)
        .bind(&start.mode)
        .bind(&start.actor)
        .bind(hostname())
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(&start.config_sha256)
        .bind(start.as_of)
        .bind(&start.subject_hash)
        .bind(id)
        .execute(&mut *conn)
        .await?;
        Ok(RunHandle {
            run_id,
            id,
            lock: std::sync::Arc::new(tokio::sync::Mutex::new(Some(conn))),
        })
    }

    /// Stores one rule's result (`samples` only when `keep_samples`).
    pub async fn record_rule(
        &self,
        run: &RunHandle,
        position: usize,
        r: &RuleReport,
        keep_samples: bool,
    ) -> Result<(), sqlx::Error> {
        // A rule's result is the record of what it removed: ride out a restart of the
        // audit server (about 8 s of retries) rather than lose it. A retry that finds
        // the row already there means the first attempt committed.
        let mut delay = std::time::Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self
                .insert_rule(run.run_id, position, r, keep_samples)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if attempt > 1 && is_unique_violation(&e) => return Ok(()),
                Err(e) if attempt < RECORD_ATTEMPTS && crate::store::postgres::unavailable(&e) => {
                    tracing::warn!(attempt, error = %e, "retrying the record of a rule result");
                    tokio::time::sleep(delay).await;
                    delay *= 3;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends the running counts of the rule at `position` of run `run_id` (no samples).
    pub async fn record_progress(
        &self,
        run_id: Uuid,
        position: usize,
        r: &RuleReport,
    ) -> Result<(), sqlx::Error> {
        let mut r = r.clone();
        r.samples.clear();
        r.details = details_with_counts(&r);
        sqlx::query(
            "INSERT INTO retentiond.rule_progress (run_id, position, report) VALUES ($1, $2, $3)",
        )
        .bind(run_id)
        .bind(position as i32)
        .bind(serde_json::to_value(&r).unwrap_or_default())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records, for each rule of run `id` that has progress but no result, its last
    /// progress as an `interrupted` result whose counts are a lower bound.
    async fn record_last_progress(&self, run_id: Uuid) -> Result<(), sqlx::Error> {
        let rows: Vec<(i32, serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
            "SELECT DISTINCT ON (p.position) p.position, p.report, p.recorded_at FROM retentiond.rule_progress p \
             WHERE p.run_id = $1 AND NOT EXISTS (SELECT 1 FROM retentiond.rule_results r WHERE r.run_id = p.run_id AND r.position = p.position) \
             ORDER BY p.position, p.id DESC",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        for (position, report, at) in rows {
            let Ok(mut r) = serde_json::from_value::<RuleReport>(report) else {
                continue;
            };
            r.status = Status::Interrupted;
            r.details.insert("lower_bound".into(), true.into());
            r.details
                .insert("progress_recorded_at".into(), at.to_rfc3339().into());
            r.errors.push(format!(
                "the process stopped during this rule: the counts are what its committed batches had done at the last progress record ({}), a lower bound",
                at.to_rfc3339()
            ));
            self.insert_rule(run_id, position.max(0) as usize, &r, false)
                .await?;
        }
        Ok(())
    }

    async fn insert_rule(
        &self,
        run_id: Uuid,
        position: usize,
        r: &RuleReport,
        keep_samples: bool,
    ) -> Result<(), sqlx::Error> {
        let samples: &[String] = if keep_samples { &r.samples } else { &[] };
        sqlx::query(
            "INSERT INTO retentiond.rule_results (run_id, position, rule, category, store, place, action, status, cutoff, \
             matched, deleted, anonymised, held, failed, bytes, duration_ms, samples, errors, details) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19)",
        )
        .bind(run_id)
        .bind(position as i32)
        .bind(&r.rule)
        .bind(&r.category)
        .bind(&r.store)
        .bind(&r.place)
        .bind(&r.action)
        .bind(r.status.as_str())
        .bind(r.cutoff)
        .bind(r.matched as i64)
        .bind(r.deleted as i64)
        .bind(r.anonymised as i64)
        .bind(r.held as i64)
        .bind(r.failed as i64)
        .bind(r.bytes as i64)
        .bind(r.duration_ms as i64)
        .bind(serde_json::json!(samples))
        .bind(serde_json::json!(r.errors))
        .bind(serde_json::Value::Object(details_with_counts(r)))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets the final status, seals the run into the chain and drops its liveness lock.
    pub async fn finish_run(
        &self,
        run: RunHandle,
        status: &str,
        error: Option<&str>,
    ) -> Result<RunReport, sqlx::Error> {
        // Sealed only while this process still holds the liveness lock: if its session
        // was lost, another process may have sealed the run `interrupted` meanwhile.
        let alive = {
            let mut slot = run.lock.lock().await;
            if slot.is_none() {
                match reattach(&self.pool, run.id).await {
                    Ok(c) => *slot = Some(c),
                    Err(e) => tracing::warn!(error = %e, "the run cannot be sealed"),
                }
            }
            match slot.as_mut() {
                Some(conn) => sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() \
                     AND classid = $1::int8::oid AND objid = $2::int8::oid AND granted)",
                )
                .bind(i64::from(RUN_LOCK_CLASS))
                .bind(i64::from(lock_key(run.id)))
                .fetch_one(&mut **conn)
                .await
                .unwrap_or(false),
                None => false,
            }
        };
        if !alive {
            return Err(sqlx::Error::Protocol(
                "the run's liveness lock was lost (its session ended); the run is left to recovery, which records it as interrupted".into(),
            ));
        }
        let report = self.seal_run(run.id, status, error).await?;
        let taken = run.lock.lock().await.take();
        if let Some(mut conn) = taken {
            let ok: Result<bool, _> = sqlx::query_scalar("SELECT pg_advisory_unlock($1, $2)")
                .bind(RUN_LOCK_CLASS)
                .bind(lock_key(run.id))
                .fetch_one(&mut *conn)
                .await;
            if !matches!(ok, Ok(true)) {
                let _ = conn.detach();
            }
        }
        Ok(report)
    }

    async fn seal_run(
        &self,
        id: i64,
        status: &str,
        error: Option<&str>,
    ) -> Result<RunReport, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE retentiond.runs SET status = $2, error = $3, finished_at = date_trunc('milliseconds', clock_timestamp()) \
             WHERE id = $1 AND hash IS NULL",
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        let sealed = self.seal(&mut tx, chain::Kind::Run, id).await?;
        tx.commit().await?;
        let run_id: Uuid = sqlx::query_scalar("SELECT run_id FROM retentiond.runs WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        self.anchor(&sealed, Some(run_id)).await;
        self.load_run(&run_id.to_string())
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// Marks runs left `running` by a dead process as `interrupted`. A run whose process
    /// is alive (anywhere) holds its liveness lock and is left alone.
    pub async fn recover_interrupted(&self) -> Result<Vec<Uuid>, sqlx::Error> {
        let running: Vec<(i64, Uuid)> = sqlx::query_as(
            "SELECT id, run_id FROM retentiond.runs WHERE status = 'running' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut recovered = Vec::new();
        for (id, run_id) in running {
            let mut conn = self.pool.acquire().await?;
            if !try_run_lock(&mut conn, id).await? {
                continue;
            }
            let still_running: Option<String> =
                sqlx::query_scalar("SELECT status FROM retentiond.runs WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?;
            if still_running.as_deref() == Some("running") {
                if let Err(e) = self.record_last_progress(run_id).await {
                    tracing::warn!(run_id = %run_id, error = %e, "cannot record the interrupted run's last progress");
                }
                self.seal_run(
                    id,
                    "interrupted",
                    Some("the process stopped before the run finished"),
                )
                .await?;
                recovered.push(run_id);
            }
            sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                .bind(RUN_LOCK_CLASS)
                .bind(lock_key(id))
                .execute(&mut *conn)
                .await?;
        }
        Ok(recovered)
    }
}
