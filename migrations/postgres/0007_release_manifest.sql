-- What the pushed tree says about running it (Procfile and app.json), as JSON.
ALTER TABLE releases ADD COLUMN manifest TEXT NOT NULL DEFAULT '';
