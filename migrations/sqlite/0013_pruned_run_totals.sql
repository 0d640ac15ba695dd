-- What pruned runs add to the metrics' totals: gantry_job_runs_total is a
-- Prometheus counter and must not go down when run retention deletes rows.
CREATE TABLE pruned_run_totals (
    job TEXT NOT NULL,
    status TEXT NOT NULL,
    count BIGINT NOT NULL,
    finished BIGINT NOT NULL,
    ms BIGINT NOT NULL,
    PRIMARY KEY (job, status)
);
