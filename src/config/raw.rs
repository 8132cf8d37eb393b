//! The file as written: serde structs that mirror `retention.toml` key for key.
//! Unknown keys are rejected here; cross-references are checked in `config::validate`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::period::Period;
use super::Strategy;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub anonymise: RawAnonymise,
    pub audit: RawAudit,
    pub stores: BTreeMap<String, RawStore>,
    #[serde(default)]
    pub categories: BTreeMap<String, RawCategory>,
    #[serde(default)]
    pub events: BTreeMap<String, RawEvent>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

/// `[events.NAME]`: when something happens to a subject (an account closes).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvent {
    pub store: String,
    pub table: String,
    pub subject: RawSubject,
    pub at_column: String,
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub schedule: Option<String>,
    pub conformance_schedule: Option<String>,
    pub batch_size: Option<u32>,
    pub min_batch_size: Option<u32>,
    pub max_batch_size: Option<u32>,
    pub max_batch_duration: Option<Period>,
    pub grace_period: Option<Period>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnonymise {
    pub hmac_key_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub store: String,
    pub report_dir: Option<String>,
    pub report_store: Option<String>,
    pub report_prefix: Option<String>,
    #[serde(default)]
    pub samples: bool,
    pub signing_key_env: Option<String>,
    pub signing_key_file: Option<String>,
    pub anchor_store: Option<String>,
    pub anchor_prefix: Option<String>,
    pub anchor_retain: Option<Period>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawStoreKind {
    Postgres,
    S3,
}

/// One struct for both kinds, so an unknown key keeps its exact position (an internally
/// tagged enum would buffer the table and lose it); per-kind keys are checked in validate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: RawStoreKind,
    // postgres
    pub url_env: Option<String>,
    pub url_file: Option<String>,
    pub max_connections: Option<u32>,
    // s3
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub endpoint_env: Option<String>,
    pub force_path_style: Option<bool>,
    pub max_in_flight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCategory {
    pub description: Option<String>,
    pub legal_basis: Option<String>,
    pub min_retain: Option<Period>,
    pub max_retain: Option<Period>,
    #[serde(default)]
    pub locked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawAction {
    Delete,
    #[serde(alias = "anonymize")]
    Anonymise,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawAgeFormat {
    Timestamp,
    EpochSeconds,
    EpochMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawVersions {
    All,
    Current,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawMaxDelete {
    Count(u64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubject {
    pub kind: String,
    pub column: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawObjects {
    pub store: String,
    pub key_columns: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    pub category: String,
    pub store: String,
    pub retain: Period,
    pub action: RawAction,
    pub schedule: Option<String>,
    pub max_delete: Option<RawMaxDelete>,
    pub enabled: Option<bool>,
    // Table rules.
    pub table: Option<String>,
    pub age_column: Option<String>,
    pub after_event: Option<String>,
    pub age_format: Option<RawAgeFormat>,
    pub age_timezone: Option<String>,
    pub filter: Option<String>,
    pub subject: Option<RawSubject>,
    pub anonymise: Option<BTreeMap<String, Strategy>>,
    pub objects: Option<RawObjects>,
    pub partitions: Option<String>,
    pub vacuum: Option<String>,
    // Prefix rules.
    pub prefix: Option<String>,
    pub exclude: Option<Vec<String>>,
    pub versions: Option<RawVersions>,
    pub abort_multipart_after: Option<Period>,
    pub tags: Option<BTreeMap<String, String>>,
    pub bypass_governance_retention: Option<bool>,
}
