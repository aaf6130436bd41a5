#!/usr/bin/env bash
# Render `minirft report` of a run dir in headless Chromium (Debian's `chromium` package) and save a PNG.
#   scripts/report_screenshot.sh [RUN_DIR] [OUT.png] [HEIGHT]
# Default: the fixture run tests/fixtures/tui_runs/polite-20261123-010000 -> docs/report.png.
# Needs: apt-get install -y chromium (no network is used: the report loads nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-tests/fixtures/tui_runs/polite-20261123-010000}
OUT=${2:-docs/report.png}
HEIGHT=${3:-2600}
PY=${PY:-.venv/bin/python}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$CHROMIUM" ] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m minirft report "$RUN" --out "$tmp/report.html" >/dev/null
mkdir -p "$(dirname "$OUT")"
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$tmp/profile" --hide-scrollbars \
  --window-size=1180,"$HEIGHT" --screenshot="$OUT" "file://$(realpath "$tmp/report.html")" 2>"$tmp/chromium.log" \
  || { cat "$tmp/chromium.log" >&2; exit 1; }
echo "$OUT"
