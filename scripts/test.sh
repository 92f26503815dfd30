#!/usr/bin/env bash
# Runs every check on a fresh machine: formatting, clippy (warnings are errors), every test, and
# the README's demo as a smoke test. Installs what it needs; needs only rustup/cargo and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true

# moto serves S3 and Secrets Manager over the real AWS wire protocol for the AWS tests.
if [ ! -x .venv/bin/moto_server ]; then
  echo "== installing moto into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.*'
fi
export MOTO_SERVER="$PWD/.venv/bin/moto_server"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
# nextest does not run doctests.
cargo test --workspace --doc --locked

echo "== demo (the README's main command)"
bash scripts/check-demo.sh
