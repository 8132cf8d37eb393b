//! Small evidence objects: written under Object Lock where the bucket has it, and read
//! back by version (the audit trail's anchors).

use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode};

use super::*;

/// How an object was protected when it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Object Lock in compliance mode: nobody can delete it or shorten its retention.
    Compliance,
    /// The bucket's default retention, or none.
    BucketDefault,
}

impl S3Store {
    /// Writes `body` at `key`, locked in compliance mode until `retain_until` when given.
    pub async fn put_locked(
        &self,
        key: &str,
        body: Vec<u8>,
        retain_until: Option<DateTime<Utc>>,
    ) -> Result<Protection, S3Error> {
        let Some(until) = retain_until else {
            self.put(key, body, "application/json").await?;
            return Ok(Protection::BucketDefault);
        };
        let until = aws_smithy_types::DateTime::from_millis(until.timestamp_millis());
        // Compliance mode or nothing: a failed put is a failed anchor (counted, and
        // closed by the next seal), never a silently weaker lock.
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            // A put with a retention period must carry a checksum.
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(until)
            .body(body.into())
            .send()
            .await
            .map_err(|e| self.err("PutObject", describe(&e)))?;
        Ok(Protection::Compliance)
    }

    /// Every version (or, unversioned, every object) under `prefix`, delete markers
    /// included.
    pub async fn list_all_versions(
        &self,
        prefix: &str,
        versioned: bool,
    ) -> Result<Vec<Listed>, S3Error> {
        let mut all = Vec::new();
        if versioned {
            let mut marker = None;
            loop {
                let (items, next) = self.list_versions_page(prefix, marker).await?;
                all.extend(items);
                match next {
                    Some(m) => marker = Some(m),
                    None => break,
                }
            }
        } else {
            let mut token = None;
            loop {
                let (items, next) = self.list_page(prefix, token).await?;
                all.extend(items);
                match next {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
        }
        Ok(all)
    }

    /// The body of `key` at `version_id` (the current version when `None`).
    pub async fn get_bytes(&self, key: &str, version_id: Option<&str>) -> Result<Vec<u8>, S3Error> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| self.err("GetObject", describe(&e)))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| self.err("GetObject", e.to_string()))?;
        Ok(body.into_bytes().to_vec())
    }
}
