//! Exact counts of a rule's due, held and kept rows, and what an erasure keeps under
//! its own floor.

use super::*;

/// What one count over a rule's tables found.
#[derive(Debug, Default)]
pub(super) struct Counted {
    pub(super) due: u64,
    pub(super) held: u64,
    pub(super) kept: u64,
    pub(super) oldest: Option<DateTime<Utc>>,
    pub(super) by_rule: BTreeMap<String, u64>,
}

impl Counted {
    /// Sets `matched`, `held` and the kept-by-rule details from the count.
    pub(super) fn report(&self, rr: &mut RuleRun<'_>) {
        rr.report.matched = self.due - self.held - self.kept;
        rr.report.held = self.held;
        let kept: serde_json::Map<String, serde_json::Value> = self
            .by_rule
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (r.clone(), (*n).into()))
            .collect();
        if !kept.is_empty() {
            rr.report
                .details
                .insert("kept_by_other_rules".into(), kept.into());
        }
    }
}

/// Counts the due rows of every table in one pass each.
pub(super) async fn count_all(
    pg: &PgStore,
    scope: &Scope<'_>,
    tables: &[TableName],
    holds: &BatchHolds,
    with_oldest: bool,
) -> Result<Counted, sqlx::Error> {
    // With an index on the age column the oldest due record is one index probe away;
    // without one it costs nothing extra to find it during the count's pass.
    let indexed = scope
        .t
        .age_column()
        .is_some_and(|c| scope.p.info.has_index_on(c.as_str()));
    let mut total = Counted::default();
    for table in tables {
        let sel = scope.selection(table, holds, &[]);
        let rules = sel.kept_rules();
        let st = sel.count(with_oldest && !indexed);
        let row = with_retry(|| pg.fetch_one(&st)).await?;
        let get =
            |i: usize| -> Result<u64, sqlx::Error> { Ok(row.try_get::<i64, _>(i)?.max(0) as u64) };
        let (due, held, kept) = (get(0)?, get(1)?, get(3)?);
        let mut oldest: Option<DateTime<Utc>> = row.try_get(2)?;
        for (i, r) in rules.iter().enumerate() {
            *total.by_rule.entry(r.clone()).or_default() += get(4 + i)?;
        }
        if with_oldest && indexed && due > held + kept {
            oldest = with_retry(|| async { pg.fetch_one(&sel.oldest()).await?.try_get(0) }).await?;
        }
        total.due += due;
        total.held += held;
        total.kept += kept;
        total.oldest = min_opt(total.oldest, oldest);
    }
    Ok(total)
}

pub(super) fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// For an erasure under a legal floor: how many of the subject's records are kept
/// because they are inside the rule's own floor, and the date the first of them becomes
/// erasable. (Records kept by other rules' floors are in `kept_by_other_rules`.)
pub(super) async fn report_kept_within_floor(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    scope: &Scope<'_>,
    holds: &BatchHolds,
) {
    if rr.erase.is_none() {
        return;
    }
    let Some(floor) = rr.engine.config.category_of(rr.rule).min_retain else {
        return;
    };
    let Some(floor_cutoff) = floor.before(scope.now) else {
        return;
    };
    let (mut kept, mut first) = (0u64, None);
    for table in scope.p.info.work_tables(&scope.t.table) {
        let mut inside = scope.selection(&table, holds, &[]);
        inside.cutoff = None;
        inside.not_before = Some(floor_cutoff);
        inside.keeps = &[];
        if let Ok(row) = pg.fetch_one(&inside.count(true)).await {
            kept += row.try_get::<i64, _>(0).unwrap_or(0).max(0) as u64;
            first = min_opt(first, row.try_get(2).ok().flatten());
        }
    }
    if kept > 0 {
        rr.report
            .details
            .insert("kept_within_floor".into(), kept.into());
        if let Some(f) = first.and_then(|f| floor.after(f)) {
            rr.report
                .details
                .insert("erasable_from".into(), f.to_rfc3339().into());
            rr.report.details.insert(
                "note".into(),
                format!(
                    "{kept} record(s) are kept under the legal floor of category `{}` ({floor}); the first becomes erasable on {}",
                    rr.rule.category,
                    f.format("%Y-%m-%d")
                )
                .into(),
            );
        }
    }
}

pub(super) async fn total_rows(pg: &PgStore, table: &TableName) -> Result<u64, sqlx::Error> {
    pg.fetch_count(&Statement {
        sql: pg_sql::count_rows(table),
        params: Default::default(),
    })
    .await
}
