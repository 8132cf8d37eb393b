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
}

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
                    },
                );
        }
        Ok(terms)
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
                let Some(then) = r.retain else { continue };
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
retain = "7y"
action = "delete"
[[rules]]
name = "logs"
category = "logs"
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
