-- Progress of a rule while it runs: an append-only row every few seconds with the
-- rule's cutoff and running counts. A run whose process is killed mid-rule is sealed
-- `interrupted` by the next start with the last progress of each unfinished rule, so
-- the trail keeps what its committed batches removed (a lower bound).
CREATE TABLE retentiond.rule_progress (
    id           bigserial PRIMARY KEY,
    run_id       uuid NOT NULL REFERENCES retentiond.runs (run_id),
    position     int NOT NULL,
    report       jsonb NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX rule_progress_run ON retentiond.rule_progress (run_id, position, id);

CREATE TRIGGER rule_progress_append_only BEFORE UPDATE OR DELETE ON retentiond.rule_progress
    FOR EACH ROW EXECUTE FUNCTION retentiond.refuse_change();
CREATE TRIGGER rule_progress_open_run BEFORE INSERT ON retentiond.rule_progress
    FOR EACH ROW EXECUTE FUNCTION retentiond.refuse_result_for_sealed_run();
CREATE TRIGGER rule_progress_no_truncate BEFORE TRUNCATE ON retentiond.rule_progress
    FOR EACH STATEMENT EXECUTE FUNCTION retentiond.refuse_change();
