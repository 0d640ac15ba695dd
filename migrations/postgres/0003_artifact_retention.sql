-- How many releases' images to keep for the app; NULL: gantry's default (5).
ALTER TABLE apps ADD COLUMN keep_releases BIGINT;
