"""A long-running worker named `cron` in the Procfile, as Dokku apps have."""
import os
import time

print(f"worker up as {os.environ.get('DYNO')}", flush=True)
while True:
    time.sleep(60)
