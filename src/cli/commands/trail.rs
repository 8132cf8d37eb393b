//! `report` and `audit`: reading the trail back and verifying it.

use super::*;

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
