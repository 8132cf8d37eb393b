//! Anonymise strategies and the SQL expressions they become. Pure: no I/O here.
//!
//! Every strategy is applied in SQL by one `UPDATE`, so values never travel to this
//! process. `hash` is HMAC-SHA-256 built from PostgreSQL's own `sha256()` (PG 11+):
//! `HMAC(K, m) = H((K ⊕ opad) || H((K ⊕ ipad) || m))`, with the two padded keys bound as
//! parameters, so the secret never appears in SQL text and no extension is needed.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::Ident;

/// Prefix of a `hash` pseudonym in a text column; also how an already hashed value is
/// recognised, so a second run does not select the row again.
pub const HASH_PREFIX: &str = "hmac:";
/// Prefix of a `random` value in a text column.
pub const RANDOM_PREFIX: &str = "rnd:";
const HMAC_BLOCK: usize = 64;

pub use crate::config::Strategy;

/// The broad type of a column, as far as anonymising is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// text, varchar, char, citext.
    Text,
    /// inet or cidr.
    Inet,
    /// uuid.
    Uuid,
    /// smallint, integer.
    Int4,
    /// bigint.
    Int8,
    /// Anything else.
    Other,
}

impl ColumnKind {
    /// Classifies a type name as printed by `format_type()`.
    pub fn from_type_name(name: &str) -> Self {
        let base = name.split('(').next().unwrap_or(name).trim();
        match base {
            "text" | "character varying" | "character" | "citext" | "varchar" | "bpchar"
            | "name" => Self::Text,
            "inet" | "cidr" => Self::Inet,
            "uuid" => Self::Uuid,
            "smallint" | "integer" => Self::Int4,
            "bigint" => Self::Int8,
            _ => Self::Other,
        }
    }
}

/// A column to anonymise, with what the catalog says about it.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The column.
    pub column: &'a Ident,
    /// Its type as printed by `format_type()` (from the catalog, never from config).
    pub type_name: &'a str,
    /// Whether it accepts NULL.
    pub nullable: bool,
    /// The strategy.
    pub strategy: &'a Strategy,
}

/// The SQL a strategy becomes for one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSql {
    /// Right-hand side of `SET col = …`.
    pub set_expr: String,
    /// True when a row's value already is what the strategy would write (so the row is
    /// not selected again); `None` when the strategy leaves no recognisable trace.
    pub done_expr: Option<String>,
}

/// Placeholders for the HMAC pads, assigned by the caller's parameter list.
#[derive(Debug, Clone)]
pub struct HmacParams {
    /// Placeholder of `K ⊕ ipad`, e.g. `$4`.
    pub ipad: String,
    /// Placeholder of `K ⊕ opad`, e.g. `$5`.
    pub opad: String,
}

