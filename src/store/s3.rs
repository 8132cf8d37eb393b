//! An S3-compatible store: listing, bulk deletes with per-key results, Object Lock
//! classification, multipart cleanup. Works against AWS, MinIO, Garage, Ceph, R2, moto.

use std::time::Duration;

use aws_sdk_s3::config::{
    retry::RetryConfig, timeout::TimeoutConfig, Region, RequestChecksumCalculation,
    ResponseChecksumValidation,
};
use aws_sdk_s3::types::{
    BucketVersioningStatus, Delete, ObjectIdentifier, ObjectLockLegalHoldStatus,
};
use aws_sdk_s3::Client;
use chrono::{DateTime, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use tracing::{debug, instrument};

use crate::config::S3Store as S3Config;

/// Most keys one DeleteObjects request may carry (an S3 limit).
pub const MAX_KEYS_PER_DELETE: usize = 1000;
/// Attempts per request, including the first; the SDK retries only retryable errors
/// (5xx, throttling such as SlowDown, timeouts) with exponential backoff and jitter.
pub const MAX_ATTEMPTS: u32 = 5;

/// A connected S3 store.
#[derive(Clone, Debug)]
pub struct S3Store {
    /// Store name.
    pub name: String,
    /// Bucket.
    pub bucket: String,
    /// Client.
    pub(crate) client: Client,
    /// DeleteObjects requests in flight.
    pub max_in_flight: usize,
}

/// How far this host's clock may be ahead of the object store's when a refused delete is
/// put down to Object Lock retention (see [`S3Store::is_locked`]).
pub const LOCK_CLOCK_SLACK: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// What the preflight learns about a bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BucketInfo {
    /// Versioning enabled or suspended (old versions may exist).
    pub versioned: bool,
    /// Object Lock enabled.
    pub object_lock: bool,
}

/// One object version to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Key.
    pub key: String,
    /// Version id (`None` on unversioned buckets, or to delete the current version only).
    pub version_id: Option<String>,
    /// Size in bytes (0 for delete markers).
    pub size: u64,
}

/// What happened to each object of a bulk delete.
#[derive(Debug, Default)]
pub struct BulkDelete {
    /// Removed, or already gone.
    pub deleted: Vec<ObjectRef>,
    /// Kept by Object Lock (legal hold or unexpired retention).
    pub held: Vec<ObjectRef>,
    /// Failed, with the error; retried on the next run.
    pub failed: Vec<(ObjectRef, String)>,
}

impl BulkDelete {
    /// Merges `other` into `self`.
    pub fn absorb(&mut self, other: BulkDelete) {
        self.deleted.extend(other.deleted);
        self.held.extend(other.held);
        self.failed.extend(other.failed);
    }
}

/// An S3 error, described without credentials.
#[derive(Debug, thiserror::Error)]
#[error("s3 store `{store}`: {op} failed: {message}")]
pub struct S3Error {
    /// Store.
    pub store: String,
    /// Operation.
    pub op: &'static str,
    /// Service error code and message, or the transport error.
    pub message: String,
    /// No answer (connection, timeout, 5xx): an outage rather than a mistake.
    pub transient: bool,
}

fn describe<E: std::fmt::Debug + aws_sdk_s3::error::ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E>,
) -> String {
    use aws_sdk_s3::error::SdkError;
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            format!(
                "{}: {} (http {})",
                err.code().unwrap_or("error"),
                err.message().unwrap_or(""),
                se.raw().status().as_u16()
            )
        }
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(d) => format!("connection failed: {:?}", d.as_other()),
        SdkError::ResponseError(_) => "unreadable response".into(),
        other => format!("{other}"),
    }
}

fn service_code<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E>,
) -> Option<String> {
    e.as_service_error()
        .and_then(|s| s.code())
        .map(str::to_owned)
}

