-- Per app: the stack (Debian suite) its buildpack builds use (stack:set).
-- NULL: not built yet, so the default stack. Apps deployed before stacks had
-- suites were built on bookworm and keep it.
ALTER TABLE apps ADD COLUMN stack TEXT;
UPDATE apps SET stack = 'bookworm' WHERE current_release IS NOT NULL;
