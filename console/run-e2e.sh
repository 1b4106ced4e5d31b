#!/usr/bin/env bash
# Browser tests of the web console and the rider app: headless system Chromium driven by
# Playwright, against the real binary running `wulian demo` (tests/fixtures.ts).
#
#   console/run-e2e.sh                 # all tests
#   console/run-e2e.sh tests/rider.spec.ts -g zh-CN
#
# Env: WULIAN_BIN (default: builds and uses target/debug/wulian), CHROMIUM (default
# /usr/bin/chromium), WULIAN_MAP_MIN_FPS (the map's frame-rate floor, default 30).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$here"

# The system browser and CJK fonts (for the zh-CN screens); no browser downloads.
chromium="${CHROMIUM:-/usr/bin/chromium}"
cjk_fonts=$(fc-list 2>/dev/null | grep -ci cjk || true)
if [[ ! -x "$chromium" || "${cjk_fonts:-0}" -eq 0 ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "run-e2e: installing chromium and fonts-noto-cjk" >&2
    (apt-get install -y --no-install-recommends chromium fonts-noto-cjk >/dev/null ||
      { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium fonts-noto-cjk >/dev/null; })
  fi
fi
if [[ ! -x "$chromium" ]]; then
  echo "run-e2e: no Chromium at $chromium (apt-get install chromium, or set CHROMIUM)" >&2
  exit 1
fi
export CHROMIUM="$chromium"

# npm dependencies, exactly as locked, when the installed tree is older than the lock file.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi

# The binary; its build script builds the front end when console/dist is stale.
if [[ -z "${WULIAN_BIN:-}" ]]; then
  (cd "$root" && cargo build -p wulian)
  export WULIAN_BIN="$root/target/debug/wulian"
fi

mkdir -p "$root/docs/images" test-results
exec npx playwright test "$@"
