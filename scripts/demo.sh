#!/usr/bin/env bash
# The main job on the embedded default: the bundled Checkmarx One emulator, a SAST connection (API
# key) and a DAST connection (OAuth client) run end to end by the same steps as on AWS, committed
# into ./out (or the directory given as the first argument; any further arguments go to
# `cxone-etm demo`). No account anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out}
shift || true
# Built for the whole workspace (`--workspace`), so its dependencies have the features every other
# build here gives them (scripts/test.sh, the deployed-shape test): run after those, nothing is
# rebuilt. `cargo run -p cxone-etm-cli` resolves features for that package alone and would
# rebuild most of them.
cargo build --quiet --locked --workspace --bin cxone-etm
exec "${CARGO_TARGET_DIR:-target}/debug/cxone-etm" demo --out "$out" "$@"
