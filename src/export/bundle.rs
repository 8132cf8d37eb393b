//! What a bundle is made of: where it goes, its files and manifest, and the hashing
//! writer every file goes through.

use super::*;

/// Where a bundle goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A local directory (created; must be empty if it exists).
    Dir(PathBuf),
    /// `s3://STORE/PREFIX`: an s3 store of the config.
    Store { store: String, prefix: String },
}
impl Destination {
    /// Reads `--out`: `s3://STORE/PREFIX` names an s3 store of `config`, anything else
    /// is a directory.
    pub fn parse(out: &str, config: &Config) -> Result<Self, String> {
        let Some(rest) = out.strip_prefix("s3://") else {
            return Ok(Self::Dir(PathBuf::from(out)));
        };
        let (store, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        match config.stores.get(store) {
            Some(StoreConfig::S3(_)) => Ok(Self::Store {
                store: store.to_owned(),
                prefix: match prefix.trim_end_matches('/') {
                    "" => String::new(),
                    p => format!("{p}/"),
                },
            }),
            _ => Err(format!(
                "--out {out}: `{store}` is not an s3 store of the config"
            )),
        }
    }

    /// The destination of one subject of a batch: a subdirectory or sub-prefix named
    /// after it.
    pub fn for_subject(&self, kind: &str, id: &str) -> Self {
        let name = format!("{}_{}", safe_name(kind), safe_name(id));
        match self {
            Self::Dir(d) => Self::Dir(d.join(name)),
            Self::Store { store, prefix } => Self::Store {
                store: store.clone(),
                prefix: format!("{prefix}{name}/"),
            },
        }
    }
}
/// `s` with every byte outside `A–Z a–z 0–9 . _ -` percent-encoded: a file name that
/// cannot leave its directory.
pub(super) fn safe_name(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => (b as char).to_string(),
            b'.' if s != "." && s != ".." => ".".into(),
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
    /// Rows (NDJSON files) or bytes (copied objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
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
    /// `None` when no current object has the key.
    #[serde(flatten)]
    pub(super) facts: Option<crate::store::s3::ObjectFacts>,
    pub(super) exists: bool,
    /// Where the copy is inside the bundle (`--with-objects`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) file: Option<String>,
}
/// A file being written and hashed at once.
pub(super) struct Hashed {
    pub(super) out: std::io::BufWriter<std::fs::File>,
    pub(super) hash: Sha256,
}
impl Hashed {
    pub(super) fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            out: std::io::BufWriter::new(std::fs::File::create(path)?),
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
pub(super) fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}
