//! One function per command.

use crate::report::Status;
use std::path::Path;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::args::*;
use super::{actor, parse_time, CmdResult, Exit, Fail};
use crate::audit::holds::HoldTarget;
use crate::audit::{chain, RunFilter};
use crate::config::{Config, Rule};
use crate::preflight::{self, Preflight};
use crate::report::table::{count, Align, TextTable};
use crate::report::{render_html, render_markdown, render_text, RunReport};
use crate::startup::{self, connect_audit, connect_stores, load_config, Connect};
use crate::sweep::{Engine, Mode, RunRequest};

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// The rules selected by `--rule` / `--category` (all enabled rules when neither is given).
fn select<'a>(
    config: &'a Config,
    rules: &[String],
    categories: &[String],
) -> Result<Vec<&'a Rule>, Fail> {
    for r in rules {
        if config.rule(r).is_none() {
            return Err(Fail::usage(format!(
                "unknown rule `{r}` (see `retentiond plan`)"
            )));
        }
    }
    for c in categories {
        if !config.categories.contains_key(c) {
            return Err(Fail::usage(format!("unknown category `{c}`")));
        }
    }
    Ok(config
        .rules
        .iter()
        .filter(|r| {
            let named = rules.is_empty() || rules.contains(&r.name);
            let in_category = categories.is_empty() || categories.contains(&r.category);
            named && in_category && (r.enabled || rules.contains(&r.name))
        })
        .collect())
}

/// Rules that share a table, and what each keeps of the other's rows.
fn print_overlaps(config: &Config) {
    for o in crate::sweep::overlaps(config) {
        println!(
            "overlap: rule {} on {} never removes what rule {} keeps: {}",
            o.rule, o.table, o.covered_by, o.keeps
        );
    }
}

fn print_findings(pf: &Preflight) {
    for w in &pf.warnings {
        eprintln!("warning: rule {}: {}", w.rule, w.message);
    }
    for e in &pf.errors {
        eprintln!("error: rule {}: {}", e.rule, e.message);
    }
}

/// Connects, migrates, recovers interrupted runs and preflights: everything a run needs.
pub(crate) async fn prepare(
    config_path: &Path,
    rules: &[String],
    categories: &[String],
) -> Result<(Engine, Vec<String>, Preflight), Fail> {
    let config = load_config(config_path)?;
    let selected = select(&config, rules, categories)?;
    let names: Vec<String> = selected.iter().map(|r| r.name.clone()).collect();
    let engine = startup::engine(
        config.clone(),
        &selected,
        Connect::Eager,
        CancellationToken::new(),
    )
    .await?;
    let pf = preflight::check(&config, &engine.stores, &selected).await;
    print_findings(&pf);
    if !pf.ok() {
        return Err(pf.failure().into());
    }
    engine
        .audit
        .migrate()
        .await
        .map_err(|e| Fail::runtime(format!("failed to apply audit migrations: {e}")))?;
    for run in engine
        .audit
        .recover_interrupted()
        .await
        .map_err(|e| Fail::runtime(format!("failed to recover interrupted runs: {e}")))?
    {
        tracing::warn!(run_id = %run, "an earlier run was left running by a stopped process; recorded as interrupted");
    }
    Ok((engine, names, pf))
}

/// Cancels `token` on SIGTERM or SIGINT, so a manual sweep stops between batches too.
pub(crate) fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::warn!("shutdown requested: finishing the current batch");
        token.cancel();
    });
}

pub async fn sweep(config_path: &Path, a: SweepArgs) -> CmdResult {
    if a.as_of.is_some() && !a.dry_run {
        return Err(Fail::usage("--as-of is only allowed with --dry-run: an enforcing sweep always uses the database clock"));
    }
    // Checked before any store is touched; relative times then count from the database
    // clock, as cutoffs do.
    a.as_of
        .as_deref()
        .map(|s| parse_time(s, Utc::now()))
        .transpose()
        .map_err(Fail::usage)?;
    let (engine, names, pf) = prepare(config_path, &a.rules, &a.categories).await?;
    let as_of = match a.as_of.as_deref() {
        Some(s) => Some(db_time(&engine.audit, s).await?),
        None => None,
    };
    cancel_on_signal(engine.shutdown.clone());
    let req = RunRequest {
        rules: names,
        mode: if a.dry_run {
            Mode::DryRun
        } else {
            Mode::Enforce
        },
        as_of,
        trigger: "manual".into(),
        actor: actor(a.actor),
        allow_mass_delete: a.allow_mass_delete,
        lock_rules: true,
    };
    let outcome = engine.run(&req, &pf).await?;
    print_run(&engine, &outcome.report, a.format, a.show_samples);
    Ok(Exit::from(outcome.verdict()))
}

