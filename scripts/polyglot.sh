#!/usr/bin/env bash
# Builds the example steps written in Python and JavaScript from source, with
# the tool versions pinned in the repository, into target/polyglot/.
set -Eeuo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/polyglot.sh [--force]

Builds the Python and JavaScript example steps (world weft:step/step@0.2.0):

  components/polyglot/fetch-json  (Python)     -> target/polyglot/fetch-json.wasm
  components/polyglot/summarize   (JavaScript) -> target/polyglot/summarize.wasm

Installs the pinned tools when they are missing; all it installs or writes
stays under target/polyglot/, the pip and npm caches too:

  venv/         componentize-py, the version in sdk/python/requirements.txt
  js/           componentize-js and jco, `npm ci` of sdk/js/package.json and
                sdk/js/package-lock.json
  python-bindings/, js-types/
                stubs and typings of the world for editors and type checkers,
                generated from wit/ so they never drift

A component is rebuilt only when one of its inputs (its sources, the SDK
helper, wit/, the pinned versions, this script) is newer than it. Each built
component is checked to export `run` with the step signature.

  --force     rebuild both components even when they are up to date
  -h, --help  show this help

Needs python3 (with venv and pip) and node with npm; reaches PyPI and the npm
registry on the first run. Any failure, an install included, exits non-zero.
EOF
}

force=0
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --force) force=1 ;;
    *) echo "polyglot: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
out="${CARGO_TARGET_DIR:-target}/polyglot"
world=weft:step/step@0.2.0
started=$SECONDS

say() { echo "polyglot: $*" >&2; }
die() { say "error: $*"; exit 1; }
trap 'say "error: failed at line $LINENO (exit $?)"' ERR

for tool in python3 node npm; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# Package caches live under target/ too, so a cold run is a cold run and
# removing target/polyglot removes everything this script installed.
export PIP_CACHE_DIR="$out/cache/pip" npm_config_cache="$out/cache/npm"
export PIP_DISABLE_PIP_VERSION_CHECK=1 npm_config_update_notifier=false

# --- tools -------------------------------------------------------------------

py_pin=$(sed -n 's/^componentize-py==//p' sdk/python/requirements.txt)
[[ -n "$py_pin" ]] || die "sdk/python/requirements.txt pins no componentize-py version"
componentize_py="$out/venv/bin/componentize-py"
if [[ "$("$componentize_py" --version 2>/dev/null || true)" != "componentize-py $py_pin" ]]; then
  say "installing componentize-py $py_pin into $out/venv"
  rm -rf "$out/venv"
  python3 -m venv "$out/venv" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  "$out/venv/bin/python" -m pip install --quiet --progress-bar off -r sdk/python/requirements.txt \
    || die "pip could not install componentize-py $py_pin"
  [[ "$("$componentize_py" --version)" == "componentize-py $py_pin" ]] \
    || die "componentize-py reports $("$componentize_py" --version), not $py_pin"
fi

js="$out/js"
js_version() { node -p "require('$js/node_modules/@bytecodealliance/$1/package.json').version" 2>/dev/null || true; }
js_pin() { node -p "require('./sdk/js/package.json').devDependencies['@bytecodealliance/$1']"; }
# npm ci needs the manifest and the lockfile side by side; the copies say what
# is installed, so a changed lockfile reinstalls.
if ! cmp -s sdk/js/package-lock.json "$js/package-lock.json" \
  || ! cmp -s sdk/js/package.json "$js/package.json" \
  || [[ "$(js_version componentize-js)" != "$(js_pin componentize-js)" ]] \
  || [[ "$(js_version jco)" != "$(js_pin jco)" ]]; then
  say "installing componentize-js $(js_pin componentize-js) and jco $(js_pin jco) into $js (npm ci)"
  rm -rf "$js"
  mkdir -p "$js"
  cp sdk/js/package.json sdk/js/package-lock.json "$js/"
  # No package in the lockfile needs an install script.
  (cd "$js" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) \
    || die "npm ci could not install the packages of sdk/js/package-lock.json"
  for pkg in componentize-js jco; do
    [[ "$(js_version $pkg)" == "$(js_pin $pkg)" ]] \
      || die "$pkg is $(js_version $pkg) after npm ci, not $(js_pin $pkg)"
  done
fi
componentize_js="$js/node_modules/.bin/componentize-js"
jco="$js/node_modules/.bin/jco"
say "tools: componentize-py $py_pin, componentize-js $(js_version componentize-js), jco $(js_version jco)"

# --- builds ------------------------------------------------------------------

# Succeeds when $1 is missing or older than any file under the other arguments.
stale() {
  local output=$1
  shift
  [[ $force -eq 1 || ! -e "$output" ]] && return 0
  [[ -n "$(find "$@" -type f -not -path '*/__pycache__/*' -newer "$output" -print -quit)" ]]
}

# A build writes to a temporary file, so a failed one leaves no output that
# looks up to date.
check_and_install() {
  local tmp=$1 output=$2
  local wit
  wit=$("$jco" wit "$tmp") || die "$tmp is not a component that jco can read"
  grep -qF 'export run: func(input: string) -> result<string, step-error>;' <<<"$wit" \
    || die "$tmp does not export run with the step signature"
  mv "$tmp" "$output"
  say "built $output ($(( $(wc -c <"$output") / 1024 )) KiB)"
}

stamp_inputs=(wit scripts/polyglot.sh)

fetch_json="$out/fetch-json.wasm"
if stale "$fetch_json" components/polyglot/fetch-json sdk/python/weft_step.py \
  sdk/python/requirements.txt "${stamp_inputs[@]}"; then
  say "building $fetch_json (componentize-py)"
  # The helper is shared, not copied: sdk/python goes on the module path.
  "$componentize_py" -q -d wit -w "$world" componentize \
    -p components/polyglot/fetch-json -p sdk/python app -o "$fetch_json.tmp" >&2
  check_and_install "$fetch_json.tmp" "$fetch_json"
else
  say "$fetch_json is up to date"
fi

summarize="$out/summarize.wasm"
if stale "$summarize" components/polyglot/summarize sdk/js/weft-step.js \
  sdk/js/package.json sdk/js/package-lock.json "${stamp_inputs[@]}"; then
  say "building $summarize (componentize-js)"
  # componentize-js lets the module load files under the working directory
  # only, so it runs from the repository root: index.js imports
  # ../../../sdk/js/weft-step.js.
  "$componentize_js" --wit wit --world-name "$world" \
    -o "$summarize.tmp" components/polyglot/summarize/index.js >&2
  check_and_install "$summarize.tmp" "$summarize"
else
  say "$summarize is up to date"
fi

# --- editor support ------------------------------------------------------------

if stale "$out/python-bindings/wit_world/__init__.py" "${stamp_inputs[@]}" sdk/python/requirements.txt; then
  rm -rf "$out/python-bindings"
  "$componentize_py" -q -d wit -w "$world" bindings "$out/python-bindings" >&2
  say "generated $out/python-bindings (stubs of the world's Python bindings)"
fi
if stale "$out/js-types/step@0.2.0.d.ts" "${stamp_inputs[@]}" sdk/js/package-lock.json; then
  rm -rf "$out/js-types"
  "$jco" guest-types wit -n "$world" -o "$out/js-types" -q >&2
  say "generated $out/js-types (TypeScript declarations of the world's imports and run)"
fi

say "done in $(( SECONDS - started )) s"
