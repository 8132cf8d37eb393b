//! `erase` and `export`: a data subject's rights to erasure and to access and
//! portability, for one subject (`--subject`) or a batch (`--subjects-file`).

use super::*;
use crate::export::{Destination, Exported};
use crate::sweep::RunOutcome;

/// The subjects of a request, `(kind, id)`: one from `--subject`, or one per line of
/// `--subjects-file` (blank lines and `#` comments skipped). A line that is not
/// `KIND:ID` is a usage error naming it, before anything runs.
fn subjects(one: Option<&str>, file: Option<&Path>) -> Result<Vec<(String, String)>, Fail> {
    let parse = |s: &str| match HoldTarget::parse_subject(s) {
        Ok(HoldTarget::Subject { kind, id }) => Ok((kind, id)),
        Ok(HoldTarget::Category(_)) => Err(format!("`{s}` is not a subject")),
        Err(e) => Err(e.to_string()),
    };
    match (one, file) {
        (Some(s), _) => Ok(vec![parse(s).map_err(Fail::usage)?]),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Fail::usage(format!("cannot read {}: {e}", path.display())))?;
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                out.push(
                    parse(line)
                        .map_err(|e| Fail::usage(format!("{}:{}: {e}", path.display(), i + 1)))?,
                );
            }
            if out.is_empty() {
                return Err(Fail::usage(format!("{} lists no subject", path.display())));
            }
            let mut seen = std::collections::HashSet::new();
            for (kind, id) in &out {
                if !seen.insert((kind, id)) {
                    return Err(Fail::usage(format!(
                        "{} lists {kind}:{id} twice: one request, one run",
                        path.display()
                    )));
                }
            }
            Ok(out)
        }
        (None, None) => Err(Fail::usage("give --subject or --subjects-file")),
    }
}

/// What a batch of subjects runs with: the engine, and per subject the rules of its
/// kind that passed the preflight. Every subject is checked before any runs: a kind no
/// rule has, or an id that no value of a subject column can equal, is exit 2.
struct Batch {
    engine: Engine,
    pf: Preflight,
    work: Vec<(String, String, Vec<String>)>,
}

async fn batch(
    config_path: &Path,
    subjects: Vec<(String, String)>,
    tables_only: bool,
    why_key: &str,
) -> Result<Batch, Fail> {
    let config = load_config(config_path)?;
    let rules_of = |kind: &str| -> Vec<String> {
        config
            .rules
            .iter()
            .filter(|r| r.enabled && r.subject().is_some_and(|s| s.kind == kind))
            .filter(|r| !tables_only || matches!(r.target, crate::config::Target::Table(_)))
            .map(|r| r.name.clone())
            .collect()
    };
    let mut all: Vec<String> = Vec::new();
    for (kind, _) in &subjects {
        let rules = rules_of(kind);
        if rules.is_empty() {
            return Err(Fail::usage(format!(
                "no rule has a subject of kind `{kind}`"
            )));
        }
        for r in rules {
            if !all.contains(&r) {
                all.push(r);
            }
        }
    }
    let key = std::env::var(&config.hmac_key_env).unwrap_or_default();
    if key.is_empty() {
        return Err(Fail::usage(format!(
            "{why_key} stores the subject only as a keyed hash: set the key in {} ([anonymise] hmac_key_env)",
            config.hmac_key_env
        )));
    }
    let (engine, names, pf) = prepare(config_path, &all, &[]).await?;
    let mut work = Vec::new();
    for (kind, id) in subjects {
        let rules: Vec<String> = rules_of(&kind)
            .into_iter()
            .filter(|r| names.contains(r))
            .collect();
        // The id is compared in each subject column's own type: one that no value of a
        // column can equal is a mistake in the request, not a subject without data.
        for name in &rules {
            if let (Some(crate::preflight::Prepared::Table(p)), Some(rule)) =
                (pf.prepared.get(name), engine.config.rule(name))
            {
                if let Some(subject) = rule.subject() {
                    let ty = crate::store::pg_sql::SubjectType::of(
                        &p.info.columns[subject.column.as_str()].type_name,
                    );
                    ty.normalise(&id)
                        .map_err(|e| Fail::usage(format!("rule {name}: subject {e}")))?;
                }
            }
        }
        work.push((kind, id, rules));
    }
    Ok(Batch { engine, pf, work })
}

