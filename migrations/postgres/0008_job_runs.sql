-- The job log: every build/deploy, cron run, host job and manual run is a
-- numbered run of a job. Numbers are per job, assigned when the run is queued.
-- The log itself is a file under $GANTRY_HOME/runs/, written as the run goes.
CREATE TABLE runs (
    job TEXT NOT NULL,
    number BIGINT NOT NULL,
    trigger_kind TEXT NOT NULL,
    cause TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    queued_at BIGINT NOT NULL,
    started_at BIGINT NOT NULL DEFAULT 0,
    finished_at BIGINT NOT NULL DEFAULT 0,
    exit_code BIGINT,
    reason TEXT NOT NULL DEFAULT '',
    parent TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job, number)
);
CREATE INDEX runs_by_status ON runs (status);
