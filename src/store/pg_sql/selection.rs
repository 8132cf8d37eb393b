//! The statements of a rule's selection: count, sample, batches, queued deletes.

use super::*;

impl Selection<'_> {
    /// `WHERE` conditions of due records, held ones included; fills `params`.
    fn due(&self, params: &mut Params) -> String {
        let mut conds = Vec::new();
        // Without a cutoff (erasure of one subject) every age qualifies, NULL included.
        if let Some(cutoff) = self.cutoff {
            let p = params.push(self.age_kind.cutoff_param(cutoff));
            conds.push(due_before(self.age, self.table, &p));
        } else {
            conds.push("true".to_owned());
        }
        if let Some(nb) = self.not_before {
            let p = params.push(self.age_kind.cutoff_param(nb));
            conds.push(format!("{} >= {p}", age_sql(self.age, self.table)));
        }
        if let Some(f) = self.filter {
            conds.push(format!("({f})"));
        }
        if let (Some(col), Some(id)) = (self.subject_column, self.only_subject) {
            let p = params.push(Param::Text(id.to_owned()));
            conds.push(self.subject_type.eq(&col.quoted(), &p));
        }
        let done: Vec<&str> = self
            .anonymise
            .iter()
            .filter_map(|(_, s)| s.done_expr.as_deref())
            .collect();
        if !done.is_empty() {
            conds.push(format!("NOT ({})", done.join(" AND ")));
        }
        conds.join(" AND ")
    }

    /// Condition true for held records, or `None` when nothing is held.
    fn held(&self, params: &mut Params) -> Option<String> {
        let col = self.subject_column?;
        if self.held_ids.is_empty() {
            return None;
        }
        let p = params.push(Param::TextArray(self.held_ids.to_vec()));
        let c = col.quoted();
        Some(format!(
            "({c} IS NOT NULL AND {})",
            self.subject_type.any(&c, &p)
        ))
    }

    /// ` AND NOT <held> AND NOT <kept by another rule>`: what may go of the due rows.
    fn not_held(&self, params: &mut Params) -> String {
        let mut out = self
            .held(params)
            .map(|h| format!(" AND NOT {h}"))
            .unwrap_or_default();
        for k in self.keeps {
            if let Some(c) = k.cond(params, self.table) {
                out.push_str(&format!(" AND NOT {c}"));
            }
        }
        out
    }

    /// Conditions true for the rows each covering rule keeps, `(rule, condition)`.
    fn kept(&self, params: &mut Params) -> Vec<(String, String)> {
        self.keeps
            .iter()
            .filter_map(|k| Some((k.rule.clone(), k.cond(params, self.table)?)))
            .collect()
    }

    /// `SELECT due, held, oldest removable age (timestamptz), kept, kept by rule 1, …` in
    /// one pass over the due rows. `due` counts every due row, `held` those of held
    /// subjects, `kept` the others that a covering rule keeps ([`Selection::kept_rules`]
    /// names the rules of the last columns, in order; a row kept by several is counted
    /// under each). Without `with_oldest` the third column is NULL: [`Selection::oldest`]
    /// finds it through an index on the age column far more cheaply than the pass can.
    pub fn count(&self, with_oldest: bool) -> Statement {
        let mut params = Params::default();
        let due = self.due(&mut params);
        let held_cond = self.held(&mut params);
        let kept = self.kept(&mut params);
        let held = held_cond
            .as_ref()
            .map(|h| format!("count(*) FILTER (WHERE {h})"))
            .unwrap_or_else(|| "CAST(0 AS bigint)".into());
        let not_held = held_cond
            .as_ref()
            .map(|h| format!("NOT {h}"))
            .unwrap_or_else(|| "true".into());
        let any_kept = if kept.is_empty() {
            "false".to_owned()
        } else {
            kept.iter()
                .map(|(_, c)| c.as_str())
                .collect::<Vec<_>>()
                .join(" OR ")
        };
        let removable = format!("{not_held} AND NOT ({any_kept})");
        let oldest = if with_oldest {
            self.oldest_expr(Some(&removable))
        } else {
            "CAST(NULL AS timestamptz)".into()
        };
        let mut cols = vec![
            "count(*) AS due".to_owned(),
            format!("{held} AS held"),
            format!("{oldest} AS oldest"),
            format!("count(*) FILTER (WHERE {not_held} AND ({any_kept})) AS kept"),
        ];
        cols.extend(
            kept.iter()
                .map(|(_, c)| format!("count(*) FILTER (WHERE {not_held} AND {c})")),
        );
        Statement {
            sql: format!(
                "SELECT {} FROM {} WHERE {due}",
                cols.join(", "),
                self.table.quoted()
            ),
            params,
        }
    }

    /// The covering rules that keep something now, in the order of `count`'s last columns.
    pub fn kept_rules(&self) -> Vec<String> {
        self.kept(&mut Params::default())
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    }

    /// `SELECT` the oldest age (timestamptz) of the due, unheld records.
    pub fn oldest(&self) -> Statement {
        self.select_due(&format!("SELECT {}", self.oldest_expr(None)), None)
    }

    /// `{head} FROM table WHERE <due> AND NOT <held>`, then `LIMIT limit` when given.
    fn select_due(&self, head: &str, limit: Option<i64>) -> Statement {
        let mut params = Params::default();
        let due = self.due(&mut params);
        let not_held = self.not_held(&mut params);
        let limit = limit
            .map(|n| format!(" LIMIT {}", params.push(Param::BigInt(n))))
            .unwrap_or_default();
        Statement {
            sql: format!(
                "{head} FROM {} WHERE {due}{not_held}{limit}",
                self.table.quoted()
            ),
            params,
        }
    }

    /// `min(age)` as timestamptz, over the rows where `only` is true when given.
    fn oldest_expr(&self, only: Option<&str>) -> String {
        let age = age_sql(self.age, self.table);
        let min = match only {
            Some(c) => format!("min({age}) FILTER (WHERE {c})"),
            None => format!("min({age})"),
        };
        match self.age_kind {
            AgeKind::Timestamptz => min,
            // Zone names are validated at load (`chrono_tz`): letters, digits, `/_+-`.
            AgeKind::Timestamp(tz) => format!("{min} AT TIME ZONE '{}'", tz.name()),
            AgeKind::Date(tz) => format!("CAST({min} AS timestamp) AT TIME ZONE '{}'", tz.name()),
            AgeKind::EpochSeconds => format!("to_timestamp({min})"),
            AgeKind::EpochMillis => format!("to_timestamp({min} / 1000.0)"),
        }
    }

    /// Up to `limit` sample keys (primary key values, or ctids) of records that would go.
    pub fn sample(&self, key_columns: &[Ident], limit: i64) -> Statement {
        self.select_due(&format!("SELECT {}", key_expr(key_columns)), Some(limit))
    }

    /// The plan PostgreSQL chooses to find every due, unheld record (`EXPLAIN (FORMAT JSON)`).
    pub fn explain_due(&self) -> Statement {
        self.select_due("EXPLAIN (FORMAT JSON) SELECT 1", None)
    }

    /// The `WHERE` of one batch statement; fills `params`.
    fn batch_target(&self, batch: &Batch, params: &mut Params) -> String {
        let t = self.table.quoted();
        match batch {
            Batch::First(limit) => {
                let due = self.due(params);
                let not_held = self.not_held(params);
                let skip = if self.skip.is_empty() {
                    String::new()
                } else {
                    let p = params.push(Param::TextArray(self.skip.to_vec()));
                    format!(" AND NOT (ctid = ANY(CAST({p} AS tid[])))")
                };
                let lim = params.push(Param::BigInt(*limit));
                format!(
                    "ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {due}{not_held}{skip} LIMIT {lim} FOR UPDATE SKIP LOCKED))"
                )
            }
            Batch::Rows(ctids) => {
                let c = params.push(Param::TextArray(ctids.clone()));
                let due = self.due(params);
                let not_held = self.not_held(params);
                format!("ctid = ANY(CAST({c} AS tid[])) AND {due}{not_held}")
            }
            Batch::Pages {
                from,
                to,
                skip_locked,
            } => {
                let a = params.push(Param::Text(format!("({from},0)")));
                let b = params.push(Param::Text(format!("({to},0)")));
                let range = format!("ctid >= CAST({a} AS tid) AND ctid < CAST({b} AS tid)");
                let due = self.due(params);
                let not_held = self.not_held(params);
                if *skip_locked {
                    format!(
                        "ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {range} AND {due}{not_held} FOR UPDATE SKIP LOCKED))"
                    )
                } else {
                    format!("{range} AND {due}{not_held}")
                }
            }
        }
    }

    /// Counts the rows one batch would take now: `SELECT count(*)`.
    pub fn count_batch(&self, batch: &Batch) -> Statement {
        let mut params = Params::default();
        let target = self.batch_target(batch, &mut params);
        Statement {
            sql: format!(
                "SELECT count(*) FROM {} WHERE {target}",
                self.table.quoted()
            ),
            params,
        }
    }

    /// Deletes the due, unheld records of one batch in one statement.
    pub fn delete_batch(&self, batch: &Batch) -> Statement {
        let mut params = Params::default();
        let target = self.batch_target(batch, &mut params);
        Statement {
            sql: format!("DELETE FROM {} WHERE {target}", self.table.quoted()),
            params,
        }
    }

    /// Anonymises the due, unheld, not yet anonymised records of one batch.
    pub fn anonymise_batch(
        &self,
        batch: &Batch,
        hmac: Option<(Vec<u8>, Vec<u8>)>,
        hmac_names: &HmacParams,
    ) -> Statement {
        let mut params = Params::default();
        // The pads go first so their placeholders match the names the SET clauses use.
        if let Some((ipad, opad)) = hmac {
            let i = params.push(Param::Bytea(ipad));
            let o = params.push(Param::Bytea(opad));
            debug_assert_eq!(
                (i.as_str(), o.as_str()),
                (hmac_names.ipad.as_str(), hmac_names.opad.as_str())
            );
        }
        let target = self.batch_target(batch, &mut params);
        let sets: Vec<String> = self
            .anonymise
            .iter()
            .map(|(c, s)| format!("{} = {}", c.quoted(), s.set_expr))
            .collect();
        Statement {
            sql: format!(
                "UPDATE {} SET {} WHERE {target}",
                self.table.quoted(),
                sets.join(", ")
            ),
            params,
        }
    }

    /// The ctids (as text) of the rows `batch` would take: to split a batch that failed.
    pub fn batch_rows(&self, batch: &Batch) -> Statement {
        let mut params = Params::default();
        let target = self.batch_target(batch, &mut params);
        Statement {
            sql: format!(
                "SELECT ctid::text FROM {} WHERE {target}",
                self.table.quoted()
            ),
            params,
        }
    }

    /// Deletes the due, unheld rows of one batch and, in the same statement (so in the
    /// same transaction), queues their object keys for deletion: `SELECT count(*)` of
    /// the rows deleted. A crash leaves either the rows with their objects, or the keys
    /// queued for the next run; never a row pointing at a missing object.
    pub fn delete_batch_queued(&self, batch: &Batch, queue: &QueueTarget<'_>) -> Statement {
        let mut params = Params::default();
        let target = self.batch_target(batch, &mut params);
        let s = params.push(Param::Text(queue.objects_store.to_owned()));
        let r = params.push(Param::Text(queue.rule.to_owned()));
        let c = params.push(Param::Text(queue.category.to_owned()));
        let k = params.push(Param::Text(queue.subject_kind.unwrap_or("").to_owned()));
        let subject = self
            .subject_column
            .map(|col| format!("CAST({} AS text)", col.quoted()))
            .unwrap_or_else(|| "CAST(NULL AS text)".into());
        Statement {
            sql: format!(
                "WITH gone AS (DELETE FROM {t} WHERE {target} RETURNING {keys} AS keys, {subject} AS subject_id), \
                 queued AS (INSERT INTO {PENDING_TABLE} (objects_store, rule, category, subject_kind, subject_id, key) \
                 SELECT {s}, {r}, {c}, NULLIF({k}, ''), g.subject_id, u.key FROM gone g CROSS JOIN LATERAL unnest(g.keys) AS u(key)) \
                 SELECT count(*) FROM gone",
                t = self.table.quoted(),
                keys = keys_array(queue.key_columns),
            ),
            params,
        }
    }
}
