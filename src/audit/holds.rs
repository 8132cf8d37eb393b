//! Legal holds: placed and released through the CLI, every change sealed in the chain.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Row};

use super::{chain, Audit};

/// First key of the advisory lock that orders holds against removals: every batch that
/// removes records reads the holds under it, shared; `hold add` takes it exclusively
/// around its insert. So once `hold add` has returned, every batch that starts reads the
/// new hold, and every batch that read the holds before it has committed.
const HOLDS_LOCK: (i32, i32) = (0x5254_4e33, 0); // "RTN3"

/// The holds in force at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldSet {
    /// Held subject ids by kind, as given to `hold add`.
    pub subjects: BTreeMap<String, Vec<String>>,
    /// Held categories and the id of one hold on each.
    pub categories: BTreeMap<String, i64>,
}

impl HoldSet {
    /// Held ids of subject `kind` (as given; compare them in the column's type).
    pub fn subject_ids(&self, kind: &str) -> &[String] {
        self.subjects.get(kind).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The id of a hold on `category`, if any.
    pub fn category(&self, category: &str) -> Option<i64> {
        self.categories.get(category).copied()
    }
}

/// Holds the shared side of the holds lock while a batch removes records.
///
/// [`HoldGuard::enter`] takes the lock and reads the holds in force; the batch then runs
/// with them; [`HoldGuard::leave`] releases the lock once the batch has committed.
pub struct HoldGuard {
    /// The session the lock is taken on.
    slot: std::sync::Arc<tokio::sync::Mutex<Option<PoolConnection<Postgres>>>>,
    /// The run whose liveness session it is (none: a pool session, for reads).
    run: Option<super::RunSession>,
    /// Held between `enter` and `leave`.
    held: Option<tokio::sync::OwnedMutexGuard<Option<PoolConnection<Postgres>>>>,
    entered: bool,
}

impl HoldGuard {
    /// A guard on the run's own session: a batch can take the holds lock only while the
    /// session holding the run's liveness lock is alive, or could be taken again safely.
    pub fn on_run(session: super::RunSession) -> Self {
        Self {
            slot: session.slot(),
            run: Some(session),
            held: None,
            entered: false,
        }
    }

    /// Takes the lock (waiting for a `hold add` in progress) and reads the holds.
    pub async fn enter(&mut self, audit: &Audit) -> Result<HoldSet, sqlx::Error> {
        if self.held.is_none() {
            self.held = Some(self.slot.clone().lock_owned().await);
        }
        let slot = self.held.as_mut().expect("locked above");
        let mut attempt = 0;
        while !self.entered {
            attempt += 1;
            match &self.run {
                Some(run) => run.ensure(&audit.pool, slot).await?,
                None if slot.is_none() => **slot = Some(audit.pool.acquire().await?),
                None => {}
            }
            let conn = slot.as_mut().expect("ensured above");
            match sqlx::query("SELECT pg_advisory_lock_shared($1, $2)")
                .bind(HOLDS_LOCK.0)
                .bind(HOLDS_LOCK.1)
                .execute(&mut **conn)
                .await
            {
                Ok(_) => self.entered = true,
                Err(e) => {
                    // A session that failed here may be dead: never use it again. Once,
                    // a new one is taken (for a run, only if its liveness is safe).
                    if let Some(c) = slot.take() {
                        drop(c.detach());
                    }
                    if attempt >= 2 {
                        return Err(e);
                    }
                }
            }
        }
        let conn = slot.as_mut().expect("entered on it");
        // A statement of its own, so its snapshot is taken after the lock was granted.
        let rows: Result<Vec<ActiveHold>, _> =
            sqlx::query_as(ACTIVE_HOLDS).fetch_all(&mut **conn).await;
        let rows = no_schema_is_empty(rows);
        if rows.is_err() {
            // Still holding the shared lock: `leave` releases it (or closes the session).
            self.leave().await;
        }
        let mut set = HoldSet::default();
        for (kind, id, category, hold_id) in rows? {
            match (kind, id, category) {
                (Some(k), Some(i), _) => set.subjects.entry(k).or_default().push(i),
                (_, _, Some(c)) => {
                    set.categories.entry(c).or_insert(hold_id);
                }
                _ => {}
            }
        }
        Ok(set)
    }

