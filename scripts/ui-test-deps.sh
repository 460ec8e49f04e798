#!/usr/bin/env bash
# Installs what the browser tests of the web console need: Debian's chromium
# (apt, when /usr/bin/chromium is missing), Node.js, and playwright-core at the
# version tests/ui/package-lock.json pins (npm ci into target/ui-test/, its npm
# cache there too). Prints nothing on stdout; any failure exits non-zero.
set -Eeuo pipefail

cd "$(dirname "$0")/.."
out="${CARGO_TARGET_DIR:-target}/ui-test"

say() { echo "ui-test-deps: $*" >&2; }
die() { say "error: $*"; exit 1; }
trap 'say "error: failed at line $LINENO (exit $?)"' ERR

apt_install() {
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  say "installing $* (apt)"
  $sudo apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >&2 \
    || die "apt-get install $* failed"
}

# Several test processes may call this at once: one installs, the others wait.
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

if [[ ! -x /usr/bin/chromium ]]; then
  apt_install chromium
fi
[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium is missing after installing chromium"
if ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi

out="$(cd "$out" && pwd)"
export npm_config_cache="$out/cache/npm" npm_config_update_notifier=false
pin=$(node -p "require('./tests/ui/package.json').devDependencies['playwright-core']")
installed() { node -p "require('$out/node_modules/playwright-core/package.json').version" 2>/dev/null || true; }
# The copies of the manifest and the lockfile say what is installed.
if ! cmp -s tests/ui/package-lock.json "$out/package-lock.json" \
  || ! cmp -s tests/ui/package.json "$out/package.json" \
  || [[ "$(installed)" != "$pin" ]]; then
  say "installing playwright-core $pin into $out (npm ci)"
  rm -rf "$out/node_modules"
  cp tests/ui/package.json tests/ui/package-lock.json "$out/"
  # playwright-core needs no install script (and downloads no browser).
  (cd "$out" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) \
    || die "npm ci could not install tests/ui/package-lock.json"
  [[ "$(installed)" == "$pin" ]] || die "playwright-core is $(installed) after npm ci, not $pin"
fi
