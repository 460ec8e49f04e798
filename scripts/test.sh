#!/usr/bin/env bash
# Runs every test of Weft: the example components, the SDK, the host (unit
# and integration, against real `weft` processes and real components), and
# schemathesis against the HTTP API's OpenAPI document.
# Installs what the tests need and is missing (the wasm target, redis-server,
# Node.js, componentize-py and componentize-js, chromium and playwright-core,
# schemathesis); needs Rust
# (rustup) and Python 3 (with venv and pip) to start.
set -euo pipefail
cd "$(dirname "$0")/.."

# rust-toolchain.toml pins the toolchain; make sure its wasm target is there
# (rustup adds it on first use, but an older rustup may not).
if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 \
    || rustup target add wasm32-wasip2
fi

# The Redis backend's tests start their own redis-server processes.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null
fi

# The Python and JavaScript example components are built from source with
# pinned componentize-py (a venv) and componentize-js (npm ci of a lockfile),
# installed under target/polyglot/ on first use; Node.js comes from Debian
# when the machine has none.
if ! command -v npm >/dev/null 2>&1; then
  echo "==> installing node and npm"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq && $sudo apt-get install -y -qq nodejs npm >/dev/null
fi
echo "==> Python and JavaScript example components"
./scripts/polyglot.sh

# The web console's browser tests drive Debian's chromium with playwright-core
# (npm ci of tests/ui/package-lock.json into target/ui-test/).
echo "==> browser test dependencies (chromium, playwright-core)"
./scripts/ui-test-deps.sh

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "==> example component tests (native)"
cargo test --manifest-path components/Cargo.toml --locked --workspace --quiet 2>&1 | tee -a "$log"

echo "==> host and SDK tests"
cargo test --workspace --locked 2>&1 | tee -a "$log"

# The integration suites again, with runs kept in Redis (a redis-server per
# test) instead of the embedded backend.
echo "==> integration suites on the Redis backend"
WEFT_TEST_BACKEND=redis cargo test -p weft --locked --test exec --test api 2>&1 | tee -a "$log"

# The HTTP API against its own OpenAPI document: no 5xx, no answer the document
# does not describe. Installs schemathesis into target/ on first use.
echo "==> HTTP API against its OpenAPI document (schemathesis)"
cargo build -p weft --locked --quiet
./scripts/schemathesis.sh "${CARGO_TARGET_DIR:-target}/debug/weft"

# One closing line with the totals of every test binary above.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
