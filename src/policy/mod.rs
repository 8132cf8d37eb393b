//! The retention schedule as a table a privacy policy can quote, generated from the config.

use serde::Serialize;

use crate::config::{Action, Age, Config, Period, Target};

/// One line of the schedule.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRow {
    /// Category name.
    pub category: String,
    /// What the data is.
    pub description: String,
    /// Where it lives.
    pub place: String,
    /// How long, in words.
    pub period: String,
    /// What happens then.
    pub action: String,
    /// GDPR legal basis.
    pub legal_basis: String,
    /// Legal floor, in words.
    pub legal_floor: Option<String>,
}

/// `30 days`, `7 years`, `6 months`, `1 year 6 months`.
pub fn humanize(p: &Period) -> String {
    let text = p.to_string();
    let mut out = Vec::new();
    let mut num = String::new();
    let mut unit = String::new();
    let mut flush = |num: &mut String, unit: &mut String| {
        if num.is_empty() {
            return;
        }
        let n: u64 = num.parse().unwrap_or(0);
        let word = match unit.as_str() {
            "y" => "year",
            "mo" => "month",
            "w" => "week",
            "d" => "day",
            "h" => "hour",
            "m" => "minute",
            "s" => "second",
            _ => "millisecond",
        };
        out.push(format!("{n} {word}{}", if n == 1 { "" } else { "s" }));
        num.clear();
        unit.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !unit.is_empty() {
                flush(&mut num, &mut unit);
            }
            num.push(c);
        } else {
            unit.push(c);
        }
    }
    flush(&mut num, &mut unit);
    out.join(" ")
}

/// The rows, one per rule, in category order.
pub fn rows(config: &Config) -> Vec<PolicyRow> {
    let mut rows: Vec<PolicyRow> = config
        .rules
        .iter()
        .filter(|r| r.enabled)
        .map(|r| {
            let c = config.category_of(r);
            let (period, action) = match &r.target {
                Target::Table(t) => {
                    let when = match &t.age {
                        Age::Event(e) => format!(" after {}", e.description),
                        Age::Column(c) => match c.as_str() {
                            "created_at" | "created" | "inserted_at" => String::new(),
                            col => format!(" after `{col}`"),
                        },
                    };
                    let action = match r.action {
                        Action::Delete if t.objects.is_some() => {
                            "deleted, with the files it points to".to_owned()
                        }
                        Action::Delete => "deleted".to_owned(),
                        Action::Anonymise => {
                            // A keyed hash is deterministic and joins across tables: the
                            // column is pseudonymised, which is still personal data
                            // under the GDPR (Recital 26), not anonymised.
                            let (pseudo, anon): (Vec<_>, Vec<_>) = t
                                .anonymise
                                .iter()
                                .partition(|(_, s)| matches!(s, crate::anonymise::Strategy::Hash));
                            let list =
                                |v: &[&(crate::config::Ident, crate::anonymise::Strategy)]| {
                                    v.iter()
                                        .map(|(c, s)| format!("{c} ({s})"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                };
                            match (anon.is_empty(), pseudo.is_empty()) {
                                (false, true) => format!("anonymised: {}", list(&anon)),
                                (true, false) => format!(
                                    "pseudonymised (still personal data): {}",
                                    list(&pseudo)
                                ),
                                _ => format!(
                                    "anonymised: {}; pseudonymised (still personal data): {}",
                                    list(&anon),
                                    list(&pseudo)
                                ),
                            }
                        }
                    };
                    (format!("{}{when}", humanize(&r.retain)), action)
                }
                Target::Prefix(p) => {
                    let mut a = "deleted (every version)".to_owned();
                    if let Some(m) = p.abort_multipart_after {
                        a.push_str(&format!(
                            "; unfinished uploads aborted after {}",
                            humanize(&m)
                        ));
                    }
                    (humanize(&r.retain), a)
                }
            };
            PolicyRow {
                category: c.name.clone(),
                description: c.description.clone(),
                place: r.place(config),
                period: format!("up to {period}"),
                action,
                legal_basis: c.legal_basis.clone(),
                legal_floor: c
                    .min_retain
                    .map(|f| format!("kept at least {}", humanize(&f))),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.category.cmp(&b.category).then(a.place.cmp(&b.place)));
    rows
}

fn md(s: &str) -> String {
    s.replace('|', "\\|")
}

/// A Markdown table.
pub fn markdown(config: &Config) -> String {
    let mut out = String::from("| Category | What | Where | Retention period | Then | Legal basis | Legal floor |\n|---|---|---|---|---|---|---|\n");
    for r in rows(config) {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            md(&r.category),
            md(&r.description),
            md(&r.place),
            md(&r.period),
            md(&r.action),
            md(&r.legal_basis),
            md(r.legal_floor.as_deref().unwrap_or("—"))
        ));
    }
    out
}

/// A self-contained HTML page with the table.
pub fn html(config: &Config) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut out = String::from("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Retention schedule</title><style>body{font:15px/1.5 system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}th,td{border:1px solid #ccd;padding:.4rem .6rem;text-align:left;vertical-align:top}</style></head><body><h1>Retention schedule</h1><table><thead><tr><th>Category</th><th>What</th><th>Where</th><th>Retention period</th><th>Then</th><th>Legal basis</th><th>Legal floor</th></tr></thead><tbody>");
    for r in rows(config) {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.category),
            esc(&r.description),
            esc(&r.place),
            esc(&r.period),
            esc(&r.action),
            esc(&r.legal_basis),
            esc(r.legal_floor.as_deref().unwrap_or("—"))
        ));
    }
    out.push_str("</tbody></table></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humanizes() {
        assert_eq!(humanize(&Period::parse("30d").unwrap()), "30 days");
        assert_eq!(humanize(&Period::parse("7y").unwrap()), "7 years");
        assert_eq!(
            humanize(&Period::parse("1y6mo").unwrap()),
            "1 year 6 months"
        );
        assert_eq!(humanize(&Period::parse("1d").unwrap()), "1 day");
    }
}

mod terms;

pub use terms::{changes, lock_violations, Change, LockedBy, Terms};
