#!/usr/bin/env bash
# Tests the HTTP API against its own OpenAPI document with schemathesis: starts
# `weft serve` on a free port with a fresh data directory, generates requests
# for every operation in /v1/openapi.json, and fails on any 5xx or any answer
# the document does not describe.
#
#   scripts/schemathesis.sh [path/to/weft]     (default: target/debug/weft)
#
# Builds nothing: run `cargo build -p weft` (or `cargo test`) first. Installs
# schemathesis into target/schemathesis-venv when it is missing. Environment:
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 100)
#   SCHEMATHESIS_SEED          seed of the generated data (default 20240601)
# The run's JSON report is left in target/schemathesis-report.json.
set -euo pipefail
weft="${1:-}"
if [[ -n "$weft" && "$weft" != /* ]]; then
  weft="$PWD/$weft"
fi
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
weft="${weft:-${CARGO_TARGET_DIR:-target}/debug/weft}"
venv=target/schemathesis-venv
report=target/schemathesis-report.json
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
seed="${SCHEMATHESIS_SEED:-20240601}"

if [[ ! -x "$weft" ]]; then
  echo "schemathesis: no weft binary at $weft; build it first (cargo build -p weft)" >&2
  exit 2
fi

# The virtualenv is kept between runs; it is (re)installed when schemathesis is
# missing or not the pinned version.
if [[ "$("$venv/bin/st" --version 2>/dev/null || true)" != "st, version $SCHEMATHESIS_VERSION" ]]; then
  echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
    "schemathesis==$SCHEMATHESIS_VERSION"
fi
echo "==> $("$venv/bin/st" --version)"

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
admin_token="weft_admin_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

echo "==> starting $weft serve on $base"
# The token goes through the environment, not argv, so `ps` does not show it.
WEFT_ADMIN_TOKEN="$admin_token" WEFT_LOG="${WEFT_LOG:-warn}" "$weft" serve \
  --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --drain-timeout 2s >"$work/server.log" 2>&1 &
server_pid=$!

healthy() {
  "$venv/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "$base/healthz" 2>/dev/null
}
for _ in $(seq 1 300); do
  healthy && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "schemathesis: weft serve exited before it answered /healthz:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
if ! healthy; then
  echo "schemathesis: weft serve did not answer /healthz within 30 s" >&2
  exit 1
fi
api_key="$(cat "$work/data/api-key")"
# The template the schedule examples name.
"$venv/bin/python" - "$base" "$api_key" <<'PY'
import json, sys, urllib.request
base, key = sys.argv[1], sys.argv[2]
template = {"steps": [{"id": "say", "component": "echo@1", "input": {"day": "${input.day}"}}]}
request = urllib.request.Request(
    f"{base}/v1/workflows/report/1.0.0", method="PUT", data=json.dumps(template).encode(),
    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
urllib.request.urlopen(request, timeout=10)
PY

echo "==> schemathesis $SCHEMATHESIS_VERSION: $base/v1/openapi.json (--max-examples $max_examples --seed $seed)"
status=0
# Every check runs (`--checks all`). scripts/schemathesis.toml gives each
# operation its credential and says which answers a check accepts beyond its
# defaults, and why; the hooks teach schemathesis to make `application/wasm`
# bodies.
rm -f "$report"
WEFT_ST_API_KEY="$api_key" WEFT_ST_ADMIN_TOKEN="$admin_token" \
  SCHEMATHESIS_HOOKS=scripts/schemathesis_hooks.py PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/st" --config-file scripts/schemathesis.toml run "$base/v1/openapi.json" \
  --checks all \
  --max-examples "$max_examples" \
  --seed "$seed" \
  --generation-database none \
  --request-timeout 10 \
  --no-color \
  --report json --report-json-path "$report" \
  || status=$?

if [[ $status -ne 0 ]]; then
  echo "==> weft serve's log (last 50 lines)"
  tail -n 50 "$work/server.log"
fi

# One closing line with the figures of the run.
"$venv/bin/python" - "$report" "$status" <<'EOF' || true
import json
import sys

try:
    with open(sys.argv[1]) as f:
        report = json.load(f)
except (OSError, ValueError):
    print(f"schemathesis: no report (exit {sys.argv[2]})")
    sys.exit(0)
cases = report["test_cases"]
failures = cases["unique_failures"] + len(report["errors"])
print(
    f"schemathesis: {report['operations']['tested']} operations, "
    f"{cases['generated']} test cases, {failures} failures"
)
EOF
exit "$status"