/// The exit code of a batch: failures win over refusals, refusals over success.
fn batch_exit(outcomes: &[RunOutcome]) -> Exit {
    let exits: Vec<Exit> = outcomes.iter().map(|o| Exit::from(o.verdict())).collect();
    if exits.contains(&Exit::Failures) {
        Exit::Failures
    } else if exits.contains(&Exit::Refused) {
        Exit::Refused
    } else {
        Exit::Ok
    }
}

/// One line per subject of a batch: the run, its status and its counts.
fn print_summary(what: &str, rows: &[(String, &RunOutcome, Option<usize>)], format: Format) {
    match format {
        Format::Json => print_json(&serde_json::json!({
            "subjects": rows.iter().map(|(s, o, files)| serde_json::json!({
                "subject": s, "run_id": o.report.run_id, "status": o.report.status,
                "files": files, "rules": o.report.rules,
            })).collect::<Vec<_>>(),
        })),
        Format::Text => {
            let mut table = TextTable::new(&[
                ("SUBJECT", Align::Left),
                ("RUN", Align::Left),
                ("STATUS", Align::Left),
                ("MATCHED", Align::Right),
                ("DELETED", Align::Right),
                ("ANONYMISED", Align::Right),
                ("HELD", Align::Right),
            ]);
            for (s, o, _) in rows {
                let sum = |f: fn(&crate::report::RuleReport) -> u64| {
                    count(o.report.rules.iter().map(f).sum())
                };
                table.row([
                    s.clone(),
                    o.report.run_id.to_string(),
                    o.report.status.to_string(),
                    sum(|r| r.matched),
                    sum(|r| r.deleted),
                    sum(|r| r.anonymised),
                    sum(|r| r.held),
                ]);
            }
            println!("{what} of {} subject(s):", rows.len());
            print!("{}", table.render());
        }
    }
}

pub async fn erase(config_path: &Path, a: EraseArgs) -> CmdResult {
    let subjects = subjects(
        a.subjects.subject.as_deref(),
        a.subjects.subjects_file.as_deref(),
    )?;
    let single = a.subjects.subjects_file.is_none();
    let mut b = batch(config_path, subjects, false, "erase").await?;
    b.engine.watch = super::super::progress::on_terminal(a.format == Format::Text, a.dry_run);
    cancel_on_signal(b.engine.shutdown.clone());
    let mode = if a.dry_run {
        Mode::DryRun
    } else {
        Mode::Enforce
    };
    let who = actor(a.actor);
    let mut outcomes: Vec<(String, RunOutcome)> = Vec::new();
    for (kind, id, rules) in &b.work {
        if b.engine.shutdown.is_cancelled() {
            break;
        }
        let outcome = match b.engine.erase(rules, kind, id, mode, &who, &b.pf).await {
            Ok(o) => o,
            Err(e) if !single => {
                // The trail cannot take a run: stop, and say which subjects were done.
                let rows: Vec<_> = outcomes.iter().map(|(s, o)| (s.clone(), o, None)).collect();
                print_summary("erasure (stopped)", &rows, a.format);
                return Err(Fail::runtime(format!("{e:#}")));
            }
            Err(e) => return Err(e.into()),
        };
        if single {
            print_run(&b.engine, &outcome.report, a.format, a.show_samples);
        }
        outcomes.push((format!("{kind}:{id}"), outcome));
    }
    if !single {
        let rows: Vec<_> = outcomes.iter().map(|(s, o)| (s.clone(), o, None)).collect();
        print_summary("erasure", &rows, a.format);
    }
    let stopped = outcomes.len() < b.work.len();
    if stopped {
        eprintln!(
            "stopped by a signal: {} of {} subject(s) not erased",
            b.work.len() - outcomes.len(),
            b.work.len()
        );
    }
    // An erasure has no max_delete guard: never refused.
    let outcomes: Vec<RunOutcome> = outcomes.into_iter().map(|(_, o)| o).collect();
    Ok(if stopped {
        Exit::Failures
    } else {
        batch_exit(&outcomes)
    })
}

