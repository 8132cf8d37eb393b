//! `audit verify`, `keygen`, `pubkey`, `export`: evidence an auditor can check without
//! trusting the database, and `policy history` / `policy diff`.

use std::io::Write;
use std::path::Path;

use super::*;
use crate::audit::anchor::{self, AnchorCheck};
use crate::audit::bundle;
use crate::audit::signing::{PublicKey, Signer};
use crate::policy::{changes, Terms};

fn public_keys(paths: &[std::path::PathBuf]) -> Result<Vec<PublicKey>, Fail> {
    paths
        .iter()
        .map(|p| PublicKey::load(p).map_err(Fail::usage))
        .collect()
}

/// Creates `path` for writing; it must not exist. `mode` on Unix.
fn create_new(path: &Path, mode: u32) -> Result<std::fs::File, Fail> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    o.open(path)
        .map_err(|e| Fail::usage(format!("cannot create {}: {e}", path.display())))
}

pub async fn keygen(out: &Path) -> CmdResult {
    let key = Signer::generate();
    let public_path = std::path::PathBuf::from(format!("{}.pub", out.display()));
    if public_path.exists() {
        return Err(Fail::usage(format!(
            "{} exists; keygen never overwrites a key",
            public_path.display()
        )));
    }
    let mut f = create_new(out, 0o600)?;
    f.write_all(key.to_pem().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Fail::runtime(format!("cannot write {}: {e}", out.display())))?;
    let written = create_new(&public_path, 0o644).and_then(|mut p| {
        p.write_all(key.public().to_pem().as_bytes())
            .map_err(|e| Fail::runtime(format!("cannot write {}: {e}", public_path.display())))
    });
    if let Err(e) = written {
        // No private key without its public half.
        let _ = std::fs::remove_file(out);
        let _ = std::fs::remove_file(&public_path);
        return Err(e);
    }
    println!(
        "wrote the private key to {} (mode 0600) and the public key to {}; key id {}",
        out.display(),
        public_path.display(),
        key.key_id()
    );
    println!("set [audit] signing_key_file = \"{}\" (or put the file's text in the variable named by signing_key_env) and give auditors the .pub file", out.display());
    Ok(Exit::Ok)
}

pub fn pubkey(config_path: &Path) -> CmdResult {
    let config = load_config(config_path)?;
    let Some(source) = &config.audit.signing_key else {
        return Err(Fail::usage(
            "no signing key: set [audit] signing_key_env or signing_key_file",
        ));
    };
    let key = Signer::load(source).map_err(Fail::usage)?;
    eprintln!("key id {}", key.key_id());
    print!("{}", key.public().to_pem());
    Ok(Exit::Ok)
}

pub async fn export(
    config_path: &Path,
    since: Option<String>,
    until: Option<String>,
    out: &Path,
) -> CmdResult {
    let config = load_config(config_path)?;
    let now = Utc::now();
    let since = since
        .as_deref()
        .map(|s| parse_time(s, now))
        .transpose()
        .map_err(Fail::usage)?;
    let until = until
        .as_deref()
        .map(|s| parse_time(s, now))
        .transpose()
        .map_err(Fail::usage)?;
    let mut audit = connect_audit(&config).await?;
    // The bundle is signed when the signing key is at hand; an auditor's export without
    // it is not, and its records' own signatures still are.
    match startup::evidence(&config).await {
        Ok(e) => audit = audit.with_evidence(e),
        Err(e) => tracing::warn!(error = %e.message, "the bundle is not signed"),
    }
    let anchors = match startup::anchors(&config).await? {
        Some(a) => a.list().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the anchors cannot be listed; the bundle has none");
            Vec::new()
        }),
        None => Vec::new(),
    };
    let file = create_new(out, 0o644)?;
    match audit.export_bundle(since, until, &anchors, file).await {
        Ok(done) => {
            println!(
                "wrote {}: {} records ({}), {} config versions, {} anchors; check it anywhere with `retentiond audit verify --bundle {} --pubkey KEY.pub`",
                out.display(),
                done.records,
                match (done.first_seq, done.last_seq) {
                    (Some(a), Some(b)) => format!("chain records {a} to {b}"),
                    _ => "none in the range".into(),
                },
                done.policies,
                done.anchors,
                out.display()
            );
            Ok(Exit::Ok)
        }
        Err(e) => {
            let _ = std::fs::remove_file(out);
            Err(Fail::runtime(format!(
                "failed to export the audit trail: {e:#}"
            )))
        }
    }
}