/// Quotes a string as an SQL literal (standard_conforming_strings is on since PG 9.1).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SQL for one column, or why the strategy does not suit its type.
pub fn column_sql(target: &Target<'_>, hmac: &HmacParams) -> Result<ColumnSql, String> {
    let col = target.column.quoted();
    let kind = ColumnKind::from_type_name(target.type_name);
    let ty = target.type_name;
    let idempotent = |set: String| -> ColumnSql {
        let done = format!("{col} IS NOT DISTINCT FROM ({set})");
        ColumnSql {
            set_expr: set,
            done_expr: Some(done),
        }
    };
    let unsuitable = |what: &str| {
        Err(format!(
            "strategy `{}` cannot anonymise column `{}` of type {ty}: {what}",
            target.strategy, target.column
        ))
    };
    // A value the column cannot hold fails the row's update at run time: refuse it now.
    if let (Some(longest), Some(limit)) = (longest_output(target.strategy, kind), char_limit(ty)) {
        if longest > limit {
            return unsuitable(&format!(
                "it writes values of up to {longest} characters and the column holds {limit}"
            ));
        }
    }
    let hex = format!(
        "encode(sha256({o} || sha256({i} || convert_to({col}::text, 'UTF8'))), 'hex')",
        o = hmac.opad,
        i = hmac.ipad
    );
    match target.strategy {
        Strategy::Null => {
            if !target.nullable {
                return unsuitable("the column is NOT NULL");
            }
            Ok(idempotent("NULL".to_owned()))
        }
        Strategy::Fixed(v) => Ok(idempotent(format!("CAST({} AS {ty})", quote_literal(v)))),
        Strategy::Hash => match kind {
            Kind::Text => Ok(ColumnSql {
                // A value that already is a pseudonym stays as it is, so joins keep working
                // even if a row is ever anonymised twice.
                set_expr: format!(
                    "CASE WHEN {col} IS NULL OR {col} LIKE {} THEN {col} ELSE {} || {hex} END",
                    quote_literal(&format!("{HASH_PREFIX}%")),
                    quote_literal(HASH_PREFIX)
                ),
                done_expr: Some(format!("({col} IS NULL OR {col} LIKE {})", quote_literal(&format!("{HASH_PREFIX}%")))),
            }),
            Kind::Uuid => Ok(ColumnSql {
                set_expr: format!("CAST(substr({hex}, 1, 32) AS uuid)"),
                done_expr: None,
            }),
            Kind::Int8 => Ok(ColumnSql {
                set_expr: format!("CAST(CAST('x' || substr({hex}, 1, 16) AS bit(64)) AS bigint)"),
                done_expr: None,
            }),
            Kind::Int4 if ty == "integer" => Ok(ColumnSql {
                set_expr: format!("CAST(CAST('x' || substr({hex}, 1, 8) AS bit(32)) AS integer)"),
                done_expr: None,
            }),
            _ => unsuitable("hash needs a text, uuid, integer or bigint column"),
        },
        Strategy::TruncateIp => match kind {
            Kind::Inet => Ok(idempotent(format!(
                "CAST(host(network(set_masklen({col}, CASE WHEN family({col}) = 4 THEN 24 ELSE 48 END))) AS {ty})"
            ))),
            Kind::Text if !target.nullable => unsuitable(
                "the column is NOT NULL, and truncate_ip writes NULL over a value that is not an IP address",
            ),
            Kind::Text => Ok(idempotent(format!(
                "CASE WHEN {col} ~ '^[0-9]{{1,3}}(\\.[0-9]{{1,3}}){{3}}$' THEN regexp_replace({col}, '\\.[0-9]{{1,3}}$', '.0') \
                 WHEN {col} ~ '^[0-9A-Fa-f:]*:[0-9A-Fa-f:]*$' THEN host(network(set_masklen(CAST({col} AS inet), 48))) \
                 ELSE NULL END"
            ))),
            _ => unsuitable("truncate_ip needs an inet, cidr or text column"),
        },
        Strategy::EmailDomain => match kind {
            Kind::Text => Ok(idempotent(format!(
                "CASE WHEN strpos({col}, '@') > 0 THEN split_part({col}, '@', -1) ELSE {col} END"
            ))),
            _ => unsuitable("email_domain needs a text column"),
        },
        Strategy::Random => match kind {
            Kind::Text => Ok(ColumnSql {
                set_expr: format!(
                    "CASE WHEN {col} IS NULL THEN NULL ELSE {} || md5(random()::text || clock_timestamp()::text) END",
                    quote_literal(RANDOM_PREFIX)
                ),
                done_expr: Some(format!("({col} IS NULL OR {col} LIKE {})", quote_literal(&format!("{RANDOM_PREFIX}%")))),
            }),
            Kind::Uuid => Ok(ColumnSql {
                set_expr: "gen_random_uuid()".to_owned(),
                done_expr: None,
            }),
            Kind::Int4 | Kind::Int8 if ty != "smallint" => Ok(ColumnSql {
                set_expr: format!("CAST(floor(random() * 2147483647) AS {ty})"),
                done_expr: None,
            }),
            _ => unsuitable("random needs a text, uuid, integer or bigint column"),
        },
    }
}

use ColumnKind as Kind;

