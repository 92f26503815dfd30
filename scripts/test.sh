#!/usr/bin/env bash
# Runs every check on a fresh machine: formatting, clippy (warnings are errors), every test, and
# the README's demo as a smoke test. Installs what it needs; needs rustup/cargo, python3 and, where
# Debian packages are missing (a C compiler, python3-venv, npm, chromium), root or sudo to add them.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage's header says when it started (seconds since the start), to see where the time goes.
stage() { echo "== [+${SECONDS}s] $*"; }
# Debian packages the checks need beyond rustup and python3, installed where missing (as root, or
# through sudo): a C compiler (zstd, ring and aws-lc build C), venv (Debian ships it apart) and
# npm (asl-validator, for the deployed shape).
apt_install() {
  local sudo_if_needed=""
  [ "$(id -u)" -eq 0 ] || sudo_if_needed="sudo"
  $sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get install -y -qq "$@" >/dev/null
}
missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  stage "installing ${missing[*]} (Debian packages)"
  apt_install "${missing[@]}"
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true
# One full build: incremental state would only add gigabytes of target/ that nothing reuses.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
stage "disk free before the build: $(df -h --output=avail . | tail -1 | tr -d ' ')"

stage "cargo fmt --check"
cargo fmt --all -- --check

# Clippy and the test build need nothing from .venv: they run while the tools install (the installs
# wait on the network more than on the CPU).
# The cargo commands here and in the scripts called below select the whole workspace (`--workspace`,
# narrowed by target, not `-p`; `cargo lambda watch` runs `cargo run --bin NAME` at the workspace's
# root, which selects it whole too): cargo resolves features per selection, and each other
# selection builds most dependencies again (a `-p cxone-etm` test run cost three minutes).
if cargo nextest --version >/dev/null 2>&1; then
  build_tests=(cargo nextest run --workspace --locked --no-run)
  run_tests=(cargo nextest run --workspace --locked --no-fail-fast)
  run_whole_runs=(cargo nextest run --workspace --test runs --locked --no-fail-fast pipeline:: engines:: reconciliation::)
else
  build_tests=(cargo test --workspace --locked --no-run)
  run_tests=(cargo test --workspace --locked --no-fail-fast)
  run_whole_runs=(cargo test --workspace --test runs --locked --no-fail-fast -- pipeline:: engines:: reconciliation::)
fi
mkdir -p target
# The background builds run each in a process group of its own (job control on while they start),
# so that a run that fails stops them whole: killing the subshell alone would leave cargo and its
# compilers running, holding the target directory's lock.
background=()
stop_background() { for group in "${background[@]}"; do kill -- "-$group" 2>/dev/null || true; done; }
trap stop_background EXIT
stage "cargo clippy -D warnings, then the test build, in the background"
set -m
(cargo clippy --workspace --all-targets --locked -- -D warnings && "${build_tests[@]}") >target/ci-build.log 2>&1 &
build=$!
set +m
background+=("$build")

# moto serves S3 and Secrets Manager over the real AWS wire protocol for the AWS tests.
# cargo-lambda runs the functions locally (`cargo lambda watch`) for the function tests.
# pytest drives the deployed-shape scenarios (scripts/deployed-test.sh), which need moto 5.2.5 exactly.
if [ ! -x .venv/bin/moto_server ] || [ ! -x .venv/bin/cargo-lambda ] || [ ! -x .venv/bin/pytest ]; then
  stage "installing moto, cargo-lambda and pytest into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5' 'cargo-lambda==1.*' 'pytest==8.*'
