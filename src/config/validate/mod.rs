//! `RawConfig` (the file as serde reads it) → `Config` (typed, cross-checked), one TOML
//! section per module. Every error is positioned at its field.

mod age;
mod audit;
mod categories;
mod daemon;
mod events;
mod rules;
mod stores;

use std::collections::BTreeMap;
use std::path::Path;

use super::raw::RawConfig;
use super::{Config, ConfigError, FieldPath, Locator, StoreConfig};

pub(super) fn validate(
    loc: &Locator<'_>,
    raw: RawConfig,
    path: &Path,
    sha256: String,
    text: &str,
) -> Result<Config, ConfigError> {
    let daemon = daemon::daemon(loc, raw.daemon)?;
    let http = daemon::http(loc, raw.http)?;
    let stores = stores::stores(loc, raw.stores)?;
    let audit = audit::audit(loc, raw.audit, &stores)?;
    let categories = categories::categories(loc, raw.categories)?;
    let events = events::events(loc, raw.events, &stores)?;
    let rules = rules::rules(loc, raw.rules, &stores, &categories, &events)?;
    let _ = FieldPath::default();
    Ok(Config {
        path: path.to_owned(),
        sha256,
        text: text.to_owned(),
        daemon,
        http,
        hmac_key_env: raw
            .anonymise
            .hmac_key_env
            .unwrap_or_else(|| "RETENTIOND_HMAC_KEY".into()),
        audit,
        stores,
        categories,
        events,
        rules,
    })
}

fn is_pg(stores: &BTreeMap<String, StoreConfig>, s: &str) -> bool {
    matches!(stores.get(s), Some(StoreConfig::Postgres(_)))
}

fn is_s3(stores: &BTreeMap<String, StoreConfig>, s: &str) -> bool {
    matches!(stores.get(s), Some(StoreConfig::S3(_)))
}
