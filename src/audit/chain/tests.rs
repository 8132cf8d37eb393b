use super::*;

#[test]
fn link_hash_is_sha256_of_prev_newline_content() {
    assert_eq!(
        link_hash(GENESIS, "{}"),
        hex::encode(Sha256::digest(format!("{GENESIS}\n{{}}").as_bytes()))
    );
    assert_ne!(
        link_hash(GENESIS, "{\"a\":1}"),
        link_hash(GENESIS, "{\"a\":2}")
    );
}

#[test]
fn canonical_json_sorts_keys_at_every_level() {
    let v = json!({"b": 1, "a": {"z": [3, {"y": null, "x": "é"}], "c": true}});
    assert_eq!(
        canonical_json(&v),
        r#"{"a":{"c":true,"z":[3,{"x":"é","y":null}]},"b":1}"#
    );
}

#[test]
fn canonical_run_golden_vector() {
    // Changing this output breaks verification of every existing trail.
    let report: RunReport = serde_json::from_value(json!({
        "schema": "retentiond.run-report/1", "run_id": "01a2033f-e513-7137-9d30-44a6fb189b5b",
        "trigger": "manual", "mode": "enforce", "status": "succeeded",
        "started_at": "2026-11-22T12:00:00Z", "finished_at": "2026-11-22T12:00:01.5Z",
        "config_sha256": "abc", "actor": "dpo", "host": "h", "version": "0.1.0", "as_of": null,
        "subject_hash": null, "error": null, "chain_seq": 7, "prev_hash": "p", "hash": "h",
        "rules": [{"rule": "logs", "category": "c", "store": "app", "place": "public.logs",
                   "action": "delete", "status": "succeeded", "cutoff": "2026-10-23T12:00:00Z",
                   "matched": 2, "deleted": 2, "anonymised": 0, "held": 0, "failed": 0, "bytes": 0,
                   "duration_ms": 5, "samples": [], "errors": [], "details": {"batches": 1}}]
    }))
    .unwrap();
    let c = canonical_run(&report);
    assert_eq!(
        c,
        r#"{"actor":"dpo","as_of":null,"chain_seq":7,"config_sha256":"abc","error":null,"finished_at":"2026-11-22T12:00:01.500Z","host":"h","kind":"run","mode":"enforce","rules":[{"action":"delete","anonymised":0,"bytes":0,"category":"c","cutoff":"2026-10-23T12:00:00Z","deleted":2,"details":{"batches":1},"duration_ms":5,"errors":[],"failed":0,"held":0,"matched":2,"place":"public.logs","rule":"logs","samples":[],"status":"succeeded","store":"app"}],"run_id":"01a2033f-e513-7137-9d30-44a6fb189b5b","started_at":"2026-11-22T12:00:00Z","status":"succeeded","subject_hash":null,"trigger":"manual","version":"0.1.0"}"#
    );
    assert_eq!(link_hash(GENESIS, &c).len(), 64);
}
