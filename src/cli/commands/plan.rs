//! `plan` and `conformance`: what is due now or at a date, and what is overdue.

use super::*;

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
            retain: rule.retention(),
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
    crate::conformance::publish(&engine, &results).await;
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
