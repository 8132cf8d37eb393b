//! `[[rules]]`: the keys every rule has, then a table or a prefix target.

use std::collections::BTreeMap;

use super::super::raw::*;
use super::super::*;
use super::age::age;
use super::{is_pg, is_s3};

pub(super) fn rules(
    loc: &Locator<'_>,
    raw: Vec<RawRule>,
    stores: &BTreeMap<String, StoreConfig>,
    categories: &BTreeMap<String, Category>,
    events: &BTreeMap<String, Event>,
) -> Result<Vec<Rule>, ConfigError> {
    let root = FieldPath::default();
    let err = |p: &FieldPath, m: String| loc.at(p, m);
    let mut rules: Vec<Rule> = Vec::new();
    for (i, mut r) in raw.into_iter().enumerate() {
        let rp = root.key("rules").index(i);
        let f = |k: &str| rp.key(k);
        check_name(&r.name).map_err(|m| err(&f("name"), m))?;
        if rules.iter().any(|o| o.name == r.name) {
            return Err(err(&f("name"), format!("duplicate rule name `{}`", r.name)));
        }
        let Some(category) = categories.get(&r.category) else {
            let known: Vec<&str> = categories.keys().map(String::as_str).collect();
            return Err(err(
                &f("category"),
                format!(
                    "unknown category `{}`; defined: {}",
                    r.category,
                    known.join(", ")
                ),
            ));
        };
        check_retain(loc, &r, &rp, category)?;
        let schedule = r
            .schedule
            .as_deref()
            .map(Schedule::parse)
            .transpose()
            .map_err(|m| err(&f("schedule"), m))?;
        let max_delete = r
            .max_delete
            .take()
            .map(|m| parse_max_delete(m).map_err(|msg| err(&f("max_delete"), msg)))
            .transpose()?;

        let target = match (r.table.is_some(), r.prefix.is_some()) {
            (true, true) => {
                return Err(err(
                    &f("prefix"),
                    "a rule has either `table` (postgres) or `prefix` (s3), not both".into(),
                ))
            }
            (false, false) => {
                return Err(err(
                    &rp,
                    "a rule needs `table` (postgres store) or `prefix` (s3 store)".into(),
                ))
            }
            (true, false) => {
                let target = table_target(loc, &r, &rp, stores, events)?;
                if let (
                    Target::Table(TableTarget {
                        age: Age::Event(e), ..
                    }),
                    Some(min),
                ) = (&target, category.min_retain)
                {
                    return Err(err(
                        &f("after_event"),
                        format!(
                            "category `{}` has a legal floor (min_retain {min}), which counts from each record's own date; an `after_event` rule counts from event `{}` and cannot keep it. Put the rule in a category without min_retain, and keep the floor with an age_column rule on the same table: it wins over the event rule",
                            r.category, e.event
                        ),
                    ));
                }
                target
            }
            (false, true) => prefix_target(loc, &r, &rp, stores)?,
        };
        rules.push(Rule {
            name: r.name,
            category: r.category,
            store: r.store,
            retain: r.retain,
            action: match r.action {
                RawAction::Delete => Action::Delete,
                RawAction::Anonymise => Action::Anonymise,
            },
            schedule,
            max_delete,
            enabled: r.enabled.unwrap_or(true),
            target,
        });
    }

    Ok(rules)
}

/// `retain` is longer than zero, at least its category's floor and at most its ceiling,
/// whatever the calendar (`Period::always_at_least`).
fn check_retain(
    loc: &Locator<'_>,
    r: &RawRule,
    rp: &FieldPath,
    category: &Category,
) -> Result<(), ConfigError> {
    let err = |p: &FieldPath, m: String| loc.at(p, m);
    let f = |k: &str| rp.key(k);
    if r.retain == Period::default() {
        return Err(err(
            &f("retain"),
            "retain must be longer than zero: a retain of zero makes every record due at once"
                .into(),
        ));
    }
    if let Some(min) = category.min_retain {
        if !r.retain.always_at_least(&min) {
            return Err(err(
                &f("retain"),
                format!(
                    "retain {} is below the legal floor of category `{}` (min_retain {min})",
                    r.retain, r.category
                ),
            ));
        }
    }
    if let Some(max) = category.max_retain {
        if !max.always_at_least(&r.retain) {
            return Err(err(
                &f("retain"),
                format!(
                    "retain {} is above the ceiling of category `{}` (max_retain {max})",
                    r.retain, r.category
                ),
            ));
        }
    }
    Ok(())
}

