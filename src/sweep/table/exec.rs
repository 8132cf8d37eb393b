//! One batch statement: the walk it takes, retries, splitting a batch that fails on a
//! row, and error references the trail may keep.

use super::*;

/// Attempts per batch before the rule gives up (connection loss, lock timeout).
pub(super) const BATCH_ATTEMPTS: u32 = 4;

/// Runs one batch; when it fails on a row (a foreign key, a trigger, a CHECK, a value
/// the strategy cannot write), splits it until every other row is done and the rows
/// that cannot be changed are known. `counts`: the statement returns a `count(*)`.
pub(crate) async fn run_split(
    pg: &PgStore,
    selection: &Selection<'_>,
    batch: &Batch,
    statement: &impl Fn(&Batch) -> Statement,
    counts: bool,
    lock_wait: Duration,
) -> Result<BatchDone, sqlx::Error> {
    let first = with_retry(|| run_batch(pg, batch, statement, counts, lock_wait)).await;
    let err = match first {
        Ok(n) => {
            return Ok(BatchDone {
                changed: n,
                ..Default::default()
            })
        }
        Err(e) if row_error(&e) => e,
        Err(e) => return Err(e),
    };
    debug!(error = %error_ref(&err), "a row of the batch cannot be changed: splitting the batch");
    // The candidates without the "already anonymised" test, which may itself be what
    // raises (a strategy's expression on the bad value); each part re-applies it.
    let mut candidates = selection.clone();
    candidates.anonymise = &[];
    let rows_st = candidates.batch_rows(batch);
    let rows: Vec<String> = with_retry(|| pg.fetch_all(&rows_st))
        .await?
        .iter()
        .filter_map(|r| r.try_get(0).ok())
        .collect();
    let mut done = BatchDone::default();
    let mut parts = vec![rows];
    while let Some(part) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        let rows = Batch::Rows(part);
        match with_retry(|| run_batch(pg, &rows, statement, counts, lock_wait)).await {
            Ok(n) => done.changed += n,
            Err(e) if row_error(&e) => {
                let Batch::Rows(mut part) = rows else {
                    unreachable!("built as rows above")
                };
                if part.len() == 1 {
                    done.first_error.get_or_insert_with(|| error_ref(&e));
                    done.bad.append(&mut part);
                } else {
                    let back = part.split_off(part.len() / 2);
                    parts.push(back);
                    parts.push(part);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// An error caused by the data of a row rather than by the server or the statement:
/// data exceptions, integrity constraints, triggers and routines that raise.
pub(super) fn row_error(e: &sqlx::Error) -> bool {
    let Some(code) = e.as_database_error().and_then(|d| d.code()) else {
        return false;
    };
    ["22", "23", "27", "09", "P0", "2F", "38", "39"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// A database error as the trail may keep it: SQLSTATE, constraint, table, column;
/// never the message, which can quote a row's values.
pub(crate) fn error_ref(e: &sqlx::Error) -> String {
    let Some(d) = e.as_database_error() else {
        return db_message(e);
    };
    let mut out = format!("SQLSTATE {}", d.code().as_deref().unwrap_or("?"));
    if let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        out.push_str(&format!(" ({})", pg_condition(pg.code())));
        if let Some(c) = pg.constraint() {
            out.push_str(&format!(", constraint `{c}`"));
        }
        if let Some(t) = pg.table() {
            match pg.schema() {
                Some(s) => out.push_str(&format!(", table {s}.{t}")),
                None => out.push_str(&format!(", table {t}")),
            }
        }
        if let Some(c) = pg.column() {
            out.push_str(&format!(", column {c}"));
        }
    }
    out
}

/// A short name for the SQLSTATEs a row can raise.
pub(super) fn pg_condition(code: &str) -> &'static str {
    match code {
        "23503" => "foreign key violation",
        "23505" => "unique violation",
        "23514" => "check violation",
        "23502" => "not null violation",
        "23001" => "restrict violation",
        "P0001" => "raised by a trigger or function",
        c if c.starts_with("22") => "data exception",
        c if c.starts_with("23") => "integrity constraint violation",
        _ => "error",
    }
}

/// How the batches on `table` find their rows (see [`decide::choose_walk`]). Any catalog
/// or planner error falls back to the index walk, which is always correct.
pub(super) async fn choose_walk(pg: &PgStore, selection: &Selection<'_>) -> Walk {
    let shape = heap_shape(pg, selection.table).await;
    let plan = pg
        .fetch_one(&selection.explain_due())
        .await
        .and_then(|row| row.try_get::<serde_json::Value, _>(0));
    match (shape, plan) {
        (Ok((pages, reltuples, relpages, version)), Ok(plan)) => {
            decide::choose_walk(&plan, version, pages, reltuples, relpages)
        }
        (Err(e), _) | (_, Err(e)) => {
            debug!(error = %db_message(&e), "cannot read the table's shape or plan: batches follow the index");
            Walk::Index
        }
    }
}

/// `(pages now, reltuples, relpages, server_version_num)` of `table`.
pub(super) async fn heap_shape(
    pg: &PgStore,
    table: &TableName,
) -> Result<(u64, f64, i64, i32), sqlx::Error> {
    let row = pg.fetch_one(&pg_sql::heap_shape(table)).await?;
    Ok((
        row.try_get::<i64, _>(0)?.max(0) as u64,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
    ))
}

/// Runs one batch. A page batch first runs as one plain statement, the cheapest form,
/// waiting at most `lock_wait` for a row the application has locked; if it has to wait
/// longer, the same pages are done again skipping locked rows, so the sweep never holds
/// up the application for more than that. `counts`: the statement returns a `count(*)`.
pub(super) async fn run_batch(
    pg: &PgStore,
    batch: &Batch,
    statement: &impl Fn(&Batch) -> Statement,
    counts: bool,
    lock_wait: Duration,
) -> Result<u64, sqlx::Error> {
    match batch {
        Batch::First(_) | Batch::Rows(_) if counts => pg.fetch_count(&statement(batch)).await,
        Batch::First(_) | Batch::Rows(_) => pg.execute(&statement(batch)).await,
        Batch::Pages { from, to, .. } => {
            match pg.execute_batch(&statement(batch), lock_wait).await {
                Err(e) if lock_not_available(&e) => {
                    debug!(from, to, "rows in these pages are locked: skipping them");
                    pg.execute(&statement(&Batch::Pages {
                        from: *from,
                        to: *to,
                        skip_locked: true,
                    }))
                    .await
                }
                r => r,
            }
        }
    }
}

pub(super) fn lock_not_available(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03"))
}

/// Whether a database error is worth retrying: lost connections, lock and statement
/// timeouts, serialization failures, a server shutting down.
pub(crate) fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            Some(
                "40001"
                    | "40P01"
                    | "55P03"
                    | "57014"
                    | "57P01"
                    | "57P02"
                    | "57P03"
                    | "08000"
                    | "08003"
                    | "08006"
            )
        ),
        _ => false,
    }
}

/// Runs `f` up to [`BATCH_ATTEMPTS`] times with exponential backoff on retryable errors.
pub(crate) async fn with_retry<T, F, Fut>(mut f: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < BATCH_ATTEMPTS && retryable(&e) => {
                warn!(attempt, error = %db_message(&e), "retrying after a transient database error");
                tokio::time::sleep(delay).await;
                delay *= 3;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
