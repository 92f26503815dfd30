#!/usr/bin/env bash
# Smoke test of the main job for the test command: the demo's JSON summary must show, per
# connection, exactly the totals the emulator holds, and the output must hold commit markers.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo run --quiet -p cxone-etm-cli --bin cxone-etm -- demo --out "$out" --json --projects 8 --results-per-scan 200 >"$out/summary.json"
python3 - "$out/summary.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
for c in summary["connections"]:
    assert c["committed"] == c["emulatorHolds"], c
    assert c["summary"]["complete"], c
    print(f'  {c["kind"]}: {c["committed"]} of {c["emulatorHolds"]} results committed')
PY
markers=$(find "$out" -name _COMMITTED | wc -l)
[ "$markers" -eq 2 ] || { echo "expected 2 commit markers, found $markers" >&2; exit 1; }
echo "demo passed"