fi
export MOTO_SERVER="$PWD/.venv/bin/moto_server"
# The template checks: cfn-lint and the SAM CLI in .venv (checkov, below, in a venv of its own).
if [ ! -x .venv/bin/sam ] || [ ! -x .venv/bin/cfn-lint ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check 'aws-sam-cli==1.*' 'cfn-lint==1.*'
fi
# sam build's release builds are the longest stage (fat LTO, one codegen unit: each function's link
# alone took 4 CPU-minutes on a 2-core AMD EPYC). They start as soon as cargo-lambda and SAM are
# installed, in the background at the lowest priority (`nice`), so they use the cores the stages in
# front leave idle (checkov's and Chromium's installs, the single-threaded links of the test build,
# the tests' waits, the deployed-shape scenarios) and barely slow those stages (nice is no limit on
# memory: two fat-LTO links take about 2.3 GB each); and in a target directory of their own (cargo
# locks a target directory per build, and SAM finds the binaries through `cargo metadata`).
# SAM builds the functions one after another, one `cargo lambda build --bin` each, so their links
# would run one at a time. The same command with every function's `--bin` first lets cargo link two
# at a time; SAM's own builds then find every unit fresh and only copy the binaries. The functions
# are the template's own, as check-infra.py reads them, so a function added there is prebuilt and
# checked too.
stage "sam build: every function through cargo-lambda (arm64), in the background at low priority"
mapfile -t function_lines < <(.venv/bin/python scripts/check-infra.py --functions)
logical_ids=() functions=()
for line in "${function_lines[@]}"; do
  logical_ids+=("${line% *}") functions+=("${line#* }")
done
[[ ${#functions[@]} -gt 0 ]] || { echo "infra/template.yaml names no function (scripts/check-infra.py --functions)" >&2; exit 1; }
set -m
(export CARGO_TARGET_DIR="$PWD/target/sam-arm64" PATH="$PWD/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0
  nice -n 19 cargo lambda build --release --arm64 --locked "${functions[@]/#/--bin=}"
  cd infra && nice -n 19 ../.venv/bin/sam build --beta-features --build-dir .aws-sam/build) >target/sam-build.log 2>&1 &
sam_build=$!
set +m
background+=("$sam_build")

# checkov pins an old boto3: it has a venv of its own.
if [ ! -x .venv-checkov/bin/checkov ]; then
  python3 -m venv .venv-checkov
  .venv-checkov/bin/pip install --quiet --disable-pip-version-check 'checkov==3.*'
fi

# The run report's HTML is checked in a real headless browser: Debian's chromium.
if ! command -v chromium >/dev/null 2>&1; then
  stage "installing chromium (Debian package) for the report test"
  apt_install chromium
fi

stage "infra: cfn-lint, sam validate --lint, checkov, template ↔ code"
.venv/bin/cfn-lint infra/template.yaml
(cd infra && SAM_CLI_TELEMETRY=0 ../.venv/bin/sam validate --lint -t template.yaml)
BC_SKIP_MAPPING=TRUE .venv-checkov/bin/checkov -f infra/template.yaml --framework cloudformation --quiet --compact
.venv/bin/python scripts/check-infra.py

stage "waiting for clippy and the test build"
if ! wait "$build"; then
  cat target/ci-build.log
  echo "clippy or the test build failed (above)" >&2
  exit 1
fi
grep -E "^(warning|error)" target/ci-build.log || echo "clippy: no warnings"

stage "tests"
"${run_tests[@]}"
# nextest does not run doctests.
cargo test --workspace --doc --locked
# Where a process has one core to use (a Lambda function under 3,538 MB) the transform maps each
# page as it reads it; on this machine it reads ahead on a second core. The whole runs again with
# one core, so both ways are tested.
AWS_LAMBDA_FUNCTION_MEMORY_SIZE=512 "${run_whole_runs[@]}"

stage "functions through cargo lambda watch"
bash scripts/lambda-watch-test.sh

stage "the deployed shape: the template's state machine executed with the real functions under their roles"
bash scripts/deployed-test.sh

stage "demo (the README's main command)"
bash scripts/check-demo.sh

stage "waiting for sam build"
if ! wait "$sam_build"; then
  cat target/sam-build.log
  echo "sam build failed (above)" >&2
  exit 1
fi
for f in "${logical_ids[@]}"; do
  test -x "infra/.aws-sam/build/$f/bootstrap" || { echo "sam build produced no bootstrap for $f" >&2; exit 1; }
done
grep -E "Build Succeeded|Running RustCargoLambdaBuilder:CargoLambdaBuild" target/sam-build.log | sort | uniq -c

stage "target/ after the builds: $(du -sh target | cut -f1)"
stage "done"
