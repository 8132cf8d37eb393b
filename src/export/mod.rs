//! Access and portability: a subject's rows, rule by rule, and the objects they point
//! at, written as a self-describing bundle (NDJSON files and a manifest of their
//! SHA-256s) to a directory or an s3 store. The export is a run in the audit trail
//! (trigger `export`) holding counts and a keyed pseudonym of the subject, never its id
//! or data. Rows stream from PostgreSQL to the file: memory does not grow with them.

mod bundle;

use std::collections::HashSet;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::audit::RunStart;
use crate::config::{Rule, Target};
use crate::preflight::{Preflight, Prepared, PreparedTable};
use crate::report::{RuleReport, RunReport, Status};
use crate::store::pg_sql::{Statement, SubjectRows, SubjectType};
use crate::sweep::{run_status, Engine, RunOutcome};

use bundle::{create_private_dir, sha256_of, Hashed, Manifest, ObjectLine};
pub use bundle::{BundleFile, Destination};

/// An export's result: the sealed run and the files written.
pub struct Exported {
    pub outcome: RunOutcome,
    pub files: Vec<BundleFile>,
}

/// The bundle of one subject while it is written.
struct Writer<'a> {
    engine: &'a Engine,
    kind: &'a str,
    id: &'a str,
    dir: PathBuf,
    with_objects: bool,
    files: Vec<BundleFile>,
    /// `objects.ndjson`, once a rule with objects has listed one.
    objects: Option<Hashed>,
    /// Keys already copied (two rules on one table list the same objects).
    copied: HashSet<String>,
}

impl Engine {
    /// Exports subject `kind:id` of `rules` (table rules with that subject kind, checked
    /// by `preflight`) to `dest`, recorded as a run with trigger `export`. The
    /// destination must be empty: an existing directory with files, or a prefix with
    /// objects, is refused before anything is read.
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
        check_empty(self, dest).await?;
        let staging;
        let dir = match dest {
            Destination::Dir(d) => {
                create_private_dir(d)
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
                config_text: self.config.text.clone(),
                as_of: None,
                subject_hash: Some(self.subject_pseudonym(kind, id)),
            })
            .await
            .map_err(|e| anyhow::anyhow!("failed to record the run start: {e}"))?;
        let mut w = Writer {
            engine: self,
            kind,
            id,
            dir,
            with_objects,
            files: Vec::new(),
            objects: None,
            copied: HashSet::new(),
        };
        let mut reports = Vec::new();
        let mut errors = Vec::new();
        for (position, name) in rules.iter().enumerate() {
            let (Some(rule), Some(Prepared::Table(p))) =
                (self.config.rule(name), preflight.prepared.get(name))
            else {
                continue;
            };
            let report = w.rule(rule, p).await;
            if let Err(e) = self
                .audit
                .record_rule(&handle, position, &report, false)
                .await
            {
                errors.push(format!("rule {name}: result not recorded: {e}"));
            }
            reports.push(report);
        }
        // From here on every failure fails the run: it is never left `running`.
        if let Err(e) = w
            .close(
                &handle.run_id.to_string(),
                &reports,
                !errors.is_empty(),
                dest,
            )
            .await
        {
            errors.push(w.redact(&e));
        }
        let status = if errors.is_empty() {
            run_status(&reports, false)
        } else {
            Status::Failed
        };
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        let report: RunReport = self
            .audit
            .finish_run(handle, status.as_str(), error.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("failed to record the run end: {e}"))?;
        crate::report::copy_out(&self.config, &self.stores, &report).await;
        crate::report::site::refresh(&self.config, &self.stores, &self.audit).await;
        crate::metrics::record_run(&report);
        Ok(Exported {
            outcome: RunOutcome { report },
            files: w.files,
        })
    }
}

/// Refuses a destination that already holds something: a bundle must not mix with
/// another (stale copies the new manifest would not list).
async fn check_empty(engine: &Engine, dest: &Destination) -> anyhow::Result<()> {
    match dest {
        Destination::Dir(d) => {
            if d.exists() && std::fs::read_dir(d)?.next().is_some() {
                anyhow::bail!("--out {}: the directory is not empty", d.display());
            }
        }
        Destination::Store { store, prefix } => {
            let s3 = engine
                .stores
                .s3
                .get(store)
                .ok_or_else(|| anyhow::anyhow!("store `{store}` is not connected"))?;
            let (listed, _) = s3.list_page(prefix, None).await?;
            if !listed.is_empty() {
                anyhow::bail!("--out s3://{store}/{prefix}: the prefix already holds objects");
            }
        }
    }
    Ok(())
}

