#!/bin/sh
# Starts a process of a buildpack-built app: sources what the buildpacks left
# in .profile.d (PATH to a virtualenv, say), then runs the command.
cd /app 2>/dev/null || true
export HOME=/app
for profile in /app/.profile.d/*.sh; do
    [ -r "$profile" ] && . "$profile"
done
exec "$@"
