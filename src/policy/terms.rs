//! A config's retention terms (categories, floors, rules and their periods), read from
//! its text, and what changed between two of them: `policy diff` and the preservation
//! lock (`[categories.NAME] locked = true`).
//!
//! Terms are read from the TOML itself, not through the full validation, so a config
//! recorded by an older version keeps being readable.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Period;

/// The terms of one category.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CategoryTerms {
    /// `locked = true`.
    pub locked: bool,
    /// The legal floor.
    pub min_retain: Option<Period>,
    /// The ceiling.
    pub max_retain: Option<Period>,
    /// Its rules by name.
    pub rules: BTreeMap<String, RuleTerms>,
}

/// The terms of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTerms {
    /// `retain`.
    pub retain: Option<Period>,
    /// `delete` or `anonymise`.
    pub action: String,
    /// `after_event`, when its clock starts at an event.
    pub after_event: Option<String>,
    /// The store it removes from.
    pub store: String,
    /// Its table, or its `s3` prefix (`prefix:` in front).
    pub place: String,
    /// Every other key that decides what it removes and how old a record is (target,
    /// clock, filter, objects, versions, tags, strategies), as TOML text.
    pub scope: BTreeMap<String, String>,
}

/// The keys of a rule that decide what it removes and when, besides `retain`.
const SCOPE_KEYS: &[&str] = &[
    "store",
    "table",
    "prefix",
    "exclude",
    "age_column",
    "after_event",
    "age_format",
    "age_timezone",
    "filter",
    "partitions",
    "subject",
    "anonymise",
    "objects",
    "versions",
    "tags",
    "abort_multipart_after",
    "bypass_governance_retention",
    "action",
];

/// A config's retention terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Terms {
    /// Categories by name.
    pub categories: BTreeMap<String, CategoryTerms>,
}

fn period(v: Option<&toml::Value>) -> Option<Period> {
    v.and_then(toml::Value::as_str)
        .and_then(|s| Period::parse(s).ok())
}

impl Terms {
    /// The terms of config `text`.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let doc: toml::Table =
            toml::from_str(text).map_err(|e| format!("the config is not TOML: {e}"))?;
        let mut terms = Terms::default();
        if let Some(cats) = doc.get("categories").and_then(toml::Value::as_table) {
            for (name, c) in cats {
                terms.categories.insert(
                    name.clone(),
                    CategoryTerms {
                        locked: c.get("locked").and_then(toml::Value::as_bool) == Some(true),
                        min_retain: period(c.get("min_retain")),
                        max_retain: period(c.get("max_retain")),
                        rules: BTreeMap::new(),
                    },
                );
            }
        }
        for r in doc
            .get("rules")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(name), Some(cat)) = (
                r.get("name").and_then(toml::Value::as_str),
                r.get("category").and_then(toml::Value::as_str),
            ) else {
                continue;
            };
            terms
                .categories
                .entry(cat.to_owned())
                .or_default()
                .rules
                .insert(
                    name.to_owned(),
                    RuleTerms {
                        retain: period(r.get("retain")),
                        action: r
                            .get("action")
                            .and_then(toml::Value::as_str)
                            .unwrap_or("delete")
                            .to_owned(),
                        after_event: r
                            .get("after_event")
                            .and_then(toml::Value::as_str)
                            .map(str::to_owned),
                        store: r
                            .get("store")
                            .and_then(toml::Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        place: match (
                            r.get("table").and_then(toml::Value::as_str),
                            r.get("prefix").and_then(toml::Value::as_str),
                        ) {
                            (Some(t), _) => t.to_owned(),
                            (None, Some(p)) => format!("prefix:{p}"),
                            (None, None) => String::new(),
                        },
                        scope: SCOPE_KEYS
                            .iter()
                            .filter_map(|k| r.get(*k).map(|v| ((*k).to_owned(), v.to_string())))
                            .collect(),
                    },
                );
        }
        Ok(terms)
    }

    /// Every rule (category, name, terms) that removes from `place` of `store`, or, for
    /// a prefix, from a prefix that overlaps it.
    fn rules_at<'a>(
        &'a self,
        store: &'a str,
        place: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str, &'a RuleTerms)> + 'a {
        self.categories.iter().flat_map(move |(c, t)| {
            t.rules
                .iter()
                .filter(move |(_, r)| {
                    r.store == store
                        && match (
                            r.place.strip_prefix("prefix:"),
                            place.strip_prefix("prefix:"),
                        ) {
                            (Some(a), Some(b)) => a.starts_with(b) || b.starts_with(a),
                            (None, None) => r.place == place,
                            _ => false,
                        }
                })
                .map(move |(n, r)| (c.as_str(), n.as_str(), r))
        })
    }

    /// The category of rule `name`, and its terms.
    fn rule(&self, name: &str) -> Option<(&str, &RuleTerms)> {
        self.categories
            .iter()
            .find_map(|(c, t)| t.rules.get(name).map(|r| (c.as_str(), r)))
    }
}

