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

mod deletion;
mod listing;
mod locked;
mod transfer;

pub use locked::Protection;

pub use transfer::ObjectFacts;

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

/// The HTTPS client of an S3 store and of its credential providers (STS, SSO, IMDS):
/// what the SDK's default client is (hyper 1, rustls, the platform's roots, the proxy of
/// `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`), on ring instead of aws-lc-rs.
pub fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::{tls, Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ));
        conn.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            conn.set_sleep_impl(c.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}

impl S3Store {
    /// Builds a client from the standard AWS chain and the store's settings.
    pub async fn connect(name: &str, cfg: &S3Config) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(https_client())
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
