//! `hold`: legal holds.

use super::*;

pub async fn hold(config_path: &Path, cmd: HoldCommand) -> CmdResult {
    let config = load_config(config_path)?;
    let audit = startup::sealing_audit(&config).await?;
    match cmd {
        HoldCommand::Add {
            subject,
            category,
            reason,
            expires,
            actor: who,
        } => {
            let target = hold_target(&config, subject, category)?;
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
        HoldCommand::List { all, format } => hold_list(&audit, all, format).await,
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

/// What `--subject` or `--category` names: exactly one of them, a known category, and a
/// warning when no rule has the subject's kind.
fn hold_target(
    config: &Config,
    subject: Option<String>,
    category: Option<String>,
) -> Result<HoldTarget, Fail> {
    match (subject, category) {
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
            Ok(t)
        }
        (None, Some(c)) => {
            if !config.categories.contains_key(&c) {
                return Err(Fail::usage(format!("unknown category `{c}`")));
            }
            Ok(HoldTarget::Category(c))
        }
        _ => Err(Fail::usage("give exactly one of --subject or --category")),
    }
}

async fn hold_list(audit: &crate::audit::Audit, all: bool, format: Format) -> CmdResult {
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
