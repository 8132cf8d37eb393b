//! A PostgreSQL store: connection pool, catalog reads and statement execution.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{PgPool, Postgres, Row};
use tracing::instrument;

use super::pg_sql::{Param, Statement};
use super::StoreError;
use crate::config::{Ident, PostgresStore, TableName};

/// How long a batch waits for a lock before giving up (it should never need to: rows
/// locked by the application are skipped).
const LOCK_TIMEOUT: &str = "5s";

/// A connected Postgres store.
#[derive(Clone, Debug)]
pub struct PgStore {
    /// Store name from the config.
    pub name: String,
    /// The pool.
    pub(crate) pool: PgPool,
}

/// Reads the URL of a Postgres store from its env var or file. Never logged.
pub fn store_url(name: &str, cfg: &PostgresStore) -> Result<String, StoreError> {
    if let Some(var) = &cfg.url_env {
        return std::env::var(var).map_err(|_| StoreError::Config {
            store: name.to_owned(),
            message: format!("environment variable {var} (url_env) is not set"),
        });
    }
    if let Some(path) = &cfg.url_file {
        return std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| StoreError::Config {
                store: name.to_owned(),
                message: format!("cannot read url_file {}: {e}", path.display()),
            });
    }
    Err(StoreError::Config {
        store: name.to_owned(),
        message: "no url_env or url_file".into(),
    })
}

/// Connection options for a store URL, with retentiond's session settings.
pub fn connect_options(name: &str, url: &str) -> Result<PgConnectOptions, StoreError> {
    // sqlx's parse error can echo the URL, password included: never pass it on.
    let opts = PgConnectOptions::from_str(url).map_err(|_| StoreError::Config {
        store: name.to_owned(),
        message: "the database URL does not parse (expected postgres://user@host:port/db)".into(),
    })?;
    Ok(opts
        .application_name("retentiond")
        // Filters and `fixed:` literals are written for standard strings ('\' is a
        // backslash), as the filter parser reads them: never let a server default differ.
        .options([
            ("lock_timeout", LOCK_TIMEOUT),
            ("TimeZone", "UTC"),
            ("standard_conforming_strings", "on"),
        ]))
}

/// Whether an error means the server is unavailable (down, restarting, unreachable)
/// rather than that the request was wrong: worth retrying later.
pub fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