pub async fn validate(config_path: &Path, a: FormatArg) -> CmdResult {
    let config = load_config(config_path)?;
    let all: Vec<&Rule> = config.rules.iter().collect();
    let stores = connect_stores(&config, &all).await?;
    let audit = connect_audit(&config).await?;
    drop(audit);
    let pf = preflight::check(&config, &stores, &all).await;
    match a.format {
        Format::Json => print_json(&serde_json::json!({
            "config": config.path, "config_sha256": config.sha256, "rules": config.rules.len(),
            "ok": pf.ok(), "errors": pf.errors, "warnings": pf.warnings,
            "overlaps": crate::sweep::overlaps(&config),
        })),
        Format::Text => {
            print_findings(&pf);
            print_overlaps(&config);
            if pf.ok() {
                println!(
                    "{}: ok — {} rules, {} categories, {} stores, every store reachable, every rule passes the preflight",
                    config.path.display(),
                    config.rules.len(),
                    config.categories.len(),
                    config.stores.len()
                );
            }
        }
    }
    if pf.ok() {
        Ok(Exit::Ok)
    } else {
        Err(pf.failure().into())
    }
}

pub async fn plan(config_path: &Path, a: PlanArgs) -> CmdResult {
    let config = load_config(config_path)?;
    a.as_of
        .as_deref()
        .map(|s| parse_time(s, Utc::now()))
        .transpose()
        .map_err(Fail::usage)?;
    let all: Vec<&Rule> = config.rules.iter().collect();
    let engine = startup::engine(
        config.clone(),
        &all,
        Connect::Eager,
        CancellationToken::new(),
    )
    .await?;
    let as_of = match a.as_of.as_deref() {
        Some(s) => Some(db_time(&engine.audit, s).await?),
        None => None,
    };
    let pf = preflight::check(&config, &engine.stores, &all).await;
    print_findings(&pf);
    let from = as_of.unwrap_or_else(Utc::now);
    let mut rows = Vec::new();
    for rule in &config.rules {
        let schedule = config.schedule_of(rule);
        let mut next = Vec::new();
        let mut t = from;
        for _ in 0..3 {
            match schedule.next_after(&t) {
                Some(n) => {
                    next.push(n);
                    t = n;
                }
                None => break,
            }
        }
        let report = engine
            .evaluate(rule, Mode::DryRun, as_of, pf.prepared.get(&rule.name))
            .await;
        rows.push(PlanRow {
            rule: rule.name.clone(),
            category: rule.category.clone(),
            place: rule.place(&config),
            action: rule.action.as_str(),
            retain: rule.retain.to_string(),
            enabled: rule.enabled,
            schedule: schedule.expr.clone(),
            cutoff: report.cutoff,
            next_runs: next,
            due: report.matched,
            held: report.held,
            kept_by_other_rules: report
                .details
                .get("kept_by_other_rules")
                .cloned()
                .unwrap_or_else(|| serde_json::json!({})),
            bytes: report.bytes,
            status: report.status,
            errors: report.errors,
        });
    }
    match a.format {
        Format::Json => print_json(
            &serde_json::json!({ "as_of": from, "rules": rows, "overlaps": crate::sweep::overlaps(&config) }),
        ),
        Format::Text => {
            println!(
                "plan as of {} (counts only; nothing is changed)\n",
                from.format("%Y-%m-%d %H:%M:%S UTC")
            );
            let mut table = TextTable::new(&[
                ("RULE", Align::Left),
                ("RETAIN", Align::Left),
                ("CUTOFF", Align::Left),
                ("DUE", Align::Right),
                ("HELD", Align::Right),
                ("SCHEDULE", Align::Left),
                ("NEXT RUN", Align::Left),
            ]);
            for r in &rows {
                table.row([
                    r.rule.clone(),
                    r.retain.clone(),
                    utc(r.cutoff),
                    count(r.due),
                    count(r.held),
                    r.schedule.clone(),
                    utc(r.next_runs.first().copied()),
                ]);
            }
            print!("{}", table.render());
            for r in &rows {
                if r.status == Status::Failed {
                    let why = r.errors.first().map(String::as_str).unwrap_or("");
                    println!("  {}: error: {why}", r.rule);
                }
                if let Some(kept) = r.kept_by_other_rules.as_object() {
                    for (other, n) in kept {
                        println!(
                            "  {}: {} due record(s) kept by rule {other}",
                            r.rule,
                            n.as_u64().map(count).unwrap_or_else(|| n.to_string())
                        );
                    }
                }
            }
            print_overlaps(&config);
        }
    }
    if pf.ok() {
        Ok(Exit::Ok)
    } else {
        Err(pf.failure().into())
    }
}