fn table_target(
    loc: &Locator<'_>,
    r: &RawRule,
    rp: &FieldPath,
    stores: &BTreeMap<String, StoreConfig>,
    events: &BTreeMap<String, Event>,
) -> Result<Target, ConfigError> {
    let err = |p: &FieldPath, m: String| loc.at(p, m);
    let f = |k: &str| rp.key(k);
    if let Some((k, _)) = prefix_keys(r).iter().find(|(_, set)| *set) {
        return Err(err(
            &f(k),
            format!("`{k}` applies to prefix rules, not table rules"),
        ));
    }
    if !is_pg(stores, &r.store) {
        return Err(err(
            &f("store"),
            unknown_store(&r.store, "postgres", stores),
        ));
    }
    let table_text = r.table.as_deref().unwrap_or_default();
    let table = TableName::parse(table_text).map_err(|e| err(&f("table"), e.to_string()))?;
    let subject = match r.subject.clone() {
        None => None,
        Some(s) => {
            check_name(&s.kind).map_err(|m| err(&f("subject").key("kind"), m))?;
            let column = Ident::parse(&s.column)
                .map_err(|e| err(&f("subject").key("column"), e.to_string()))?;
            Some(Subject {
                kind: s.kind,
                column,
            })
        }
    };
    let age = age(loc, r, rp, subject.as_ref(), events)?;
    let age_format = match r.age_format {
        None | Some(RawAgeFormat::Timestamp) => AgeFormat::Native,
        Some(RawAgeFormat::EpochSeconds) => AgeFormat::EpochSeconds,
        Some(RawAgeFormat::EpochMillis) => AgeFormat::EpochMillis,
    };
    let age_timezone = match r.age_timezone.as_deref() {
        None => None,
        Some(_) if age_format != AgeFormat::Native => {
            return Err(err(
                &f("age_timezone"),
                "`age_timezone` applies to timestamp and date age columns; epoch values are instants already".into(),
            ))
        }
        Some(name) => {
            Some(parse_zone(name).map_err(|m| err(&f("age_timezone"), m))?)
        }
    };
    let filter = match r.filter.clone() {
        Some(s) => {
            check_filter(&s).map_err(|m| err(&f("filter"), m))?;
            Some(s)
        }
        None => None,
    };
    let anonymise = anonymise(loc, r, rp)?;
    let objects = objects(loc, r, rp, stores)?;
    let partitions = match r.partitions.as_deref() {
        None => None,
        Some("drop") => Some(PartitionMode::Drop),
        Some("detach") => Some(PartitionMode::Detach),
        Some(other) => match other.strip_prefix("archive:") {
            Some(schema) => Some(PartitionMode::Archive(Ident::parse(schema).map_err(|e| err(&f("partitions"), e.to_string()))?)),
            None => return Err(err(&f("partitions"), format!("unknown value `{other}`: expected \"drop\", \"detach\" or \"archive:<schema>\""))),
        },
    };
    if partitions.is_some() && matches!(age, Age::Event(_)) {
        return Err(err(
            &f("partitions"),
            "partitions cannot be dropped under an `after_event` rule: a partition holds rows of subjects whose events differ".into(),
        ));
    }
    if partitions.is_some() && objects.is_some() {
        return Err(err(
            &f("partitions"),
            "partitions cannot be dropped under a rule with linked objects (objects must go first)"
                .into(),
        ));
    }
    let vacuum_analyze = match r.vacuum.as_deref() {
        None | Some("none") => false,
        Some("analyze") => true,
        Some(other) => {
            return Err(err(
                &f("vacuum"),
                format!("unknown value `{other}`: expected \"analyze\" or \"none\""),
            ))
        }
    };
    Ok(Target::Table(TableTarget {
        table,
        age,
        age_format,
        age_timezone,
        filter,
        subject,
        anonymise,
        objects,
        partitions,
        vacuum_analyze,
    }))
}

