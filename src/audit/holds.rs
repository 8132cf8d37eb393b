//! Legal holds: placed and released through the CLI, every change sealed in the chain.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{chain, Audit};

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

#[derive(sqlx::FromRow)]
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
        chain::seal(&mut tx, chain::Kind::Hold, hold_id).await?;
        tx.commit().await?;
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
        chain::seal(&mut tx, chain::Kind::HoldRelease, hold_id).await?;
        tx.commit().await?;
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
