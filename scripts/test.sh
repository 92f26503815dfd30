#!/usr/bin/env bash
# Runs every check on a fresh machine: formatting, clippy (warnings are errors), every test, and
# the README's demo as a smoke test. Installs what it needs; needs only rustup/cargo and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true

# moto serves S3 and Secrets Manager over the real AWS wire protocol for the AWS tests.
# cargo-lambda runs the functions locally (`cargo lambda watch`) for the function tests.
if [ ! -x .venv/bin/moto_server ] || [ ! -x .venv/bin/cargo-lambda ]; then
  echo "== installing moto and cargo-lambda into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.*' 'cargo-lambda==1.*'
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

echo "== functions through cargo lambda watch"
bash scripts/lambda-watch-test.sh

echo "== demo (the README's main command)"
bash scripts/check-demo.sh
