//! Every table that can reference objects of one s3 store, and the queue entries of its
//! keys.

use super::*;

/// Every table that can reference objects of one s3 store: the tables of all table
/// rules (enabled or not) whose `objects` use it.
pub(crate) struct References {
    queries: Vec<(PgStore, String)>,
    /// The s3 store, and the databases whose queues may hold its keys.
    store: String,
    queues: Vec<PgStore>,
}

impl References {
    /// Reads the key columns' types of every referencing table. A table that cannot be
    /// read is an error: an object it might reference must not be deleted.
    pub(crate) async fn load(engine: &Engine, store: &str) -> Result<Self, String> {
        let mut queries = Vec::new();
        let (mut queue_stores, mut queues): (Vec<String>, Vec<PgStore>) = (Vec::new(), Vec::new());
        for rule in &engine.config.rules {
            let Target::Table(t) = &rule.target else {
                continue;
            };
            let Some(o) = t.objects.as_ref().filter(|o| o.store == store) else {
                continue;
            };
            let Some(pg) = engine.stores.pg.get(&rule.store) else {
                return Err(format!(
                    "rule `{}` references objects in `{store}` but its store `{}` is not connected",
                    rule.name, rule.store
                ));
            };
            let info = match pg.describe(&t.table).await {
                Ok(Some(i)) => i,
                Ok(None) => {
                    return Err(format!(
                        "rule `{}` references objects in `{store}` but table {} does not exist",
                        rule.name, t.table
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "cannot read the catalog of {} (rule `{}`): {}",
                        t.table,
                        rule.name,
                        db_message(&e)
                    ))
                }
            };
            let mut cols = Vec::new();
            for c in &o.key_columns {
                let Some(ci) = info.columns.get(c.as_str()) else {
                    return Err(format!(
                        "rule `{}`: key column {}.{c} does not exist",
                        rule.name, t.table
                    ));
                };
                cols.push((c.clone(), ci.type_name.ends_with("[]")));
            }
            queries.push((pg.clone(), referenced_keys(&t.table, &cols)));
            if !queue_stores.contains(&rule.store) {
                queue_stores.push(rule.store.clone());
                queues.push(pg.clone());
            }
        }
        Ok(Self {
            queries,
            store: store.to_owned(),
            queues,
        })
    }

    /// The keys of `keys` queued for deletion after their rows went: a prefix rule leaves
    /// them to the queue, which keeps an object while a hold covers its row.
    pub(crate) async fn queued(&self, keys: &[String]) -> Result<HashSet<String>, String> {
        let mut out = HashSet::new();
        if keys.is_empty() {
            return Ok(out);
        }
        for pg in &self.queues {
            let exists = Statement {
                sql: PENDING_EXISTS.into(),
                params: Params(Vec::new()),
            };
            let there: bool = with_retry(|| pg.fetch_one(&exists))
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| db_message(&e))?;
            if !there {
                continue;
            }
            let st = Statement {
                sql: PENDING_QUEUED.into(),
                params: Params(vec![
                    Param::Text(self.store.clone()),
                    Param::TextArray(keys.to_vec()),
                ]),
            };
            let rows = with_retry(|| pg.fetch_all(&st))
                .await
                .map_err(|e| db_message(&e))?;
            out.extend(rows.iter().filter_map(|r| r.try_get::<String, _>(0).ok()));
        }
        Ok(out)
    }

    /// The keys of `keys` that some row still references.
    pub(crate) async fn referenced(&self, keys: &[String]) -> Result<HashSet<String>, String> {
        let mut out = HashSet::new();
        if keys.is_empty() {
            return Ok(out);
        }
        for (pg, sql) in &self.queries {
            let st = Statement {
                sql: sql.clone(),
                params: Params(vec![Param::TextArray(keys.to_vec())]),
            };
            let rows = with_retry(|| pg.fetch_all(&st))
                .await
                .map_err(|e| db_message(&e))?;
            out.extend(rows.iter().filter_map(|r| r.try_get::<String, _>(0).ok()));
        }
        Ok(out)
    }
}

pub(super) fn pending_next(store: &str, after: i64, limit: i64) -> Statement {
    Statement {
        sql: PENDING_NEXT.into(),
        params: Params(vec![
            Param::Text(store.into()),
            Param::BigInt(after),
            Param::BigInt(limit),
        ]),
    }
}

pub(super) fn pending_done(ids: Vec<i64>) -> Statement {
    Statement {
        sql: PENDING_DONE.into(),
        params: Params(vec![Param::BigIntArray(ids)]),
    }
}
