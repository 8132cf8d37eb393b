use super::*;

#[tokio::test]
async fn a_panicking_run_leaves_its_rule_free_for_the_next_tick() {
    let busy = Mutex::new(HashMap::new());
    let ran = run_exclusive(&busy, "logs", async { panic!("a bug in one rule's run") }).await;
    assert!(ran);
    assert!(busy.lock().await.is_empty(), "the rule is not left busy");
    let (tx, rx) = tokio::sync::oneshot::channel();
    assert!(
        run_exclusive(&busy, "logs", async move {
            let _ = tx.send(());
        })
        .await,
        "the next tick runs the rule"
    );
    assert!(rx.await.is_ok());
}

#[tokio::test]
async fn a_tick_whose_rule_is_running_is_skipped() {
    let busy = Mutex::new(HashMap::new());
    busy.lock().await.insert("logs".to_owned(), ());
    let ran = run_exclusive(&busy, "logs", async { unreachable!("must not run") }).await;
    assert!(!ran);
    assert!(
        busy.lock().await.contains_key("logs"),
        "still the first run's"
    );
}
