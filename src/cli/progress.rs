//! A progress bar per rule on a terminal (`indicatif`): records done of the count, the
//! rate and the time left. None without a terminal, with `--format json`, or under the
//! daemon; never in colour (so `NO_COLOR` has nothing to turn off here).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::RuleReport;
use crate::sweep::Watch;

/// The bars of one run, drawn on stderr.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    dry_run: bool,
}

/// Bars when stderr is a terminal and the output is text; else `None`. A dry-run's bar
/// ends at the records it matched, an enforcing run's at those it removed.
pub fn on_terminal(text_output: bool, dry_run: bool) -> Option<Arc<dyn Watch>> {
    (text_output && std::io::stderr().is_terminal()).then(|| {
        Arc::new(Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
            dry_run,
        }) as Arc<dyn Watch>
    })
}

fn spinner() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:24} {spinner} {human_pos} records  {per_sec}  {msg}")
        .expect("a valid template")
}

fn bar() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:24} [{bar:30}] {human_pos}/{human_len} records  {per_sec}  ETA {eta}  {msg}",
    )
    .expect("a valid template")
    .progress_chars("=> ")
}

impl Bars {
    fn with(&self, rule: &str, f: impl FnOnce(&ProgressBar)) {
        if let Some(b) = self.bars.lock().expect("not poisoned").get(rule) {
            f(b);
        }
    }
}

impl Watch for Bars {
    fn started(&self, rule: &str) {
        let b = self.multi.add(ProgressBar::new_spinner());
        b.set_style(spinner());
        b.set_prefix(rule.to_owned());
        b.enable_steady_tick(Duration::from_millis(120));
        self.bars
            .lock()
            .expect("not poisoned")
            .insert(rule.to_owned(), b);
    }

    fn counted(&self, rule: &str, total: u64) {
        self.with(rule, |b| {
            b.set_length(total);
            b.set_style(bar());
        });
    }

    fn progressed(&self, rule: &str, done: u64) {
        self.with(rule, |b| b.set_position(done));
    }

    fn finished(&self, rule: &str, report: &RuleReport) {
        if let Some(b) = self.bars.lock().expect("not poisoned").remove(rule) {
            // An export's records are the rows it wrote; a sweep's, those it removed.
            b.set_position(if report.action == "export" || self.dry_run {
                report.matched
            } else {
                report.deleted + report.anonymised
            });
            b.finish_with_message(format!(
                "{}, {} matched",
                report.status.as_str(),
                report.matched
            ));
        }
    }
}