    /// Releases the lock: the batch that ran under it has committed. The session is
    /// handed back for the next batch (to the run, or kept for this guard).
    pub async fn leave(&mut self) {
        let Some(mut slot) = self.held.take() else {
            return;
        };
        if !self.entered {
            return;
        }
        self.entered = false;
        let Some(conn) = slot.as_mut() else {
            return;
        };
        let ok: Result<bool, _> = sqlx::query_scalar("SELECT pg_advisory_unlock_shared($1, $2)")
            .bind(HOLDS_LOCK.0)
            .bind(HOLDS_LOCK.1)
            .fetch_one(&mut **conn)
            .await;
        if !matches!(ok, Ok(true)) {
            // Never keep a session that may still hold the lock, or that is dead: close
            // it. On a run's session this also frees the liveness lock, and the run's
            // next batch refuses to start.
            if let Some(c) = slot.take() {
                drop(c.detach());
            }
        }
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        if self.entered {
            if let Some(mut slot) = self.held.take() {
                // Dropped inside a batch (a panic, a cancelled future): end the session,
                // which frees the lock.
                if let Some(c) = slot.take() {
                    drop(c.detach());
                }
            }
        }
    }
}

/// `(subject_kind, subject_id, category, id)` of a hold in force.
type ActiveHold = (Option<String>, Option<String>, Option<String>, i64);

/// `(subject_kind, subject_id, category, id)` of every hold in force.
const ACTIVE_HOLDS: &str = "SELECT h.subject_kind, h.subject_id, h.category, h.id FROM retentiond.holds h \
     WHERE (h.expires_at IS NULL OR h.expires_at > now()) \
       AND NOT EXISTS (SELECT 1 FROM retentiond.hold_releases r WHERE r.hold_id = h.id) ORDER BY h.id";

/// What a hold covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldTarget {
    /// One subject, e.g. `account:42`.
    Subject {
        /// Kind.
        kind: String,
        /// Id.
        id: String,
    },
    /// A whole category.
    Category(String),
}

impl HoldTarget {
    /// Parses `KIND:ID`.
    pub fn parse_subject(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((k, id)) if !k.is_empty() && !id.is_empty() => Ok(Self::Subject {
                kind: k.to_owned(),
                id: id.to_owned(),
            }),
            _ => Err(format!(
                "invalid subject `{s}`: expected KIND:ID, e.g. account:42"
            )),
        }
    }
}

impl std::fmt::Display for HoldTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Subject { kind, id } => write!(f, "{kind}:{id}"),
            Self::Category(c) => write!(f, "category {c}"),
        }
    }
}

/// A hold as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    /// Id.
    pub id: i64,
    /// `KIND:ID` or `category NAME`.
    pub target: String,
    /// Why.
    pub reason: String,
    /// Who placed it.
    pub actor: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it lapses on its own.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was released.
    pub released_at: Option<DateTime<Utc>>,
    /// Who released it.
    pub released_by: Option<String>,
    /// Why it was released.
    pub release_reason: Option<String>,
    /// In force now.
    pub active: bool,
}

struct HoldRow {
    id: i64,
    subject_kind: Option<String>,
    subject_id: Option<String>,
    category: Option<String>,
    reason: String,
    actor: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    released_at: Option<DateTime<Utc>>,
    released_by: Option<String>,
    release_reason: Option<String>,
    active: bool,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for HoldRow {
    fn from_row(r: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get("id")?,
            subject_kind: r.try_get("subject_kind")?,
            subject_id: r.try_get("subject_id")?,
            category: r.try_get("category")?,
            reason: r.try_get("reason")?,
            actor: r.try_get("actor")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
            released_at: r.try_get("released_at")?,
            released_by: r.try_get("released_by")?,
            release_reason: r.try_get("release_reason")?,
            active: r.try_get("active")?,
        })
    }
}

