//! `report` and `audit`: reading the trail back and verifying it.

use super::*;

pub async fn report(config_path: &Path, cmd: ReportCommand) -> CmdResult {
    if let ReportCommand::Show {
        run,
        format,
        bundle: Some(bundle),
        pubkeys,
    } = &cmd
    {
        return evidence::show_from_bundle(bundle, run, *format, pubkeys);
    }
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
        ReportCommand::Show { run, format, .. } => {
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
    match cmd {
        AuditCommand::Verify(a) => evidence::verify(config_path, a).await,
        AuditCommand::Keygen { out } => evidence::keygen(&out).await,
        AuditCommand::Pubkey => evidence::pubkey(config_path),
        AuditCommand::Export { since, until, out } => {
            evidence::export(config_path, since, until, &out).await
        }
    }
}
