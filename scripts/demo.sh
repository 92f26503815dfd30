#!/usr/bin/env bash
# The main job on the embedded default: the bundled Checkmarx One emulator, a SAST connection (API
# key) and a DAST connection (OAuth client) run end to end by the same steps as on AWS, committed
# into ./out (or the directory given as the first argument). No account anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out}
cargo run --quiet -p cxone-etm-cli --bin cxone-etm -- demo --out "$out"