pub async fn report(config_path: &Path, cmd: ReportCommand) -> CmdResult {
    let config = load_config(config_path)?;
    let audit = connect_audit(&config).await?;
    match cmd {
        ReportCommand::List {
            since,
            rule,
            status,
            limit,
            format,
        } => {
            let since = since
                .as_deref()
                .map(|s| parse_time(s, Utc::now()))
                .transpose()
                .map_err(Fail::usage)?;
            let runs = audit
                .list_runs(&RunFilter {
                    since,
                    rule,
                    status,
                    limit,
                })
                .await
                .map_err(|e| Fail::runtime(format!("failed to read runs: {e}")))?;
            match format {
                Format::Json => print_json(&runs),
                Format::Text => {
                    let mut table = TextTable::new(&[
                        ("RUN", Align::Left),
                        ("STARTED", Align::Left),
                        ("TRIGGER", Align::Left),
                        ("MODE", Align::Left),
                        ("STATUS", Align::Left),
                        ("DELETED", Align::Right),
                        ("ANONYMISED", Align::Right),
                        ("HELD", Align::Right),
                        ("FAILED", Align::Right),
                    ]);
                    for r in &runs {
                        let (_, d, an, h, f, _) = r.totals();
                        table.row([
                            r.run_id.to_string(),
                            utc(Some(r.started_at)),
                            r.trigger.clone(),
                            r.mode.clone(),
                            r.status.to_string(),
                            count(d),
                            count(an),
                            count(h),
                            count(f),
                        ]);
                    }
                    print!("{}", table.render());
                }
            }
            Ok(Exit::Ok)
        }
        ReportCommand::Show { run, format } => {
            let report = audit
                .load_run(&run)
                .await
                .map_err(|e| Fail::runtime(format!("failed to read run: {e}")))?
                .ok_or_else(|| {
                    Fail::usage(format!(
                        "no run matches `{run}` (use a full id, a unique prefix, or `latest`)"
                    ))
                })?;
            match format {
                ReportFormat::Json => print_json(&report),
                ReportFormat::Text => print!("{}", render_text(&report)),
                ReportFormat::Markdown => print!("{}", render_markdown(&report)),
                ReportFormat::Html => {
                    let history = audit
                        .list_runs(&RunFilter {
                            since: None,
                            rule: None,
                            status: None,
                            limit: 30,
                        })
                        .await
                        .unwrap_or_default();
                    println!("{}", render_html(&report, &history));
                }
            }
            Ok(Exit::Ok)
        }
    }
}

pub async fn audit(config_path: &Path, cmd: AuditCommand) -> CmdResult {
    let AuditCommand::Verify(a) = cmd;
    let config = load_config(config_path)?;
    let audit = connect_audit(&config).await?;
    let mut conn = audit
        .pool
        .acquire()
        .await
        .map_err(|e| Fail::runtime(e.to_string()))?;
    let v = chain::verify(&mut conn)
        .await
        .map_err(|e| Fail::runtime(format!("failed to read the audit trail: {e}")))?;
    match a.format {
        Format::Json => print_json(&v),
        Format::Text => {
            if v.violations.is_empty() {
                println!(
                    "audit trail ok: {} records, hash chain intact, every finished record sealed",
                    v.records
                );
                if let Some(h) = &v.head_hash {
                    println!("head hash {h}");
                }
            } else {
                println!(
                    "AUDIT TRAIL VIOLATION: {} problem(s) in {} records; first: {}",
                    v.violations.len(),
                    v.records,
                    v.violations[0]
                );
                for x in &v.violations[1..] {
                    println!("  also: {x}");
                }
            }
        }
    }
    Ok(if v.violations.is_empty() {
        Exit::Ok
    } else {
        Exit::Violation
    })
}

