//! A rule's `filter`: exactly one SQL boolean expression, checked at load.
//!
//! The sweep splices the filter into its statements as `WHERE … AND (filter)`, so the text
//! must not be able to leave those parentheses, end the statement, hide the rest of it in
//! a comment, or write anything. This module tokenizes it with a real SQL tokenizer
//! (sqlparser, PostgreSQL dialect), refuses comments, `;` and parameters, parses exactly
//! one expression that must end the input, and walks the tree for functions that write
//! or take locks and for subqueries that are not plain `SELECT`s. Whether the columns
//! exist and the expression is boolean is the preflight's `EXPLAIN`.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, ObjectName, ObjectNamePart, Query, SetExpr, Statement, TableFactor, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Whitespace};

/// Function names a filter may not call: they write, signal other sessions, take locks or
/// sleep. Matched case-insensitively on the last part of the name; a trailing `*` matches
/// any suffix.
const FORBIDDEN_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "set_config",
    "pg_advisory_*",
    "pg_try_advisory_*",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_notify",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_logical_emit_message",
    "pg_file_write",
    "lo_*",
    "dblink*",
    "pg_sleep*",
];

/// Checks that `filter` is exactly one SQL expression that cannot leave its parentheses
/// and does not write. The error says what is wrong, in words for the operator.
pub fn check_filter(filter: &str) -> Result<(), String> {
    if filter.trim().is_empty() {
        return Err("must not be empty".into());
    }
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, filter)
        .tokenize_with_location()
        .map_err(|e| format!("the filter is not valid SQL: {}", e.message))?;
    for t in &tokens {
        match &t.token {
            Token::Whitespace(Whitespace::SingleLineComment { .. })
            | Token::Whitespace(Whitespace::MultiLineComment(_)) => {
                return Err(format!(
                    "the filter must be one SQL boolean expression; comments are not allowed (found one at {})",
                    where_in(filter, t.span.start)
                ));
            }
            Token::SemiColon => {
                return Err(format!(
                    "the filter must be one SQL boolean expression; `;` is not allowed (found at {})",
                    where_in(filter, t.span.start)
                ));
            }
            Token::Placeholder(p) => {
                return Err(format!(
                    "the filter must not use parameters (`{p}`): write the value itself"
                ));
            }
            // PostgreSQL starts a comment at `--` or `/*` even inside what this tokenizer
            // reads as one operator (`%--`, `@/*`): outside string literals and quoted
            // names, such characters would hide the rest of the statement.
            tok if !is_quoted(tok) && hides_comment(&tok.to_string()) => {
                return Err(format!(
                    "the filter must be one SQL boolean expression; `{tok}` would start a comment in PostgreSQL (found at {})",
                    where_in(filter, t.span.start)
                ));
            }
            _ => {}
        }
    }
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let expr = parser.parse_expr().map_err(|e| match e {
        ParserError::RecursionLimitExceeded => {
            "the filter is nested too deeply (more than 50 levels)".to_owned()
        }
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => {
            format!("the filter is not one SQL boolean expression: {m}")
        }
    })?;
    let next: TokenWithSpan = parser.peek_token();
    if next.token != Token::EOF {
        let at = char_offset(filter, next.span.start).unwrap_or(filter.len());
        let before = filter[..at].trim_end();
        return Err(format!(
            "the filter must be one SQL boolean expression; found `{}` after `{}`",
            next.token,
            shorten(before)
        ));
    }
    if let Expr::Value(v) = &expr {
        if !matches!(v.value, Value::Boolean(_) | Value::Null) {
            return Err(format!(
                "the filter is the literal {}, not a boolean expression",
                v.value
            ));
        }
    }
    match expr.visit(&mut Guard) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(message) => Err(message),
    }
}

/// A string literal or a quoted name, whose text PostgreSQL does not scan for comments.
fn is_quoted(t: &Token) -> bool {
    match t {
        Token::Word(w) => w.quote_style.is_some(),
        Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_) => true,
        _ => false,
    }
}

fn hides_comment(text: &str) -> bool {
    text.contains("--") || text.contains("/*") || text.contains("*/")
}

/// Walks a filter's tree and stops at the first thing that writes or locks.
struct Guard;

impl Visitor for Guard {
    type Break = String;

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        if let Expr::Function(f) = expr {
            forbid_call(&f.name)?;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => forbid_call(name),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        if !query.locks.is_empty() {
            return ControlFlow::Break(
                "a subquery in the filter must be a plain SELECT: `FOR UPDATE` / `FOR SHARE` lock rows".into(),
            );
        }
        plain_select(&query.body)
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<String> {
        ControlFlow::Break(format!(
            "a subquery in the filter must be a plain SELECT, not `{}`",
            shorten(&statement.to_string())
        ))
    }
}

fn plain_select(body: &SetExpr) -> ControlFlow<String> {
    match body {
        SetExpr::Select(s) if s.into.is_some() => ControlFlow::Break(
            "a subquery in the filter must be a plain SELECT: `SELECT … INTO` creates a table"
                .into(),
        ),
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => ControlFlow::Continue(()),
        SetExpr::Query(q) => plain_select(&q.body),
        SetExpr::SetOperation { left, right, .. } => {
            plain_select(left)?;
            plain_select(right)
        }
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            ControlFlow::Break(format!(
                "a subquery in the filter must be a plain SELECT, not `{}`",
                shorten(&body.to_string())
            ))
        }
    }
}

fn forbid_call(name: &ObjectName) -> ControlFlow<String> {
    let Some(last) = name.0.last() else {
        return ControlFlow::Continue(());
    };
    let base = match last {
        ObjectNamePart::Identifier(i) => i.value.to_lowercase(),
        ObjectNamePart::Function(f) => f.name.value.to_lowercase(),
    };
    let hit = FORBIDDEN_FUNCTIONS
        .iter()
        .any(|p| match p.strip_suffix('*') {
            Some(prefix) => base.starts_with(prefix),
            None => base == *p,
        });
    if hit {
        ControlFlow::Break(format!(
            "the filter calls `{name}`, which writes, signals, locks or sleeps; a filter may only read"
        ))
    } else {
        ControlFlow::Continue(())
    }
}

/// Byte offset in `text` of a 1-based line/column location (columns count characters).
fn char_offset(text: &str, loc: Location) -> Option<usize> {
    if loc.line == 0 || loc.column == 0 {
        return None;
    }
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == loc.line {
            let col = usize::try_from(loc.column - 1).ok()?;
            return Some(
                offset
                    + line
                        .char_indices()
                        .nth(col)
                        .map(|(b, _)| b)
                        .unwrap_or(line.len()),
            );
        }
        offset += line.len();
    }
    None
}

/// "character N" of the filter, for messages.
fn where_in(text: &str, loc: Location) -> String {
    match char_offset(text, loc) {
        Some(b) => format!("character {} of the filter", text[..b].chars().count() + 1),
        None => "the end of the filter".into(),
    }
}

/// At most 60 characters of `text`, for messages.
fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let tail: String = text
            .chars()
            .rev()
            .take(MAX)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}

#[cfg(test)]
mod tests;
