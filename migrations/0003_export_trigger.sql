-- `retentiond export` (access and portability) is recorded as a run with trigger
-- `export`: counts and a keyed pseudonym of the subject, never its id or data.
ALTER TABLE retentiond.runs DROP CONSTRAINT runs_trigger_check;
ALTER TABLE retentiond.runs ADD CONSTRAINT runs_trigger_check
    CHECK (trigger IN ('schedule', 'manual', 'erase', 'catch_up', 'export'));
