//! The anonymise strategies a rule's config names (`anonymise = { col = "hash" }`). What
//! each becomes in SQL is `anonymise`'s business; here they are only parsed.

use std::fmt;

use serde::{de, Deserialize, Deserializer};

/// What to write over a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// `NULL`.
    Null,
    /// A constant, cast to the column's type.
    Fixed(String),
    /// Keyed HMAC-SHA-256: the same input gives the same pseudonym, so joins still work.
    Hash,
    /// IPv4 to its /24, IPv6 to its /48 (inet, cidr and text columns).
    TruncateIp,
    /// Keep only the domain of an email address.
    EmailDomain,
    /// A random value of the column's type.
    Random,
}

impl Strategy {
    /// Parses `null`, `fixed:<value>`, `hash`, `truncate_ip`, `email_domain`, `random`.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "null" => Self::Null,
            "hash" => Self::Hash,
            "truncate_ip" => Self::TruncateIp,
            "email_domain" => Self::EmailDomain,
            "random" => Self::Random,
            _ => match s.strip_prefix("fixed:") {
                Some(v) => Self::Fixed(v.to_owned()),
                None => {
                    return Err(format!(
                        "unknown anonymise strategy `{s}`: expected null, fixed:<value>, hash, truncate_ip, email_domain or random"
                    ))
                }
            },
        })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Fixed(v) => write!(f, "fixed:{v}"),
            Self::Hash => f.write_str("hash"),
            Self::TruncateIp => f.write_str("truncate_ip"),
            Self::EmailDomain => f.write_str("email_domain"),
            Self::Random => f.write_str("random"),
        }
    }
}

impl<'de> Deserialize<'de> for Strategy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Strategy::parse(&s).map_err(de::Error::custom)
    }
}
