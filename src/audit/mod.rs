//! The audit trail: one module owns the audit database — pool, migrations, queries.
//!
//! Runs, rule results, holds and hold releases live in schema `retentiond`. Every record
//! is sealed into one SHA-256 hash chain when it is final (see `chain` and
//! `docs/audit-trail.md`); triggers refuse any change to a sealed record.

pub mod anchor;
pub mod bundle;
pub mod chain;
pub mod holds;
mod migrations;
pub mod policies;
mod reads;
mod runs;
pub mod signing;

pub use reads::{report_from_row, RunFilter};
pub use runs::RunStart;

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
    /// What each seal signs with and anchors to.
    pub(crate) evidence: std::sync::Arc<Evidence>,
    /// The config and policy-history size that last passed the preservation lock.
    lock_checked: std::sync::Arc<std::sync::Mutex<Option<(String, i64)>>>,
}

/// Evidence beyond the database: the key that signs each sealed record, and the
/// bucket each new chain head is anchored in.
#[derive(Debug, Default)]
pub struct Evidence {
    /// Signs every sealed record's hash.
    pub signer: Option<signing::Signer>,
    /// Receives an anchor after every seal.
    pub anchors: Option<anchor::Anchors>,
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
        Ok(Self {
            pool,
            evidence: Default::default(),
            lock_checked: Default::default(),
        })
    }

    /// The same trail, signing and anchoring every seal with `evidence`.
    pub fn with_evidence(mut self, evidence: Evidence) -> Self {
        self.evidence = std::sync::Arc::new(evidence);
        self
    }

    /// The anchors, when `[audit] anchor_store` is set.
    pub fn anchors(&self) -> Option<&anchor::Anchors> {
        self.evidence.anchors.as_ref()
    }

    /// The signing key, when one is configured.
    pub fn signer(&self) -> Option<&signing::Signer> {
        self.evidence.signer.as_ref()
    }

    /// Seals record `id` of `kind` inside `tx` with this trail's signing key.
    async fn seal(
        &self,
        tx: &mut PgConnection,
        kind: chain::Kind,
        id: i64,
    ) -> Result<chain::Sealed, sqlx::Error> {
        chain::seal(tx, kind, id, self.signer()).await
    }

    /// After the seal's commit: anchors the new head. A failure is logged and counted,
    /// never returned; the next seal anchors a newer head that covers this one.
    async fn anchor(&self, sealed: &chain::Sealed, run_id: Option<Uuid>) {
        let Some(anchors) = self.anchors() else {
            return;
        };
        let record = anchor::AnchorRecord {
            format: anchor::FORMAT.into(),
            chain_seq: sealed.seq,
            hash: sealed.hash.clone(),
            kind: sealed.kind.as_str().into(),
            run_id,
            sealed_at: Utc::now(),
            signature: sealed.signed.as_ref().map(|s| s.signature.clone()),
            key_id: sealed.signed.as_ref().map(|s| s.key_id.clone()),
        };
        match anchors.write(&record).await {
            Ok(protection) => tracing::debug!(seq = sealed.seq, ?protection, "chain head anchored"),
            Err(e) => {
                crate::metrics::anchor_failed(anchors.store_name());
                tracing::warn!(
                    seq = sealed.seq,
                    store = anchors.store_name(),
                    error = %e,
                    "the chain head could not be anchored; the next seal anchors a newer head"
                );
            }
        }
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
        migrations::migrator().run(&self.pool).await
    }

    /// Whether every migration is applied (for `/readyz`).
    pub async fn migrations_applied(&self) -> bool {
        let expected = migrations::migrator()
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
}

/// Whether relation `table` of schema `retentiond` has `column` (a trail not yet migrated
/// by this version lacks the newer ones).
async fn has_column(
    conn: &mut PgConnection,
    table: &str,
    column: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'retentiond' AND table_name = $1 AND column_name = $2)",
    )
    .bind(table)
    .bind(column)
    .fetch_one(&mut *conn)
    .await
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
