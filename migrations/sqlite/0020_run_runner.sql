-- Which manager runs a run (its host and home), so a manager that starts
-- again takes back its own runs only, never those of another manager
-- sharing the database. Empty: from before, or SQLite's one machine.
ALTER TABLE runs ADD COLUMN runner TEXT NOT NULL DEFAULT '';