/// The longest value `strategy` can write into a text column, where it does not depend on
/// the value it replaces (`truncate_ip` and `email_domain` only shorten it).
fn longest_output(strategy: &Strategy, kind: ColumnKind) -> Option<usize> {
    match (strategy, kind) {
        (Strategy::Hash, Kind::Text) => Some(HASH_PREFIX.len() + 64),
        (Strategy::Random, Kind::Text) => Some(RANDOM_PREFIX.len() + 32),
        (Strategy::Fixed(v), Kind::Text) => Some(v.chars().count()),
        _ => None,
    }
}

/// The length limit of `character varying(n)` or `character(n)`.
fn char_limit(type_name: &str) -> Option<usize> {
    let rest = type_name
        .strip_prefix("character varying(")
        .or_else(|| type_name.strip_prefix("character("))?;
    rest.strip_suffix(')')?.parse().ok()
}

/// `K ⊕ ipad` and `K ⊕ opad` for HMAC-SHA-256 (keys longer than a block are hashed first).
pub fn hmac_pads(key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut block = [0u8; HMAC_BLOCK];
    if key.len() > HMAC_BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad = block.iter().map(|b| b ^ 0x36).collect();
    let opad = block.iter().map(|b| b ^ 0x5c).collect();
    (ipad, opad)
}

/// The pseudonym `hash` gives `value` in a text column, computed here (for tests and erase).
pub fn pseudonym(key: &[u8], value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
    mac.update(value.as_bytes());
    format!("{HASH_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac() -> HmacParams {
        HmacParams {
            ipad: "$4".into(),
            opad: "$5".into(),
        }
    }

    #[test]
    fn parses_strategies() {
        assert_eq!(
            Strategy::parse("fixed:n/a").unwrap(),
            Strategy::Fixed("n/a".into())
        );
        assert_eq!(
            Strategy::parse("truncate_ip").unwrap(),
            Strategy::TruncateIp
        );
        assert!(Strategy::parse("scramble").is_err());
    }

    #[test]
    fn fixed_value_is_a_quoted_literal() {
        let col = Ident::parse("name").unwrap();
        let s = Strategy::Fixed("o'hara; drop table x".into());
        let t = Target {
            column: &col,
            type_name: "text",
            nullable: true,
            strategy: &s,
        };
        let sql = column_sql(&t, &hmac()).unwrap();
        assert_eq!(sql.set_expr, "CAST('o''hara; drop table x' AS text)");
    }

    #[test]
    fn type_checks() {
        let col = Ident::parse("c").unwrap();
        let cases = [
            (Strategy::Null, "text", false, false),
            (Strategy::EmailDomain, "inet", true, false),
            (Strategy::TruncateIp, "bigint", true, false),
            (Strategy::Hash, "jsonb", true, false),
            (Strategy::Hash, "character varying(255)", true, true),
            (Strategy::TruncateIp, "inet", true, true),
            (Strategy::Random, "uuid", true, true),
        ];
        for (s, ty, nullable, ok) in cases {
            let t = Target {
                column: &col,
                type_name: ty,
                nullable,
                strategy: &s,
            };
            assert_eq!(column_sql(&t, &hmac()).is_ok(), ok, "{s} on {ty}");
        }
    }

    #[test]
    fn hmac_pads_match_the_rfc_construction() {
        // With the pads, HMAC = H(opad || H(ipad || m)); check against the hmac crate.
        let key = b"key";
        let (ipad, opad) = hmac_pads(key);
        let inner = Sha256::digest(
            [
                ipad.as_slice(),
                b"The quick brown fox jumps over the lazy dog",
            ]
            .concat(),
        );
        let outer = Sha256::digest([opad.as_slice(), inner.as_slice()].concat());
        assert_eq!(
            hex::encode(outer),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert_eq!(
            pseudonym(key, "The quick brown fox jumps over the lazy dog"),
            "hmac:f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        let long = [7u8; 100];
        let (ipad, _) = hmac_pads(&long);
        assert_eq!(ipad.len(), 64);
    }
}
