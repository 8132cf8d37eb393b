//! From a config file to connected stores: the steps every command and the daemon take
//! before they preflight and run.

use std::path::Path;
use std::sync::Arc;

use crate::audit::anchor::Anchors;
use crate::audit::signing::Signer;
use crate::audit::{Audit, Evidence};
use crate::config::{Config, StoreConfig};
use crate::error::Error;
use crate::store::{postgres, Stores};
use crate::sweep::Engine;

/// How the rule stores connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// At once: a store that is down fails the command (exit 1).
    Eager,
    /// On first use: the daemon starts, and runs the other rules, while one is down.
    Lazy,
}

/// The one assembly of an [`Engine`]: the audit store and the stores `rules` need,
/// connected at the same time (a short command is mostly start-up).
pub async fn engine(
    config: Arc<Config>,
    rules: &[&crate::config::Rule],
    connect: Connect,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<Engine, Error> {
    let (audit, stores) = tokio::join!(
        connect_audit(&config),
        open_stores(&config, rules, connect == Connect::Lazy)
    );
    // The audit store's error first: without a trail nothing runs.
    let audit = audit?.with_evidence(evidence(&config).await?);
    Ok(Engine {
        stores: stores?,
        audit,
        config,
        shutdown,
        watch: None,
    })
}

/// Loads the config; a mistake is exit 2 before any store is touched.
pub fn load_config(path: &Path) -> Result<Arc<Config>, Error> {
    Config::load(path).map(Arc::new).map_err(Error::usage)
}

/// Connects to the audit store.
pub async fn connect_audit(config: &Config) -> Result<Audit, Error> {
    let name = &config.audit.store;
    let Some(StoreConfig::Postgres(pg)) = config.stores.get(name) else {
        return Err(Error::usage(format!(
            "audit store `{name}` is not a postgres store"
        )));
    };
    let url = postgres::store_url(name, pg).map_err(Error::usage)?;
    let opts = postgres::connect_options(name, &url).map_err(Error::usage)?;
    Audit::connect(opts)
        .await
        .map_err(|e| store_fail(crate::store::StoreError::connect(name, &e)))
}

/// What every seal signs with and anchors to: `[audit] signing_key_*` and
/// `anchor_store`. A key that cannot be read is a configuration mistake (exit 2).
pub async fn evidence(config: &Config) -> Result<Evidence, Error> {
    let signer = match &config.audit.signing_key {
        Some(source) => Some(Signer::load(source).map_err(Error::usage)?),
        None => None,
    };
    let anchors = anchors(config).await?;
    if let Some(a) = &anchors {
        crate::metrics::anchor_series(a.store_name());
    }
    Ok(Evidence { signer, anchors })
}

/// The anchor store of `[audit] anchor_store`, when set.
pub async fn anchors(config: &Config) -> Result<Option<Anchors>, Error> {
    let Some(a) = &config.audit.anchor else {
        return Ok(None);
    };
    let Some(StoreConfig::S3(s3)) = config.stores.get(&a.store) else {
        return Err(Error::usage(format!(
            "anchor store `{}` is not an s3 store",
            a.store
        )));
    };
    Ok(Some(Anchors::new(
        crate::store::s3::S3Store::connect(&a.store, s3).await,
        a.prefix.clone(),
        a.retain,
    )))
}

/// Refuses `config` when it weakens a category that a config recorded by an earlier
/// run locked (`[categories.NAME] locked = true`): exit 2, naming the change and the
/// run that locked it. The lock is read from the trail, not from the file.
pub async fn check_preservation_lock(audit: &Audit, config: &Config) -> Result<(), Error> {
    let refusals = audit
        .preservation_lock(&config.text)
        .await
        .map_err(|e| Error::unavailable(format!("failed to read the policy history: {e}")))?;
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "{}: refused by the preservation lock:\n  {}",
            config.path.display(),
            refusals.join("\n  ")
        )))
    }
}

/// Connects the stores `rules` need (and the report store).
pub async fn connect_stores(
    config: &Config,
    rules: &[&crate::config::Rule],
) -> Result<Stores, Error> {
    open_stores(config, rules, false).await
}

async fn open_stores(
    config: &Config,
    rules: &[&crate::config::Rule],
    lazy: bool,
) -> Result<Stores, Error> {
    let mut names: Vec<String> = rules.iter().map(|r| r.store.clone()).collect();
    for r in rules {
        if let crate::config::Target::Table(t) = &r.target {
            if let Some(o) = &t.objects {
                names.push(o.store.clone());
            }
        }
    }
    // Before an object is deleted, every table that can reference it is asked: the
    // stores of all table rules whose `objects` use an object store involved here.
    for r in &config.rules {
        if let crate::config::Target::Table(t) = &r.target {
            if t.objects.as_ref().is_some_and(|o| names.contains(&o.store)) {
                names.push(r.store.clone());
            }
        }
    }
    if let Some(rs) = &config.audit.report_store {
        names.push(rs.clone());
    }
    names.sort();
    names.dedup();
    let stores = if lazy {
        Stores::connect_lazy(config, Some(&names)).await
    } else {
        Stores::connect(config, Some(&names)).await
    };
    stores.map_err(store_fail)
}

/// A store that cannot be reached is an outage (exit 1: a supervisor should retry); a
/// store whose settings are unusable is a configuration mistake (exit 2).
pub fn store_fail(e: crate::store::StoreError) -> Error {
    match e {
        crate::store::StoreError::Config { .. } => Error::usage(e),
        crate::store::StoreError::Connect { .. } => Error::unavailable(e),
    }
}

/// Connects the audit store and applies its migrations (`migrate`).
pub async fn migrated_audit(config: &Config) -> Result<Audit, Error> {
    let audit = connect_audit(config).await?;
    migrate(&audit).await?;
    Ok(audit)
}

/// The migrated trail with its signing key and anchors: what commands that write the
/// trail without running rules (`hold`) need.
pub async fn sealing_audit(config: &Config) -> Result<Audit, Error> {
    Ok(migrated_audit(config)
        .await?
        .with_evidence(evidence(config).await?))
}

/// Applies the audit migrations and checks the preservation lock.
pub async fn migrate_and_check_lock(audit: &Audit, config: &Config) -> Result<(), Error> {
    migrate(audit).await?;
    check_preservation_lock(audit, config).await
}

/// Applies the audit migrations, then seals as `interrupted` every run a stopped process
/// left `running` (logged, one line each): before a command or the daemon runs rules.
/// The preservation lock is the caller's to check first (`cli::commands::prepare`,
/// `schedule::load`); `Audit::begin_run` checks it again.
pub async fn migrate_and_recover(audit: &Audit) -> Result<(), Error> {
    migrate(audit).await?;
    let recovered = audit
        .recover_interrupted()
        .await
        .map_err(|e| Error::unavailable(format!("failed to recover interrupted runs: {e}")))?;
    for run in recovered {
        tracing::warn!(run_id = %run, "an earlier run was left running by a stopped process; recorded as interrupted");
    }
    Ok(())
}

async fn migrate(audit: &Audit) -> Result<(), Error> {
    audit
        .migrate()
        .await
        .map_err(|e| Error::unavailable(format!("failed to apply audit migrations: {e}")))
}
