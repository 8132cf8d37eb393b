//! The preflight of anonymise strategies: the compiled columns, the HMAC key, the
//! server's parameter logging, and the real `UPDATE` under `EXPLAIN`.

use super::*;

/// The compiled anonymise columns and whether they use the HMAC key: the key is present,
/// the server would not log the pads, and the real `UPDATE` compiles (`EXPLAIN`).
pub(super) async fn check_anonymise(
    pg: &PgStore,
    config: &Config,
    rule: &Rule,
    t: &TableTarget,
    age_kind: AgeKind,
    info: &TableInfo,
    warnings: &mut Vec<Finding>,
) -> Result<(Vec<(Ident, ColumnSql)>, bool), Refusal> {
    let (anonymise, uses_hmac) = pg_sql::anonymise_columns(&t.anonymise, |c| {
        info.columns
            .get(c.as_str())
            .map(|ci| (ci.type_name.clone(), ci.nullable))
    })?;
    if uses_hmac {
        let key = std::env::var(&config.hmac_key_env).unwrap_or_default();
        if key.is_empty() {
            return Err(format!(
                "the `hash` strategy needs a secret key in environment variable {} ([anonymise] hmac_key_env)",
                config.hmac_key_env
            ).into());
        }
        check_parameter_logging(pg).await?;
    }
    if let Err(e) = explain_anonymise(pg, config, t, age_kind, info, &anonymise, uses_hmac).await {
        let columns: Vec<&str> = anonymise.iter().map(|(c, _)| c.as_str()).collect();
        let what = format!(
            "the anonymise update of columns {} does not compile: {}",
            columns.join(", "),
            db_message(&e)
        );
        // Read-only credentials (`plan`, `conformance`) cannot compile an UPDATE;
        // the sweep's own credentials will be checked when it runs.
        if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42501") {
            warnings.push(Finding {
                transient: false,
                rule: rule.name.clone(),
                message: format!("{what} (not checked with these credentials)"),
            });
        } else {
            return Err(what.into());
        }
    }
    Ok((anonymise, uses_hmac))
}
/// Refuses the `hash` strategy on a server that would write its bind parameters (the
/// HMAC pads) to its log.
pub(super) async fn check_parameter_logging(pg: &PgStore) -> Result<(), Refusal> {
    let row = pg
        .fetch_one(&pg_sql::Statement {
            sql: pg_sql::PARAMETER_LOGGING.into(),
            params: Default::default(),
        })
        .await
        .map_err(|e| {
            format!(
                "cannot read the server's logging settings: {}",
                db_message(&e)
            )
        })?;
    let setting = |i: usize| row.try_get::<Option<String>, _>(i).ok().flatten();
    let logging = ParameterLogging {
        log_statement: setting(0),
        log_min_duration_statement: setting(1),
        log_min_duration_sample: setting(2),
        log_parameter_max_length: setting(3),
        log_parameter_max_length_on_error: setting(4),
        pgaudit_log_parameter: setting(5),
    };
    match logging.would_log_parameters() {
        Some(why) => Err(format!(
            "the `hash` strategy sends derived key material (the HMAC pads) as bind parameters, and this server would write them to its log ({why}); set log_parameter_max_length = 0 and log_parameter_max_length_on_error = 0 for the retentiond role or database (and pgaudit.log_parameter = off), see the README's Secrets section"
        ).into()),
        None => Ok(()),
    }
}
/// Compiles the rule's real anonymise `UPDATE` with `EXPLAIN` (nothing runs): a `fixed:`
/// value its column's type cannot take, or a type without the equality that tells an
/// anonymised row, fails here and not on the first batch.
pub(super) async fn explain_anonymise(
    pg: &crate::store::PgStore,
    config: &Config,
    t: &crate::config::TableTarget,
    age_kind: AgeKind,
    info: &TableInfo,
    anonymise: &[(Ident, ColumnSql)],
    uses_hmac: bool,
) -> Result<(), sqlx::Error> {
    let subject_type = t
        .subject
        .as_ref()
        .and_then(|s| info.columns.get(s.column.as_str()))
        .map(|c| pg_sql::SubjectType::of(&c.type_name))
        .unwrap_or_default();
    let selection = pg_sql::Selection {
        table: &t.table,
        age: &t.age,
        age_kind,
        cutoff: Some(Utc::now()),
        not_before: None,
        filter: t.filter.as_deref(),
        subject_column: t.subject.as_ref().map(|s| &s.column),
        subject_type,
        held_ids: &[],
        only_subject: None,
        anonymise,
        keeps: &[],
        skip: &[],
    };
    let hmac = uses_hmac.then(|| {
        let key = std::env::var(&config.hmac_key_env).unwrap_or_default();
        crate::anonymise::hmac_pads(key.as_bytes())
    });
    let mut st = selection.anonymise_batch(&pg_sql::Batch::First(1), hmac, &pg_sql::hmac_names());
    st.sql = format!("EXPLAIN {}", st.sql);
    pg.fetch_all(&st).await.map(|_| ())
}
