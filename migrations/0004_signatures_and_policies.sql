-- Signed records: the Ed25519 signature of a record's hash and the id of the key that
-- made it, written in the same statement that seals the record (so the append-only
-- triggers cover them as they cover the hash).
ALTER TABLE retentiond.runs ADD COLUMN signature text, ADD COLUMN key_id text;
ALTER TABLE retentiond.holds ADD COLUMN signature text, ADD COLUMN key_id text;
ALTER TABLE retentiond.hold_releases ADD COLUMN signature text, ADD COLUMN key_id text;

CREATE OR REPLACE VIEW retentiond.chain AS
    SELECT chain_seq, 'run'::text AS kind, id AS ref_id, prev_hash, hash, signature, key_id FROM retentiond.runs WHERE chain_seq IS NOT NULL
    UNION ALL
    SELECT chain_seq, 'hold', id, prev_hash, hash, signature, key_id FROM retentiond.holds WHERE chain_seq IS NOT NULL
    UNION ALL
    SELECT chain_seq, 'hold_release', hold_id, prev_hash, hash, signature, key_id FROM retentiond.hold_releases WHERE chain_seq IS NOT NULL;

-- Policy history: every distinct config a run used, stored once as its exact text, so
-- SHA-256 of `text` is the `config_sha256` the (hashed, signed) run records carry.
CREATE TABLE retentiond.policies (
    sha256       text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    text         text NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp())
);

CREATE TRIGGER policies_append_only BEFORE UPDATE OR DELETE ON retentiond.policies
    FOR EACH ROW EXECUTE FUNCTION retentiond.refuse_change();
CREATE TRIGGER policies_no_truncate BEFORE TRUNCATE ON retentiond.policies
    FOR EACH STATEMENT EXECUTE FUNCTION retentiond.refuse_change();

-- Runs after this one must find their config in `policies`: a deleted policy row, which
-- would take a preservation lock out of the check, is then a violation.
CREATE TABLE retentiond.policy_history_since (
    last_run_before bigint NOT NULL
);
INSERT INTO retentiond.policy_history_since SELECT coalesce(max(id), 0) FROM retentiond.runs;
CREATE TRIGGER policy_history_since_append_only BEFORE UPDATE OR DELETE ON retentiond.policy_history_since
    FOR EACH ROW EXECUTE FUNCTION retentiond.refuse_change();
CREATE TRIGGER policy_history_since_no_truncate BEFORE TRUNCATE ON retentiond.policy_history_since
    FOR EACH STATEMENT EXECUTE FUNCTION retentiond.refuse_change();