/// Converts an S3 timestamp.
pub fn to_chrono(t: &aws_smithy_types::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl S3Store {
    /// Builds a client from the standard AWS chain and the store's settings.
    pub async fn connect(name: &str, cfg: &S3Config) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()));
        if let Some(var) = &cfg.endpoint_env {
            if let Ok(url) = std::env::var(var) {
                if !url.is_empty() {
                    loader = loader.endpoint_url(url);
                }
            }
        }
        let shared = loader.load().await;
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.force_path_style)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(100)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            )
            // Only the checksums S3 requires: several S3-compatible servers reject the
            // newer default trailing checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Self {
            name: name.to_owned(),
            bucket: cfg.bucket.clone(),
            client: Client::from_conf(conf),
            max_in_flight: cfg.max_in_flight as usize,
        }
    }

    fn err(&self, op: &'static str, message: String) -> S3Error {
        S3Error {
            store: self.name.clone(),
            op,
            message,
            transient: false,
        }
    }

    /// Whether the bucket answers (HeadBucket).
    pub async fn reachable(&self) -> bool {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
    }

    /// Checks the bucket is reachable and reads its versioning and Object Lock status.
    #[instrument(skip_all, fields(store = %self.name))]
    pub async fn preflight(&self) -> Result<BucketInfo, S3Error> {
        if let Err(e) = self.client.head_bucket().bucket(&self.bucket).send().await {
            let transient = !e
                .raw_response()
                .is_some_and(|r| r.status().is_client_error());
            let mut err = self.err(
                "HeadBucket",
                format!(
                    "bucket `{}` is not reachable: {}",
                    self.bucket,
                    describe(&e)
                ),
            );
            err.transient = transient;
            return Err(err);
        }
        let versioned = match self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(v) => matches!(
                v.status(),
                Some(BucketVersioningStatus::Enabled) | Some(BucketVersioningStatus::Suspended)
            ),
            // Some servers answer 200 with a body the SDK cannot read (moto names the root
            // element differently): read the status from the body itself.
            Err(e) if e.raw_response().is_some_and(|r| r.status().is_success()) => {
                let body = e
                    .raw_response()
                    .and_then(|r| r.body().bytes())
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                debug!("versioning status read from the raw response");
                body.contains("<Status>Enabled</Status>")
                    || body.contains("<Status>Suspended</Status>")
            }
            Err(e) => return Err(self.err("GetBucketVersioning", describe(&e))),
        };
        let object_lock = match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out) => out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|s| s.as_str() == "Enabled"),
            Err(e) => {
                let code = service_code(&e).unwrap_or_default();
                // Buckets without Object Lock answer with an error; servers that do not
                // implement it answer NotImplemented.
                if code.contains("ObjectLockConfigurationNotFound")
                    || code == "NotImplemented"
                    || code == "NoSuchObjectLockConfiguration"
                {
                    false
                } else {
                    debug!(code, "object lock status unknown; assuming disabled");
                    false
                }
            }
        };
        Ok(BucketInfo {
            versioned,
            object_lock,
        })
    }

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
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(h) => Ok(Some(Listed {
                key: key.to_owned(),
                version_id: None,
                is_latest: true,
                delete_marker: false,
                last_modified: h.last_modified().map(to_chrono).unwrap_or_else(Utc::now),
                size: h.content_length().unwrap_or(0).max(0) as u64,
            })),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(self.err("HeadObject", describe(&e))),
        }
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

    /// Deletes `objects` in requests of at most [`MAX_KEYS_PER_DELETE`], up to
    /// `max_in_flight` at once, and says what happened to each one.
    pub async fn delete_all(&self, objects: Vec<ObjectRef>, bypass_governance: bool) -> BulkDelete {
        let mut result = BulkDelete::default();
        let mut in_flight = FuturesUnordered::new();
        let mut chunks = objects
            .chunks(MAX_KEYS_PER_DELETE)
            .map(<[ObjectRef]>::to_vec)
            .collect::<Vec<_>>()
            .into_iter();
        loop {
            while in_flight.len() < self.max_in_flight {
                let Some(chunk) = chunks.next() else { break };
                in_flight.push(self.delete_chunk(chunk, bypass_governance));
            }
            match in_flight.next().await {
                Some(r) => result.absorb(r),
                None => break,
            }
        }
        result
    }

    /// One DeleteObjects request. Per-key errors inside a 200 response are checked: a
    /// missing key counts as deleted, a locked version as held, anything else as failed.
    #[instrument(skip_all, fields(store = %self.name, keys = chunk.len()))]
    pub async fn delete_chunk(&self, chunk: Vec<ObjectRef>, bypass_governance: bool) -> BulkDelete {
        let mut result = BulkDelete::default();
        let ids: Result<Vec<ObjectIdentifier>, _> = chunk
            .iter()
            .map(|o| {
                ObjectIdentifier::builder()
                    .key(&o.key)
                    .set_version_id(o.version_id.clone())
                    .build()
            })
            .collect();
        let request =
            ids.and_then(|ids| Delete::builder().set_objects(Some(ids)).quiet(true).build());
        let delete = match request {
            Ok(d) => d,
            Err(e) => {
                result.failed.extend(
                    chunk
                        .into_iter()
                        .map(|o| (o, format!("invalid request: {e}"))),
                );
                return result;
            }
        };
        let mut req = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete);
        if bypass_governance {
            req = req.bypass_governance_retention(true);
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => {
                let msg = describe(&e);
                result
                    .failed
                    .extend(chunk.into_iter().map(|o| (o, msg.clone())));
                return result;
            }
        };
        let mut errors: std::collections::HashMap<(String, Option<String>), (String, String)> = out
            .errors()
            .iter()
            .map(|e| {
                (
                    (
                        e.key().unwrap_or_default().to_owned(),
                        e.version_id().map(str::to_owned).filter(|v| !v.is_empty()),
                    ),
                    (
                        e.code().unwrap_or("error").to_owned(),
                        e.message().unwrap_or("").to_owned(),
                    ),
                )
            })
            .collect();
        for o in chunk {
            let err = errors
                .remove(&(o.key.clone(), o.version_id.clone()))
                .or_else(|| errors.remove(&(o.key.clone(), None)));
            match err {
                None => result.deleted.push(o),
                Some((code, _)) if code == "NoSuchKey" || code == "NoSuchVersion" => {
                    result.deleted.push(o)
                }
                Some((code, message)) => {
                    if self.is_locked(&o).await {
                        result.held.push(o);
                    } else {
                        result.failed.push((o, format!("{code}: {message}")));
                    }
                }
            }
        }
        result
    }

    /// Whether Object Lock explains a refused delete of this version: a legal hold, or a
    /// retention period that has not ended. The server judged the date by its own clock;
    /// this host's may be off, so a date up to [`LOCK_CLOCK_SLACK`] in the past still
    /// counts (the version is reported `held`, not `failed`, and stays either way).
    pub async fn is_locked(&self, o: &ObjectRef) -> bool {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&o.key)
            .set_version_id(o.version_id.clone())
            .send()
            .await;
        match head {
            Ok(h) => {
                let legal_hold =
                    h.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On);
                let retained = h
                    .object_lock_retain_until_date()
                    .is_some_and(|until| to_chrono(until) > Utc::now() - LOCK_CLOCK_SLACK);
                legal_hold || retained
            }
            Err(_) => false,
        }
    }

    /// Incomplete multipart uploads under `prefix`: `(key, upload id, initiated)`.
    pub async fn multipart_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, DateTime<Utc>)>, S3Error> {
        let mut uploads = Vec::new();
        let (mut key_marker, mut upload_marker) = (None, None);
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_marker.take())
                .send()
                .await
                .map_err(|e| self.err("ListMultipartUploads", describe(&e)))?;
            for u in out.uploads() {
                if let (Some(k), Some(id), Some(t)) = (u.key(), u.upload_id(), u.initiated()) {
                    uploads.push((k.to_owned(), id.to_owned(), to_chrono(t)));
                }
            }
            if !out.is_truncated().unwrap_or(false) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            upload_marker = out.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(uploads)
    }

    /// Aborts one multipart upload (an upload already gone counts as aborted).
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if service_code(&e).as_deref() == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err(self.err("AbortMultipartUpload", describe(&e))),
        }
    }

    /// Writes an object (report copies).
    pub async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), S3Error> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body.into())
            .send()
            .await
            .map_err(|e| self.err("PutObject", describe(&e)))?;
        Ok(())
    }
}

/// One listed object, version or delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Key.
    pub key: String,
    /// Version id, when listed by version.
    pub version_id: Option<String>,
    /// The current version of its key.
    pub is_latest: bool,
    /// A delete marker rather than data.
    pub delete_marker: bool,
    /// LastModified.
    pub last_modified: DateTime<Utc>,
    /// Size in bytes.
    pub size: u64,
}

impl Listed {
    /// The reference a delete needs, with the listed version id as it is. On a versioned
    /// (or suspended) bucket the `"null"` version, written before versioning was enabled,
    /// is deleted by `VersionId=null`: a key-only request would add a delete marker that
    /// hides the current version and leaves the old data in place.
    pub fn to_ref(&self) -> ObjectRef {
        ObjectRef {
            key: self.key.clone(),
            version_id: self.version_id.clone(),
            size: self.size,
        }
    }
}
