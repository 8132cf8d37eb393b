//! SQL identifiers from the config: validated at load, always emitted quoted.

use std::fmt;

/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1 bytes).
pub const MAX_IDENT_BYTES: usize = 63;

/// A validated SQL identifier, taken literally and case-sensitively.
///
/// Valid means: 1 to 63 bytes, starts with a letter or `_`, then letters, digits, `_`
/// or `$`. Anything else (spaces, quotes, semicolons, dots) is rejected at load even
/// though it would be quoted anyway: a name like that in a retention config is far more
/// likely a mistake or an attack than a real table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

impl Ident {
    /// Validates `name` as an identifier.
    pub fn parse(name: &str) -> Result<Self, IdentError> {
        let bad = |why: &'static str| IdentError {
            name: name.to_owned(),
            why,
        };
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.len() > MAX_IDENT_BYTES {
            return Err(bad("it is longer than 63 bytes"));
        }
        let mut chars = name.chars();
        let first = chars.next().expect("non-empty");
        if !(first.is_alphabetic() || first == '_') {
            return Err(bad("it must start with a letter or `_`"));
        }
        if !chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            return Err(bad("only letters, digits, `_` and `$` are allowed"));
        }
        Ok(Self(name.to_owned()))
    }

    /// A name read from the database catalog: exists, so it is used as is (quoted).
    pub fn from_catalog(name: String) -> Self {
        Self(name)
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier: `"ApiLog"`.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0.replace('"', "\"\""))
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A table reference, `name` or `schema.name`; the schema defaults to `public`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableName {
    /// The schema.
    pub schema: Ident,
    /// The table.
    pub name: Ident,
}

impl TableName {
    /// Parses `name` or `schema.name`.
    pub fn parse(text: &str) -> Result<Self, IdentError> {
        let parts: Vec<&str> = text.split('.').collect();
        match parts.as_slice() {
            [name] => Ok(Self {
                schema: Ident::parse("public")?,
                name: Ident::parse(name)?,
            }),
            [schema, name] => Ok(Self {
                schema: Ident::parse(schema)?,
                name: Ident::parse(name)?,
            }),
            _ => Err(IdentError {
                name: text.to_owned(),
                why: "expected `table` or `schema.table`",
            }),
        }
    }

    /// `"schema"."name"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", self.schema.quoted(), self.name.quoted())
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A name that is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not a valid SQL identifier: {why}")]
pub struct IdentError {
    /// The offending text.
    pub name: String,
    /// Why it was rejected.
    pub why: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_case_and_quotes() {
        let t = TableName::parse("public.ApiLog").unwrap();
        assert_eq!(t.quoted(), "\"public\".\"ApiLog\"");
        assert_eq!(
            TableName::parse("logs").unwrap().quoted(),
            "\"public\".\"logs\""
        );
        assert_eq!(Ident::parse("créé_at").unwrap().quoted(), "\"créé_at\"");
    }

    #[test]
    fn rejects_hostile_names() {
        for bad in [
            "",
            "logs; DROP TABLE accounts",
            "a\"b",
            "x y",
            "1abc",
            "a-b",
            "name--",
            "tab\u{0}le",
            &"a".repeat(64),
        ] {
            assert!(Ident::parse(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["a.b.c", "public.", ".x", "public.x;y"] {
            assert!(TableName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
