//! Finishing a detached leaf: counted, then dropped, kept or archived, and its record
//! removed; and the leaves an earlier run recorded and did not finish.

use super::*;

/// Records the detached `leaf`'s row count, then drops, keeps or archives it. Without a
/// count it stays detached: dropping it would leave the trail without its row count.
pub(super) async fn finish(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    parent: &TableName,
    leaf: TableName,
    counted: tokio::task::JoinHandle<Result<u64, sqlx::Error>>,
    mode: &PartitionMode,
    gone: &mut Vec<TableName>,
) {
    let rows = match counted.await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            partial(rr);
            rr.error(format!(
                "cannot count detached partition {leaf}; it stays detached: {}",
                db_message(&e)
            ));
            return;
        }
        Err(e) => {
            partial(rr);
            rr.error(format!(
                "cannot count detached partition {leaf}; it stays detached: {e}"
            ));
            return;
        }
    };
    let done = match mode {
        PartitionMode::Drop => pg.execute_script(&sql::drop(&leaf)).await,
        PartitionMode::Detach => Ok(()),
        PartitionMode::Archive(schema) => pg.execute_script(&sql::archive(&leaf, schema)).await,
    };
    match done {
        Ok(_) => {
            // Only a dropped leaf's rows are deleted; detached and archived rows still
            // exist, outside the table, and are reported as such.
            let key = match mode {
                PartitionMode::Drop => {
                    rr.report.deleted += rows;
                    crate::metrics::record_batch(&rr.rule.name, "delete", rows);
                    None
                }
                PartitionMode::Detach => Some("rows_detached"),
                PartitionMode::Archive(_) => Some("rows_archived"),
            };
            if let Some(key) = key {
                let before = rr
                    .report
                    .details
                    .get(key)
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                rr.report.details.insert(key.into(), (before + rows).into());
            }
            done_recording(pg, parent, &leaf).await;
            gone.push(leaf);
        }
        Err(e) => {
            partial(rr);
            rr.error(format!(
                "partition {leaf} was detached but not removed: {}",
                db_message(&e)
            ))
        }
    }
}
/// Removes the record of a leaf that is finished.
pub(super) async fn done_recording(pg: &PgStore, parent: &TableName, leaf: &TableName) {
    let r = pg
        .execute(&st(
            sql::DETACHING_DONE,
            vec![
                Param::Text(parent.quoted()),
                Param::Text(leaf.schema.as_str().to_owned()),
                Param::Text(leaf.name.as_str().to_owned()),
            ],
        ))
        .await;
    if let Err(e) = r {
        tracing::warn!(leaf = %leaf, error = %db_message(&e), "cannot remove the record of a finished partition; the next run removes it");
    }
}
/// Finishes the leaves an earlier run recorded and did not finish (a crash between
/// detach and drop): a leaf still being detached is finalised, a detached one counted
/// and dropped, kept or archived as the rule says; a leaf still attached, or gone, only
/// loses its record.
pub(super) async fn finish_left_over(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    parent: &TableName,
    mode: &PartitionMode,
    gone: &mut Vec<TableName>,
) {
    let exists: bool = pg
        .fetch_one(&st(sql::DETACHING_EXISTS, Vec::new()))
        .await
        .and_then(|r| r.try_get(0))
        .unwrap_or(false);
    if !exists {
        return;
    }
    let left = pg
        .fetch_all(&st(sql::DETACHING_LEFT, vec![Param::Text(parent.quoted())]))
        .await
        .and_then(|rows| {
            rows.iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>((
                        r.try_get::<String, _>(0)?,
                        r.try_get::<String, _>(1)?,
                        r.try_get::<bool, _>(2)?,
                        r.try_get::<bool, _>(3)?,
                        r.try_get::<bool, _>(4)?,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()
        });
    let rows = match left {
        Ok(r) => r,
        Err(e) => {
            partial(rr);
            rr.error(format!(
                "cannot read the partitions an earlier run was detaching: {}",
                db_message(&e)
            ));
            return;
        }
    };
    let mut completed = Vec::new();
    for (schema, name, exists, attached, detach_pending) in rows {
        let leaf = TableName {
            schema: Ident::from_catalog(schema),
            name: Ident::from_catalog(name),
        };
        if attached && detach_pending {
            if let Err(e) = pg.execute_script(&sql::finalize(parent, &leaf)).await {
                partial(rr);
                rr.error(format!(
                    "cannot finish detaching partition {leaf}: {}",
                    db_message(&e)
                ));
                continue;
            }
        } else if attached || !exists {
            // Never detached (this run decides again), or already removed.
            done_recording(pg, parent, &leaf).await;
            continue;
        }
        let counting = count_in_background(pg, &leaf);
        completed.push(leaf.to_string());
        finish(rr, pg, parent, leaf, counting, mode, gone).await;
    }
    if !completed.is_empty() {
        rr.report
            .details
            .insert("partitions_completed".into(), completed.into());
    }
}
/// Counts a detached leaf's rows on another connection while the next leaf is detached.
pub(super) fn count_in_background(
    pg: &PgStore,
    leaf: &TableName,
) -> tokio::task::JoinHandle<Result<u64, sqlx::Error>> {
    let pg = pg.clone();
    let count = st(&crate::store::pg_sql::count_rows(leaf), Vec::new());
    tokio::spawn(async move { pg.fetch_count(&count).await })
}
