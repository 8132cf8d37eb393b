//! What a table rule's clock starts at: its own `age_column`, or an `[events]` event.

use std::collections::BTreeMap;

use super::super::raw::*;
use super::super::*;

/// What the rule's clock starts at: `age_column`, or exactly one `after_event` whose
/// event is in the rule's store and has the rule's subject kind.
pub(super) fn age(
    loc: &Locator<'_>,
    r: &RawRule,
    rp: &FieldPath,
    subject: Option<&Subject>,
    events: &BTreeMap<String, Event>,
) -> Result<Age, ConfigError> {
    let err = |p: &FieldPath, m: String| loc.at(p, m);
    let f = |k: &str| rp.key(k);
    let name = match (r.age_column.as_deref(), r.after_event.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(err(
                &f("after_event"),
                "`age_column` and `after_event` are mutually exclusive: a rule's clock starts at its own column or at its subject's event".into(),
            ))
        }
        (None, None) => {
            return Err(err(
                rp,
                "missing field `age_column` (the column whose time decides expiry) or `after_event` (the event it starts at)".into(),
            ))
        }
        (Some(c), None) => {
            return Ident::parse(c)
                .map(Age::Column)
                .map_err(|e| err(&f("age_column"), e.to_string()))
        }
        (None, Some(name)) => name,
    };
    for (k, set) in [
        ("age_format", r.age_format.is_some()),
        ("age_timezone", r.age_timezone.is_some()),
    ] {
        if set {
            return Err(err(
                &f(k),
                format!("`{k}` applies to `age_column`; an `after_event` rule's clock is the event's `at_column`"),
            ));
        }
    }
    let Some(event) = events.get(name) else {
        let known: Vec<&str> = events.keys().map(String::as_str).collect();
        return Err(err(
            &f("after_event"),
            format!(
                "unknown event `{name}`; defined: {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    if event.store != r.store {
        return Err(err(
            &f("after_event"),
            format!("event `{name}` is recorded in store `{}`, but the rule is on store `{}`: the event's table must be in the rule's store", event.store, r.store),
        ));
    }
    match subject {
        None => Err(err(
            rp,
            format!("an `after_event` rule needs `subject` (of kind `{}`): it is how a row is matched with its event", event.subject.kind),
        )),
        Some(s) if s.kind != event.subject.kind => Err(err(
            &f("subject").key("kind"),
            format!("subject kind `{}` differs from the kind of event `{name}` (`{}`)", s.kind, event.subject.kind),
        )),
        Some(s) => Ok(Age::Event(Box::new(EventAge {
            event: name.to_owned(),
            table: event.table.clone(),
            key: event.subject.column.clone(),
            subject: s.column.clone(),
            at: event.at_column.clone(),
            description: event.description.clone(),
        }))),
    }
}