/// One change in retention terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A category appeared.
    CategoryAdded { category: String },
    /// A category disappeared.
    CategoryRemoved { category: String },
    /// `locked` turned on.
    CategoryLocked { category: String },
    /// `locked` turned off.
    CategoryUnlocked { category: String },
    /// `min_retain` changed.
    FloorChanged {
        category: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// `max_retain` changed.
    CeilingChanged {
        category: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// A rule appeared.
    RuleAdded {
        rule: String,
        category: String,
        retain: Option<String>,
    },
    /// A rule disappeared.
    RuleRemoved { rule: String, category: String },
    /// A rule moved to another category.
    RuleMoved {
        rule: String,
        from: String,
        to: String,
    },
    /// `retain` changed.
    RetainChanged {
        rule: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// `action` changed.
    ActionChanged {
        rule: String,
        from: String,
        to: String,
    },
    /// `after_event` changed.
    ClockChanged {
        rule: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// Another key that decides what the rule removes changed (table, filter, …).
    ScopeChanged {
        rule: String,
        key: String,
        from: Option<String>,
        to: Option<String>,
    },
}

fn show(p: &Option<Period>) -> Option<String> {
    p.map(|p| p.to_string())
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or_none = |p: &Option<String>| p.clone().unwrap_or_else(|| "none".into());
        match self {
            Self::CategoryAdded { category } => write!(f, "category {category} added"),
            Self::CategoryRemoved { category } => write!(f, "category {category} removed"),
            Self::CategoryLocked { category } => write!(f, "category {category} locked"),
            Self::CategoryUnlocked { category } => write!(f, "category {category} unlocked"),
            Self::FloorChanged { category, from, to } => write!(
                f,
                "category {category}: floor (min_retain) from {} to {}",
                or_none(from),
                or_none(to)
            ),
            Self::CeilingChanged { category, from, to } => write!(
                f,
                "category {category}: max_retain from {} to {}",
                or_none(from),
                or_none(to)
            ),
            Self::RuleAdded {
                rule,
                category,
                retain,
            } => write!(
                f,
                "rule {rule} added (category {category}, retain {})",
                or_none(retain)
            ),
            Self::RuleRemoved { rule, category } => {
                write!(f, "rule {rule} removed (was in category {category})")
            }
            Self::RuleMoved { rule, from, to } => {
                write!(f, "rule {rule} moved from category {from} to {to}")
            }
            Self::RetainChanged { rule, from, to } => write!(
                f,
                "rule {rule}: retain from {} to {}",
                or_none(from),
                or_none(to)
            ),
            Self::ActionChanged { rule, from, to } => {
                write!(f, "rule {rule}: action from {from} to {to}")
            }
            Self::ScopeChanged {
                rule,
                key,
                from,
                to,
            } => write!(
                f,
                "rule {rule}: {key} from {} to {}",
                or_none(from),
                or_none(to)
            ),
            Self::ClockChanged { rule, from, to } => write!(
                f,
                "rule {rule}: clock from {} to {}",
                from.as_deref()
                    .map(|e| format!("event {e}"))
                    .unwrap_or_else(|| "its age column".into()),
                to.as_deref()
                    .map(|e| format!("event {e}"))
                    .unwrap_or_else(|| "its age column".into())
            ),
        }
    }
}

/// What changed from `a` to `b`, categories first, in name order.
pub fn changes(a: &Terms, b: &Terms) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, old) in &a.categories {
        let Some(new) = b.categories.get(name) else {
            out.push(Change::CategoryRemoved {
                category: name.clone(),
            });
            continue;
        };
        if !old.locked && new.locked {
            out.push(Change::CategoryLocked {
                category: name.clone(),
            });
        }
        if old.locked && !new.locked {
            out.push(Change::CategoryUnlocked {
                category: name.clone(),
            });
        }
        if old.min_retain != new.min_retain {
            out.push(Change::FloorChanged {
                category: name.clone(),
                from: show(&old.min_retain),
                to: show(&new.min_retain),
            });
        }
        if old.max_retain != new.max_retain {
            out.push(Change::CeilingChanged {
                category: name.clone(),
                from: show(&old.max_retain),
                to: show(&new.max_retain),
            });
        }
    }
    for (name, new) in &b.categories {
        if !a.categories.contains_key(name) {
            out.push(Change::CategoryAdded {
                category: name.clone(),
            });
            if new.locked {
                out.push(Change::CategoryLocked {
                    category: name.clone(),
                });
            }
        }
    }
    let mut rules: Vec<&str> = a
        .categories
        .values()
        .chain(b.categories.values())
        .flat_map(|c| c.rules.keys().map(String::as_str))
        .collect();
    rules.sort_unstable();
    rules.dedup();
    for rule in rules {
        match (a.rule(rule), b.rule(rule)) {
            (Some((cat, _)), None) => out.push(Change::RuleRemoved {
                rule: rule.into(),
                category: cat.into(),
            }),
            (None, Some((cat, r))) => out.push(Change::RuleAdded {
                rule: rule.into(),
                category: cat.into(),
                retain: show(&r.retain),
            }),
            (Some((ca, ra)), Some((cb, rb))) => {
                if ca != cb {
                    out.push(Change::RuleMoved {
                        rule: rule.into(),
                        from: ca.into(),
                        to: cb.into(),
                    });
                }
                if ra.retain != rb.retain {
                    out.push(Change::RetainChanged {
                        rule: rule.into(),
                        from: show(&ra.retain),
                        to: show(&rb.retain),
                    });
                }
                if ra.action != rb.action {
                    out.push(Change::ActionChanged {
                        rule: rule.into(),
                        from: ra.action.clone(),
                        to: rb.action.clone(),
                    });
                }
                for key in SCOPE_KEYS
                    .iter()
                    .filter(|k| !matches!(**k, "action" | "after_event"))
                {
                    let (x, y) = (ra.scope.get(*key), rb.scope.get(*key));
                    if x != y {
                        out.push(Change::ScopeChanged {
                            rule: rule.into(),
                            key: (*key).into(),
                            from: x.cloned(),
                            to: y.cloned(),
                        });
                    }
                }
                if ra.after_event != rb.after_event {
                    out.push(Change::ClockChanged {
                        rule: rule.into(),
                        from: ra.after_event.clone(),
                        to: rb.after_event.clone(),
                    });
                }
            }
            (None, None) => {}
        }
    }
    out
}

