#!/usr/bin/env bash
# The performance benchmark in one command: builds the four functions as arm64 release binaries
# (their sizes are a budget), then runs `cxone-etm bench` — a full SAST + DAST pull against the
# bundled emulator on loopback — with any flags given here (see `cxone-etm bench --help`).
# Exit 0: every budget met; 2: one or more missed (the table says which).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/cargo-lambda ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'cargo-lambda==1.*'
fi
PATH="$PWD/.venv/bin:$PATH" cargo lambda build --release --arm64 \
  -p cxone-etm-trigger -p cxone-etm-collect -p cxone-etm-transform -p cxone-etm-finalize
cargo build --release -p cxone-etm-cli --bin cxone-etm
exec target/release/cxone-etm bench "$@"
