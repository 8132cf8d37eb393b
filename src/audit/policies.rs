//! Policy history: every distinct config a run used, stored once by its SHA-256, with
//! the runs that used it.

use super::*;
use crate::policy::{lock_violations, LockedBy, Terms};
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

    /// Whether the trail has a policy history (migration 0004).
    async fn has_policies(&self) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT to_regclass('retentiond.policy_history_since') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
    }

    /// Runs whose config is missing from the policy history although they need it: every
    /// signed run, and every run after the history began. Someone deleted those rows.
    pub async fn runs_without_policy(&self) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
        if !self.has_policies().await? {
            return Ok(Vec::new());
        }
        sqlx::query_as(
            "SELECT r.run_id, r.config_sha256 FROM retentiond.runs r \
             WHERE NOT EXISTS (SELECT 1 FROM retentiond.policies p WHERE p.sha256 = r.config_sha256) \
               AND (r.signature IS NOT NULL \
                    OR r.id > coalesce((SELECT min(last_run_before) FROM retentiond.policy_history_since), 0)) \
             ORDER BY r.id",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Refuses config `text` (SHA-256 `sha256`) when [`Audit::preservation_lock`] does.
    /// The policy history is read again only when it changed since this config last
    /// passed: a run start costs one count.
    pub(super) async fn recheck_preservation_lock(
        &self,
        sha256: &str,
        text: &str,
    ) -> Result<(), sqlx::Error> {
        if !self.has_policies().await? {
            return Ok(());
        }
        let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM retentiond.policies")
            .fetch_one(&self.pool)
            .await?;
        let seen = (sha256.to_owned(), versions);
        if self.lock_checked.lock().expect("not poisoned").as_ref() == Some(&seen) {
            return Ok(());
        }
        let refusals = self.preservation_lock(text).await?;
        if !refusals.is_empty() {
            return Err(sqlx::Error::Protocol(format!(
                "refused by the preservation lock: {}",
                refusals.join("; ")
            )));
        }
        *self.lock_checked.lock().expect("not poisoned") = Some(seen);
        Ok(())
    }

    /// Why config `text` may not be used: every way it weakens a category that a config
    /// recorded by an earlier run locked, and every sign that the policy history was
    /// edited (then no config is accepted). Empty when it may.
    pub async fn preservation_lock(&self, text: &str) -> Result<Vec<String>, sqlx::Error> {
        let mut refusals: Vec<String> = self
            .runs_without_policy()
            .await?
            .into_iter()
            .take(3)
            .map(|(run, sha)| format!(
                "run {run} used config {sha}, which is missing from the trail's policy history: the history was edited, so no config is accepted until `audit verify` is clean"
            ))
            .collect();
        let mut locked = Vec::new();
        for v in self.policy_versions().await?.iter().filter(|v| v.runs > 0) {
            if !v.intact() {
                refusals.push(format!(
                    "config {} in the trail's policy history does not match its SHA-256: the history was edited, so no config is accepted until `audit verify` is clean",
                    v.sha256
                ));
                continue;
            }
            let terms = match Terms::from_text(&v.text) {
                Ok(t) => t,
                Err(e) => {
                    refusals.push(format!("config {} in the policy history: {e}", v.sha256));
                    continue;
                }
            };
            if terms.categories.values().any(|c| c.locked) {
                locked.push(LockedBy {
                    run: v.first_run.map(|r| r.to_string()).unwrap_or_default(),
                    at: v
                        .first_run_at
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_default(),
                    sha256: v.sha256.clone(),
                    terms,
                });
            }
        }
        match Terms::from_text(text) {
            Ok(new) => refusals.extend(lock_violations(&new, &locked)),
            Err(e) => refusals.push(e),
        }
        Ok(refusals)
    }

    /// Every stored config, oldest first by its first run (then by when it was stored).
    pub async fn policy_versions(&self) -> Result<Vec<PolicyVersion>, sqlx::Error> {
        if !self.has_policies().await? {
            return Ok(Vec::new());
        }
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
