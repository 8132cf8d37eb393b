//! Catalog reads and checks of the preflight and the sweep (identifiers quoted).

use super::{Param, Params, Statement};
use crate::config::{Ident, TableName};

/// The settings that decide whether the server logs bind parameters, in the order
/// `log_statement, log_min_duration_statement, log_min_duration_sample,
/// log_parameter_max_length, log_parameter_max_length_on_error, pgaudit.log_parameter`
/// (NULL where the server has no such setting).
pub const PARAMETER_LOGGING: &str = "SELECT current_setting('log_statement', true), \
     current_setting('log_min_duration_statement', true), current_setting('log_min_duration_sample', true), \
     current_setting('log_parameter_max_length', true), current_setting('log_parameter_max_length_on_error', true), \
     current_setting('pgaudit.log_parameter', true)";

/// The smallest and largest value of an epoch age column, and the database clock, in one
/// statement (the preflight's unit check).
pub fn epoch_range(table: &TableName, column: &Ident) -> Statement {
    let c = column.quoted();
    Statement {
        sql: format!(
            "SELECT min({c})::float8, max({c})::float8, now() FROM {}",
            table.quoted()
        ),
        params: Params::default(),
    }
}

/// `EXPLAIN` of a rule's filter on its table: it compiles, or the preflight refuses it.
/// The filter passed `config::check_filter` (one expression, no comments, no statement).
pub fn explain_filter(table: &TableName, filter: &str) -> Statement {
    Statement {
        sql: format!("EXPLAIN SELECT 1 FROM {} WHERE ({filter})", table.quoted()),
        params: Params::default(),
    }
}

/// Whether schema `$1` exists (an `archive:` target).
pub fn schema_exists(schema: &Ident) -> Statement {
    let mut params = Params::default();
    let p = params.push(Param::Text(schema.as_str().to_owned()));
    Statement {
        sql: format!("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {p})"),
        params,
    }
}

/// `ANALYZE table`, after a large delete (`vacuum = "analyze"`).
pub fn analyze(table: &TableName) -> String {
    format!("ANALYZE {}", table.quoted())
}

/// `(pages now, reltuples, relpages, server_version_num)` of the table whose quoted name
/// is bound to `$1`: what choosing a batch walk needs.
pub fn heap_shape(table: &TableName) -> Statement {
    let mut params = Params::default();
    let t = params.push(Param::Text(table.quoted()));
    Statement {
        sql: format!(
            "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int8, \
             c.reltuples::float8, c.relpages::int8, current_setting('server_version_num')::int4 \
             FROM pg_class c WHERE c.oid = CAST({t} AS regclass)"
        ),
        params,
    }
}

/// `SELECT count(*) FROM table`: the guard's percentage base, a partition's row count.
pub fn count_rows(table: &TableName) -> String {
    format!("SELECT count(*) FROM {}", table.quoted())
}
