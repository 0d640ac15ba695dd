-- Run and release numbers come from one counter row per scope ("run:JOB",
-- "release:APP"), taken with an upsert inside the inserting transaction: the
-- row lock makes concurrent callers wait their turn instead of racing for
-- MAX(number) + 1 and failing the primary key.
CREATE TABLE counters (
    scope TEXT PRIMARY KEY,
    last BIGINT NOT NULL
);
INSERT INTO counters (scope, last) SELECT 'run:' || job, MAX(number) FROM runs GROUP BY job;
INSERT INTO counters (scope, last) SELECT 'release:' || app, MAX(version) FROM releases GROUP BY app;