pub async fn verify(config_path: &Path, a: VerifyArgs) -> CmdResult {
    let keys = public_keys(&a.pubkeys)?;
    if let Some(path) = &a.bundle {
        let check = bundle::verify_file(path, &keys);
        match a.format {
            Format::Json => print_json(&check),
            Format::Text => {
                let place = match (check.first_seq, check.last_seq) {
                    (Some(f), Some(l)) => format!("records {f} to {l}"),
                    _ => "no records".into(),
                };
                print_verification(
                    &check.chain,
                    &format!("bundle {} ok: {place}, hash chain intact, the bundle's bytes unchanged, {} config versions match their SHA-256", path.display(), check.policies),
                );
                if check.chain.violations.is_empty() {
                    if check.anchors > 0 {
                        println!(
                            "anchors: {} in the bundle's range, each matching its record",
                            check.anchors
                        );
                    }
                    if keys.is_empty() {
                        println!("signatures not checked (no --pubkey): the bundle is consistent with itself, but anyone can recompute an unsigned bundle");
                    } else if check.bundle_signed {
                        println!(
                            "the bundle itself is signed: no record can be cut off either end"
                        );
                    } else {
                        println!("the bundle itself is not signed (exported without the signing key): its records are, but records may have been cut off its end");
                    }
                }
            }
        }
        return Ok(exit_of(&check.chain.violations));
    }
    let config = load_config(config_path)?;
    let audit = connect_audit(&config).await?;
    let mut conn = audit
        .pool
        .acquire()
        .await
        .map_err(|e| Fail::runtime(e.to_string()))?;
    let mut v = chain::verify(&mut conn, &keys)
        .await
        .map_err(|e| Fail::runtime(format!("failed to read the audit trail: {e}")))?;
    for p in audit
        .policy_versions()
        .await
        .map_err(|e| Fail::runtime(format!("failed to read the policy history: {e}")))?
    {
        if !p.intact() {
            v.violations.push(format!(
                "config {} in the policy history does not match its SHA-256; it was edited",
                p.sha256
            ));
        }
    }
    for (run, sha) in audit
        .runs_without_policy()
        .await
        .map_err(|e| Fail::runtime(format!("failed to read the policy history: {e}")))?
    {
        v.violations.push(format!(
            "run {run} used config {sha}, which is missing from the policy history; it was deleted"
        ));
    }
    let anchored = if a.anchors {
        let Some(anchors) = startup::anchors(&config).await? else {
            return Err(Fail::usage(
                "--anchors needs [audit] anchor_store in the config",
            ));
        };
        let seen = anchors.list().await.map_err(|e| {
            Fail::runtime(format!(
                "failed to list the anchors in store `{}`: {e}",
                anchors.store_name()
            ))
        })?;
        let (chain_hashes, head) = anchor::chain_at(&mut conn, &seen)
            .await
            .map_err(|e| Fail::runtime(format!("failed to read the audit trail: {e}")))?;
        let mut c = anchor::compare(&seen, &chain_hashes, head, &keys);
        if c.anchors == 0 && v.records > 0 {
            c.violations.push(format!(
                "no anchor in store `{}`: the chain cannot be checked against anything outside the database",
                anchors.store_name()
            ));
        }
        v.violations.extend(c.violations.iter().cloned());
        Some(c)
    } else {
        None
    };
    if crate::report::site::enabled(&config) {
        let stores = startup::connect_stores(&config, &[]).await?;
        let snapshot = crate::report::site::VerifySnapshot {
            checked_at: Utc::now(),
            records: v.records,
            head_hash: v.head_hash.clone(),
            signatures_checked: v.signatures_checked,
            anchors_checked: anchored.is_some(),
            violations: v.violations.clone(),
        };
        crate::report::site::save(
            &config,
            &stores,
            crate::report::site::VERIFY_FILE,
            &snapshot,
        )
        .await;
        crate::report::site::refresh(&config, &stores, &audit).await;
    }
    match a.format {
        Format::Json => print_json(&serde_json::json!({
            "records": v.records,
            "head_hash": v.head_hash,
            "signed": v.signed,
            "signatures_checked": v.signatures_checked,
            "anchors": anchored,
            "violations": v.violations,
        })),
        Format::Text => {
            print_verification(
                &v,
                &format!(
                    "audit trail ok: {} records, hash chain intact, every finished record sealed",
                    v.records
                ),
            );
            if let (Some(c), true) = (&anchored, v.violations.is_empty()) {
                print_anchored(c);
            }
        }
    }
    Ok(exit_of(&v.violations))
}