pub async fn conformance(config_path: &Path, a: ConformanceArgs) -> CmdResult {
    let tolerance = a
        .tolerance
        .as_deref()
        .map(crate::config::Period::parse)
        .transpose()
        .map_err(Fail::usage)?;
    let config = load_config(config_path)?;
    let rules: Vec<&Rule> = config.rules.iter().filter(|r| r.enabled).collect();
    let engine = startup::engine(
        config.clone(),
        &rules,
        Connect::Eager,
        CancellationToken::new(),
    )
    .await?;
    let pf = preflight::check(&config, &engine.stores, &rules).await;
    print_findings(&pf);
    if !pf.ok() {
        return Err(pf.failure().into());
    }
    let results = crate::conformance::check(&engine, &pf, tolerance.as_ref()).await;
    let violations = results.iter().filter(|r| r.overdue > 0).count();
    let errors = results.iter().filter(|r| r.error.is_some()).count();
    match a.format {
        Format::Json => print_json(
            &serde_json::json!({ "ok": violations == 0 && errors == 0, "rules": results }),
        ),
        Format::Text => {
            let mut table = TextTable::new(&[
                ("RULE", Align::Left),
                ("CUTOFF", Align::Left),
                ("OVERDUE", Align::Right),
                ("HELD", Align::Right),
                ("OLDEST OVERDUE", Align::Left),
            ]);
            for r in &results {
                table.row([
                    r.rule.clone(),
                    utc(r.cutoff),
                    if r.error.is_some() {
                        "-".to_owned()
                    } else {
                        count(r.overdue)
                    },
                    count(r.held),
                    r.oldest_overdue_age.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            print!("{}", table.render());
            for r in &results {
                if let Some(e) = &r.error {
                    println!("  {}: error: {e}", r.rule);
                }
            }
            if violations > 0 {
                println!("\nVIOLATION: {violations} rule(s) keep records past their cutoff");
            } else if errors == 0 {
                println!("\nok: nothing is kept past its cutoff (held records excepted)");
            }
        }
    }
    Ok(if violations > 0 {
        Exit::Violation
    } else if errors > 0 {
        Exit::Failures
    } else {
        Exit::Ok
    })
}

pub async fn hold(config_path: &Path, cmd: HoldCommand) -> CmdResult {
    let config = load_config(config_path)?;
    let audit = connect_audit(&config).await?;
    audit
        .migrate()
        .await
        .map_err(|e| Fail::runtime(format!("failed to apply audit migrations: {e}")))?;
    match cmd {
        HoldCommand::Add {
            subject,
            category,
            reason,
            expires,
            actor: who,
        } => {
            let target = match (subject, category) {
                (Some(s), None) => {
                    let t = HoldTarget::parse_subject(&s).map_err(Fail::usage)?;
                    if let HoldTarget::Subject { kind, .. } = &t {
                        if !config
                            .rules
                            .iter()
                            .any(|r| r.subject().is_some_and(|x| &x.kind == kind))
                        {
                            eprintln!("warning: no rule has a subject of kind `{kind}`; this hold protects nothing yet");
                        }
                    }
                    t
                }
                (None, Some(c)) => {
                    if !config.categories.contains_key(&c) {
                        return Err(Fail::usage(format!("unknown category `{c}`")));
                    }
                    HoldTarget::Category(c)
                }
                _ => return Err(Fail::usage("give exactly one of --subject or --category")),
            };
            if reason.trim().is_empty() {
                return Err(Fail::usage("--reason must not be empty"));
            }
            let expires = match expires.as_deref() {
                Some(s) => Some(db_time(&audit, s).await?),
                None => None,
            };
            let id = audit
                .add_hold(&target, &reason, &actor(who), expires)
                .await
                .map_err(|e| Fail::runtime(format!("failed to place the hold: {e}")))?;
            println!("hold {id} placed on {target}");
            report_hold_coverage(&config, &target).await;
            Ok(Exit::Ok)
        }
        HoldCommand::List { all, format } => {
            let holds = audit
                .list_holds(all)
                .await
                .map_err(|e| Fail::runtime(e.to_string()))?;
            match format {
                Format::Json => print_json(&holds),
                Format::Text => {
                    let mut table = TextTable::new(&[
                        ("ID", Align::Right),
                        ("ON", Align::Left),
                        ("ACTIVE", Align::Left),
                        ("PLACED", Align::Left),
                        ("EXPIRES", Align::Left),
                        ("BY", Align::Left),
                        ("REASON", Align::Left),
                    ]);
                    for h in &holds {
                        table.row([
                            h.id.to_string(),
                            h.target.to_string(),
                            (if h.active { "yes" } else { "no" }).to_owned(),
                            utc(Some(h.created_at)),
                            utc(h.expires_at),
                            h.actor.clone(),
                            h.reason.clone(),
                        ]);
                    }
                    print!("{}", table.render());
                }
            }
            Ok(Exit::Ok)
        }
        HoldCommand::Release {
            id,
            reason,
            actor: who,
        } => {
            if reason.trim().is_empty() {
                return Err(Fail::usage("--reason must not be empty"));
            }
            audit
                .release_hold(id, &reason, &actor(who))
                .await
                .map_err(|e| match e {
                    crate::audit::holds::HoldError::Db(db) => Fail::runtime(db),
                    other => Fail::usage(other),
                })?;
            println!("hold {id} released");
            Ok(Exit::Ok)
        }
    }
}

/// Says how many rows the new hold covers now, per table rule; warns about rules whose
/// subject column cannot hold the id. Counting is best-effort: the hold is placed.
async fn report_hold_coverage(config: &Config, target: &HoldTarget) {
    let rules: Vec<&Rule> = config
        .rules
        .iter()
        .filter(|r| match target {
            HoldTarget::Subject { kind, .. } => r.subject().is_some_and(|s| &s.kind == kind),
            HoldTarget::Category(c) => &r.category == c,
        })
        .collect();
    let stores = match connect_stores(config, &rules).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "warning: cannot count the records the hold covers: {}",
                e.message
            );
            return;
        }
    };
    let mut total = 0u64;
    for rule in rules {
        let crate::config::Target::Table(t) = &rule.target else {
            continue;
        };
        let Some(pg) = stores.pg.get(&rule.store) else {
            continue;
        };
        match crate::sweep::count_covered(pg, t, target).await {
            Ok(n) => {
                total += n;
                println!(
                    "  rule {}: {n} record(s) of {} covered now",
                    rule.name, t.table
                );
            }
            Err(e) => eprintln!("warning: rule {}: {e}", rule.name),
        }
    }
    println!("the hold covers {total} record(s) in tables now");
}

