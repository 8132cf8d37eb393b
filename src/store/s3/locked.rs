//! Small evidence objects: written under Object Lock where the bucket has it, and read
//! back by version (the audit trail's anchors).

use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode};

use super::*;

/// How an object was protected when it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Object Lock in compliance mode: nobody can delete it or shorten its retention.
    Compliance,
    /// Object Lock in governance mode: the bucket refused compliance mode.
    Governance,
    /// The bucket's default retention, or none.
    BucketDefault,
}

impl S3Store {
    /// Writes `body` at `key`, locked until `retain_until` when given (compliance mode,
    /// governance mode when the bucket refuses compliance).
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
        let mut last = None;
        for (mode, protection) in [
            (ObjectLockMode::Compliance, Protection::Compliance),
            (ObjectLockMode::Governance, Protection::Governance),
        ] {
            match self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type("application/json")
                // A put with a retention period must carry a checksum.
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until)
                .body(body.clone().into())
                .send()
                .await
            {
                Ok(_) => return Ok(protection),
                Err(e) => last = Some(self.err("PutObject", describe(&e))),
            }
        }
        Err(last.expect("two attempts"))
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
