//! `[stores.NAME]`.

use std::collections::BTreeMap;

use super::super::raw::*;
use super::super::*;

pub(super) fn stores(
    loc: &Locator<'_>,
    raw: BTreeMap<String, RawStore>,
) -> Result<BTreeMap<String, StoreConfig>, ConfigError> {
    let root = FieldPath::default();
    let err = |p: &FieldPath, m: String| loc.at(p, m);
    let mut stores = BTreeMap::new();
    for (name, store) in raw {
        let sp = root.key("stores").key(&name);
        check_name(&name).map_err(|m| err(&sp, m))?;
        let pg_keys = [
            ("url_env", store.url_env.is_some()),
            ("url_file", store.url_file.is_some()),
            ("max_connections", store.max_connections.is_some()),
        ];
        let s3_keys = [
            ("bucket", store.bucket.is_some()),
            ("region", store.region.is_some()),
            ("endpoint_env", store.endpoint_env.is_some()),
            ("force_path_style", store.force_path_style.is_some()),
            ("max_in_flight", store.max_in_flight.is_some()),
        ];
        let store = match store.kind {
            RawStoreKind::Postgres => {
                if let Some((k, _)) = s3_keys.iter().find(|(_, set)| *set) {
                    return Err(err(
                        &sp.key(k),
                        format!("`{k}` applies to s3 stores, not postgres stores"),
                    ));
                }
                if store.url_env.is_none() == store.url_file.is_none() {
                    return Err(err(&sp, "a postgres store needs exactly one of `url_env` or `url_file` (the URL itself never goes in the config)".into()));
                }
                StoreConfig::Postgres(PostgresStore {
                    url_env: store.url_env,
                    url_file: store.url_file.map(PathBuf::from),
                    max_connections: store.max_connections.unwrap_or(8).max(2),
                })
            }
            RawStoreKind::S3 => {
                if let Some((k, _)) = pg_keys.iter().find(|(_, set)| *set) {
                    return Err(err(
                        &sp.key(k),
                        format!("`{k}` applies to postgres stores, not s3 stores"),
                    ));
                }
                let bucket = store.bucket.unwrap_or_default();
                if bucket.is_empty() {
                    return Err(err(
                        &sp.key("bucket"),
                        "an s3 store needs a non-empty `bucket`".into(),
                    ));
                }
                StoreConfig::S3(S3Store {
                    bucket,
                    region: store.region.unwrap_or_else(|| "us-east-1".into()),
                    endpoint_env: store.endpoint_env,
                    force_path_style: store.force_path_style.unwrap_or(false),
                    max_in_flight: store.max_in_flight.unwrap_or(DEFAULT_S3_IN_FLIGHT).max(1),
                })
            }
        };
        stores.insert(name, store);
    }
    Ok(stores)
}
