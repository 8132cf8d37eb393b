//! The audit trail: one module owns the audit database — pool, migrations, queries.
//!
//! Runs, rule results, holds and hold releases live in schema `retentiond`. Every record
//! is sealed into one SHA-256 hash chain when it is final (see `chain` and
//! `docs/audit-trail.md`); triggers refuse any change to a sealed record.

pub mod chain;
pub mod holds;

use crate::report::Status;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Row};
use uuid::Uuid;

use crate::report::{RuleReport, RunReport, REPORT_SCHEMA};

/// First key of the advisory locks that mark a run as alive.
const RUN_LOCK_CLASS: i32 = 0x5254_4e31; // "RTN1"
/// First key of the advisory locks that keep a rule from running twice at once.
const RULE_LOCK_CLASS: i32 = 0x5254_4e32; // "RTN2"

/// The audit database.
#[derive(Clone, Debug)]
pub struct Audit {
    /// Pool (search_path = retentiond).
    pub(crate) pool: PgPool,
}

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
    /// Dry-run `--as-of`.
    pub as_of: Option<DateTime<Utc>>,
    /// Keyed hash of the subject of an erase run.
    pub subject_hash: Option<String>,
}

/// The session that holds a run's liveness lock. Every batch of the run takes the holds
/// lock on this same session ([`holds::HoldGuard::on_run`]): a batch can only start
/// while the session, and so the liveness lock, is alive. If the session is lost (a
/// network blip, `idle_session_timeout`, a server restart), the next batch fails to take
/// the holds lock and the rule stops before it removes anything more.
#[derive(Clone)]
pub struct RunSession {
    conn: std::sync::Arc<tokio::sync::Mutex<Option<PoolConnection<Postgres>>>>,
    id: i64,
}

/// Takes run `id`'s liveness lock on `conn` if no session holds it (its process is gone).
async fn try_run_lock(conn: &mut PgConnection, id: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(RUN_LOCK_CLASS)
        .bind(lock_key(id))
        .fetch_one(conn)
        .await
}

/// A new session holding run `id`'s liveness lock, if no other process has taken the
/// lock or sealed the run since the old session was lost; otherwise the run must stop.
async fn reattach(pool: &PgPool, id: i64) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    // A terminated session frees its locks only once its backend has exited: wait a
    // little for that. A recovery that takes the lock meanwhile seals the run, which the
    // check below then sees.
    let mut got = try_run_lock(&mut conn, id).await?;
    for _ in 0..10 {
        if got {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        got = try_run_lock(&mut conn, id).await?;
    }
    if !got {
        return Err(sqlx::Error::Protocol(
            "the run's liveness lock was lost and another process holds it now".into(),
        ));
    }
    let open: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM retentiond.runs WHERE id = $1 AND status = 'running' AND hash IS NULL)",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    if !open {
        drop(conn.detach());
        return Err(sqlx::Error::Protocol(
            "the run's liveness lock was lost and another process has recorded the run meanwhile"
                .into(),
        ));
    }
    tracing::warn!(
        run = id,
        "the run's session was lost; its liveness lock is taken again on a new one"
    );
    Ok(conn)
}

impl RunSession {
    /// The run's session in `slot`, taken again on a new connection when it was lost
    /// and no other process has recovered the run since.
    pub(crate) async fn ensure(
        &self,
        pool: &PgPool,
        slot: &mut Option<PoolConnection<Postgres>>,
    ) -> Result<(), sqlx::Error> {
        if slot.is_none() {
            *slot = Some(reattach(pool, self.id).await?);
        }
        Ok(())
    }

    pub(crate) fn slot(
        &self,
    ) -> std::sync::Arc<tokio::sync::Mutex<Option<PoolConnection<Postgres>>>> {
        self.conn.clone()
    }
}

/// A run in progress: its row, and the connection holding its liveness lock.
pub struct RunHandle {
    /// Run id.
    pub run_id: Uuid,
    /// Row id (chain and lock key).
    pub id: i64,
    lock: std::sync::Arc<tokio::sync::Mutex<Option<PoolConnection<Postgres>>>>,
}

impl RunHandle {
    /// The session holding the liveness lock, for the run's batches.
    pub fn session(&self) -> RunSession {
        RunSession {
            conn: self.lock.clone(),
            id: self.id,
        }
    }
}

