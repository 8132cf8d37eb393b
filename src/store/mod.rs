//! Stores: named connections to PostgreSQL databases and S3-compatible buckets.
//!
//! The SQL of rule stores is built in `pg_sql` (from validated identifiers) and run by
//! `postgres`; the audit trail's own queries live in `audit`. `s3` is the only place
//! that talks to object storage.

pub mod pg_sql;
pub mod postgres;
pub mod s3;

use std::collections::BTreeMap;

use crate::config::{Config, StoreConfig};
pub use postgres::PgStore;
pub use s3::S3Store;

/// Errors reaching or using a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's settings (env var, file) are unusable.
    #[error("store `{store}`: {message}")]
    Config {
        /// Store name.
        store: String,
        /// What is wrong.
        message: String,
    },
    /// The store did not answer.
    #[error("store `{store}`: cannot connect: {message}")]
    Connect {
        /// Store name.
        store: String,
        /// Why (never containing credentials).
        message: String,
    },
}

impl StoreError {
    /// A connection error, described without the URL.
    pub fn connect(store: &str, err: &sqlx::Error) -> Self {
        let message = match err {
            sqlx::Error::Io(e) => format!("i/o error: {e}"),
            sqlx::Error::Tls(_) => "tls error".into(),
            sqlx::Error::Database(db) => db.message().to_owned(),
            sqlx::Error::PoolTimedOut => "timed out".into(),
            other => other.to_string(),
        };
        Self::Connect {
            store: store.to_owned(),
            message,
        }
    }
}

/// Every store a run needs, connected.
#[derive(Clone, Default)]
pub struct Stores {
    /// Postgres stores by name.
    pub pg: BTreeMap<String, PgStore>,
    /// S3 stores by name.
    pub s3: BTreeMap<String, S3Store>,
}

impl Stores {
    /// Connects the stores named in `names` (all when `None`).
    pub async fn connect(config: &Config, names: Option<&[String]>) -> Result<Self, StoreError> {
        Self::open(config, names, false).await
    }

    /// Like [`Stores::connect`], but Postgres pools connect on first use: a store that
    /// is down does not stop the others (the daemon; the preflight of each run tells).
    pub async fn connect_lazy(
        config: &Config,
        names: Option<&[String]>,
    ) -> Result<Self, StoreError> {
        Self::open(config, names, true).await
    }

    async fn open(
        config: &Config,
        names: Option<&[String]>,
        lazy: bool,
    ) -> Result<Self, StoreError> {
        let mut stores = Stores::default();
        for (name, store) in &config.stores {
            if names.is_some_and(|n| !n.contains(name)) {
                continue;
            }
            match store {
                StoreConfig::Postgres(pg) => {
                    let url = postgres::store_url(name, pg)?;
                    let opts = postgres::connect_options(name, &url)?;
                    let store = if lazy {
                        PgStore::connect_lazy(name, opts, pg.max_connections)
                    } else {
                        PgStore::connect(name, opts, pg.max_connections).await?
                    };
                    stores.pg.insert(name.clone(), store);
                }
                StoreConfig::S3(s3) => {
                    stores
                        .s3
                        .insert(name.clone(), S3Store::connect(name, s3).await);
                }
            }
        }
        Ok(stores)
    }

    /// Asks every store whether it answers, all at once: `(name, up, database clock)`.
    pub async fn probe(&self) -> Vec<StoreProbe> {
        let pg = self.pg.iter().map(|(name, pg)| async move {
            let clock = tokio::time::timeout(PROBE_TIMEOUT, pg.probe())
                .await
                .ok()
                .flatten();
            StoreProbe {
                name: name.clone(),
                up: clock.is_some(),
                clock,
            }
        });
        let s3 = self.s3.iter().map(|(name, s3)| async move {
            StoreProbe {
                name: name.clone(),
                up: tokio::time::timeout(PROBE_TIMEOUT, s3.reachable())
                    .await
                    .unwrap_or(false),
                clock: None,
            }
        });
        let (mut out, s3) =
            futures::future::join(futures::future::join_all(pg), futures::future::join_all(s3))
                .await;
        out.extend(s3);
        out
    }

    /// The Postgres store `name` (connected by `connect`).
    pub fn pg(&self, name: &str) -> &PgStore {
        self.pg
            .get(name)
            .unwrap_or_else(|| panic!("store `{name}` was not connected"))
    }

    /// The S3 store `name` (connected by `connect`).
    pub fn s3(&self, name: &str) -> &S3Store {
        self.s3
            .get(name)
            .unwrap_or_else(|| panic!("store `{name}` was not connected"))
    }
}

/// How long [`Stores::probe`] waits for a store.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// What [`Stores::probe`] found about one store.
#[derive(Debug, Clone)]
pub struct StoreProbe {
    /// Store name.
    pub name: String,
    /// It answered.
    pub up: bool,
    /// A Postgres store's `now()`, read when it answered.
    pub clock: Option<chrono::DateTime<chrono::Utc>>,
}
