//! Pure decisions: cutoffs, batch sizes, which object versions are due. No I/O.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Period, Versions};
use crate::store::s3::{Listed, ObjectRef};

/// The cutoff of a rule at `now`: records strictly older than it are due.
///
/// It is the earlier of `now - retain` and `now - min_retain`, so a legal floor holds
/// even if a rule's `retain` were ever shorter than it (config loading rejects that too).
pub fn cutoff(
    now: DateTime<Utc>,
    retain: &Period,
    floor: Option<&Period>,
) -> Option<DateTime<Utc>> {
    let by_rule = retain.before(now)?;
    match floor.map(|f| f.before(now)) {
        None => Some(by_rule),
        Some(None) => None,
        Some(Some(by_floor)) => Some(by_rule.min(by_floor)),
    }
}

/// Whether a record with `age` is due under `cutoff` (a `None` age never is).
pub fn is_due(age: Option<DateTime<Utc>>, cutoff: DateTime<Utc>) -> bool {
    age.is_some_and(|a| a < cutoff)
}

/// Bounds and target of adaptive batch sizing.
#[derive(Debug, Clone, Copy)]
pub struct BatchSizing {
    /// Never below this.
    pub min: u32,
    /// Never above this.
    pub max: u32,
    /// Target duration of one batch.
    pub target: Duration,
}

impl BatchSizing {
    /// The next batch size after a batch of `size` rows took `elapsed`.
    ///
    /// Over target: shrink in proportion (at least halving), so one slow batch is not
    /// followed by another. Under half the target: grow by half, so a fast table
    /// converges in a few batches without overshooting. In between: keep.
    pub fn next(&self, size: u32, elapsed: Duration) -> u32 {
        let next = if elapsed > self.target {
            let ratio = self.target.as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
            (f64::from(size) * ratio.min(0.5)) as u32
        } else if elapsed < self.target / 2 {
            size.saturating_add(size / 2).max(size + 1)
        } else {
            size
        };
        next.clamp(self.min, self.max)
    }
}

/// How a table's batches find their rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Walk {
    /// Each batch asks for the next due rows, which the planner finds through an index on
    /// the age column: cheap when few rows are due.
    Index,
    /// Batches walk the heap's pages in order, `pages` of them at the start of the run,
    /// each page read once: the plan of a bulk `DELETE`, cut into short transactions.
    Pages {
        /// Pages the table had when the walk began.
        pages: u64,
        /// Estimated rows per page, which turns a batch size in rows into pages.
        rows_per_page: f64,
    },
}

/// The oldest PostgreSQL with TID range scans (`ctid >= a AND ctid < b` reads only those pages).
pub const TID_RANGE_SCAN_SINCE: i32 = 140_000;

/// Chooses the walk of one table from the plan PostgreSQL picks for "every due row"
/// (`EXPLAIN (FORMAT JSON)` output): when it would read the whole table anyway, or
/// expects at least [`PAGE_WALK_SHARE`] of the rows to be due (then nearly every page
/// holds one, and a bitmap scan reads them all too), the batches read the table once
/// in physical order; otherwise they follow the index.
///
/// `reltuples`/`relpages` are the catalog's estimates (negative or zero when the table
/// was never analysed); `pages` is the table's current size in pages.
pub fn choose_walk(
    plan: &serde_json::Value,
    server_version: i32,
    pages: u64,
    reltuples: f64,
    relpages: i64,
) -> Walk {
    let due_rows = plan
        .pointer("/0/Plan/Plan Rows")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    let large_share = reltuples > 0.0 && due_rows >= PAGE_WALK_SHARE * reltuples;
    if server_version < TID_RANGE_SCAN_SINCE || !(reads_whole_table(plan) || large_share) {
        return Walk::Index;
    }
    // Unknown statistics: assume narrow rows, so the first batch is small rather than
    // large; the adaptive sizing corrects it within a few batches.
    let rows_per_page = if reltuples > 0.0 && relpages > 0 {
        (reltuples / relpages as f64).max(1.0)
    } else {
        UNKNOWN_ROWS_PER_PAGE
    };
    Walk::Pages {
        pages,
        rows_per_page,
    }
}

const UNKNOWN_ROWS_PER_PAGE: f64 = 100.0;

/// The share of due rows from which the batches walk the pages whatever the plan.
pub const PAGE_WALK_SHARE: f64 = 0.25;

/// Whether some node of the plan is a sequential scan.
fn reads_whole_table(plan: &serde_json::Value) -> bool {
    match plan {
        serde_json::Value::Array(items) => items.iter().any(reads_whole_table),
        serde_json::Value::Object(node) => {
            node.get("Node Type").and_then(|v| v.as_str()) == Some("Seq Scan")
                || node.get("Plan").is_some_and(reads_whole_table)
                || node.get("Plans").is_some_and(reads_whole_table)
        }
        _ => false,
    }
}

/// Pages that hold about `rows` rows (at least one).
pub fn pages_for(rows: u32, rows_per_page: f64) -> u64 {
    ((f64::from(rows) / rows_per_page).ceil() as u64).max(1)
}

/// Which versions of one key are due. `group` holds every listed version and delete
/// marker of the key, newest first; `versioned` says whether the bucket keeps versions.
///
/// - Unversioned bucket: the object goes when it is older than the cutoff.
/// - `versions = "all"`: when the current version is older than the cutoff the key has
///   expired and every version and delete marker goes, so no marker is left behind.
///   Otherwise each noncurrent version older than the cutoff goes; a delete marker goes
///   once nothing else of its key would be left.
/// - `versions = "current"`: only an expired current version goes, deleted without a
///   version id so the bucket keeps the history.
pub fn due_versions(
    group: &[Listed],
    cutoff: DateTime<Utc>,
    mode: Versions,
    versioned: bool,
) -> Vec<ObjectRef> {
    let old = |l: &Listed| l.last_modified < cutoff;
    if !versioned {
        return group
            .iter()
            .filter(|l| old(l))
            .map(|l| ObjectRef {
                version_id: None,
                ..l.to_ref()
            })
            .collect();
    }
    let latest = group.iter().find(|l| l.is_latest);
    match mode {
        Versions::Current => match latest {
            Some(l) if !l.delete_marker && old(l) => vec![ObjectRef {
                version_id: None,
                ..l.to_ref()
            }],
            _ => Vec::new(),
        },
        Versions::All => {
            if let Some(l) = latest {
                if !l.delete_marker && old(l) {
                    return group.iter().map(Listed::to_ref).collect();
                }
            }
            let data: Vec<&Listed> = group.iter().filter(|l| !l.delete_marker).collect();
            let mut due: Vec<ObjectRef> = data
                .iter()
                .filter(|l| !l.is_latest && old(l))
                .map(|l| l.to_ref())
                .collect();
            let data_left = data.len() - due.len();
            if data_left == 0 {
                due.extend(group.iter().filter(|l| l.delete_marker).map(Listed::to_ref));
            }
            due
        }
    }
}

/// Whether `key` is under one of the `exclude` prefixes.
pub fn excluded(key: &str, exclude: &[String]) -> bool {
    exclude.iter().any(|e| key.starts_with(e.as_str()))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
