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
python3 - "$out" <<'PY'
# Every SAST finding says where its flaw is and links to its result; every finding links to its scan.
import glob, gzip, json, sys
counts = {"SAST": 0, "DAST": 0}
for path in glob.glob(f"{sys.argv[1]}/**/etm/**/*.ndjson.gz", recursive=True):
    for line in gzip.open(path, "rt"):
        line = json.loads(line)
        kind = line["connectorKind"]
        for f in line["findingGroup"]["findings"]:
            if f.get("closedReason"):
                continue
            assert "/scans?id=" in f["vendorScanURL"], f
            if kind == "SAST":
                assert f["source"]["file"] and f["source"]["line"] and f["sink"]["file"] and f["sink"]["line"], f
                assert f"/{line['vendorItemId']}/sast?result-id=" in f["vendorFindingURL"], f
            counts[kind] += 1
assert counts["SAST"] > 0 and counts["DAST"] > 0, counts
print(f'  every finding links back ({counts["SAST"]} SAST with source and sink, {counts["DAST"]} DAST)')
PY
markers=$(find "$out" -name _COMMITTED | wc -l)
[ "$markers" -eq 2 ] || { echo "expected 2 commit markers, found $markers" >&2; exit 1; }
echo "demo passed"
