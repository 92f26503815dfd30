#!/usr/bin/env bash
# Drives each function through `cargo lambda watch` with its sample event, end to end against a
# moto server (S3, Secrets Manager) and the bundled emulator. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$PWD/.venv
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

moto_port=$(free_port)
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
emulator=$(bash scripts/workspace-bin.sh --bin cxone-emulator)
"$emulator" >"$work/emulator.json" 2>"$work/emulator.log" &
pids+=($!)
for _ in $(seq 1 100); do
  [ -s "$work/emulator.json" ] && curl -sf "http://127.0.0.1:$moto_port/moto-api/" >/dev/null && break
  sleep 0.2
done

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" BUCKET=etm-data VENDOR_HOSTS=127.0.0.1
# Seed moto: the bucket, the API key in Secrets Manager, the demo-sast connection of the sample
# events (pointing at the emulator), and the run the step events name.
"$venv/bin/python" - "$work/emulator.json" <<'PY'
import json, sys, boto3
line = json.load(open(sys.argv[1]))
s3 = boto3.client("s3")
s3.create_bucket(Bucket="etm-data")
arn = boto3.client("secretsmanager").create_secret(Name="cxone/demo-sast", SecretString=json.dumps({"api_key": line["api_key"]}))["ARN"]
config = {"id": "demo-sast", "name": "Demo SAST", "kind": "sast", "secret": arn,
          "vendor": {"custom_api_url": line["url"], "custom_iam_url": line["iam_url"], "tenant": line["tenant"], "allow_insecure_local": True}}
s3.put_object(Bucket="etm-data", Key="connections/demo-sast/config.json", Body=json.dumps(config))
group = json.load(open("events/collect.json"))
run = group["items"][0]["run"]
base = f"connections/{run['connectionId']}/runs/{run['runId']}"
record = {"connectionId": run["connectionId"], "runId": run["runId"], "trigger": "api", "state": "Processing", "startedAt": "2026-11-22T00:00:00Z"}
s3.put_object(Bucket="etm-data", Key=f"{base}/run.json", Body=json.dumps(record))
# The run's plan as the plan writes it: the plan that stands names its attempt's work list.
attempt = "0" * 16
s3.put_object(Bucket="etm-data", Key=f"{base}/plan/{attempt}/work.jsonl", Body=json.dumps(group) + "\n")
s3.put_object(Bucket="etm-data", Key=f"{base}/plan/{attempt}/filtered.json", Body="[]")
s3.put_object(Bucket="etm-data", Key=f"{base}/plan.json", Body=json.dumps({"attempt": attempt, "previousRun": None, "problems": []}))
s3.put_object(Bucket="etm-data", Key=f"{base}/plan/work.jsonl", Body=json.dumps(group) + "\n")
# The run holds the connection's lock, as the trigger's start leaves it: finalize commits only then.
lock = {"runId": run["runId"], "acquiredAt": record["startedAt"], "expiresAt": 4102444800}
s3.put_object(Bucket="etm-data", Key=f"connections/{run['connectionId']}/lock", Body=json.dumps(lock))
PY

watch_port=$(free_port)
"$venv/bin/cargo-lambda" lambda watch --invoke-port "$watch_port" >"$work/watch.log" 2>&1 &
pids+=($!)
invoke() { # $1 function, $2 event file; prints the function's JSON answer
  "$venv/bin/cargo-lambda" lambda invoke "$1" --invoke-port "$watch_port" --data-file "$2" --output-format json
}
for _ in $(seq 1 300); do curl -s "http://127.0.0.1:$watch_port/" >/dev/null 2>&1 && break; sleep 0.5; done

check() { # $1 label, $2 JSON, $3 python condition on d
  echo "$2" | "$venv/bin/python" -c "import json,sys; d=json.load(sys.stdin); assert $3, d; print('  $1: ok')"
}
check "collect (events/collect.json)" "$(invoke cxone-etm-collect events/collect.json)" 'd["items"][0]["status"] == "complete" and d["items"][0]["records"] > 0'
check "transform (events/transform.json)" "$(invoke cxone-etm-transform events/transform.json)" 'd["items"][0]["objects"] >= 1'
check "finalize (events/finalize.json)" "$(invoke cxone-etm-finalize events/finalize.json)" 'd["complete"] is True'
check "trigger: test connection" "$(invoke cxone-etm-trigger events/trigger-api-test-connection.json)" 'd["statusCode"] == 200 and json.loads(d["body"])["passed"]'
# With no state machine to start, the trigger plans the run at once.
scheduled=$(invoke cxone-etm-trigger events/trigger-schedule.json)
check "trigger: scheduled run" "$scheduled" 'd["planned"]["items"] == 10 and "executionArn" not in d'
# The state machine's first state: the plan of the run the trigger started (planned again).
echo "$scheduled" | "$venv/bin/python" -c 'import json,sys; print(json.dumps({"plan": {"run": json.load(sys.stdin)["run"]}}))' >"$work/plan.json"
check "trigger: plan (the first state of the state machine)" "$(invoke cxone-etm-trigger "$work/plan.json")" 'd["items"] == 10 and d["childExecutions"] >= 1'
check "trigger: second start is refused" "$(invoke cxone-etm-trigger events/trigger-api-start-run.json)" 'd["statusCode"] == 409'
check "trigger: show the finalized run" "$(invoke cxone-etm-trigger events/trigger-api-show-run.json)" 'd["statusCode"] == 200 and json.loads(d["body"])["complete"] is True'
check "trigger: show the connection" "$(invoke cxone-etm-trigger events/trigger-api-show-connection.json)" 'd["statusCode"] == 200 and json.loads(d["body"])["state"] == "Processing"'
# Every invocation printed one summary line in CloudWatch Embedded Metric Format.
"$venv/bin/python" - "$work/watch.log" <<'PY'
import json, sys
lines = []
for raw in open(sys.argv[1], errors="replace"):
    start = raw.find('{')
    if start >= 0 and '"_aws"' in raw:
        lines.append(json.loads(raw[start:]))
functions = {l["Function"] for l in lines}
assert functions == {"collect", "transform", "finalize", "trigger"}, functions
assert len(lines) == 9, f"{len(lines)} summary lines for 9 invocations"
for l in lines:
    for m in l["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
        assert isinstance(l[m["Name"]], int), (m, l)
assert all(l["ConnectionId"] == "demo-sast" for l in lines), [l["ConnectionId"] for l in lines]
outcomes = sorted(l["Outcome"] for l in lines if l["Function"] == "trigger")
assert outcomes == ["http 200", "http 200", "http 200", "http 409", "ok", "ok"], outcomes
transform = next(l for l in lines if l["Function"] == "transform")
assert transform["Findings"] > 0 and transform["ConnectionId"] == "demo-sast", transform
print(f"  EMF: {len(lines)} summary lines, metrics {[m['Name'] for m in lines[0]['_aws']['CloudWatchMetrics'][0]['Metrics']]}")
PY
echo "cargo lambda watch: every function answered its sample event"
