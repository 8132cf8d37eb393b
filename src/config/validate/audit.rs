//! `[audit]`.

use std::collections::BTreeMap;

use super::super::raw::*;
use super::super::*;
use super::{is_pg, is_s3};

pub(super) fn audit(
    loc: &Locator<'_>,
    raw: RawAudit,
    stores: &BTreeMap<String, StoreConfig>,
) -> Result<Audit, ConfigError> {
    let root = FieldPath::default();
    let err = |p: &FieldPath, m: String| loc.at(p, m);
    let ap = root.key("audit");
    if !is_pg(stores, &raw.store) {
        return Err(err(
            &ap.key("store"),
            unknown_store(&raw.store, "postgres", stores),
        ));
    }
    if let Some(rs) = &raw.report_store {
        if !is_s3(stores, rs) {
            return Err(err(
                &ap.key("report_store"),
                unknown_store(rs, "s3", stores),
            ));
        }
    }
    let audit = Audit {
        store: raw.store,
        report_dir: raw.report_dir.map(PathBuf::from),
        report_store: raw.report_store,
        report_prefix: raw
            .report_prefix
            .unwrap_or_else(|| "retention-reports/".into()),
        samples: raw.samples,
    };

    Ok(audit)
}