impl Drop for RunHandle {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.lock.try_lock() {
            if let Some(conn) = slot.take() {
                // Not finished normally (the seal failed, or a panic): close the session so
                // the liveness lock is freed and the next start records the run as
                // interrupted.
                drop(conn.detach());
            }
        }
    }
}

/// A rule lock held for one run of that rule.
pub struct RuleLock {
    conn: Option<PoolConnection<Postgres>>,
    key: i32,
}

impl RuleLock {
    /// Releases the lock (also released if the process dies: the session ends).
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let ok: Result<bool, _> = sqlx::query_scalar("SELECT pg_advisory_unlock($1, $2)")
                .bind(RULE_LOCK_CLASS)
                .bind(self.key)
                .fetch_one(&mut *conn)
                .await;
            if !matches!(ok, Ok(true)) {
                // Never hand a connection that may still hold the lock back to the pool.
                let _ = conn.detach();
            }
        }
    }
}

impl Drop for RuleLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Dropped without release (e.g. a panic): close the session, freeing the lock.
            drop(conn.detach());
        }
    }
}

impl Audit {
    /// Connects to the audit store.
    pub async fn connect(opts: PgConnectOptions) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(opts.options([("search_path", "retentiond")]))
            .await?;
        Ok(Self { pool })
    }

    /// Creates the schema and applies `migrations/`.
    ///
    /// An up-to-date schema is left alone, so once an administrator has migrated, the
    /// runtime role needs no CREATE privilege (and need not own the append-only triggers).
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        if self.migrations_applied().await {
            return Ok(());
        }
        // Concurrent first starts may race on CREATE SCHEMA; a duplicate is fine.
        if let Err(e) = sqlx::query("CREATE SCHEMA IF NOT EXISTS retentiond")
            .execute(&self.pool)
            .await
        {
            let dup = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "23505" || c == "42P06");
            if !dup {
                return Err(e.into());
            }
        }
        sqlx::migrate!("./migrations").run(&self.pool).await
    }

    /// Whether every migration is applied (for `/readyz`).
    pub async fn migrations_applied(&self) -> bool {
        let expected = sqlx::migrate!("./migrations")
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .count() as i64;
        let applied: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM retentiond._sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await;
        applied.is_ok_and(|n| n >= expected)
    }

    /// The database clock.
    pub async fn now(&self) -> Result<DateTime<Utc>, sqlx::Error> {
        sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await
    }

    /// Records a new run as `running` and takes its liveness lock.
    pub async fn begin_run(&self, start: &RunStart) -> Result<RunHandle, sqlx::Error> {
        let run_id = Uuid::now_v7();
        // Take the liveness lock before the row exists, so a recovery can never see a
        // `running` row whose lock is free while its process is alive.
        let mut conn = self.pool.acquire().await?;
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
        chain::seal(&mut tx, chain::Kind::Run, id).await?;
        tx.commit().await?;
        let run_id: Uuid = sqlx::query_scalar("SELECT run_id FROM retentiond.runs WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
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

    /// Tries to take the lock of rule `name`; `None` when another process runs it now.
    pub async fn try_lock_rule(&self, name: &str) -> Result<Option<RuleLock>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let key = rule_lock_key(name);
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(RULE_LOCK_CLASS)
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(RuleLock {
            conn: Some(conn),
            key,
        }))
    }

    /// A run and its rule results, by full id, unique id prefix, or `latest`.
    pub async fn load_run(&self, id: &str) -> Result<Option<RunReport>, sqlx::Error> {
        let row = if id == "latest" {
            sqlx::query("SELECT * FROM retentiond.runs ORDER BY id DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?
        } else {
            let rows = sqlx::query("SELECT * FROM retentiond.runs WHERE run_id::text LIKE $1 || '%' ORDER BY id LIMIT 2")
                .bind(id.to_ascii_lowercase())
                .fetch_all(&self.pool)
                .await?;
            if rows.len() == 1 {
                rows.into_iter().next()
            } else {
                None
            }
        };
        let Some(row) = row else { return Ok(None) };
        let mut conn = self.pool.acquire().await?;
        Ok(Some(report_from_row(&mut conn, &row).await?))
    }

    /// Runs, newest first, filtered.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunReport>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT r.* FROM retentiond.runs r \
             WHERE ($1::timestamptz IS NULL OR r.started_at >= $1) \
               AND ($2::text IS NULL OR r.status = $2) \
               AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM retentiond.rule_results x WHERE x.run_id = r.run_id AND x.rule = $3)) \
             ORDER BY r.id DESC LIMIT $4",
        )
        .bind(filter.since)
        .bind(&filter.status)
        .bind(&filter.rule)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        let mut conn = self.pool.acquire().await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(report_from_row(&mut conn, row).await?);
        }
        Ok(out)
    }

    /// The last enforcing run of `rule` that succeeded, and when it finished.
    pub async fn last_success(&self, rule: &str) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT max(r.finished_at) FROM retentiond.runs r JOIN retentiond.rule_results x ON x.run_id = r.run_id \
             WHERE x.rule = $1 AND x.status = 'succeeded' AND r.mode = 'enforce'",
        )
        .bind(rule)
        .fetch_one(&self.pool)
        .await
    }
}