impl PgStore {
    /// A pool that connects on first use: a daemon starts, and runs its other rules,
    /// while this store is down.
    pub fn connect_lazy(name: &str, opts: PgConnectOptions, max_connections: u32) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(opts);
        Self {
            name: name.to_owned(),
            pool,
        }
    }

    /// Connects (and checks the connection) with at most `max_connections`.
    pub async fn connect(
        name: &str,
        opts: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::connect(name, &e))?;
        Ok(Self {
            name: name.to_owned(),
            pool,
        })
    }

    /// Whether the server answers, and its clock when it does.
    pub async fn probe(&self) -> Option<DateTime<Utc>> {
        self.now().await.ok()
    }

    /// The database clock: every Postgres cutoff is computed from it.
    pub async fn now(&self) -> Result<DateTime<Utc>, sqlx::Error> {
        sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await
    }

    /// What the catalog says about `table`, or `None` when it does not exist.
    #[instrument(skip_all, fields(store = %self.name, table = %table))]
    pub async fn describe(&self, table: &TableName) -> Result<Option<TableInfo>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT c.oid::int8, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
        )
        .bind(table.schema.as_str())
        .bind(table.name.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let oid: i64 = row.get(0);
        let relkind: String = row.get(1);
        let columns = sqlx::query(
            "SELECT attname::text, format_type(atttypid, atttypmod), NOT attnotnull, attnum::int4 FROM pg_attribute \
             WHERE attrelid = $1::int8::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        )
        .bind(oid)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| {
            (
                r.get::<String, _>(0),
                ColumnInfo {
                    type_name: r.get(1),
                    nullable: r.get(2),
                    attnum: r.get(3),
                },
            )
        })
        .collect();
        let primary_key = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1::int8::oid AND i.indisprimary ORDER BY k.ord",
        )
        .bind(oid)
        .fetch_all(&self.pool)
        .await?;
        let leading_index_columns: Vec<i32> = sqlx::query_scalar(
            "SELECT (i.indkey::int2[])[0]::int4 FROM pg_index i WHERE i.indrelid = $1::int8::oid AND i.indisvalid",
        )
        .bind(oid)
        .fetch_all(&self.pool)
        .await?;
        let leaves = if relkind == "p" {
            sqlx::query(
                "SELECT n.nspname::text, c.relname::text FROM pg_partition_tree($1::int8::regclass) t \
                 JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE t.isleaf ORDER BY c.relname",
            )
            .bind(oid)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| TableName {
                // Names from the catalog are real names, whatever characters they use;
                // they are quoted like every identifier.
                schema: Ident::from_catalog(r.get::<String, _>(0)),
                name: Ident::from_catalog(r.get::<String, _>(1)),
            })
            .collect()
        } else {
            Vec::new()
        };
        Ok(Some(TableInfo {
            oid,
            relkind,
            columns,
            primary_key,
            leading_index_columns,
            leaves,
        }))
    }

    /// Runs a statement and returns the rows it affected.
    pub async fn execute(&self, st: &Statement) -> Result<u64, sqlx::Error> {
        Ok(bind(sqlx::query(&st.sql), &st.params.0)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Runs `st`, a statement that returns one `count(*)`, and returns that count.
    pub async fn fetch_count(&self, st: &Statement) -> Result<u64, sqlx::Error> {
        let n: i64 = sqlx::Row::try_get(&self.fetch_one(st).await?, 0)?;
        Ok(n.max(0) as u64)
    }

    /// Runs SQL text without parameters (DDL from `pg_sql`, possibly several statements).
    pub async fn execute_script(&self, sql: &str) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(sql).execute(&self.pool).await.map(|_| ())
    }

    /// Runs one batch statement in its own transaction, waiting at most `lock_wait` for
    /// a lock (a row the application holds), and returns the rows it affected.
    ///
    /// The commit does not wait for its WAL to reach disk (`synchronous_commit = off`):
    /// a batch never stalls on the flush of its own WAL. Call [`PgStore::flush_wal`]
    /// before recording what the batches did, so a crash cannot undo a recorded change.
    pub async fn execute_batch(
        &self,
        st: &Statement,
        lock_wait: Duration,
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "SELECT set_config('lock_timeout', $1, true), set_config('synchronous_commit', 'off', true)",
        )
        .bind(format!("{}ms", lock_wait.as_millis().max(1)))
        .execute(&mut *tx)
        .await?;
        let n = match bind(sqlx::query(&st.sql), &st.params.0)
            .execute(&mut *tx)
            .await
        {
            Ok(r) => r.rows_affected(),
            Err(e) => {
                // Roll back now, not when the connection is next used: until then the
                // rows this statement had already locked stay locked, and the redo
                // with SKIP LOCKED on another connection would skip them.
                let _ = tx.rollback().await;
                return Err(e);
            }
        };
        tx.commit().await?;
        Ok(n)
    }

    /// A session held across asynchronously committed batches, to tell afterwards
    /// whether the server lost them: a restart, or a crash of any backend (after which
    /// the postmaster resets shared memory, WAL buffers included), ends every session.
    ///
    /// Its own connection, outside the pool: held for a whole page walk, it must not take
    /// a connection the batches, the holds or the probes need.
    pub async fn witness(&self) -> Result<Witness, sqlx::Error> {
        let options = self.pool.connect_options();
        let mut conn = sqlx::Connection::connect_with(&*options).await?;
        let started = sqlx::query_scalar("SELECT pg_postmaster_start_time()")
            .fetch_one(&mut conn)
            .await?;
        Ok(Witness { conn, started })
    }

    /// Makes every transaction committed so far durable: a transaction with an id,
    /// committed synchronously, flushes the WAL up to its commit record, and the WAL of
    /// every earlier commit lies before it. Returns the server's start time.
    pub async fn flush_wal(&self) -> Result<DateTime<Utc>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        flush_on(&mut conn).await
    }

    /// Runs a query and returns its rows.
    pub async fn fetch_all(
        &self,
        st: &Statement,
    ) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
        bind(sqlx::query(&st.sql), &st.params.0)
            .fetch_all(&self.pool)
            .await
    }

    /// Streams the first (text) column of every row of `st` to `each`, in order, without
    /// holding more than a row in memory; returns the number of rows.
    pub async fn for_each_text(
        &self,
        st: &Statement,
        mut each: impl FnMut(String) -> std::io::Result<()>,
    ) -> Result<u64, sqlx::Error> {
        use futures::TryStreamExt;
        let mut rows = bind(sqlx::query(&st.sql), &st.params.0).fetch(&self.pool);
        let mut n = 0;
        while let Some(row) = rows.try_next().await? {
            each(row.try_get::<String, _>(0)?).map_err(sqlx::Error::Io)?;
            n += 1;
        }
        Ok(n)
    }

    /// Runs a query returning one row.
    pub async fn fetch_one(&self, st: &Statement) -> Result<sqlx::postgres::PgRow, sqlx::Error> {
        bind(sqlx::query(&st.sql), &st.params.0)
            .fetch_one(&self.pool)
            .await
    }
}

