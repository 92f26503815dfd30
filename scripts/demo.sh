#!/usr/bin/env bash
# The demo on the embedded default: starts the bundled Checkmarx One emulator and walks the
# vendor API the way the connector does (both token flows, projects, last scans, results with
# both offset semantics, DAST), then checks that what was paged matches the emulator's own totals.
# Needs cargo, curl and python3; nothing else, no account anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECTS=${PROJECTS:-12}
RESULTS=${RESULTS:-2500}
cargo build --quiet -p cxone-emulator --bin cxone-emulator
workdir=$(mktemp -d)
trap 'kill "${emulator_pid:-}" 2>/dev/null || true; rm -rf "$workdir"' EXIT

start_emulator() { # $@: extra flags
  ./target/debug/cxone-emulator --projects "$PROJECTS" --results-per-scan "$RESULTS" "$@" >"$workdir/line" 2>"$workdir/log" &
  emulator_pid=$!
  for _ in $(seq 1 100); do [ -s "$workdir/line" ] && return 0; sleep 0.1; done
  echo "emulator did not start:" >&2; cat "$workdir/log" >&2; exit 1
}
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$workdir/line" "$1"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

walk() { # $1: results offset mode (page|item)
  local mode=$1 url iam tenant token_url key token scan total fetched offset step
  url=$(field url); iam=$(field iam_url); tenant=$(field tenant)
  token_url="$iam/auth/realms/$tenant/protocol/openid-connect/token"
  key=$(field api_key)
  token=$(curl -sf "$token_url" -d grant_type=refresh_token -d client_id=ast-app --data-urlencode "refresh_token=$key" | json 'd["access_token"]')
  curl -sf "$token_url" -d grant_type=client_credentials -d "client_id=$(field client_id)" -d "client_secret=$(field client_secret)" \
    | json '"  OAuth client flow: token valid for %ss" % d["expires_in"]'
  echo "  API key flow: token issued"

  local ids="" offset=0
  while :; do
    page=$(curl -sf -H "Authorization: Bearer $token" "$url/api/projects?limit=5&offset=$offset")
    ids+=$(echo "$page" | json '",".join(p["id"] for p in d["projects"])'),
    total=$(echo "$page" | json 'd["filteredTotalCount"]')
    offset=$((offset + 5)); [ "$offset" -ge "$total" ] && break
  done
  ids=${ids%,}
  echo "  projects: $total (paged 5 at a time)"
  last=$(curl -sf -H "Authorization: Bearer $token" "$url/api/projects/last-scan?scan-status=Completed&engine=sast&limit=$total&project-ids=$ids")
  echo "$last" | json '"  last completed SAST scans: %d projects in one call" % len(d)'

  fetched=0
  for scan in $(echo "$last" | json '" ".join(s["id"] for s in d.values())'); do
    offset=0; step=1; [ "$mode" = item ] && step=1000
    while :; do
      page=$(curl -sf -H "Authorization: Bearer $token" "$url/api/results?scan-id=$scan&limit=1000&offset=$offset")
      n=$(echo "$page" | json 'len(d["results"])'); total=$(echo "$page" | json 'd["totalCount"]')
      fetched=$((fetched + n)); offset=$((offset + step))
      [ "$n" -lt 1000 ] && break
    done
  done
  echo "  results fetched with offset as $mode: $fetched"

  envs=$(curl -sf -H "Authorization: Bearer $token" "$url/api/dast/scans/environments?from=0&to=100")
  dast=0
  for env in $(echo "$envs" | json '" ".join(e["environmentId"] for e in d["environments"])'); do
    scan=$(curl -sf -H "Authorization: Bearer $token" "$url/api/dast/scans/scans?environmentId=$env&lastStatus=Completed&from=0&to=1" | json 'd["scans"][0]["scanId"] if d["scans"] else ""')
    [ -z "$scan" ] && continue
    page=1
    while :; do
      body=$(curl -sf -H "Authorization: Bearer $token" "$url/api/dast/mfe-results/results/$scan?page=$page&per_page=100")
      dast=$((dast + $(echo "$body" | json 'len(d["results"])')))
      [ "$page" -ge "$(echo "$body" | json 'd["pages_number"]')" ] && break
      page=$((page + 1))
    done
  done
  echo "  DAST environments: $(echo "$envs" | json 'd["totalItems"]'), DAST results fetched: $dast"

  stats=$(curl -sf "$url/_emulator/stats")
  expected=$(echo "$stats" | json 'd["expected"]["totals"]["results"]')
  expected_dast=$(echo "$stats" | json 'd["expected"]["totals"]["dast_results"]')
  echo "$stats" | json '"  requests: %s, peak in flight: %s" % (d["traffic"]["requests"], d["traffic"]["peak_in_flight"])'
  if [ "$fetched" != "$expected" ] || [ "$dast" != "$expected_dast" ]; then
    echo "MISMATCH: fetched $fetched / $dast, emulator holds $expected / $expected_dast" >&2; exit 1
  fi
  echo "  complete: $fetched of $expected results, $dast of $expected_dast DAST results"
}

for mode in page item; do
  echo "== emulator with /api/results offset as $mode"
  start_emulator --results-offset "$mode"
  walk "$mode"
  kill "$emulator_pid"; wait "$emulator_pid" 2>/dev/null || true; : >"$workdir/line"
done
echo "demo passed"
