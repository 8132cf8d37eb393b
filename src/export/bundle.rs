//! What a bundle is made of: where it goes, its files and manifest, and the hashing
//! writer every file goes through.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, StoreConfig};

/// Where a bundle goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A local directory (created; must be empty if it exists).
    Dir(PathBuf),
    /// `s3://STORE/PREFIX`: an s3 store of the config, under a prefix that holds nothing.
    Store { store: String, prefix: String },
}

impl Destination {
    /// Reads `--out`: `s3://STORE/PREFIX` names an s3 store of `config` and a non-empty
    /// prefix (a bundle never lands at the root of a bucket), anything else is a
    /// directory.
    pub fn parse(out: &str, config: &Config) -> Result<Self, String> {
        let Some(rest) = out.strip_prefix("s3://") else {
            return Ok(Self::Dir(PathBuf::from(out)));
        };
        let (store, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !matches!(config.stores.get(store), Some(StoreConfig::S3(_))) {
            return Err(format!(
                "--out {out}: `{store}` is not an s3 store of the config"
            ));
        }
        match prefix.trim_matches('/') {
            "" => Err(format!(
                "--out {out}: give a prefix, s3://{store}/PREFIX: a bundle never goes to the root of a bucket"
            )),
            p => Ok(Self::Store {
                store: store.to_owned(),
                prefix: format!("{p}/"),
            }),
        }
    }

    /// The destination of one subject of a batch: a subdirectory or sub-prefix named
    /// after `KIND:ID`, encoded so that two subjects never share one.
    pub fn for_subject(&self, kind: &str, id: &str) -> Self {
        let name = safe_name(&format!("{kind}:{id}"));
        match self {
            Self::Dir(d) => Self::Dir(d.join(name)),
            Self::Store { store, prefix } => Self::Store {
                store: store.clone(),
                prefix: format!("{prefix}{name}/"),
            },
        }
    }
}

/// `s` with every byte outside `A–Z a–z 0–9 _ -` (and `.` in a name other than `.` or
/// `..`) percent-encoded, `%` included: one path component, a different one for every
/// different `s`.
pub(super) fn safe_name(s: &str) -> String {
    let dots = s == "." || s == "..";
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => (b as char).to_string(),
            b'.' if !dots => ".".into(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// One file of a bundle, as the manifest lists it.
#[derive(Debug, Clone, Serialize)]
pub struct BundleFile {
    /// Path inside the bundle.
    pub path: String,
    /// SHA-256 (hex) of its bytes.
    pub sha256: String,
    /// Rows (NDJSON files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes (copied objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The rule whose rows it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// `manifest.json`.
#[derive(Debug, Serialize)]
pub(super) struct Manifest<'a> {
    pub(super) schema: &'static str,
    pub(super) run_id: String,
    /// `succeeded`, or `failed` with the rules whose files are missing or incomplete.
    pub(super) status: crate::report::Status,
    pub(super) failed_rules: Vec<String>,
    pub(super) config_sha256: &'a str,
    pub(super) subject: String,
    pub(super) exported_at: chrono::DateTime<chrono::Utc>,
    pub(super) with_objects: bool,
    pub(super) files: &'a [BundleFile],
}

/// One listed object (`objects.ndjson`).
#[derive(Debug, Serialize)]
pub(super) struct ObjectLine<'a> {
    pub(super) rule: &'a str,
    pub(super) store: &'a str,
    pub(super) key: &'a str,
    /// False when no current object has the key.
    pub(super) exists: bool,
    #[serde(flatten)]
    pub(super) facts: Option<crate::store::s3::ObjectFacts>,
    /// Where the copy is inside the bundle (`--with-objects`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) file: Option<String>,
}

/// Creates `dir` (and its parents) readable by its owner only: a bundle is personal data.
pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates a new file at `path` (never an existing one, never through a symlink),
/// readable by its owner only.
pub(super) fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// A file being written and hashed at once.
pub(super) struct Hashed {
    out: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
}

impl Hashed {
    pub(super) fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        Ok(Self {
            out: std::io::BufWriter::new(create_private_file(path)?),
            hash: Sha256::new(),
        })
    }

    pub(super) fn line(&mut self, text: &str) -> std::io::Result<()> {
        self.hash.update(text.as_bytes());
        self.hash.update(b"\n");
        self.out.write_all(text.as_bytes())?;
        self.out.write_all(b"\n")
    }

    pub(super) fn finish(mut self) -> std::io::Result<String> {
        self.out.flush()?;
        Ok(hex::encode(self.hash.finalize()))
    }
}

/// SHA-256 (hex) of the file at `path`.
pub(super) fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_get_names_no_other_subject_gets_and_no_path_escapes() {
        assert_ne!(safe_name("account_eu:1"), safe_name("account:eu_1"));
        assert_eq!(safe_name("account:42"), "account%3A42");
        assert_eq!(safe_name(".."), "%2E%2E");
        assert_eq!(safe_name("a/../b"), "a%2F..%2Fb");
        assert_eq!(safe_name("50%"), "50%25");
        let d = Destination::Dir(PathBuf::from("/out"));
        assert_eq!(
            d.for_subject("account", "../../etc"),
            Destination::Dir(PathBuf::from("/out/account%3A..%2F..%2Fetc"))
        );
    }
}