fn exit_of(violations: &[String]) -> Exit {
    if violations.is_empty() {
        Exit::Ok
    } else {
        Exit::Violation
    }
}

fn print_verification(v: &chain::Verification, ok: &str) {
    if v.violations.is_empty() {
        println!("{ok}");
        if let Some(h) = &v.head_hash {
            println!("head hash {h}");
        }
        if v.signatures_checked {
            println!(
                "signatures: {} of {} records signed, every signature valid, none missing after the first",
                v.signed, v.records
            );
        } else if v.signed > 0 {
            println!(
                "signatures: {} of {} records signed (not checked: give --pubkey)",
                v.signed, v.records
            );
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

fn print_anchored(c: &AnchorCheck) {
    println!(
        "anchors: {} checked, each still in the chain at its number with its hash; the latest anchors record {}",
        c.anchors,
        c.latest_anchored
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into())
    );
}

/// `report show --bundle`: a run read from a bundle that verifies, in the same pass.
pub fn show_from_bundle(
    path: &Path,
    run: &str,
    format: ReportFormat,
    pubkeys: &[std::path::PathBuf],
) -> CmdResult {
    let keys = public_keys(pubkeys)?;
    let mut picker = bundle::RunPicker::new(run);
    let check = bundle::verify_with(path, &keys, |r| picker.offer(r));
    if let Some(first) = check.chain.violations.first() {
        eprintln!("error: the bundle does not verify: {first}");
        return Ok(Exit::Violation);
    }
    if keys.is_empty() {
        eprintln!("warning: no --pubkey: the bundle is consistent, but nothing proves who wrote it; anyone can recompute an unsigned bundle");
    }
    let report = picker
        .picked()
        .map_err(Fail::usage)?
        .ok_or_else(|| Fail::usage(format!("no run in {} matches `{run}`", path.display())))?;
    match format {
        ReportFormat::Json => print_json(&report),
        ReportFormat::Text => print!("{}", render_text(&report)),
        ReportFormat::Markdown => print!("{}", render_markdown(&report)),
        ReportFormat::Html => println!("{}", render_html(&report, &[])),
    }
    Ok(Exit::Ok)
}

/// The version `which` names: `current` (the file), or a SHA-256 prefix.
fn version_text<'a>(
    which: &str,
    config: &'a Config,
    versions: &'a [crate::audit::policies::PolicyVersion],
) -> Result<(&'a str, &'a str, Option<chrono::DateTime<Utc>>), Fail> {
    if which == "current" {
        let at = versions
            .iter()
            .find(|v| v.sha256 == config.sha256)
            .and_then(|v| v.first_run_at);
        return Ok((&config.sha256, &config.text, at));
    }
    let found: Vec<_> = versions
        .iter()
        .filter(|v| v.sha256.starts_with(which))
        .collect();
    match found.as_slice() {
        [v] => Ok((&v.sha256, &v.text, v.first_run_at)),
        [] => Err(Fail::usage(format!(
            "no config version in the policy history starts with `{which}` (see `policy history`; `current` is the config file)"
        ))),
        _ => Err(Fail::usage(format!(
            "`{which}` matches {} config versions; give more of the SHA-256",
            found.len()
        ))),
    }
}

pub async fn policy_command(config_path: &Path, cmd: PolicyCommand) -> CmdResult {
    let config = load_config(config_path)?;
    let audit = connect_audit(&config).await?;
    let versions = audit
        .policy_versions()
        .await
        .map_err(|e| Fail::runtime(format!("failed to read the policy history: {e}")))?;
    match cmd {
        PolicyCommand::History(f) => {
            let locked = |text: &str| -> Vec<String> {
                Terms::from_text(text)
                    .map(|t| {
                        t.categories
                            .into_iter()
                            .filter(|(_, c)| c.locked)
                            .map(|(n, _)| n)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            match f.format {
                Format::Json => print_json(
                    &versions
                        .iter()
                        .map(|v| {
                            let mut j = serde_json::to_value(v).expect("serializable");
                            j["locked"] = serde_json::json!(locked(&v.text));
                            j["current"] = serde_json::json!(v.sha256 == config.sha256);
                            j
                        })
                        .collect::<Vec<_>>(),
                ),
                Format::Text => {
                    let mut table = TextTable::new(&[
                        ("SHA-256", Align::Left),
                        ("FIRST RUN", Align::Left),
                        ("LAST RUN", Align::Left),
                        ("RUNS", Align::Right),
                        ("LOCKED", Align::Left),
                    ]);
                    for v in &versions {
                        let mark = if v.sha256 == config.sha256 {
                            " (current)"
                        } else {
                            ""
                        };
                        table.row([
                            format!("{}{mark}", &v.sha256[..16]),
                            format!("{} {}", utc(v.first_run_at), short_id(v.first_run)),
                            format!("{} {}", utc(v.last_run_at), short_id(v.last_run)),
                            count(v.runs.max(0) as u64),
                            locked(&v.text).join(", "),
                        ]);
                    }
                    print!("{}", table.render());
                }
            }
            Ok(Exit::Ok)
        }
        PolicyCommand::Diff { a, b, format } => {
            let (sa, ta, at_a) = version_text(&a, &config, &versions)?;
            let (sb, tb, at_b) = version_text(&b, &config, &versions)?;
            let terms = |t: &str| Terms::from_text(t).map_err(Fail::usage);
            let diff = changes(&terms(ta)?, &terms(tb)?);
            // Holds released while A was in force, before B took over.
            let releases = match (at_a, at_b) {
                (Some(from), to) if to.is_none_or(|t| t > from) => audit
                    .releases_between(from, to)
                    .await
                    .map_err(|e| Fail::runtime(format!("failed to read hold releases: {e}")))?,
                _ => Vec::new(),
            };
            match format {
                Format::Json => print_json(&serde_json::json!({
                    "from": sa, "to": sb, "changes": diff, "holds_released": releases,
                })),
                Format::Text => {
                    println!("from {} to {}", &sa[..16], &sb[..16]);
                    if diff.is_empty() && releases.is_empty() {
                        println!("no change in retention terms");
                    }
                    for c in &diff {
                        println!("  {c}");
                    }
                    for r in &releases {
                        println!(
                            "  hold {} released ({}) at {}: {}",
                            r.hold_id,
                            r.target,
                            utc(Some(r.released_at)),
                            r.reason
                        );
                    }
                }
            }
            Ok(Exit::Ok)
        }
    }
}

fn short_id(id: Option<uuid::Uuid>) -> String {
    id.map(|u| u.to_string()[..8].to_owned())
        .unwrap_or_default()
}
