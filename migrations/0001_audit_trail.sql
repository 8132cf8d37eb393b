-- retentiond audit trail. Lives in schema "retentiond" of the [audit] store.
-- Append-only: rows are inserted, a run row is updated while it is still running, and
-- once a record is sealed (its hash set) it can be neither updated nor deleted.

CREATE TABLE retentiond.runs (
    id              bigserial PRIMARY KEY,
    run_id          uuid NOT NULL UNIQUE,
    trigger         text NOT NULL CHECK (trigger IN ('schedule', 'manual', 'erase', 'catch_up')),
    mode            text NOT NULL CHECK (mode IN ('dry_run', 'enforce')),
    actor           text NOT NULL,
    host            text NOT NULL,
    version         text NOT NULL,
    config_sha256   text NOT NULL,
    as_of           timestamptz,
    subject_hash    text,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'interrupted', 'refused')),
    error           text,
    chain_seq       bigint UNIQUE,
    prev_hash       text,
    hash            text,
    CHECK (hash IS NULL OR (status <> 'running' AND chain_seq IS NOT NULL))
);
CREATE INDEX runs_started_at_idx ON retentiond.runs (started_at);

CREATE TABLE retentiond.rule_results (
    run_id       uuid NOT NULL REFERENCES retentiond.runs (run_id),
    position     int NOT NULL,
    rule         text NOT NULL,
    category     text NOT NULL,
    store        text NOT NULL,
    place        text NOT NULL,
    action       text NOT NULL,
    status       text NOT NULL CHECK (status IN ('succeeded', 'partial', 'failed', 'refused', 'skipped', 'interrupted')),
    cutoff       timestamptz,
    matched      bigint NOT NULL DEFAULT 0,
    deleted      bigint NOT NULL DEFAULT 0,
    anonymised   bigint NOT NULL DEFAULT 0,
    held         bigint NOT NULL DEFAULT 0,
    failed       bigint NOT NULL DEFAULT 0,
    bytes        bigint NOT NULL DEFAULT 0,
    duration_ms  bigint NOT NULL DEFAULT 0,
    samples      jsonb NOT NULL DEFAULT '[]',
    errors       jsonb NOT NULL DEFAULT '[]',
    details      jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, position)
);
CREATE INDEX rule_results_rule_idx ON retentiond.rule_results (rule);

CREATE TABLE retentiond.holds (
    id            bigserial PRIMARY KEY,
    subject_kind  text,
    subject_id    text,
    category      text,
    reason        text NOT NULL,
    actor         text NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz,
    chain_seq     bigint UNIQUE,
    prev_hash     text,
    hash          text,
    CHECK ((subject_kind IS NULL) = (subject_id IS NULL)),
    CHECK ((subject_id IS NULL) <> (category IS NULL))
);

CREATE TABLE retentiond.hold_releases (
    hold_id      bigint PRIMARY KEY REFERENCES retentiond.holds (id),
    reason       text NOT NULL,
    actor        text NOT NULL,
    released_at  timestamptz NOT NULL,
    chain_seq    bigint UNIQUE,
    prev_hash    text,
    hash         text
);

-- Every sealed record in chain order: the input of `audit verify`.
CREATE VIEW retentiond.chain AS
    SELECT chain_seq, 'run'::text AS kind, id AS ref_id, prev_hash, hash FROM retentiond.runs WHERE chain_seq IS NOT NULL
    UNION ALL
    SELECT chain_seq, 'hold', id, prev_hash, hash FROM retentiond.holds WHERE chain_seq IS NOT NULL
    UNION ALL
    SELECT chain_seq, 'hold_release', hold_id, prev_hash, hash FROM retentiond.hold_releases WHERE chain_seq IS NOT NULL;

-- Sealed records are immutable; nothing is ever deleted.
CREATE FUNCTION retentiond.refuse_change_of_sealed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'retentiond audit trail is append-only: DELETE on % refused', TG_TABLE_NAME;
    END IF;
    IF OLD.hash IS NOT NULL THEN
        RAISE EXCEPTION 'retentiond audit trail is append-only: % record % is sealed', TG_TABLE_NAME, OLD.chain_seq;
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION retentiond.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'retentiond audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END $$;

-- Rule results may only be added to a run that is not sealed yet.
CREATE FUNCTION retentiond.refuse_result_for_sealed_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM retentiond.runs WHERE run_id = NEW.run_id AND hash IS NOT NULL) THEN
        RAISE EXCEPTION 'retentiond audit trail is append-only: run % is sealed', NEW.run_id;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER runs_append_only BEFORE UPDATE OR DELETE ON retentiond.runs
    FOR EACH ROW EXECUTE FUNCTION retentiond.refuse_change_of_sealed();
CREATE TRIGGER holds_append_only BEFORE UPDATE OR DELETE ON retentiond.holds
    FOR EACH ROW EXECUTE FUNCTION retentiond.refuse_change_of_sealed();
CREATE TRIGGER hold_releases_append_only BEFORE UPDATE OR DELETE ON retentiond.hold_releases
    FOR EACH ROW EXECUTE FUNCTION retentiond.refuse_change_of_sealed();
CREATE TRIGGER rule_results_append_only BEFORE UPDATE OR DELETE ON retentiond.rule_results
    FOR EACH ROW EXECUTE FUNCTION retentiond.refuse_change();
CREATE TRIGGER rule_results_open_run BEFORE INSERT ON retentiond.rule_results
    FOR EACH ROW EXECUTE FUNCTION retentiond.refuse_result_for_sealed_run();
CREATE TRIGGER runs_no_truncate BEFORE TRUNCATE ON retentiond.runs
    FOR EACH STATEMENT EXECUTE FUNCTION retentiond.refuse_change();
CREATE TRIGGER rule_results_no_truncate BEFORE TRUNCATE ON retentiond.rule_results
    FOR EACH STATEMENT EXECUTE FUNCTION retentiond.refuse_change();
CREATE TRIGGER holds_no_truncate BEFORE TRUNCATE ON retentiond.holds
    FOR EACH STATEMENT EXECUTE FUNCTION retentiond.refuse_change();
CREATE TRIGGER hold_releases_no_truncate BEFORE TRUNCATE ON retentiond.hold_releases
    FOR EACH STATEMENT EXECUTE FUNCTION retentiond.refuse_change();
