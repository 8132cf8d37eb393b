//! Deletion: DeleteObjects in chunks with per-key results, Object Lock checks, and
//! abandoned multipart uploads.

use super::*;

impl S3Store {
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
}
