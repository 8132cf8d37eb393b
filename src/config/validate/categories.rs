//! `[categories.NAME]`.

use std::collections::BTreeMap;

use super::super::raw::*;
use super::super::*;

pub(super) fn categories(
    loc: &Locator<'_>,
    raw: BTreeMap<String, RawCategory>,
) -> Result<BTreeMap<String, Category>, ConfigError> {
    let root = FieldPath::default();
    let err = |p: &FieldPath, m: String| loc.at(p, m);
    let mut categories = BTreeMap::new();
    for (name, c) in raw {
        let cp = root.key("categories").key(&name);
        check_name(&name).map_err(|m| err(&cp, m))?;
        if let (Some(min), Some(max)) = (c.min_retain, c.max_retain) {
            if !max.always_at_least(&min) {
                return Err(err(
                    &cp.key("max_retain"),
                    format!("max_retain {max} is shorter than min_retain {min}"),
                ));
            }
        }
        categories.insert(
            name.clone(),
            Category {
                name,
                description: c.description.unwrap_or_default(),
                legal_basis: c.legal_basis.unwrap_or_default(),
                min_retain: c.min_retain,
                max_retain: c.max_retain,
                locked: c.locked,
            },
        );
    }

    Ok(categories)
}
