//! `[events.NAME]`: tables that record when something happened to a subject.

use std::collections::BTreeMap;

use super::super::raw::*;
use super::super::*;
use super::is_pg;

pub(super) fn events(
    loc: &Locator<'_>,
    raw: BTreeMap<String, RawEvent>,
    stores: &BTreeMap<String, StoreConfig>,
) -> Result<BTreeMap<String, Event>, ConfigError> {
    let root = FieldPath::default();
    let err = |p: &FieldPath, m: String| loc.at(p, m);
    let mut events = BTreeMap::new();
    for (name, e) in raw {
        let ep = root.key("events").key(&name);
        check_name(&name).map_err(|m| err(&ep, m))?;
        if !is_pg(stores, &e.store) {
            return Err(err(
                &ep.key("store"),
                unknown_store(&e.store, "postgres", stores),
            ));
        }
        let table = TableName::parse(&e.table).map_err(|x| err(&ep.key("table"), x.to_string()))?;
        check_name(&e.subject.kind).map_err(|m| err(&ep.key("subject").key("kind"), m))?;
        let column = Ident::parse(&e.subject.column)
            .map_err(|x| err(&ep.key("subject").key("column"), x.to_string()))?;
        let at_column =
            Ident::parse(&e.at_column).map_err(|x| err(&ep.key("at_column"), x.to_string()))?;
        let description = match e.description {
            Some(d) if d.trim().is_empty() => {
                return Err(err(&ep.key("description"), "must not be empty".into()))
            }
            Some(d) => d,
            None => format!("event `{name}`"),
        };
        events.insert(
            name,
            Event {
                store: e.store,
                table,
                subject: Subject {
                    kind: e.subject.kind,
                    column,
                },
                at_column,
                description,
            },
        );
    }
    Ok(events)
}