/// Builds a report from a `runs` row and its rule results.
pub async fn report_from_row(
    conn: &mut sqlx::PgConnection,
    row: &sqlx::postgres::PgRow,
) -> Result<RunReport, sqlx::Error> {
    let run_id: Uuid = row.try_get("run_id")?;
    let rules =
        sqlx::query("SELECT * FROM retentiond.rule_results WHERE run_id = $1 ORDER BY position")
            .bind(run_id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(rule_from_row)
            .collect::<Result<Vec<_>, _>>()?;
    Ok(RunReport {
        schema: REPORT_SCHEMA.into(),
        run_id: run_id.to_string(),
        trigger: row.try_get("trigger")?,
        mode: row.try_get("mode")?,
        status: status_of(row)?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        config_sha256: row.try_get("config_sha256")?,
        actor: row.try_get("actor")?,
        host: row.try_get("host")?,
        version: row.try_get("version")?,
        as_of: row.try_get("as_of")?,
        subject_hash: row.try_get("subject_hash")?,
        error: row.try_get("error")?,
        chain_seq: row.try_get("chain_seq")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
        rules,
    })
}

/// Filters of `report list`.
#[derive(Debug, Clone)]
pub struct RunFilter {
    /// Started at or after.
    pub since: Option<DateTime<Utc>>,
    /// With a result for this rule.
    pub rule: Option<String>,
    /// With this status.
    pub status: Option<String>,
    /// At most this many.
    pub limit: i64,
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

fn rule_from_row(r: &sqlx::postgres::PgRow) -> Result<RuleReport, sqlx::Error> {
    let get_u = |c: &str| -> Result<u64, sqlx::Error> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
    let samples: serde_json::Value = r.try_get("samples")?;
    let errors: serde_json::Value = r.try_get("errors")?;
    let details: serde_json::Value = r.try_get("details")?;
    Ok(RuleReport {
        rule: r.try_get("rule")?,
        category: r.try_get("category")?,
        store: r.try_get("store")?,
        place: r.try_get("place")?,
        action: r.try_get("action")?,
        status: status_of(r)?,
        cutoff: r.try_get("cutoff")?,
        matched: get_u("matched")?,
        deleted: get_u("deleted")?,
        anonymised: get_u("anonymised")?,
        held: get_u("held")?,
        failed: get_u("failed")?,
        blocked: count_in(&details, "blocked"),
        referenced: count_in(&details, "referenced"),
        bytes: get_u("bytes")?,
        duration_ms: get_u("duration_ms")?,
        samples: serde_json::from_value(samples).unwrap_or_default(),
        errors: serde_json::from_value(errors).unwrap_or_default(),
        details: match details {
            serde_json::Value::Object(m) => m,
            _ => Default::default(),
        },
    })
}

fn count_in(details: &serde_json::Value, key: &str) -> u64 {
    details
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

fn lock_key(id: i64) -> i32 {
    (id & 0x7fff_ffff) as i32
}

/// The advisory lock key of a rule: a stable hash of its name.
pub fn rule_lock_key(name: &str) -> i32 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(name.as_bytes());
    i32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// This host's name.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// The `status` column of a run or rule row.
fn status_of(row: &sqlx::postgres::PgRow) -> Result<Status, sqlx::Error> {
    row.try_get::<String, _>("status")?
        .parse()
        .map_err(|e: String| sqlx::Error::Decode(e.into()))
}

/// Attempts to record a rule's result before the run gives up on it.
const RECORD_ATTEMPTS: u32 = 5;

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505")
}
