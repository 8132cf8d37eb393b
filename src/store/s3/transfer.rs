//! Object transfer for exports: an object's facts, a download to a file, an upload from
//! one. Bodies stream between the network and the file: memory stays flat. Errors name
//! no path: a bundle's paths can spell its subject.

use std::path::Path;

use tokio::io::AsyncWriteExt;

use super::*;

/// What an export lists of one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectFacts {
    /// Size in bytes.
    pub size: u64,
    /// LastModified.
    pub last_modified: DateTime<Utc>,
    /// ETag, as the server sends it (quotes included).
    pub etag: Option<String>,
}

impl S3Store {
    /// The facts of the current object at `key`; `None` when there is none.
    pub async fn facts(&self, key: &str) -> Result<Option<ObjectFacts>, S3Error> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(h) => Ok(Some(ObjectFacts {
                size: h.content_length().unwrap_or(0).max(0) as u64,
                last_modified: h.last_modified().map(to_chrono).unwrap_or_else(Utc::now),
                etag: h.e_tag().map(str::to_owned),
            })),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(self.err("HeadObject", describe(&e))),
        }
    }

    /// Writes the current object at `key` to `path`; returns its size.
    pub async fn download_to(&self, key: &str, path: &Path) -> Result<u64, S3Error> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("GetObject", describe(&e)))?;
        let mut body = out.body;
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| self.err("GetObject", format!("cannot create the copy: {e}")))?;
        let mut size = 0u64;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| self.err("GetObject", e.to_string()))?
        {
            size += chunk.len() as u64;
            file.write_all(&chunk)
                .await
                .map_err(|e| self.err("GetObject", format!("cannot write the copy: {e}")))?;
        }
        file.flush()
            .await
            .map_err(|e| self.err("GetObject", format!("cannot write the copy: {e}")))?;
        Ok(size)
    }

    /// Uploads the file at `path` as `key`, streamed from disk.
    pub async fn upload_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
    ) -> Result<(), S3Error> {
        let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
            .await
            .map_err(|e| self.err("PutObject", format!("cannot read the staged file: {e}")))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| self.err("PutObject", describe(&e)))?;
        Ok(())
    }
}