impl Writer<'_> {
    /// `message` without the subject's id in the spellings a path or a key gives it:
    /// what may go to the trail. (The messages built here name no path and no value;
    /// this also catches a server's message that quotes a key. A raw id shorter than four
    /// characters is left: replacing every `1` would garble the message.)
    fn redact(&self, message: &str) -> String {
        let mut m = message.to_owned();
        let spellings = [
            bundle::safe_name(&format!("{}:{}", self.kind, self.id)),
            bundle::safe_name(self.id),
            self.id.to_owned(),
        ];
        for s in spellings.iter().filter(|s| s.chars().count() >= 4) {
            m = m.replace(s.as_str(), "<subject>");
        }
        m
    }

    /// One rule's rows (`rules/RULE.ndjson`) and the objects they point at; the rule's
    /// result for the trail: counts, never a hash of the data (an unkeyed hash of rows
    /// anyone can read back would tie the run to its subject).
    async fn rule(&mut self, rule: &Rule, p: &PreparedTable) -> RuleReport {
        let mut report = RuleReport {
            rule: rule.name.clone(),
            category: rule.category.clone(),
            store: rule.store.clone(),
            place: rule.place(&self.engine.config),
            action: "export".into(),
            status: Status::Succeeded,
            ..Default::default()
        };
        let started = std::time::Instant::now();
        if let Some(w) = &self.engine.watch {
            w.started(&rule.name);
        }
        if let Err(e) = self.rows(rule, p, &mut report).await {
            report.status = Status::Failed;
            report.errors.push(self.redact(&e));
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        if let Some(w) = &self.engine.watch {
            w.finished(&rule.name, &report);
        }
        report
    }

    async fn rows(
        &mut self,
        rule: &Rule,
        p: &PreparedTable,
        report: &mut RuleReport,
    ) -> Result<(), String> {
        let (Target::Table(t), Some(subject)) = (&rule.target, rule.subject()) else {
            return Ok(());
        };
        let pg = self.engine.stores.pg(&rule.store);
        let ty = SubjectType::of(&p.info.columns[subject.column.as_str()].type_name);
        let id = ty
            .normalise(self.id)
            .map_err(|_| "the subject id does not fit the subject column".to_owned())?;
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
        let mut file = Hashed::create(&self.dir.join(&path)).map_err(io)?;
        let (watch, mut written) = (self.engine.watch.clone(), 0u64);
        let n = pg
            .for_each_text(&rows.rows(), |line| {
                written += 1;
                if let (Some(w), 0) = (&watch, written % 1000) {
                    w.progressed(&rule.name, written);
                }
                file.line(&line)
            })
            .await
            .map_err(|e| format!("cannot read the rows: {}", crate::sweep::error_ref(&e)))?;
        let sha256 = file.finish().map_err(io)?;
        report.matched = n;
        report.details.insert("rows".into(), n.into());
        report.details.insert("file".into(), path.clone().into());
        self.files.push(BundleFile {
            path,
            sha256,
            rows: Some(n),
            bytes: None,
            rule: Some(rule.name.clone()),
        });
        if let Some(o) = &t.objects {
            let listed = self
                .objects(rule, &o.store, &rows.keys(&o.key_columns))
                .await?;
            report.details.insert("objects".into(), listed.into());
        }
        Ok(())
    }

    /// Lists the keys the subject's rows hold in `objects.ndjson`, with each object's
    /// facts, and with `--with-objects` copies each to `objects/<sha256 of the key>`.
    async fn objects(&mut self, rule: &Rule, store: &str, keys: &Statement) -> Result<u64, String> {
        let pg = self.engine.stores.pg(&rule.store);
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
        let engine = self.engine;
        let s3 = engine
            .stores
            .s3
            .get(store)
            .ok_or_else(|| format!("objects store `{store}` is not connected"))?;
        let mut out = match self.objects.take() {
            Some(o) => o,
            None => Hashed::create(&self.dir.join("objects.ndjson"))
                .map_err(|e| format!("cannot write objects.ndjson: {e}"))?,
        };
        // The listing file goes back whatever happens: other rules' lines are in it.
        let listed = self.list_objects(&mut out, rule, store, s3, &all).await;
        self.objects = Some(out);
        listed.map(|()| all.len() as u64)
    }

    /// Writes one line per key to `out`, copying each object with `--with-objects`
    /// (once, whichever rules list it). Messages name no key and no copy: a key's hash
    /// names its copy, and a key can be personal data.
    async fn list_objects(
        &mut self,
        out: &mut Hashed,
        rule: &Rule,
        store: &str,
        s3: &crate::store::s3::S3Store,
        keys: &[String],
    ) -> Result<(), String> {
        for key in keys {
            let facts = s3.facts(key).await.map_err(|e| e.to_string())?;
            let rel = format!("objects/{}", hex::encode(Sha256::digest(key.as_bytes())));
            let file = (self.with_objects && facts.is_some()).then(|| rel.clone());
            if file.is_some() && !self.copied.contains(key) {
                let copied = self.copy(s3, key, &rel).await?;
                self.copied.insert(key.clone());
                self.files.push(BundleFile {
                    rule: Some(rule.name.clone()),
                    ..copied
                });
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
            out.line(&text)
                .map_err(|e| format!("cannot write objects.ndjson: {e}"))?;
        }
        Ok(())
    }

    /// Copies the object at `key` to `rel` in the bundle.
    async fn copy(
        &self,
        s3: &crate::store::s3::S3Store,
        key: &str,
        rel: &str,
    ) -> Result<BundleFile, String> {
        let path = self.dir.join(rel);
        create_private_dir(&self.dir.join("objects"))
            .map_err(|e| format!("cannot create objects/: {e}"))?;
        bundle::create_private_file(&path)
            .map_err(|e| format!("cannot create an object copy: {e}"))?;
        let bytes = s3
            .download_to(key, &path)
            .await
            .map_err(|e| e.to_string())?;
        let sha256 = sha256_of(&path).map_err(|e| format!("cannot read an object copy: {e}"))?;
        Ok(BundleFile {
            path: rel.to_owned(),
            sha256,
            rows: None,
            bytes: Some(bytes),
            rule: None,
        })
    }

    /// Finishes `objects.ndjson`, writes `manifest.json` (with the run's status and the
    /// rules whose files are missing or incomplete), and uploads a staged bundle.
    async fn close(
        &mut self,
        run_id: &str,
        reports: &[RuleReport],
        unrecorded: bool,
        dest: &Destination,
    ) -> Result<(), String> {
        if let Some(o) = self.objects.take() {
            let sha256 = o
                .finish()
                .map_err(|e| format!("cannot write objects.ndjson: {e}"))?;
            self.files.push(BundleFile {
                path: "objects.ndjson".into(),
                sha256,
                rows: None,
                bytes: None,
                rule: None,
            });
        }
        let failed_rules: Vec<String> = reports
            .iter()
            .filter(|r| r.status != Status::Succeeded)
            .map(|r| r.rule.clone())
            .collect();
        let manifest = Manifest {
            schema: "retentiond.export/1",
            run_id: run_id.to_owned(),
            status: if failed_rules.is_empty() && !unrecorded {
                Status::Succeeded
            } else {
                Status::Failed
            },
            failed_rules,
            config_sha256: &self.engine.config.sha256,
            subject: format!("{}:{}", self.kind, self.id),
            exported_at: chrono::Utc::now(),
            with_objects: self.with_objects,
            files: &self.files,
        };
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        let mut f = bundle::create_private_file(&self.dir.join("manifest.json"))
            .map_err(|e| format!("cannot write manifest.json: {e}"))?;
        std::io::Write::write_all(&mut f, &text)
            .map_err(|e| format!("cannot write manifest.json: {e}"))?;
        if let Destination::Store { store, prefix } = dest {
            self.upload(store, prefix).await?;
        }
        Ok(())
    }

    /// Uploads the staged bundle (its files, then the manifest) under `prefix`.
    async fn upload(&self, store: &str, prefix: &str) -> Result<(), String> {
        let s3 = self
            .engine
            .stores
            .s3
            .get(store)
            .ok_or_else(|| format!("store `{store}` is not connected"))?;
        let names = self
            .files
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
            s3.upload_file(&format!("{prefix}{name}"), &self.dir.join(name), kind)
                .await
                .map_err(|e| {
                    let what = if name.starts_with("objects/") {
                        "an object copy"
                    } else {
                        name
                    };
                    format!("cannot upload {what}: {e}")
                })?;
        }
        Ok(())
    }
}
