#!/usr/bin/env bash
# The main job on the embedded default: the bundled Checkmarx One emulator, a SAST connection (API
# key) and a DAST connection (OAuth client) run end to end by the same steps as on AWS, committed
# into ./out (or the directory given as the first argument; any further arguments go to
# `cxone-etm demo`). No account anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
out=out
# An output folder first, if given: `bash scripts/demo.sh --json` keeps ./out.
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  out=${1:-out}
  shift
fi
# Built for the whole workspace, so its dependencies have the features every other build here gives
# them (scripts/test.sh, the deployed-shape test): run after those, nothing is rebuilt, where
# `cargo run -p cxone-etm-cli` would resolve features for that package alone and rebuild most.
cxone_etm=$(bash scripts/workspace-bin.sh --bin cxone-etm)
exec "$cxone_etm" demo --out "$out" "$@"