pub async fn erase(config_path: &Path, a: EraseArgs) -> CmdResult {
    let target = HoldTarget::parse_subject(&a.subject).map_err(Fail::usage)?;
    let HoldTarget::Subject { kind, id } = target else {
        unreachable!("parse_subject returns a subject")
    };
    let config = load_config(config_path)?;
    let rules: Vec<String> = config
        .rules
        .iter()
        .filter(|r| r.enabled && r.subject().is_some_and(|s| s.kind == kind))
        .map(|r| r.name.clone())
        .collect();
    if rules.is_empty() {
        return Err(Fail::usage(format!(
            "no rule has a subject of kind `{kind}`"
        )));
    }
    let key = std::env::var(&config.hmac_key_env).unwrap_or_default();
    if key.is_empty() {
        return Err(Fail::usage(format!(
            "erase stores the subject only as a keyed hash: set the key in {} ([anonymise] hmac_key_env)",
            config.hmac_key_env
        )));
    }
    let (engine, names, pf) = prepare(config_path, &rules, &[]).await?;
    // The id is compared in each subject column's own type: one that no value of a
    // column can equal is a mistake in the request, not a subject without data.
    for name in &names {
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
    cancel_on_signal(engine.shutdown.clone());
    let outcome = engine
        .erase(
            &names,
            &kind,
            &id,
            if a.dry_run {
                Mode::DryRun
            } else {
                Mode::Enforce
            },
            &actor(a.actor),
            &pf,
        )
        .await?;
    print_run(&engine, &outcome.report, a.format, a.show_samples);
    // An erasure has no max_delete guard: never refused.
    Ok(Exit::from(outcome.verdict()))
}

pub fn policy(config_path: &Path, a: PolicyArgs) -> CmdResult {
    let config = load_config(config_path)?;
    let out = match a.format {
        PolicyFormat::Markdown => crate::policy::markdown(&config),
        PolicyFormat::Html => crate::policy::html(&config),
        PolicyFormat::Json => {
            serde_json::to_string_pretty(&crate::policy::rows(&config)).expect("serializable")
        }
    };
    println!("{out}");
    Ok(Exit::Ok)
}

pub async fn migrate(config_path: &Path) -> CmdResult {
    let config = load_config(config_path)?;
    let audit = connect_audit(&config).await?;
    audit
        .migrate()
        .await
        .map_err(|e| Fail::runtime(format!("failed to apply audit migrations: {e}")))?;
    println!("audit schema `retentiond` is up to date");
    Ok(Exit::Ok)
}

pub async fn run_daemon(config_path: &Path, a: RunArgs) -> CmdResult {
    // The process's parts: the listen socket and the signals. The daemon gets them.
    let listen = load_config(config_path)?.http.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Fail::usage(format!("cannot listen on {listen}: {e}")))?;
    crate::schedule::run_daemon(
        config_path,
        listener,
        a.grace_period.as_deref(),
        !a.no_catch_up,
        shutdown_signal(),
        reload_signal().map_err(|e| Fail::runtime(format!("cannot handle SIGHUP: {e}")))?,
    )
    .await?;
    Ok(Exit::Ok)
}

