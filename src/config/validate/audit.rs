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
    let signing_key = match (raw.signing_key_env, raw.signing_key_file) {
        (Some(_), Some(_)) => {
            return Err(err(
                &ap.key("signing_key_file"),
                "set either signing_key_env or signing_key_file, not both".into(),
            ))
        }
        (Some(env), None) => {
            // Never echo the value: it may be the key itself, pasted in by mistake.
            if looks_like_key(&env)
                || env.is_empty()
                || !env.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(err(
                    &ap.key("signing_key_env"),
                    "must name an environment variable (letters, digits, `_`); the value given is not one, or looks like key material: the key itself never goes in the config".into(),
                ));
            }
            Some(KeySource::Env(env))
        }
        (None, Some(file)) => {
            if looks_like_key(&file) {
                return Err(err(
                    &ap.key("signing_key_file"),
                    "must be the path of a key file; the value given looks like key material: the key itself never goes in the config".into(),
                ));
            }
            Some(KeySource::File(PathBuf::from(file)))
        }
        (None, None) => None,
    };
    let anchor = match raw.anchor_store {
        Some(store) => {
            if !is_s3(stores, &store) {
                return Err(err(
                    &ap.key("anchor_store"),
                    unknown_store(&store, "s3", stores),
                ));
            }
            let prefix = raw
                .anchor_prefix
                .unwrap_or_else(|| "retention-anchors/".into());
            if prefix.is_empty() {
                return Err(err(
                    &ap.key("anchor_prefix"),
                    "anchor_prefix must not be empty: anchors need a prefix of their own".into(),
                ));
            }
            Some(crate::config::Anchor {
                store,
                prefix,
                retain: raw.anchor_retain,
            })
        }
        None => {
            for (field, set) in [
                ("anchor_prefix", raw.anchor_prefix.is_some()),
                ("anchor_retain", raw.anchor_retain.is_some()),
            ] {
                if set {
                    return Err(err(&ap.key(field), format!("{field} needs anchor_store")));
                }
            }
            None
        }
    };
    let audit = Audit {
        store: raw.store,
        report_dir: raw.report_dir.map(PathBuf::from),
        report_store: raw.report_store,
        report_prefix: raw
            .report_prefix
            .unwrap_or_else(|| "retention-reports/".into()),
        samples: raw.samples,
        signing_key,
        anchor,
    };

    Ok(audit)
}

/// A PEM block, or 32 or more hex digits: a key, not a name or a path.
fn looks_like_key(v: &str) -> bool {
    let t = v.trim();
    t.contains("-----BEGIN") || (t.len() >= 32 && t.chars().all(|c| c.is_ascii_hexdigit()))
}