pub async fn export(config_path: &Path, a: ExportArgs) -> CmdResult {
    let subjects = subjects(
        a.subjects.subject.as_deref(),
        a.subjects.subjects_file.as_deref(),
    )?;
    let single = a.subjects.subjects_file.is_none();
    let config = load_config(config_path)?;
    let dest = Destination::parse(&a.out, &config).map_err(Fail::usage)?;
    let mut b = batch(config_path, subjects, true, "export").await?;
    b.engine.watch = super::super::progress::on_terminal(a.format == Format::Text, false);
    if let Destination::Store { store, .. } = &dest {
        connect_destination(&mut b.engine, store).await?;
    }
    let targets: Vec<Destination> = b
        .work
        .iter()
        .map(|(kind, id, _)| {
            if single {
                dest.clone()
            } else {
                dest.for_subject(kind, id)
            }
        })
        .collect();
    // Every destination is checked before the first export: none may hold anything.
    for t in &targets {
        match t {
            Destination::Dir(d) => {
                if d.exists() && std::fs::read_dir(d).map_or(true, |mut e| e.next().is_some()) {
                    return Err(Fail::usage(format!(
                        "--out {}: the directory is not empty",
                        d.display()
                    )));
                }
            }
            Destination::Store { store, prefix } => {
                let (listed, _) = b.engine.stores.s3[store]
                    .list_page(prefix, None)
                    .await
                    .map_err(|e| Fail::runtime(format!("--out: {e}")))?;
                if !listed.is_empty() {
                    return Err(Fail::usage(format!(
                        "--out s3://{store}/{prefix}: the prefix already holds objects"
                    )));
                }
            }
        }
    }
    cancel_on_signal(b.engine.shutdown.clone());
    let who = actor(a.actor);
    let mut done: Vec<(String, Exported)> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for ((kind, id, rules), to) in b.work.iter().zip(&targets) {
        if b.engine.shutdown.is_cancelled() {
            break;
        }
        let subject = format!("{kind}:{id}");
        let exported = match b
            .engine
            .export(rules, kind, id, to, a.with_objects, &who, &b.pf)
            .await
        {
            Ok(e) => e,
            Err(e) if single => return Err(Fail::runtime(format!("{e:#}"))),
            Err(e) => {
                eprintln!("error: {subject}: {e:#}");
                failed.push(subject);
                continue;
            }
        };
        if single {
            print_run(&b.engine, &exported.outcome.report, a.format, false);
            if a.format == Format::Text {
                println!(
                    "  export: {} file(s) and manifest.json in {}",
                    exported.files.len(),
                    a.out
                );
            }
        }
        done.push((subject, exported));
    }
    if !single {
        let rows: Vec<_> = done
            .iter()
            .map(|(s, e)| (s.clone(), &e.outcome, Some(e.files.len())))
            .collect();
        print_summary("export", &rows, a.format);
    }
    let skipped = b.work.len() - done.len() - failed.len();
    if skipped > 0 {
        eprintln!("stopped by a signal: {skipped} subject(s) not exported");
    }
    let outcomes: Vec<RunOutcome> = done.into_iter().map(|(_, e)| e.outcome).collect();
    Ok(if failed.is_empty() && skipped == 0 {
        batch_exit(&outcomes)
    } else {
        Exit::Failures
    })
}

/// Connects the s3 store an export goes to (no rule may use it), and checks that its
/// bucket answers, before anything is read.
async fn connect_destination(engine: &mut Engine, store: &str) -> Result<(), Fail> {
    if !engine.stores.s3.contains_key(store) {
        let Some(crate::config::StoreConfig::S3(cfg)) = engine.config.stores.get(store) else {
            return Err(Fail::usage(format!(
                "`{store}` is not an s3 store of the config"
            )));
        };
        let s3 = crate::store::s3::S3Store::connect(store, cfg).await;
        engine.stores.s3.insert(store.to_owned(), s3);
    }
    // HeadBucket only: a bucket for exports needs no more permissions than writing.
    if !engine.stores.s3[store].reachable().await {
        return Err(Fail::runtime(format!(
            "--out: the bucket of store `{store}` does not answer"
        )));
    }
    Ok(())
}
