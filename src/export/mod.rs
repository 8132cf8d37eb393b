//! Access and portability: a subject's rows, rule by rule, and the objects they point
//! at, written as a self-describing bundle (NDJSON files and a manifest of their
//! SHA-256s) to a directory or an s3 store. The export is a run in the audit trail
//! (trigger `export`) holding counts and a keyed pseudonym of the subject, never its id
//! or data. Rows stream from PostgreSQL to the file: memory does not grow with them.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::warn;

use crate::audit::RunStart;
use crate::config::{Config, Rule, StoreConfig, Target};
use crate::preflight::{Preflight, Prepared, PreparedTable};
use crate::report::{RuleReport, RunReport, Status};
use crate::store::pg_sql::{SubjectRows, SubjectType};
use crate::sweep::{run_status, Engine, RunOutcome};

mod bundle;

use bundle::{sha256_of, Hashed, Manifest, ObjectLine};
pub use bundle::{BundleFile, Destination};

/// An export's result: the sealed run and the files written.
pub struct Exported {
    pub outcome: RunOutcome,
    pub files: Vec<BundleFile>,
}

impl Engine {
    /// Exports subject `kind:id` of `rules` (table rules with that subject kind, checked
    /// by `preflight`) to `dest`, recorded as a run with trigger `export`.
    #[allow(clippy::too_many_arguments)]
    pub async fn export(
        &self,
        rules: &[String],
        kind: &str,
        id: &str,
        dest: &Destination,
        with_objects: bool,
        actor: &str,
        preflight: &Preflight,
    ) -> anyhow::Result<Exported> {
        let key = std::env::var(&self.config.hmac_key_env).unwrap_or_default();
        let staging;
        let dir = match dest {
            Destination::Dir(d) => {
                if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                    anyhow::bail!("--out {}: the directory is not empty", d.display());
                }
                std::fs::create_dir_all(d)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", d.display()))?;
                d.clone()
            }
            Destination::Store { .. } => {
                staging = tempfile::tempdir()?;
                staging.path().to_owned()
            }
        };
        let handle = self
            .audit
            .begin_run(&RunStart {
                trigger: "export".into(),
                mode: "dry_run".into(),
                actor: actor.into(),
                config_sha256: self.config.sha256.clone(),
                as_of: None,
                subject_hash: Some(crate::anonymise::pseudonym(
                    key.as_bytes(),
                    &format!("{kind}:{id}"),
                )),
            })
            .await
            .map_err(|e| anyhow::anyhow!("failed to record the run start: {e}"))?;
        let mut files = Vec::new();
        let mut reports = Vec::new();
        let mut objects = None;
        let mut errors = Vec::new();
        for (position, name) in rules.iter().enumerate() {
            let (Some(rule), Some(Prepared::Table(p))) =
                (self.config.rule(name), preflight.prepared.get(name))
            else {
                continue;
            };
            let report = self
                .export_rule(rule, p, id, &dir, with_objects, &mut objects, &mut files)
                .await;
            if let Err(e) = self
                .audit
                .record_rule(&handle, position, &report, false)
                .await
            {
                errors.push(format!("rule {name}: result not recorded: {e}"));
            }
            reports.push(report);
        }
        if let Some(o) = objects.take() {
            let o: Hashed = o;
            files.push(BundleFile {
                path: "objects.ndjson".into(),
                sha256: o.finish()?,
                rows: None,
                bytes: None,
                rule: None,
            });
        }
        let status = if errors.is_empty() {
            run_status(&reports, false)
        } else {
            Status::Failed
        };
        let manifest = Manifest {
            schema: "retentiond.export/1",
            run_id: handle.run_id.to_string(),
            config_sha256: &self.config.sha256,
            subject: format!("{kind}:{id}"),
            exported_at: chrono::Utc::now(),
            with_objects,
            files: &files,
        };
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::to_vec_pretty(&manifest)?,
        )?;
        if let Destination::Store { store, prefix } = dest {
            if let Err(e) = self.upload(store, prefix, &dir, &files).await {
                errors.push(e);
            }
        }
        let status = if errors.is_empty() {
            status
        } else {
            Status::Failed
        };
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        let report: RunReport = self
            .audit
            .finish_run(handle, status.as_str(), error.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("failed to record the run end: {e}"))?;
        crate::metrics::record_run(&report);
        Ok(Exported {
            outcome: RunOutcome { report },
            files,
        })
    }

    /// Writes one rule's rows (`rules/RULE.ndjson`) and lists (and copies) the objects
    /// they point at; the rule's result for the trail: counts only.
    #[allow(clippy::too_many_arguments)]
    async fn export_rule(
        &self,
        rule: &Rule,
        p: &PreparedTable,
        id: &str,
        dir: &Path,
        with_objects: bool,
        objects: &mut Option<Hashed>,
        files: &mut Vec<BundleFile>,
    ) -> RuleReport {
        let mut report = RuleReport {
            rule: rule.name.clone(),
            category: rule.category.clone(),
            store: rule.store.clone(),
            place: rule.place(&self.config),
            action: "export".into(),
            status: Status::Succeeded,
            ..Default::default()
        };
        let started = std::time::Instant::now();
        if let Err(e) = self
            .export_rows(rule, p, id, dir, with_objects, objects, files, &mut report)
            .await
        {
            report.status = Status::Failed;
            report.errors.push(e);
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        report
    }

    #[allow(clippy::too_many_arguments)]
    async fn export_rows(
        &self,
        rule: &Rule,
        p: &PreparedTable,
        id: &str,
        dir: &Path,
        with_objects: bool,
        objects: &mut Option<Hashed>,
        files: &mut Vec<BundleFile>,
        report: &mut RuleReport,
    ) -> Result<(), String> {
        let Target::Table(t) = &rule.target else {
            return Ok(());
        };
        let Some(subject) = &t.subject else {
            return Ok(());
        };
        let pg = self.stores.pg(&rule.store);
        let ty = SubjectType::of(&p.info.columns[subject.column.as_str()].type_name);
        let id = ty.normalise(id).map_err(|e| format!("subject {e}"))?;
        let columns: Vec<(String, String)> = p
            .info
            .columns
            .iter()
            .map(|(n, c)| (n.clone(), c.type_name.clone()))
            .collect();
        let rows = SubjectRows {
            table: &t.table,
            columns: &columns,
            subject: &subject.column,
            subject_type: ty,
            id: &id,
            filter: t.filter.as_deref(),
        };
        let path = format!("rules/{}.ndjson", rule.name);
        let io = |e: std::io::Error| format!("cannot write {path}: {e}");
        let mut file = Hashed::create(&dir.join(&path)).map_err(io)?;
        let n = pg
            .for_each_text(&rows.rows(), |line| file.line(&line))
            .await
            .map_err(|e| format!("cannot read the rows: {}", crate::sweep::error_ref(&e)))?;
        let sha256 = file.finish().map_err(io)?;
        report.matched = n;
        report.details.insert("rows".into(), n.into());
        report.details.insert("file".into(), path.clone().into());
        report
            .details
            .insert("sha256".into(), sha256.clone().into());
        files.push(BundleFile {
            path,
            sha256,
            rows: Some(n),
            bytes: None,
            rule: Some(rule.name.clone()),
        });
        if let Some(o) = &t.objects {
            let listed = self
                .export_objects(
                    rule,
                    &o.store,
                    &rows.keys(&o.key_columns),
                    dir,
                    with_objects,
                    objects,
                    files,
                )
                .await?;
            report.details.insert("objects".into(), listed.into());
        }
        Ok(())
    }

    /// Lists the keys the subject's rows hold in `objects.ndjson`, with each object's
    /// facts, and with `with_objects` copies each to `objects/<sha256 of the key>`.
    #[allow(clippy::too_many_arguments)]
    async fn export_objects(
        &self,
        rule: &Rule,
        store: &str,
        keys: &crate::store::pg_sql::Statement,
        dir: &Path,
        with_objects: bool,
        objects: &mut Option<Hashed>,
        files: &mut Vec<BundleFile>,
    ) -> Result<u64, String> {
        let pg = self.stores.pg(&rule.store);
        let mut all = Vec::new();
        pg.for_each_text(keys, |k| {
            all.push(k);
            Ok(())
        })
        .await
        .map_err(|e| {
            format!(
                "cannot read the object keys: {}",
                crate::sweep::error_ref(&e)
            )
        })?;
        let s3 = self
            .stores
            .s3
            .get(store)
            .ok_or_else(|| format!("objects store `{store}` is not connected"))?;
        if objects.is_none() {
            *objects = Some(
                Hashed::create(&dir.join("objects.ndjson"))
                    .map_err(|e| format!("cannot write objects.ndjson: {e}"))?,
            );
        }
        for key in &all {
            let facts = s3.facts(key).await.map_err(|e| e.to_string())?;
            let mut file = None;
            if with_objects && facts.is_some() {
                let rel = format!("objects/{}", hex::encode(Sha256::digest(key.as_bytes())));
                let path = dir.join(&rel);
                std::fs::create_dir_all(dir.join("objects"))
                    .map_err(|e| format!("cannot create objects/: {e}"))?;
                let bytes = s3
                    .download_to(key, &path)
                    .await
                    .map_err(|e| e.to_string())?;
                let sha256 = sha256_of(&path).map_err(|e| format!("cannot read {rel}: {e}"))?;
                files.push(BundleFile {
                    path: rel.clone(),
                    sha256,
                    rows: None,
                    bytes: Some(bytes),
                    rule: Some(rule.name.clone()),
                });
                file = Some(rel);
            }
            let line = ObjectLine {
                rule: &rule.name,
                store,
                key,
                exists: facts.is_some(),
                facts,
                file,
            };
            let text = serde_json::to_string(&line).map_err(|e| e.to_string())?;
            objects
                .as_mut()
                .expect("created above")
                .line(&text)
                .map_err(|e| format!("cannot write objects.ndjson: {e}"))?;
        }
        Ok(all.len() as u64)
    }

    /// Uploads a staged bundle (its files, then the manifest) under `prefix`.
    async fn upload(
        &self,
        store: &str,
        prefix: &str,
        dir: &Path,
        files: &[BundleFile],
    ) -> Result<(), String> {
        let s3 = self
            .stores
            .s3
            .get(store)
            .ok_or_else(|| format!("store `{store}` is not connected"))?;
        let names = files
            .iter()
            .map(|f| f.path.as_str())
            .chain(std::iter::once("manifest.json"));
        for name in names {
            let kind = if name.ends_with(".json") {
                "application/json"
            } else if name.ends_with(".ndjson") {
                "application/x-ndjson"
            } else {
                "application/octet-stream"
            };
            s3.upload_file(&format!("{prefix}{name}"), &dir.join(name), kind)
                .await
                .map_err(|e| {
                    warn!(error = %e, "export upload failed");
                    format!("cannot upload {name}: {e}")
                })?;
        }
        Ok(())
    }
}
