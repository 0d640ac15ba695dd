#!/bin/sh
# gantry's buildpack driver, run inside the builder container made from the
# stack. It follows Heroku's buildpack API: bin/detect BUILD_DIR,
# bin/compile BUILD_DIR CACHE_DIR ENV_DIR, bin/release BUILD_DIR.
#
# /gantry/order lists the buildpacks ("DIR LABEL" per line, in order).
# With /gantry/detect present, the first whose bin/detect says yes runs;
# otherwise every one listed runs, in order, on the same tree.
# Exit codes gantry reads: 100 nothing detected, 101 a chosen buildpack
# does not apply, 102 compile failed, 103 release failed, 104 compile
# stopped for a runtime gantry may fetch (/gantry/out/need). A buildpack's
# `export` file is sourced before each later buildpack compiles.
set -u
BUILD_DIR=/app
CACHE_DIR=/cache
ENV_DIR=/gantry/env
mkdir -p "$CACHE_DIR" /gantry/out "$ENV_DIR"
cd "$BUILD_DIR" || exit 1
chmod +x /gantry/buildpacks/*/bin/* 2>/dev/null

run_one() { # DIR LABEL DETECTED_NAME
    bp=$1
    label=$2
    echo "-----> $3 app detected (buildpack: $label)"
    if ! ( [ -f /gantry/out/export ] && . /gantry/out/export; "$bp/bin/compile" "$BUILD_DIR" "$CACHE_DIR" "$ENV_DIR" </dev/null ); then
        [ -s /gantry/out/need ] && exit 104
        echo " !     buildpack $label: bin/compile failed"
        exit 102
    fi
    # What a buildpack exports (PATH to its toolchain, say) is in effect for
    # the buildpacks after it, as on Heroku.
    if [ -f "$bp/export" ]; then
        cat "$bp/export" >>/gantry/out/export
    fi
    if [ -f "$bp/bin/release" ]; then
        if ! "$bp/bin/release" "$BUILD_DIR" </dev/null >/gantry/out/release.yml; then
            echo " !     buildpack $label: bin/release failed"
            exit 103
        fi
    fi
}

if [ -f /gantry/detect ]; then
    chosen=""
    while read -r dir label; do
        if name=$("/gantry/buildpacks/$dir/bin/detect" "$BUILD_DIR" </dev/null 2>/dev/null); then
            chosen=$dir
            break
        fi
    done </gantry/order
    [ -n "$chosen" ] || exit 100
    run_one "/gantry/buildpacks/$chosen" "$label" "${name:-$label}"
else
    exec 3</gantry/order
    while read -r dir label <&3; do
        if ! name=$("/gantry/buildpacks/$dir/bin/detect" "$BUILD_DIR" </dev/null); then
            echo " !     buildpack $label does not apply to this app (its bin/detect said no)"
            exit 101
        fi
        run_one "/gantry/buildpacks/$dir" "$label" "${name:-$label}"
    done
fi
# The config vars and buildpacks must not end up in the image.
rm -rf "$ENV_DIR" /gantry/buildpacks /gantry/order /gantry/detect
# A virtualenv used from the cache reaches the image as a layer of its own
# (/gantry/out/venv-dir), not through the slug.
if [ -s /gantry/out/venv-dir ] && [ -L "$BUILD_DIR/.venv" ]; then rm -f "$BUILD_DIR/.venv"; fi
