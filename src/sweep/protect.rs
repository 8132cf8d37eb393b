//! The protection model, applied at the moment of removal.
//!
//! A record is removed or anonymised only when no rule whose selection covers it keeps
//! it (retention wins over removal). A rule covers a row when it is on the same store and
//! table and its `filter` is true for the row; it keeps the row while its category floor
//! has not passed for it, or while the row's subject or the rule's category is held.
//! Every rule counts, enabled or not: a floor is a legal obligation whether or not its
//! rule is scheduled.
//!
//! Holds are read per batch, under the shared holds lock (see [`crate::audit::holds`]),
//! so a hold placed while a rule runs protects from the next batch on.

use chrono::{DateTime, Utc};

use crate::audit::holds::HoldSet;
use crate::config::{Age, Config, Rule, Subject, TableTarget, Target};
use crate::store::pg_sql::{AgeKind, Keep, SubjectType};
use crate::store::postgres::TableInfo;

/// Another rule on the same table, resolved against the table's catalog.
#[derive(Debug, Clone)]
pub(crate) struct Cover<'a> {
    rule: &'a Rule,
    target: &'a TableTarget,
    age_kind: AgeKind,
    subject_type: SubjectType,
}

/// What protects the rows of one rule's table.
#[derive(Debug, Clone)]
pub(crate) struct Protection<'a> {
    config: &'a Config,
    /// The rule's own subject and how its column compares.
    own_subject: Option<(&'a Subject, SubjectType)>,
    /// The other rules on the same table.
    covers: Vec<Cover<'a>>,
}

/// The rules other than `rule` (enabled or not) on the same store and table.
pub(crate) fn covering_rules<'a>(
    config: &'a Config,
    rule: &Rule,
) -> Vec<(&'a Rule, &'a TableTarget)> {
    let Target::Table(own) = &rule.target else {
        return Vec::new();
    };
    config
        .rules
        .iter()
        .filter(|r| r.name != rule.name && r.store == rule.store)
        .filter_map(|r| match &r.target {
            Target::Table(t) if t.table == own.table => Some((r, t)),
            _ => None,
        })
        .collect()
}

/// How a subject column of `info` compares with ids.
pub(crate) fn subject_type(info: &TableInfo, subject: &Subject) -> SubjectType {
    info.columns
        .get(subject.column.as_str())
        .map(|c| SubjectType::of(&c.type_name))
        .unwrap_or_default()
}

impl<'a> Protection<'a> {
    /// Resolves the rules covering `rule`'s table. A covering rule whose floor or subject
    /// cannot be evaluated on this table is an error: removing rows it might keep would
    /// break its promise.
    pub(crate) fn new(
        config: &'a Config,
        rule: &'a Rule,
        t: &'a TableTarget,
        info: &TableInfo,
    ) -> Result<Self, String> {
        let mut covers = Vec::new();
        for (r, ct) in covering_rules(config, rule) {
            let floor = config.category_of(r).min_retain.is_some();
            // An event's time is a timestamptz (the preflight of its rule checks that).
            let age_kind = match &ct.age {
                Age::Event(_) => Ok(AgeKind::Timestamptz),
                Age::Column(col) => match info.columns.get(col.as_str()) {
                    Some(c) => AgeKind::resolve(&c.type_name, ct.age_format, ct.age_timezone),
                    None => Err(format!("column {col} does not exist")),
                },
            };
            let age_kind = match age_kind {
                Ok(k) => k,
                // Without a floor the age column is never read.
                Err(_) if !floor => AgeKind::Timestamptz,
                Err(e) => {
                    return Err(format!(
                        "rule `{}` also covers {} and keeps rows inside the floor of category `{}`, but its age column cannot be read: {e}",
                        r.name, t.table, r.category
                    ))
                }
            };
            let subject_type = match &ct.subject {
                Some(s) if !info.columns.contains_key(s.column.as_str()) => {
                    return Err(format!(
                        "rule `{}` also covers {} with subject column {}, which does not exist",
                        r.name, t.table, s.column
                    ))
                }
                Some(s) => subject_type(info, s),
                None => SubjectType::default(),
            };
            covers.push(Cover {
                rule: r,
                target: ct,
                age_kind,
                subject_type,
            });
        }
        Ok(Self {
            config,
            own_subject: t.subject.as_ref().map(|s| (s, subject_type(info, s))),
            covers,
        })
    }

    /// How the rule's own subject column compares with ids.
    pub(crate) fn own_subject_type(&self) -> SubjectType {
        self.own_subject.map(|(_, ty)| ty).unwrap_or_default()
    }

    /// The held ids of the rule's own subject kind, spelt as its column spells them.
    pub(crate) fn held_ids(&self, holds: &HoldSet) -> Vec<String> {
        match self.own_subject {
            Some((s, ty)) => ty.normalise_all(holds.subject_ids(&s.kind)),
            None => Vec::new(),
        }
    }

    /// What each covering rule keeps at `now` under `holds`.
    pub(crate) fn keeps(&self, now: DateTime<Utc>, holds: &HoldSet) -> Vec<Keep> {
        self.covers
            .iter()
            .map(|c| {
                let category = self.config.category_of(c.rule);
                let floor = category.min_retain.map(|f| f.before(now));
                Keep {
                    rule: c.rule.name.clone(),
                    filter: c.target.filter.clone(),
                    age: c.target.age.clone(),
                    age_kind: c.age_kind,
                    floor_from: floor.flatten(),
                    subject: c.target.subject.as_ref().map(|s| {
                        (
                            s.column.clone(),
                            c.subject_type,
                            c.subject_type.normalise_all(holds.subject_ids(&s.kind)),
                        )
                    }),
                    // A floor too long to compute keeps everything, like a category hold.
                    category_held: holds.category(&c.rule.category).is_some()
                        || matches!(floor, Some(None)),
                }
            })
            .collect()
    }
}

/// One rule whose table another rule also covers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Overlap {
    /// The rule that removes.
    pub rule: String,
    /// Its table.
    pub table: String,
    /// The rule that also covers the table.
    pub covered_by: String,
    /// What that rule keeps of the rows `rule` would remove.
    pub keeps: String,
}

/// Every pair of rules on the same table, and what the second keeps (for `validate`
/// and `plan`). A rule that keeps only under holds is listed too: holds can come.
pub fn overlaps(config: &Config) -> Vec<Overlap> {
    let mut out = Vec::new();
    for rule in &config.rules {
        let Target::Table(t) = &rule.target else {
            continue;
        };
        for (other, ot) in covering_rules(config, rule) {
            let mut why = Vec::new();
            if let Some(f) = config.category_of(other).min_retain {
                why.push(format!(
                    "inside the floor of category `{}` ({f})",
                    other.category
                ));
            }
            if let Some(s) = &ot.subject {
                why.push(format!("of held subjects `{}`", s.kind));
            }
            why.push(format!("while category `{}` is held", other.category));
            let rows = ot
                .filter
                .as_deref()
                .map(|f| format!("rows where {f}"))
                .unwrap_or_else(|| "every row".into());
            out.push(Overlap {
                rule: rule.name.clone(),
                table: t.table.to_string(),
                covered_by: other.name.clone(),
                keeps: format!("{rows}: {}", why.join(", ")),
            });
        }
    }
    out
}