/// Prints a run's report. Sample keys may be personal data, and stdout often ends up
/// in a log (a terminal too, under `docker run -t`): unless the trail keeps them
/// (`[audit] samples = true`), they are printed only when `--show-samples` asks.
fn print_run(engine: &Engine, report: &RunReport, format: Format, show_samples: bool) {
    let shown = engine.config.audit.samples || show_samples;
    if shown {
        match format {
            Format::Json => print_json(report),
            Format::Text => print!("{}", render_text(report)),
        }
        return;
    }
    let withheld = report.without_samples();
    match format {
        Format::Json => print_json(&withheld),
        Format::Text => {
            print!("{}", render_text(&withheld));
            if report.rules.iter().any(|r| !r.samples.is_empty()) {
                println!(
                    "\n  sample keys withheld: [audit] samples = false (--show-samples prints them)"
                );
            }
        }
    }
}

/// One rule in `plan`'s output. The JSON keeps the names and order it always had.
#[derive(serde::Serialize)]
struct PlanRow {
    rule: String,
    category: String,
    place: String,
    action: &'static str,
    retain: String,
    enabled: bool,
    schedule: String,
    cutoff: Option<chrono::DateTime<Utc>>,
    next_runs: Vec<chrono::DateTime<Utc>>,
    due: u64,
    held: u64,
    kept_by_other_rules: serde_json::Value,
    bytes: u64,
    status: Status,
    errors: Vec<String>,
}

/// A time as the text tables print it, or `-`.
fn utc(t: Option<chrono::DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A `TIME` argument, relative times counted from the audit database's clock (the host's
/// may be off; cutoffs come from the database too).
async fn db_time(audit: &crate::audit::Audit, s: &str) -> Result<chrono::DateTime<Utc>, Fail> {
    let now = audit.now().await.unwrap_or_else(|_| Utc::now());
    parse_time(s, now).map_err(Fail::usage)
}

/// Waits for SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// An item per SIGHUP (none where there is no SIGHUP).
fn reload_signal() -> std::io::Result<futures::stream::BoxStream<'static, ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let hup = signal(SignalKind::hangup())?;
        Ok(Box::pin(futures::stream::unfold(
            hup,
            |mut hup| async move { hup.recv().await.map(|()| ((), hup)) },
        )))
    }
    #[cfg(not(unix))]
    {
        Ok(Box::pin(futures::stream::pending()))
    }
}

/// `completions SHELL`: the script clap_complete generates from the command line's
/// definition. Touches no config and no store.
pub fn completions(shell: clap_complete::Shell) -> CmdResult {
    let mut cmd = <super::Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "retentiond", &mut std::io::stdout());
    Ok(Exit::Ok)
}

/// `man`: the man page clap_mangen renders from the command line's definition.
pub fn man() -> CmdResult {
    let cmd = <super::Cli as clap::CommandFactory>::command();
    clap_mangen::Man::new(cmd)
        .render(&mut std::io::stdout())
        .map_err(|e| Fail::runtime(format!("cannot write the man page: {e}")))?;
    Ok(Exit::Ok)
}
