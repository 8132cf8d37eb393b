use super::*;

fn r(status: &str) -> RuleReport {
    RuleReport {
        status: status.parse().unwrap(),
        ..Default::default()
    }
}

#[test]
fn statuses() {
    assert_eq!(
        run_status(&[r("succeeded"), r("skipped")], false),
        Status::Succeeded
    );
    assert_eq!(
        run_status(&[r("succeeded"), r("failed")], false),
        Status::Partial
    );
    assert_eq!(run_status(&[r("failed")], false), Status::Failed);
    assert_eq!(
        run_status(&[r("refused"), r("succeeded")], false),
        Status::Refused
    );
    assert_eq!(run_status(&[r("succeeded")], true), Status::Interrupted);
    assert_eq!(run_status(&[r("partial")], false), Status::Partial);
}
