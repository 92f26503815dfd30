#!/usr/bin/env bash
# Builds binaries of the workspace (the arguments go to `cargo build`: `--bin NAME`, `--bins`) and
# prints the path of each, one a line, wherever cargo puts them (`CARGO_TARGET_DIR`,
# `build.target-dir`). Always for the whole workspace, so every script builds the dependencies with
# the same features and none twice (scripts/test.sh says why).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked --workspace --message-format=json-render-diagnostics "$@" |
  python3 -c '
import json, sys
for line in sys.stdin:
    executable = json.loads(line).get("executable")
    if executable:
        print(executable)
'
