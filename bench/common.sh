# Shared helpers for gantry's benchmark scripts (sourced, not run).
# They start a release-built gantry on free ports in a temp home, with a fresh
# SSH key registered as admin, and clean up after themselves.

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GANTRY="$ROOT/target/release/gantry"

log() { printf '==> %s\n' "$*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
median() { python3 -c 'import sys, statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }

build_gantry() {
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release -q)
}

# start_gantry: sets BENCH_DIR, SSH_PORT, HTTP_PORT, KEY, GIT_SSH_COMMAND, GANTRY_PID
start_gantry() {
  BENCH_DIR=$(mktemp -d)
  SSH_PORT=$(free_port)
  HTTP_PORT=$(free_port)
  KEY="$BENCH_DIR/key"
  ssh-keygen -q -t ed25519 -N '' -f "$KEY"
  HTTPS_PORT=$(free_port)
  printf 'docker_network = "gantry-bench"\nstop_grace = 2\nhttps_listen = "127.0.0.1:%s"\n%s\n' "$HTTPS_PORT" "${EXTRA_TOML:-}" > "$BENCH_DIR/gantry.toml"
  [ -z "${BEFORE_START:-}" ] || "$BEFORE_START"
  HOME="$BENCH_DIR" "$GANTRY" --home "$BENCH_DIR" keys:add bench "$KEY.pub" --admin >/dev/null
  HOME="$BENCH_DIR" "$GANTRY" --home "$BENCH_DIR" serve \
    --ssh-listen "127.0.0.1:$SSH_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
    >"$BENCH_DIR/serve.out" 2>"$BENCH_DIR/serve.log" &
  GANTRY_PID=$!
  for _ in $(seq 1 100); do
    grep -q '^Manage:' "$BENCH_DIR/serve.out" 2>/dev/null && break
    sleep 0.1
  done
  export GIT_SSH_COMMAND="ssh -i $KEY -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
  export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
}

stop_gantry() {
  [ -n "${GANTRY_PID:-}" ] || return 0
  for app in $(HOME="$BENCH_DIR" "$GANTRY" --home "$BENCH_DIR" apps:list 2>/dev/null | awk 'NR > 1 { print $1 }'); do
    HOME="$BENCH_DIR" "$GANTRY" --home "$BENCH_DIR" apps:destroy "$app" --force >/dev/null 2>&1 || true
  done
  kill "$GANTRY_PID" 2>/dev/null || true
  wait "$GANTRY_PID" 2>/dev/null || true
  # The proxy is a process of its own and outlives serve, by design.
  if [ -f "$BENCH_DIR/proxy/proxy.pid" ]; then
    kill "$(cat "$BENCH_DIR/proxy/proxy.pid")" 2>/dev/null || true
  fi
  docker network rm gantry-bench >/dev/null 2>&1 || true
  rm -rf "$BENCH_DIR"
  GANTRY_PID=""
}

# wait_body PORT HOST NEEDLE: polls until GET / on HOST (via 127.0.0.1:PORT) contains NEEDLE.
wait_body() {
  local port=$1 host=$2 needle=$3
  for _ in $(seq 1 3000); do
    if curl -s -m 2 -H "Host: $host" "http://127.0.0.1:$port/" 2>/dev/null | grep -q "$needle"; then
      return 0
    fi
    sleep 0.01
  done
  log "timed out waiting for $needle at $host"
  return 1
}
