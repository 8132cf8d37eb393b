//! The preflight of an `after_event` rule's event.

use super::*;

/// An `after_event` rule's event: its table is in the rule's store, its subject column
/// has the type of the rule's subject column (they are compared with `=`), and its
/// `at_column` is a timestamp with time zone. Warns when no index starts with the
/// event's subject column: every row looks its event up.
pub(super) async fn check_event(
    pg: &PgStore,
    rule: &Rule,
    t: &TableTarget,
    e: &EventAge,
    info: &TableInfo,
    warnings: &mut Vec<Finding>,
) -> Result<AgeKind, Refusal> {
    let name = &e.event;
    let events = match pg.describe(&e.table).await {
        Ok(Some(i)) => i,
        Ok(None) => {
            return Err(format!(
                "the table of event `{name}`, {}, does not exist in store `{}`",
                e.table, rule.store
            )
            .into())
        }
        Err(x) => {
            return Err(format!(
                "cannot read the catalog of {}, the table of event `{name}`: {}",
                e.table,
                db_message(&x)
            )
            .into())
        }
    };
    let in_events = |c: &Ident| {
        events.columns.get(c.as_str()).ok_or_else(|| {
            Refusal::from(format!(
                "column {}.{c} of event `{name}` does not exist",
                e.table
            ))
        })
    };
    let key = in_events(&e.key)?;
    let at = in_events(&e.at)?;
    if at.type_name != "timestamp with time zone" {
        return Err(format!(
            "at_column {}.{} of event `{name}` is {}: expected timestamp with time zone, an instant",
            e.table, e.at, at.type_name
        )
        .into());
    }
    let own = column(info, t, &e.subject)?;
    if own.type_name != key.type_name {
        return Err(format!(
            "subject column {}.{} is {}, but the subject column {}.{} of event `{name}` is {}: they are compared with =, so their types must be the same",
            t.table, e.subject, own.type_name, e.table, e.key, key.type_name
        )
        .into());
    }
    if !events.has_index_on(e.key.as_str()) {
        warnings.push(Finding {
            transient: false,
            rule: rule.name.clone(),
            message: format!(
                "no index starts with {}.{}, the subject column of event `{name}`: every due row looks its event up with a scan",
                e.table, e.key
            ),
        });
    }
    Ok(AgeKind::Timestamptz)
}
