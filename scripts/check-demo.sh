#!/usr/bin/env bash
# Smoke test of the main job for the test command: the demo's JSON summary must show, per
# connection, exactly the totals the emulator holds, and the output must hold commit markers.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bash scripts/demo.sh "$out" --json --projects 8 --results-per-scan 200 >"$out/summary.json"
python3 - "$out/summary.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
for c in summary["connections"]:
    assert c["summary"]["complete"], c
    for e in c["engines"]:
        assert e["committed"] == e["emulatorHolds"], (c["kind"], e)
        print(f'  {c["kind"]} {e["engine"]}: {e["committed"]} of {e["emulatorHolds"]} results committed')
PY
python3 - "$out" <<'PY'
# Every finding links to its scan and says what and where it is, in its engine's terms: SAST its
# source, sink and result; SCA its package and CVE; KICS its file; containers its package and CVE.
import glob, gzip, json, sys
counts = {"sast": 0, "sca": 0, "kics": 0, "containers": 0, "dast": 0}
for path in glob.glob(f"{sys.argv[1]}/**/etm/**/*.ndjson.gz", recursive=True):
    # Batches only: an item's rejected records and collisions beyond its manifest's list are not.
    if path.endswith(("/rejected.ndjson.gz", "/collisions.ndjson.gz")):
        continue
    for line in gzip.open(path, "rt"):
        line = json.loads(line)
        engine = line["engine"]
        for f in line["findingGroup"]["findings"]:
            if f.get("closedReason"):
                continue
            assert "/scans?id=" in f["vendorScanURL"], f
            if engine == "sast":
                assert f["source"]["file"] and f["source"]["line"] and f["sink"]["file"] and f["sink"]["line"], f
                assert f"/{line['vendorItemId']}/sast?result-id=" in f["vendorFindingURL"], f
            if engine in ("sca", "containers"):
                assert f["findingType"]["vulnerability"]["cveId"].startswith("CVE-"), f
                assert f["package"].get("identifier") or f["package"].get("name"), f
            if engine == "kics":
                assert f["location"]["file"] and f["location"]["line"], f
            counts[engine] += 1
assert all(n > 0 for n in counts.values()), counts
print("  every finding links back and says where it is: " + ", ".join(f"{n} {e}" for e, n in counts.items()))
PY
markers=$(find "$out" -name _COMMITTED | wc -l)
[ "$markers" -eq 2 ] || { echo "expected 2 commit markers, found $markers" >&2; exit 1; }
echo "demo passed"
