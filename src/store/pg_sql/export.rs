//! The statements of an export: a subject's rows as JSON, and the object keys they hold.

use super::{keys_array, Param, Params, Statement, SubjectType};
use crate::config::{Ident, TableName};

/// What an export reads of one rule's table.
#[derive(Debug, Clone, Copy)]
pub struct SubjectRows<'a> {
    /// The table.
    pub table: &'a TableName,
    /// Its columns, `(name, catalog type)`, in table order.
    pub columns: &'a [(String, String)],
    /// The subject column, and how it compares with ids.
    pub subject: &'a Ident,
    pub subject_type: SubjectType,
    /// The subject's id, as its column spells it.
    pub id: &'a str,
    /// The rule's filter: it covers only these rows.
    pub filter: Option<&'a str>,
}

/// Arguments `jsonb_build_object` takes at most (PostgreSQL's function limit is 100).
const PAIRS_PER_OBJECT: usize = 50;

impl SubjectRows<'_> {
    fn condition(&self, params: &mut Params) -> String {
        let p = params.push(Param::Text(self.id.to_owned()));
        let mut cond = self.subject_type.eq(&self.subject.quoted(), &p);
        if let Some(f) = self.filter {
            cond = format!("{cond} AND ({f})");
        }
        cond
    }

    /// One JSON object (text) per row, in key order: every column rendered faithfully.
    /// Timestamps are ISO 8601 (RFC 3339 for timestamptz), `numeric`, `bigint` and
    /// `money` strings (a JSON number loses their precision in most readers), `bytea`
    /// base64, arrays and json as JSON, everything else as `to_jsonb` gives it.
    pub fn rows(&self) -> Statement {
        let mut params = Params::default();
        let cond = self.condition(&mut params);
        let pairs: Vec<String> = self
            .columns
            .iter()
            .map(|(name, ty)| {
                let c = Ident::from_catalog(name.clone()).quoted();
                let value = json_value(&c, ty);
                format!("{}, {value}", quote_literal(name))
            })
            .collect();
        let object = if pairs.is_empty() {
            "CAST('{}' AS jsonb)".to_owned()
        } else {
            pairs
                .chunks(PAIRS_PER_OBJECT)
                .map(|c| format!("jsonb_build_object({})", c.join(", ")))
                .collect::<Vec<_>>()
                .join(" || ")
        };
        Statement {
            sql: format!(
                "SELECT CAST({object} AS text) FROM {} WHERE {cond} ORDER BY ctid",
                self.table.quoted()
            ),
            params,
        }
    }

    /// The distinct object keys the subject's rows hold in `key_columns`.
    pub fn keys(&self, key_columns: &[Ident]) -> Statement {
        let mut params = Params::default();
        let cond = self.condition(&mut params);
        Statement {
            sql: format!(
                "SELECT DISTINCT u.k FROM {} CROSS JOIN LATERAL unnest({}) AS u(k) WHERE {cond} ORDER BY 1",
                self.table.quoted(),
                keys_array(key_columns)
            ),
            params,
        }
    }
}

/// A column as a JSON value, by its catalog type.
fn json_value(column: &str, type_name: &str) -> String {
    match type_name {
        // Arrays first (`numeric(12,2)[]` also starts with "numeric"): element by element,
        // NULL elements stay null (one dimension).
        "bigint[]" => format!("to_jsonb(CAST({column} AS text[]))"),
        t if t.starts_with("numeric") && t.ends_with("[]") => {
            format!("to_jsonb(CAST({column} AS text[]))")
        }
        "money[]" => format!("to_jsonb(CAST(CAST({column} AS numeric[]) AS text[]))"),
        "bytea[]" => format!(
            "CASE WHEN {column} IS NULL THEN NULL ELSE COALESCE((SELECT jsonb_agg(to_jsonb({}) ORDER BY o) \
             FROM unnest({column}) WITH ORDINALITY AS u(x, o)), CAST('[]' AS jsonb)) END",
            base64("u.x")
        ),
        "bigint" => format!("to_jsonb(CAST({column} AS text))"),
        // Without the currency symbol and the locale's separators.
        "money" => format!("to_jsonb(CAST(CAST({column} AS numeric) AS text))"),
        t if t.starts_with("numeric") => format!("to_jsonb(CAST({column} AS text))"),
        // Without the line breaks PostgreSQL puts into base64 every 76 characters.
        "bytea" => format!("to_jsonb({})", base64(column)),
        _ => format!("to_jsonb({column})"),
    }
}

fn base64(value: &str) -> String {
    format!("translate(encode({value}, 'base64'), E'\\n', '')")
}

/// A column name as a SQL string literal (catalog names may hold quotes).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_is_rendered_by_its_type_and_the_id_is_bound() {
        let table = TableName::parse("public.invoices").unwrap();
        let cols = vec![
            ("id".to_owned(), "bigint".to_owned()),
            ("amount".to_owned(), "numeric(12,2)".to_owned()),
            ("pdf".to_owned(), "bytea".to_owned()),
            ("it's".to_owned(), "text".to_owned()),
        ];
        let subject = Ident::parse("account_id").unwrap();
        let rows = SubjectRows {
            table: &table,
            columns: &cols,
            subject: &subject,
            subject_type: SubjectType::of("bigint"),
            id: "42",
            filter: Some("kind = 'x'"),
        };
        let st = rows.rows();
        assert_eq!(
            st.sql,
            "SELECT CAST(jsonb_build_object('id', to_jsonb(CAST(\"id\" AS text)), 'amount', to_jsonb(CAST(\"amount\" AS text)), \
             'pdf', to_jsonb(translate(encode(\"pdf\", 'base64'), E'\\n', '')), 'it''s', to_jsonb(\"it's\")) AS text) \
             FROM \"public\".\"invoices\" WHERE \"account_id\" = CAST($1 AS bigint) AND (kind = 'x') ORDER BY ctid"
        );
        assert_eq!(st.params.0, vec![Param::Text("42".into())]);
    }

    #[test]
    fn more_columns_than_one_call_takes_are_concatenated() {
        let table = TableName::parse("wide").unwrap();
        let cols: Vec<(String, String)> = (0..120)
            .map(|i| (format!("c{i}"), "integer".to_owned()))
            .collect();
        let subject = Ident::parse("c0").unwrap();
        let st = SubjectRows {
            table: &table,
            columns: &cols,
            subject: &subject,
            subject_type: SubjectType::of("integer"),
            id: "1",
            filter: None,
        }
        .rows();
        assert_eq!(st.sql.matches("jsonb_build_object(").count(), 3);
        assert_eq!(st.sql.matches(" || ").count(), 2);
    }
}
