//! Listing: pages of current objects and of versions, one key's versions, head and tags.

use super::*;

impl S3Store {
    /// One page of current objects under `prefix`, from `token`; `(objects, next token)`.
    pub async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<(Vec<Listed>, Option<String>), S3Error> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| self.err("ListObjectsV2", describe(&e)))?;
        let items = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(Listed {
                    key: o.key()?.to_owned(),
                    version_id: None,
                    is_latest: true,
                    delete_marker: false,
                    last_modified: o.last_modified().map(to_chrono)?,
                    size: o.size().unwrap_or(0).max(0) as u64,
                })
            })
            .collect();
        let next = if out.is_truncated().unwrap_or(false) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok((items, next))
    }

    /// One page of versions and delete markers under `prefix`, sorted by key, newest first.
    pub async fn list_versions_page(
        &self,
        prefix: &str,
        marker: Option<(String, Option<String>)>,
    ) -> Result<(Vec<Listed>, Option<(String, Option<String>)>), S3Error> {
        let (key_marker, version_marker) =
            marker.map(|(k, v)| (Some(k), v)).unwrap_or((None, None));
        let out = self
            .client
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .map_err(|e| self.err("ListObjectVersions", describe(&e)))?;
        let mut items: Vec<Listed> = out
            .versions()
            .iter()
            .filter_map(|v| {
                Some(Listed {
                    key: v.key()?.to_owned(),
                    version_id: v.version_id().map(str::to_owned),
                    is_latest: v.is_latest().unwrap_or(false),
                    delete_marker: false,
                    last_modified: v.last_modified().map(to_chrono)?,
                    size: v.size().unwrap_or(0).max(0) as u64,
                })
            })
            .chain(out.delete_markers().iter().filter_map(|m| {
                Some(Listed {
                    key: m.key()?.to_owned(),
                    version_id: m.version_id().map(str::to_owned),
                    is_latest: m.is_latest().unwrap_or(false),
                    delete_marker: true,
                    last_modified: m.last_modified().map(to_chrono)?,
                    size: 0,
                })
            }))
            .collect();
        // Versions and markers come in two lists; merge them back into key order, newest first.
        items.sort_by(|a, b| {
            a.key
                .cmp(&b.key)
                .then(b.is_latest.cmp(&a.is_latest))
                .then(b.last_modified.cmp(&a.last_modified))
        });
        let next = if out.is_truncated().unwrap_or(false) {
            out.next_key_marker().map(|k| {
                (
                    k.to_owned(),
                    out.next_version_id_marker().map(str::to_owned),
                )
            })
        } else {
            None
        };
        Ok((items, next))
    }

    /// Every version and delete marker of exactly `key`.
    pub async fn versions_of(&self, key: &str) -> Result<Vec<Listed>, S3Error> {
        let mut all = Vec::new();
        let mut marker = None;
        loop {
            let (items, next) = self.list_versions_page(key, marker).await?;
            all.extend(items.into_iter().filter(|l| l.key == key));
            match next {
                Some(m) if m.0 == key || m.0.as_str() < key => marker = Some(m),
                _ => break,
            }
        }
        Ok(all)
    }

    /// The current object at exactly `key` (unversioned buckets), `None` when absent.
    /// One HEAD per key: cheaper than a listing on every server.
    pub async fn head(&self, key: &str) -> Result<Option<Listed>, S3Error> {
        Ok(self.facts(key).await?.map(|f| Listed {
            key: key.to_owned(),
            version_id: None,
            is_latest: true,
            delete_marker: false,
            last_modified: f.last_modified,
            size: f.size,
        }))
    }

    /// Tags of one object version.
    pub async fn tags(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<(String, String)>, S3Error> {
        let out = self
            .client
            .get_object_tagging()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| self.err("GetObjectTagging", describe(&e)))?;
        Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect())
    }
}