/// The run that first recorded a config with a category locked.
#[derive(Debug, Clone)]
pub struct LockedBy {
    /// The run.
    pub run: String,
    /// When it started.
    pub at: String,
    /// The config it used.
    pub sha256: String,
    /// That config's terms.
    pub terms: Terms,
}

/// Why `new` may not replace the recorded configs: every way it weakens a category
/// that `recorded` (in the order of their first runs) locked. Lengthening is allowed.
pub fn lock_violations(new: &Terms, recorded: &[LockedBy]) -> Vec<String> {
    let mut out = Vec::new();
    let mut reported = std::collections::BTreeSet::new();
    for locked in recorded {
        for (name, old) in locked.terms.categories.iter().filter(|(_, c)| c.locked) {
            let by = format!(
                "category {name} is locked since run {} ({}, config {})",
                locked.run,
                locked.at,
                &locked.sha256[..12.min(locked.sha256.len())]
            );
            let mut weakened = |what: String| {
                if reported.insert(format!("{name}\n{what}")) {
                    out.push(format!(
                        "{by}: this config {what}; a locked category can be lengthened, never shortened, removed or unlocked"
                    ));
                }
            };
            let Some(now) = new.categories.get(name) else {
                weakened("removes the category".into());
                continue;
            };
            if !now.locked {
                weakened("sets locked = false".into());
            }
            if let Some(floor) = old.min_retain {
                match now.min_retain {
                    None => weakened(format!("removes its min_retain {floor}")),
                    Some(p) if !p.always_at_least(&floor) => {
                        weakened(format!("lowers its min_retain from {floor} to {p}"))
                    }
                    Some(_) => {}
                }
            }
            for (rule, r) in &old.rules {
                if let Some(n) = now.rules.get(rule) {
                    for key in SCOPE_KEYS {
                        let (a, b) = (r.scope.get(*key), n.scope.get(*key));
                        if a != b {
                            weakened(format!(
                                "changes `{key}` of rule {rule} from {} to {}: a locked rule keeps what it covers and how it reads age",
                                a.map(String::as_str).unwrap_or("(unset)"),
                                b.map(String::as_str).unwrap_or("(unset)")
                            ));
                        }
                    }
                }
                let Some(then) = r.retain else { continue };
                for (other_cat, other_name, o) in new.rules_at(&r.store, &r.place) {
                    if other_name == rule.as_str() && other_cat == name.as_str() {
                        continue;
                    }
                    let Some(p) = o.retain else { continue };
                    let was = locked
                        .terms
                        .rule(other_name)
                        .filter(|(_, w)| w.store == o.store && w.place == o.place)
                        .and_then(|(_, w)| w.retain);
                    let already = was.is_some_and(|w| p.always_at_least(&w));
                    if !p.always_at_least(&then) && !already {
                        weakened(format!(
                            "adds or shortens rule {other_name} (category {other_cat}, retain {p}) on {} of store {}, where the locked rule {rule} keeps {then}",
                            r.place, r.store
                        ));
                    }
                }
                match now.rules.get(rule) {
                    None => weakened(match new.rule(rule) {
                        Some((other, _)) => format!("moves rule {rule} to category {other}"),
                        None => format!("removes rule {rule}"),
                    }),
                    Some(n) => match n.retain {
                        Some(p) if !p.always_at_least(&then) => weakened(format!(
                            "lowers the retain of rule {rule} from {then} to {p}"
                        )),
                        None => weakened(format!("removes the retain of rule {rule}")),
                        Some(_) => {}
                    },
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKED: &str = r#"
[categories.invoices]
min_retain = "7y"
locked = true
[categories.logs]
max_retain = "30d"
[[rules]]
name = "old-invoices"
category = "invoices"
store = "app"
table = "invoices"
age_column = "issued_at"
retain = "7y"
action = "delete"
[[rules]]
name = "logs"
category = "logs"
store = "app"
table = "logs"
retain = "30d"
action = "delete"
"#;

    fn locked_by(text: &str) -> Vec<LockedBy> {
        vec![LockedBy {
            run: "0192".into(),
            at: "2026-12-01T00:00:00Z".into(),
            sha256: "ab".repeat(32),
            terms: Terms::from_text(text).unwrap(),
        }]
    }

    fn violations(new: &str) -> Vec<String> {
        lock_violations(&Terms::from_text(new).unwrap(), &locked_by(LOCKED))
    }

    #[test]
    fn a_locked_category_can_be_lengthened_but_not_weakened_in_any_way() {
        assert!(violations(LOCKED).is_empty());
        assert!(violations(&LOCKED.replace("\"7y\"", "\"10y\"")).is_empty());
        // Other categories are free.
        assert!(violations(&LOCKED.replace("\"30d\"", "\"7d\"")).is_empty());
        let lower_floor =
            violations(&LOCKED.replacen("min_retain = \"7y\"", "min_retain = \"5y\"", 1));
        assert_eq!(lower_floor.len(), 1, "{lower_floor:?}");
        assert!(
            lower_floor[0].contains("lowers its min_retain from 7y to 5y"),
            "{lower_floor:?}"
        );
        assert!(lower_floor[0].contains("run 0192"), "{lower_floor:?}");
        let lower_retain =
            violations(&LOCKED.replacen("retain = \"7y\"\naction", "retain = \"6y\"\naction", 1));
        assert!(
            lower_retain
                .iter()
                .any(|v| v.contains("retain of rule old-invoices from 7y to 6y")),
            "{lower_retain:?}"
        );
        let unlocked = violations(&LOCKED.replace("locked = true", "locked = false"));
        assert!(unlocked[0].contains("sets locked = false"), "{unlocked:?}");
        let no_floor = violations(&LOCKED.replace("min_retain = \"7y\"\n", ""));
        assert!(
            no_floor[0].contains("removes its min_retain"),
            "{no_floor:?}"
        );
        let moved = violations(&LOCKED.replace("category = \"invoices\"", "category = \"logs\""));
        assert!(
            moved
                .iter()
                .any(|v| v.contains("moves rule old-invoices to category logs")),
            "{moved:?}"
        );
        let gone = violations("[categories.logs]\n");
        assert!(gone[0].contains("removes the category"), "{gone:?}");
        // 84 months is 7 years: not a shortening.
        assert!(violations(&LOCKED.replace("\"7y\"", "\"84mo\"")).is_empty());
    }

    #[test]
    fn a_locked_rule_keeps_its_target_and_clock_and_no_shorter_rule_joins_its_table() {
        for (from, to, key) in [
            ("table = \"invoices\"", "table = \"dummy\"", "table"),
            (
                "age_column = \"issued_at\"",
                "age_column = \"paid_at\"",
                "age_column",
            ),
            (
                "age_column = \"issued_at\"",
                "age_column = \"issued_at\"\nfilter = \"true\"",
                "filter",
            ),
            (
                "age_column = \"issued_at\"",
                "age_column = \"issued_at\"\nage_format = \"epoch_millis\"",
                "age_format",
            ),
        ] {
            let v = violations(&LOCKED.replace(from, to));
            assert!(
                v.iter()
                    .any(|m| m.contains(&format!("changes `{key}` of rule old-invoices"))),
                "{key}: {v:?}"
            );
        }
        let purge = LOCKED.to_owned()
            + "[[rules]]\nname = \"purge\"\ncategory = \"logs\"\nstore = \"app\"\ntable = \"invoices\"\nretain = \"1d\"\naction = \"delete\"\n";
        let v = violations(&purge);
        assert!(
            v.iter().any(|m| m.contains("adds or shortens rule purge")
                && m.contains("locked rule old-invoices keeps 7y")),
            "{v:?}"
        );
        // Longer on the same table is fine; another table of the store too.
        assert!(violations(&purge.replace("\"1d\"", "\"8y\"")).is_empty());
        assert!(violations(&purge.replace(
            "table = \"invoices\"\nretain = \"1d\"",
            "table = \"other\"\nretain = \"1d\""
        ))
        .is_empty());
    }

    #[test]
    fn changes_name_every_change_in_retention_terms() {
        let b = LOCKED
            .replace("retain = \"30d\"\naction", "retain = \"14d\"\naction")
            .replace("[categories.logs]", "[categories.logs]\nlocked = true")
            + "[[rules]]\nname = \"new\"\ncategory = \"logs\"\nretain = \"1d\"\naction = \"delete\"\n";
        let c: Vec<String> = changes(
            &Terms::from_text(LOCKED).unwrap(),
            &Terms::from_text(&b).unwrap(),
        )
        .iter()
        .map(|c| c.to_string())
        .collect();
        assert_eq!(
            c,
            [
                "category logs locked",
                "rule logs: retain from 30d to 14d",
                "rule new added (category logs, retain 1d)",
            ]
        );
    }
}
