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

mod evidence;
mod holds;
mod plan;
mod subjects;
mod trail;

pub use holds::hold;
pub use plan::{conformance, plan};
pub use subjects::{erase, export};
pub use trail::{audit, report};

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
    // The preservation lock first: a weakened config is refused for that reason, before
    // the preflight looks at what it names (read-only until the trail is migrated).
    if engine.audit.migrations_applied().await {
        startup::check_preservation_lock(&engine.audit, &config).await?;
    }
    let pf = preflight::check(&config, &engine.stores, &selected).await;
    print_findings(&pf);
    if !pf.ok() {
        return Err(pf.failure().into());
    }
    startup::migrate_and_recover(&engine.audit).await?;
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
    let (mut engine, names, pf) = prepare(config_path, &a.rules, &a.categories).await?;
    engine.watch = super::progress::on_terminal(a.format == Format::Text, a.dry_run);
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
    // The signing key must load where the daemon will run.
    startup::evidence(&config).await?;
    // Changes nothing: the lock is checked only against a trail that is migrated.
    if audit.migrations_applied().await {
        startup::check_preservation_lock(&audit, &config).await?;
    }
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

pub async fn policy(config_path: &Path, a: PolicyArgs) -> CmdResult {
    if let Some(cmd) = a.command {
        return evidence::policy_command(config_path, cmd).await;
    }
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
    startup::migrated_audit(&config).await?;
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

/// A time as the text tables print it, or `-`.
fn utc(t: Option<chrono::DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}