/// Binds `params` in order.
pub fn bind<'q>(
    mut q: Query<'q, Postgres, PgArguments>,
    params: &'q [Param],
) -> Query<'q, Postgres, PgArguments> {
    for p in params {
        q = match p {
            Param::Timestamptz(v) => q.bind(*v),
            Param::Timestamp(v) => q.bind(*v),
            Param::Date(v) => q.bind(*v),
            Param::BigInt(v) => q.bind(*v),
            Param::Text(v) => q.bind(v.as_str()),
            Param::TextArray(v) => q.bind(v.as_slice()),
            Param::BigIntArray(v) => q.bind(v.as_slice()),
            Param::Bytea(v) => q.bind(v.as_slice()),
        };
    }
    q
}

/// One column of a table.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    /// `format_type()` of the column.
    pub type_name: String,
    /// Accepts NULL.
    pub nullable: bool,
    /// Attribute number.
    pub attnum: i32,
}

/// What the catalog says about a table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// pg_class oid.
    pub oid: i64,
    /// `r` table, `p` partitioned table, `v` view, ….
    pub relkind: String,
    /// Columns by name.
    pub columns: BTreeMap<String, ColumnInfo>,
    /// Primary key columns, in key order (empty when there is none).
    pub primary_key: Vec<String>,
    /// attnum of the first column of every valid index.
    pub leading_index_columns: Vec<i32>,
    /// Leaf partitions, for a partitioned table.
    pub leaves: Vec<TableName>,
}

impl TableInfo {
    /// Whether some index starts with `column`.
    pub fn has_index_on(&self, column: &str) -> bool {
        self.columns
            .get(column)
            .is_some_and(|c| self.leading_index_columns.contains(&c.attnum))
    }

    /// The tables a sweep works on: the leaves of a partitioned table, else itself.
    pub fn work_tables(&self, table: &TableName) -> Vec<TableName> {
        if self.relkind == "p" {
            self.leaves.clone()
        } else {
            vec![table.clone()]
        }
    }
}

/// A session that saw the server before a run of asynchronous commits: see
/// [`PgStore::witness`].
pub struct Witness {
    conn: sqlx::PgConnection,
    started: DateTime<Utc>,
}

impl Witness {
    /// Flushes the WAL on the witness session. `Ok(true)`: the session and the server
    /// lived through every commit since the witness was taken, and they are durable now;
    /// `Ok(false)` or an error: they may have been lost.
    pub async fn confirm(mut self) -> Result<bool, sqlx::Error> {
        let started = flush_on(&mut self.conn).await?;
        let _ = sqlx::Connection::close(self.conn).await;
        Ok(started == self.started)
    }
}

/// One synchronous commit that flushes the WAL, returning the server's start time.
/// PostgreSQL waits for the flush at commit only when the transaction itself wrote WAL
/// (an id alone writes none): a transactional logical message is the smallest such
/// write, needs no table and no privilege, and works at every `wal_level`.
async fn flush_on(conn: &mut sqlx::PgConnection) -> Result<DateTime<Utc>, sqlx::Error> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    let (_, _, started): (String, String, DateTime<Utc>) = sqlx::query_as(
        "SELECT set_config('synchronous_commit', 'on', true), pg_logical_emit_message(true, 'retentiond', '')::text, pg_postmaster_start_time()",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(started)
}
