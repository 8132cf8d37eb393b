//! Plain text for operators and Markdown for auditors.

use std::fmt::Write;

use super::table::{count, Align, TextTable};
use super::RunReport;

fn ts(t: &Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Human-readable bytes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The report as an operator reads it in a terminal.
pub fn render_text(r: &RunReport) -> String {
    let mut out = String::new();
    let dry = if r.mode == "dry_run" {
        " (DRY RUN: nothing was changed)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "run {} — {}{dry}",
        r.run_id,
        r.status.as_str().to_uppercase()
    );
    let _ = writeln!(
        out,
        "  trigger {} · actor {} · host {} · retentiond {}",
        r.trigger, r.actor, r.host, r.version
    );
    let _ = writeln!(
        out,
        "  started {} · finished {}",
        ts(&Some(r.started_at)),
        ts(&r.finished_at)
    );
    if let Some(a) = r.as_of {
        let _ = writeln!(out, "  cutoffs computed as of {}", ts(&Some(a)));
    }
    let _ = writeln!(out, "  config sha256 {}", r.config_sha256);
    let _ = writeln!(out);
    let mut table = TextTable::new(&[
        ("RULE", Align::Left),
        ("STATUS", Align::Left),
        ("CUTOFF", Align::Left),
        ("MATCHED", Align::Right),
        ("DELETED", Align::Right),
        ("ANONYMISED", Align::Right),
        ("HELD", Align::Right),
        ("FAILED", Align::Right),
        ("BYTES", Align::Right),
    ]);
    for x in &r.rules {
        table.row([
            x.rule.clone(),
            x.status.to_string(),
            ts(&x.cutoff),
            count(x.matched),
            count(x.deleted),
            count(x.anonymised),
            count(x.held),
            count(x.failed),
            x.bytes_text(),
        ]);
    }
    out.push_str(&table.render());
    for x in &r.rules {
        if !x.samples.is_empty() {
            let _ = writeln!(out, "\n  {} sample keys: {}", x.rule, x.samples.join(" | "));
        }
        for e in &x.errors {
            let _ = writeln!(out, "  {} error: {e}", x.rule);
        }
        for (k, v) in &x.details {
            if matches!(
                k.as_str(),
                "multipart_due"
                    | "multipart_aborted"
                    | "objects_deleted"
                    | "category_hold"
                    | "partitions_dropped"
                    | "partitions_detached"
                    | "note"
                    | "kept_within_floor"
                    | "erasable_from"
                    | "retention"
            ) {
                let _ = writeln!(out, "  {} {k}: {v}", x.rule);
            }
        }
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "\n  error: {e}");
    }
    let (m, d, a, h, f, b) = r.totals();
    let _ = writeln!(
        out,
        "\n  total: matched {}, deleted {}, anonymised {}, held {}, failed {}, bytes {}",
        count(m),
        count(d),
        count(a),
        count(h),
        count(f),
        bytes(b)
    );
    if let Some(hash) = &r.hash {
        let _ = writeln!(
            out,
            "  audit record #{} hash {hash}",
            r.chain_seq.unwrap_or(0)
        );
    }
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The report as Markdown.
pub fn render_markdown(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Retention run `{}`\n", r.run_id);
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| Status | **{}** |", r.status);
    let _ = writeln!(
        out,
        "| Mode | {} |",
        if r.mode == "dry_run" {
            "dry-run (nothing changed)"
        } else {
            "enforce"
        }
    );
    let _ = writeln!(out, "| Trigger | {} |", r.trigger);
    let _ = writeln!(
        out,
        "| Started by | {} on {} |",
        md_escape(&r.actor),
        md_escape(&r.host)
    );
    let _ = writeln!(out, "| Started | {} |", ts(&Some(r.started_at)));
    let _ = writeln!(out, "| Finished | {} |", ts(&r.finished_at));
    if let Some(a) = r.as_of {
        let _ = writeln!(out, "| As of | {} |", ts(&Some(a)));
    }
    let _ = writeln!(out, "| retentiond | {} |", r.version);
    let _ = writeln!(out, "| Config SHA-256 | `{}` |", r.config_sha256);
    if let Some(h) = &r.hash {
        let _ = writeln!(
            out,
            "| Audit record | #{} `{h}` |",
            r.chain_seq.unwrap_or(0)
        );
    }
    let _ = writeln!(out, "\n## Rules\n");
    let _ = writeln!(out, "| Rule | Category | Where | Action | Status | Cutoff | Matched | Deleted | Anonymised | Held | Failed | Bytes |");
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"
    );
    for x in &r.rules {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            md_escape(&x.rule),
            md_escape(&x.category),
            md_escape(&x.place),
            x.action,
            x.status,
            ts(&x.cutoff),
            count(x.matched),
            count(x.deleted),
            count(x.anonymised),
            count(x.held),
            count(x.failed),
            x.bytes_text()
        );
    }
    let errors: Vec<_> = r
        .rules
        .iter()
        .flat_map(|x| x.errors.iter().map(move |e| (x, e)))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "\n## Errors\n");
        for (x, e) in errors {
            let _ = writeln!(out, "- **{}**: {}", md_escape(&x.rule), md_escape(e));
        }
    }
    let (m, d, a, h, f, b) = r.totals();
    let _ = writeln!(
        out,
        "\n**Total:** matched {}, deleted {}, anonymised {}, held {}, failed {}, {} freed.",
        count(m),
        count(d),
        count(a),
        count(h),
        count(f),
        bytes(b)
    );
    out
}