/// Errors placing or releasing holds.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// No such hold.
    #[error("hold {0} does not exist")]
    NotFound(i64),
    /// Already released.
    #[error("hold {0} was already released")]
    AlreadyReleased(i64),
    /// Database error.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl Audit {
    /// Places a hold and seals it into the chain.
    pub async fn add_hold(
        &self,
        target: &HoldTarget,
        reason: &str,
        actor: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<i64, sqlx::Error> {
        let (kind, id, category) = match target {
            HoldTarget::Subject { kind, id } => (Some(kind.as_str()), Some(id.as_str()), None),
            HoldTarget::Category(c) => (None, None, Some(c.as_str())),
        };
        let mut tx = self.pool.begin().await?;
        // Waits for every batch that read the holds before this one to commit; batches
        // that start later wait for this commit, then read this hold.
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(HOLDS_LOCK.0)
            .bind(HOLDS_LOCK.1)
            .execute(&mut *tx)
            .await?;
        let hold_id: i64 = sqlx::query_scalar(
            "INSERT INTO retentiond.holds (subject_kind, subject_id, category, reason, actor, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, date_trunc('milliseconds', clock_timestamp()), $6) RETURNING id",
        )
        .bind(kind)
        .bind(id)
        .bind(category)
        .bind(reason)
        .bind(actor)
        .bind(expires_at)
        .fetch_one(&mut *tx)
        .await?;
        let sealed = self.seal(&mut tx, chain::Kind::Hold, hold_id).await?;
        tx.commit().await?;
        self.anchor(&sealed, None).await;
        Ok(hold_id)
    }

    /// Releases a hold and seals the release into the chain.
    pub async fn release_hold(
        &self,
        hold_id: i64,
        reason: &str,
        actor: &str,
    ) -> Result<(), HoldError> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM retentiond.holds WHERE id = $1")
                .bind(hold_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(HoldError::NotFound(hold_id));
        }
        let inserted = sqlx::query(
            "INSERT INTO retentiond.hold_releases (hold_id, reason, actor, released_at) \
             VALUES ($1, $2, $3, date_trunc('milliseconds', clock_timestamp())) ON CONFLICT (hold_id) DO NOTHING",
        )
        .bind(hold_id)
        .bind(reason)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(HoldError::AlreadyReleased(hold_id));
        }
        let sealed = self
            .seal(&mut tx, chain::Kind::HoldRelease, hold_id)
            .await?;
        tx.commit().await?;
        self.anchor(&sealed, None).await;
        Ok(())
    }

    /// Holds, newest first; released and expired ones only with `all`.
    pub async fn list_holds(&self, all: bool) -> Result<Vec<Hold>, sqlx::Error> {
        let rows: Vec<HoldRow> = sqlx::query_as(
            "SELECT h.id, h.subject_kind, h.subject_id, h.category, h.reason, h.actor, h.created_at, h.expires_at, \
                    r.released_at, r.actor AS released_by, r.reason AS release_reason, \
                    (r.hold_id IS NULL AND (h.expires_at IS NULL OR h.expires_at > now())) AS active \
             FROM retentiond.holds h LEFT JOIN retentiond.hold_releases r ON r.hold_id = h.id ORDER BY h.id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter(|r| all || r.active)
            .map(|r| Hold {
                id: r.id,
                target: match (r.subject_kind, r.subject_id, r.category) {
                    (Some(k), Some(i), _) => format!("{k}:{i}"),
                    (_, _, Some(c)) => format!("category {c}"),
                    _ => "?".into(),
                },
                reason: r.reason,
                actor: r.actor,
                created_at: r.created_at,
                expires_at: r.expires_at,
                released_at: r.released_at,
                released_by: r.released_by,
                release_reason: r.release_reason,
                active: r.active,
            })
            .collect())
    }

    /// A guard for batches that remove records (see [`HoldGuard`]).
    pub fn hold_guard(&self) -> HoldGuard {
        HoldGuard {
            slot: std::sync::Arc::new(tokio::sync::Mutex::new(None)),
            run: None,
            held: None,
            entered: false,
        }
    }

    /// The holds in force now, read without the lock (counts, plans, dry-runs).
    pub async fn holds_now(&self) -> Result<HoldSet, sqlx::Error> {
        let mut guard = self.hold_guard();
        let set = guard.enter(self).await;
        guard.leave().await;
        set
    }

    /// Ids of subjects of `kind` under an active hold (none before the first migration).
    pub async fn held_subjects(&self, kind: &str) -> Result<Vec<String>, sqlx::Error> {
        let r = sqlx::query_scalar(
            "SELECT DISTINCT h.subject_id FROM retentiond.holds h \
             WHERE h.subject_kind = $1 AND (h.expires_at IS NULL OR h.expires_at > now()) \
               AND NOT EXISTS (SELECT 1 FROM retentiond.hold_releases r WHERE r.hold_id = h.id) ORDER BY 1",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await;
        no_schema_is_empty(r)
    }

    /// The id of an active hold on `category`, if any (none before the first migration).
    pub async fn category_hold(&self, category: &str) -> Result<Option<i64>, sqlx::Error> {
        let r = sqlx::query_scalar(
            "SELECT h.id FROM retentiond.holds h \
             WHERE h.category = $1 AND (h.expires_at IS NULL OR h.expires_at > now()) \
               AND NOT EXISTS (SELECT 1 FROM retentiond.hold_releases r WHERE r.hold_id = h.id) ORDER BY h.id LIMIT 1",
        )
        .bind(category)
        .fetch_optional(&self.pool)
        .await;
        no_schema_is_empty(r)
    }
}

/// `plan` and `validate` may run before `migrate`: no holds table means no holds.
fn no_schema_is_empty<T: Default>(r: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
    match r {
        Err(e)
            if e.as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P01" || c == "3F000") =>
        {
            Ok(T::default())
        }
        other => other,
    }
}