fn prefix_target(
    loc: &Locator<'_>,
    r: &RawRule,
    rp: &FieldPath,
    stores: &BTreeMap<String, StoreConfig>,
) -> Result<Target, ConfigError> {
    let err = |p: &FieldPath, m: String| loc.at(p, m);
    let f = |k: &str| rp.key(k);
    if let Some((k, _)) = table_keys(r).iter().find(|(_, set)| *set) {
        return Err(err(
            &f(k),
            format!("`{k}` applies to table rules, not prefix rules"),
        ));
    }
    if !is_s3(stores, &r.store) {
        return Err(err(&f("store"), unknown_store(&r.store, "s3", stores)));
    }
    if r.action != RawAction::Delete {
        return Err(err(
            &f("action"),
            "prefix rules only support action = \"delete\"".into(),
        ));
    }
    let prefix = r.prefix.clone().unwrap_or_default();
    let exclude = r.exclude.clone().unwrap_or_default();
    for (j, e) in exclude.iter().enumerate() {
        if !e.starts_with(&prefix) {
            return Err(err(
                &f("exclude").index(j),
                format!("`{e}` is not under the rule's prefix `{prefix}`"),
            ));
        }
    }
    Ok(Target::Prefix(PrefixTarget {
        prefix,
        exclude,
        versions: match r.versions {
            None | Some(RawVersions::All) => Versions::All,
            Some(RawVersions::Current) => Versions::Current,
        },
        abort_multipart_after: r.abort_multipart_after,
        tags: r.tags.clone().unwrap_or_default(),
        bypass_governance_retention: r.bypass_governance_retention.unwrap_or(false),
    }))
}

/// The `table` rule keys set in `r`.
fn table_keys(r: &RawRule) -> Vec<(&'static str, bool)> {
    vec![
        ("table", r.table.is_some()),
        ("age_column", r.age_column.is_some()),
        ("after_event", r.after_event.is_some()),
        ("age_format", r.age_format.is_some()),
        ("age_timezone", r.age_timezone.is_some()),
        ("filter", r.filter.is_some()),
        ("subject", r.subject.is_some()),
        ("anonymise", r.anonymise.is_some()),
        ("objects", r.objects.is_some()),
        ("partitions", r.partitions.is_some()),
        ("vacuum", r.vacuum.is_some()),
    ]
}

/// The `prefix` rule keys set in `r`.
fn prefix_keys(r: &RawRule) -> Vec<(&'static str, bool)> {
    vec![
        ("prefix", r.prefix.is_some()),
        ("exclude", r.exclude.is_some()),
        ("versions", r.versions.is_some()),
        ("abort_multipart_after", r.abort_multipart_after.is_some()),
        ("tags", r.tags.is_some()),
        (
            "bypass_governance_retention",
            r.bypass_governance_retention.is_some(),
        ),
    ]
}

/// `anonymise = { column = "strategy" }`, and whether it fits the rule's action.
fn anonymise(
    loc: &Locator<'_>,
    r: &RawRule,
    rp: &FieldPath,
) -> Result<Vec<(Ident, Strategy)>, ConfigError> {
    let err = |p: &FieldPath, m: String| loc.at(p, m);
    let f = |k: &str| rp.key(k);
    let mut anonymise = Vec::new();
    for (col, strategy) in r.anonymise.clone().unwrap_or_default() {
        let ident =
            Ident::parse(&col).map_err(|e| err(&f("anonymise").key(&col), e.to_string()))?;
        anonymise.push((ident, strategy));
    }
    match r.action {
        RawAction::Anonymise if anonymise.is_empty() => {
            return Err(err(
                &f("anonymise"),
                "action `anonymise` needs `anonymise = { column = \"strategy\", … }`".into(),
            ))
        }
        RawAction::Delete if !anonymise.is_empty() => {
            return Err(err(
                &f("anonymise"),
                "`anonymise` columns are only used with action = \"anonymise\"".into(),
            ))
        }
        _ => {}
    }
    Ok(anonymise)
}

/// `objects = { store, key_columns }` of a table rule.
fn objects(
    loc: &Locator<'_>,
    r: &RawRule,
    rp: &FieldPath,
    stores: &BTreeMap<String, StoreConfig>,
) -> Result<Option<Objects>, ConfigError> {
    let err = |p: &FieldPath, m: String| loc.at(p, m);
    let f = |k: &str| rp.key(k);
    Ok(match r.objects.clone() {
        None => None,
        Some(o) => {
            let op = f("objects");
            if !is_s3(stores, &o.store) {
                return Err(err(&op.key("store"), unknown_store(&o.store, "s3", stores)));
            }
            if r.action != RawAction::Delete {
                return Err(err(
                    &op,
                    "linked objects are only removed by action = \"delete\"".into(),
                ));
            }
            if o.key_columns.is_empty() {
                return Err(err(
                    &op.key("key_columns"),
                    "needs at least one column".into(),
                ));
            }
            let mut key_columns = Vec::new();
            for (j, c) in o.key_columns.iter().enumerate() {
                key_columns.push(
                    Ident::parse(c)
                        .map_err(|e| err(&op.key("key_columns").index(j), e.to_string()))?,
                );
            }
            Some(Objects {
                store: o.store,
                key_columns,
            })
        }
    })
}
