//! Reading runs back from the trail.

use super::*;

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

/// The `status` column of a run or rule row.
fn status_of(row: &sqlx::postgres::PgRow) -> Result<Status, sqlx::Error> {
    row.try_get::<String, _>("status")?
        .parse()
        .map_err(|e: String| sqlx::Error::Decode(e.into()))
}

impl Audit {
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

    /// Records deleted or anonymised by enforcing runs started at or after `since`, per
    /// UTC day and category (the report site's chart).
    pub async fn removed_per_category_day(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(chrono::NaiveDate, String, u64)>, sqlx::Error> {
        let rows: Vec<(chrono::NaiveDate, String, i64)> = sqlx::query_as(
            "SELECT (r.started_at AT TIME ZONE 'UTC')::date, x.category, sum(x.deleted + x.anonymised)::bigint \
             FROM retentiond.rule_results x JOIN retentiond.runs r ON r.run_id = x.run_id \
             WHERE r.mode = 'enforce' AND r.started_at >= $1 GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(d, c, n)| (d, c, n.max(0) as u64))
            .collect())
    }
}
