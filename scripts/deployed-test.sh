#!/usr/bin/env bash
# The deployed shape, executed (tests/deployed): infra/template.yaml translated by aws-sam-translator,
# its definition checked by asl-validator, its state machine run by moto's Step Functions
# interpreter, each Lambda task done by the real function binary under its own role, the bundled
# emulator as Checkmarx One. Installs what it needs into the clone; called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/pytest ] || ! .venv/bin/python -c 'import moto, samtranslator; assert moto.__version__ == "5.2.5"' 2>/dev/null; then
  echo "== installing moto 5.2.5, aws-sam-translator and pytest into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5' 'aws-sam-translator==1.*' 'pytest==8.*'
fi
if [ ! -x .cache/npm/node_modules/.bin/asl-validator ]; then
  echo "== installing asl-validator 4 into .cache/npm"
  npm install --silent --no-audit --no-fund --prefix .cache/npm 'asl-validator@4' >/dev/null
fi

echo "== building the function binaries, the emulator and cxone-etm"
# Every binary of the workspace: the four functions, the emulator, cxone-etm.
bins=$(bash scripts/workspace-bin.sh --bins)
CXONE_BIN_DIR=$(dirname "$(head -n 1 <<<"$bins")")
export CXONE_BIN_DIR

echo "== the deployed-shape scenarios"
cd tests/deployed
exec ../../.venv/bin/python -m pytest -q -p no:cacheprovider "$@" test_deployed.py
