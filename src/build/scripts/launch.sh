#!/bin/bash
# Starts a process of a buildpack-built app as Heroku does: bash sources what
# the buildpacks left in .profile.d (PATH to a virtualenv, say; Heroku's own
# buildpacks write bash there), then the command is exec'ed.
cd /app 2>/dev/null || true
export HOME=/app
for profile in /app/.profile.d/*.sh; do
    if [ -r "$profile" ]; then
        # shellcheck disable=SC1090
        . "$profile"
    fi
done
unset profile
exec "$@"
