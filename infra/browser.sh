#!/usr/bin/env bash
# The browser suite of the management UI: pytest + Playwright (PyPI, into .venv-browser)
# driving Debian's Chromium (/usr/bin/chromium) headless, with axe-core (npm) for the
# accessibility check. Playwright's own browser download is never used.
#   infra/browser.sh install   (phase 1 of `make test`: needs the package registries)
#   infra/browser.sh run       (phase 2: offline, inside the test network namespace)
# `run` needs target/debug/webhooks-local; screenshots go to tests/browser/screenshots/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-browser"
PLAYWRIGHT_VERSION="1.65.2"
PYTEST_VERSION="9.2.0"
AXE_VERSION="4.14.1"

install() {
  if [ ! -x /usr/bin/chromium ]; then
    echo "browser: installing chromium (Debian)" >&2
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  fi
  if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c "import playwright" 2>/dev/null; then
    echo "browser: installing playwright==$PLAYWRIGHT_VERSION and pytest==$PYTEST_VERSION into .venv-browser" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "playwright==$PLAYWRIGHT_VERSION" "pytest==$PYTEST_VERSION"
  fi
  if [ ! -s "$venv/axe-core/axe.min.js" ]; then
    echo "browser: fetching axe-core@$AXE_VERSION (npm)" >&2
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "axe-core@$AXE_VERSION" >/dev/null && tar xzf axe-core-*.tgz)
    mkdir -p "$venv/axe-core"
    cp "$tmp/package/axe.min.js" "$venv/axe-core/axe.min.js"
    rm -rf "$tmp"
  fi
}

run() {
  mkdir -p "$root/tests/browser/screenshots" "$root/.emulator"
  local log="$root/.emulator/browser.log" rc=0
  # The runner under test and the receivers listen on 127.0.0.1; no proxy may intercept.
  env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY \
    "$venv/bin/python" -m pytest "$root/tests/browser" -p no:cacheprovider -q -rfE \
    >"$log" 2>&1 || rc=$?
  cat "$log"
  # pytest's closing line, e.g. "1 failed, 9 passed in 41.2s".
  local summary passed failed
  summary="$(grep -E '[0-9]+ (passed|failed|errors?).* in [0-9.]+s' "$log" | tail -1 || true)"
  passed=$( (grep -Eo '[0-9]+ passed' <<<"$summary" || true) | awk '{s+=$1} END {print s+0}')
  failed=$( (grep -Eo '[0-9]+ (failed|errors?)' <<<"$summary" || true) | awk '{s+=$1} END {print s+0}')
  if [ "$rc" -ne 0 ] && [ "${failed:-0}" -eq 0 ]; then
    failed=1
  fi
  echo "browser: ${passed:-0} passed, ${failed:-0} failed (Chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), screenshots in tests/browser/screenshots/)"
  return "$rc"
}

case "${1:-}" in
  install) install ;;
  run) run ;;
  *) echo "usage: $0 install|run" >&2; exit 2 ;;
esac
