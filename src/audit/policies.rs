//! Policy history: every distinct config a run used, stored once by its SHA-256, with
//! the runs that used it.

use super::*;
use sha2::{Digest, Sha256};

/// One config version and the runs that used it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyVersion {
    /// SHA-256 of the text (the runs' `config_sha256`).
    pub sha256: String,
    /// The config file's exact text.
    #[serde(skip)]
    pub text: String,
    /// When it was first stored.
    pub recorded_at: DateTime<Utc>,
    /// Runs that used it.
    pub runs: i64,
    /// The first of them.
    pub first_run: Option<Uuid>,
    /// When it started.
    pub first_run_at: Option<DateTime<Utc>>,
    /// The last of them.
    pub last_run: Option<Uuid>,
    /// When it started.
    pub last_run_at: Option<DateTime<Utc>>,
}

impl PolicyVersion {
    /// Whether the stored text still hashes to its key.
    pub fn intact(&self) -> bool {
        hex::encode(Sha256::digest(self.text.as_bytes())) == self.sha256
    }
}

/// A hold released at a time, for `policy diff`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Release {
    /// The hold.
    pub hold_id: i64,
    /// What it held: `category X` or `subject KIND:ID`.
    pub target: String,
    /// When.
    pub released_at: DateTime<Utc>,
    /// Why.
    pub reason: String,
}

impl Audit {
    /// Stores the config `text` (whose SHA-256 must be `sha256`) unless it is stored.
    pub(super) async fn record_policy(
        &self,
        conn: &mut PgConnection,
        sha256: &str,
        text: &str,
    ) -> Result<(), sqlx::Error> {
        if hex::encode(Sha256::digest(text.as_bytes())) != sha256 {
            return Err(sqlx::Error::Protocol(
                "the config text does not match its SHA-256".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO retentiond.policies (sha256, text) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(text)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Every stored config, oldest first by its first run (then by when it was stored).
    pub async fn policy_versions(&self) -> Result<Vec<PolicyVersion>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT p.sha256, p.text, p.recorded_at, count(r.id) AS runs, \
                    (array_agg(r.run_id ORDER BY r.id))[1] AS first_run, min(r.started_at) AS first_run_at, \
                    (array_agg(r.run_id ORDER BY r.id DESC))[1] AS last_run, max(r.started_at) AS last_run_at \
             FROM retentiond.policies p LEFT JOIN retentiond.runs r ON r.config_sha256 = p.sha256 \
             GROUP BY p.sha256, p.text, p.recorded_at \
             ORDER BY min(r.id) NULLS LAST, p.recorded_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PolicyVersion {
                    sha256: r.try_get("sha256")?,
                    text: r.try_get("text")?,
                    recorded_at: r.try_get("recorded_at")?,
                    runs: r.try_get("runs")?,
                    first_run: r.try_get("first_run")?,
                    first_run_at: r.try_get("first_run_at")?,
                    last_run: r.try_get("last_run")?,
                    last_run_at: r.try_get("last_run_at")?,
                })
            })
            .collect()
    }

    /// Holds released at or after `from` and before `to` (`None`: no end).
    pub async fn releases_between(
        &self,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<Release>, sqlx::Error> {
        type ReleaseRow = (
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
            DateTime<Utc>,
            String,
        );
        let rows: Vec<ReleaseRow> =
            sqlx::query_as(
                "SELECT h.id, h.subject_kind, h.subject_id, h.category, r.released_at, r.reason \
                 FROM retentiond.hold_releases r JOIN retentiond.holds h ON h.id = r.hold_id \
                 WHERE r.released_at >= $1 AND ($2::timestamptz IS NULL OR r.released_at < $2) ORDER BY r.released_at",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(hold_id, kind, id, category, released_at, reason)| Release {
                    hold_id,
                    target: match (kind, id, category) {
                        (Some(k), Some(i), _) => format!("subject {k}:{i}"),
                        (_, _, Some(c)) => format!("category {c}"),
                        _ => "?".into(),
                    },
                    released_at,
                    reason,
                },
            )
            .collect())
    }
}
