"""The deployed shape, executed: infra/template.yaml translated and resolved as CloudFormation does,
its state machine run by moto's Step Functions interpreter, every Lambda task performed by the real
function binary under its own role from the template, the bundled emulator as Checkmarx One.

Run with `bash scripts/deployed-test.sh` (it installs and builds what this needs).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import gzip
import hashlib
import json
import os
import pathlib
import re
import subprocess
import tempfile
import time
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.config import Config

import moto_models
import stack
from lambda_host import Function, LambdaHost

# Items of the wide run: 600 in CI (moto's interpreter in one Python process manages about ten items
# a second on two cores); CXONE_DEPLOYED_ITEMS=10000 for the full size.
WIDE_ITEMS = int(os.environ.get("CXONE_DEPLOYED_ITEMS", "600"))
# The ids of the main tenant's first projects and environments: ids that break naive key schemes
# (a path separator and what it would collapse into, a parent directory, escapes, non-ASCII, two
# ids longer than a file name that share their first 299 characters).
LARGE_RECORD_TAGS = 3000
HOSTILE_IDS = ["a/b", "a_b", "..", "x y%2F..%2F", "プロジェクト", "x" * 300, "x" * 299 + "y"]
BIN = pathlib.Path(os.environ.get("CXONE_BIN_DIR", stack.ROOT / "target" / "debug"))


class Emulator:
    """The bundled Checkmarx One emulator as a process."""

    def __init__(self, work: pathlib.Path, *args: str):
        self.out = open(work / f"emulator-{time.time_ns()}.json", "w+")
        self.process = subprocess.Popen(
            [str(BIN / "cxone-emulator"), *args],
            stdout=self.out,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            self.out.seek(0)
            text = self.out.read()
            if text.strip():
                self.line = json.loads(text.splitlines()[0])
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the emulator did not start")
        self.url = self.line["url"]

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path) as answer:
            return json.load(answer)

    def fault(self, endpoint: str, spec: dict) -> None:
        request = urllib.request.Request(
            f"{self.url}/_emulator/faults/{endpoint}", data=json.dumps(spec).encode(), method="PUT",
            headers={"content-type": "application/json"},
        )
        urllib.request.urlopen(request).read()

    def clear_faults(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/_emulator/faults", method="DELETE")).read()

    def stop(self) -> None:
        self.process.kill()


# Longer than API Gateway waits (30 s): only the functions' attempt timeout for Step Functions calls
# (lambda.rs, 5 s) lets the trigger answer in time.
LOST_ANSWER_HANGS_S = 40


class StepFunctionsNetwork:
    """The network between the functions and Step Functions (moto): every call passes, but while
    `losing`, each StartExecution's answer is lost: the call reaches moto, then its connection
    hangs unanswered past the caller's attempt timeout and closes, as when a network fault
    outlasts the SDK's retries after the execution began. The functions' instances live across
    scenarios, so the network is theirs from the start (`AWS_ENDPOINT_URL_SFN`)."""

    def __init__(self, moto_url: str):
        self.lost, self.losing, self.counting = 0, False, threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                # The Host header as signed (SigV4 signs it), the body as sent.
                headers = {k: v for k, v in self.headers.items() if k.lower() != "content-length"}
                request = urllib.request.Request(moto_url + self.path, data=body, headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=60) as answer:
                        status, answer_headers, answer_body = answer.status, answer.headers, answer.read()
                except urllib.error.HTTPError as error:
                    status, answer_headers, answer_body = error.code, error.headers, error.read()
                except OSError as error:
                    # moto itself failing is not a lost answer: it is told as a gateway's error.
                    status, answer_headers, answer_body = 502, {}, str(error).encode()
                if proxy.losing and self.headers.get("x-amz-target", "").endswith(".StartExecution"):
                    with proxy.counting:
                        proxy.lost += 1
                    time.sleep(LOST_ANSWER_HANGS_S)
                    self.close_connection = True
                    return
                self.send_response(status)
                for name, value in answer_headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(answer_body)))
                self.end_headers()
                self.wfile.write(answer_body)

        self.server = ThreadingHTTPServer(("127.0.0.1", moto_models.free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Account:
    """One AWS account on this machine holding the stack the template describes."""

    def __init__(self, work: pathlib.Path, api_key: str, dast_api_key: str, **parameters: str):
        self.work = work
        self.moto_url = moto_models.start()
        self.sfn_network = StepFunctionsNetwork(self.moto_url)
        admin = self._client("iam", None)
        admin.create_user(UserName="operator")
        admin.put_user_policy(
            UserName="operator", PolicyName="all",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
        )
        key = admin.create_access_key(UserName="operator")["AccessKey"]
        self.operator = {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"], "SessionToken": None}
        secrets = self.client("secretsmanager")
        self.secret_arn = secrets.create_secret(Name="cxone/sast", SecretString=json.dumps({"api_key": api_key}))["ARN"]
        self.dast_secret_arn = secrets.create_secret(Name="cxone/dast", SecretString=json.dumps({"api_key": dast_api_key}))["ARN"]
        parameters = stack.parameters_for(SastSecretArn=self.secret_arn, DastSecretArn=self.dast_secret_arn, **parameters)
        self.parameters = parameters
        self.resolved = stack.resolve(stack.translate(parameters), parameters)
        self.machine_logical, self.definition = stack.state_machine_definition(self.resolved)
        stack.asl_validate(self.definition, work)
        (self.bucket_logical, _), = self.resolved.of_type("AWS::S3::Bucket").items()
        self.bucket = self.resolved.names[self.bucket_logical]
        s3 = self.client("s3")
        s3.create_bucket(Bucket=self.bucket)
        s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        # Every role of the template with its inline policies; credentials as each service gets them.
        iam, sts = self.client("iam"), self.client("sts")
        self.role_credentials = {}
        for logical, role in self.resolved.of_type("AWS::IAM::Role").items():
            name = self.resolved.names[logical]
            props = role["Properties"]
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(props["AssumeRolePolicyDocument"]))
            for index, document in enumerate(stack.role_policies(self.resolved, logical)):
                iam.put_role_policy(RoleName=name, PolicyName=f"policy-{index}", PolicyDocument=json.dumps(document))
            self.role_credentials[logical] = sts.assume_role(
                RoleArn=self.resolved.arn(logical), RoleSessionName=logical, DurationSeconds=43200
            )["Credentials"]
        machine = self.resolved.resources[self.machine_logical]["Properties"]
        machine_role = next(k for k in self.role_credentials if self.resolved.arn(k) == machine["RoleArn"])
        self.machine_arn = self.client("stepfunctions").create_state_machine(
            name=self.resolved.names[self.machine_logical], definition=self.definition,
            roleArn=machine["RoleArn"], type=machine.get("StateMachineType", "STANDARD"),
        )["stateMachineArn"]
        assert self.machine_arn == self.resolved.arn(self.machine_logical), self.machine_arn
        self.host = LambdaHost(str(work))
        for logical, function in self.resolved.of_type("AWS::Lambda::Function").items():
            self.host.add(self._function(logical, function))
        moto_models.route_lambda_to(self.host.url, self.role_credentials[machine_role])
        moto_models.enforce_iam()

    def _client(self, service: str, credentials: dict | None):
        credentials = credentials or {"AccessKeyId": "AKIAOPERATOR00000000", "SecretAccessKey": "setup", "SessionToken": None}
        return boto3.client(
            service, region_name=stack.REGION, endpoint_url=self.moto_url,
            aws_access_key_id=credentials["AccessKeyId"], aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials.get("SessionToken"),
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def client(self, service: str):
        return self._client(service, self.operator)

    def _function(self, logical: str, function: dict) -> Function:
        props = function["Properties"]
        role = stack.function_role(self.resolved, logical)
        credentials = self.role_credentials[role]
        binary = function["Metadata"]["BuildProperties"]["Binary"]
        env = {
            **props.get("Environment", {}).get("Variables", {}),
            "AWS_REGION": stack.REGION,
            "AWS_DEFAULT_REGION": stack.REGION,
            "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": credentials["SessionToken"],
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ENDPOINT_URL_SFN": self.sfn_network.url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        reserved = props.get("ReservedConcurrentExecutions")
        name = self.resolved.names[logical]
        async_config = [body["Properties"] for body in self.resolved.of_type("AWS::Lambda::EventInvokeConfig").values()
                        if body["Properties"]["FunctionName"] == name]
        return Function(
            name=name, arn=self.resolved.arn(logical), binary=str(BIN / binary),
            env=env, memory_mb=int(props.get("MemorySize", 128)), timeout_s=int(props.get("Timeout", 3)),
            reserved=None if reserved is None else int(reserved),
            async_retries=int(async_config[0].get("MaximumRetryAttempts", 2)) if async_config else 2,
        )

    def update_stack(self, **changes: str) -> None:
        """`sam deploy` of the same template with other parameter values that change only the
        functions' reserved concurrency (asserted: every resource of the resolved template is as
        before but for its ReservedConcurrentExecutions). Lambda applies a reservation at once, to
        running instances too."""
        parameters = {**self.parameters, **changes}
        resolved = stack.resolve(stack.translate(parameters), parameters)

        def without_reservations(resources: dict) -> dict:
            return {logical: {**body, "Properties": {k: v for k, v in body.get("Properties", {}).items()
                                                      if k != "ReservedConcurrentExecutions"}}
                    for logical, body in resources.items()}

        assert without_reservations(resolved.resources) == without_reservations(self.resolved.resources), \
            "the update changes more than the functions' reservations"
        for logical, function in resolved.of_type("AWS::Lambda::Function").items():
            reserved = function["Properties"].get("ReservedConcurrentExecutions")
            self.host.functions[resolved.names[logical]].reserved = None if reserved is None else int(reserved)
        self.parameters, self.resolved = parameters, resolved

    def function_named(self, binary: str) -> Function:
        return next(f for f in self.host.functions.values() if f.binary.endswith("/" + binary))

    # ------------------------------------------------------------------ what a user does
    def invoke_trigger(self, event: dict) -> dict:
        body, failed = self.host.invoke(self.function_named("cxone-etm-trigger").name, json.dumps(event).encode())
        answer = json.loads(body)
        assert not failed, answer
        return answer

    def tick(self, schedule: str = "SastRunSchedule") -> dict:
        """A schedule's tick, as EventBridge Scheduler invokes the trigger (asynchronously); what the
        trigger answered, which must not be a failure."""
        body, failed = self.host.invoke_async(self.function_named("cxone-etm-trigger").name,
                                              json.dumps(self.scheduled_event(schedule)).encode())
        answer = json.loads(body)
        assert not failed, answer
        return answer

    def http(self, method: str, path: str) -> tuple[int, dict]:
        """An HTTP API request, as API Gateway hands it to the trigger (payload format 2.0), for a
        route the template declares."""
        route = self.route_for(method, path)
        # The route's path parameters, as API Gateway hands them over beside the (decoded) path.
        parameters = {p.strip("{}"): q for p, q in zip(route.strip("/").split("/"), path.strip("/").split("/"))
                      if p.startswith("{")}
        event = {
            "version": "2.0", "routeKey": f"{method} {route}", "rawPath": path, "rawQueryString": "",
            "headers": {"content-type": "application/json"}, "pathParameters": parameters,
            "requestContext": {
                "accountId": stack.ACCOUNT, "apiId": "local", "domainName": "local", "domainPrefix": "local",
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "test"},
                "requestId": str(time.time_ns()), "routeKey": f"{method} {route}", "stage": "$default",
                "time": "01/Dec/2026:00:00:00 +0000", "timeEpoch": int(time.time() * 1000),
            },
            "isBase64Encoded": False,
        }
        answer = self.invoke_trigger(event)
        return answer["statusCode"], json.loads(answer["body"])

    def route_for(self, method: str, path: str) -> str:
        (_, api), = self.resolved.of_type("AWS::ApiGatewayV2::Api").items()
        parts = path.strip("/").split("/")
        for route, methods in api["Properties"]["Body"]["paths"].items():
            pattern = route.strip("/").split("/")
            if len(pattern) == len(parts) and all(p.startswith("{") or p == q for p, q in zip(pattern, parts)):
                if method.lower() in methods:
                    target = methods[method.lower()]["x-amazon-apigateway-integration"]["uri"]
                    assert self.function_named("cxone-etm-trigger").name in json.dumps(target), target
                    return route
        raise AssertionError(f"the template declares no route {method} {path}")

    def scheduled_event(self, schedule: str = "SastRunSchedule") -> dict:
        return stack.schedule_inputs(self.resolved)[schedule]["input"]

    def wait(self, execution_arn: str, timeout: float = 900) -> dict:
        sfn = self.client("stepfunctions")
        deadline, pause = time.time() + timeout, 0.2
        while time.time() < deadline:
            execution = sfn.describe_execution(executionArn=execution_arn)
            if execution["status"] != "RUNNING":
                return execution
            time.sleep(pause)
            pause = min(pause * 1.5, 1)
        raise AssertionError(f"{execution_arn} still running after {timeout}s")

    def explain(self, execution: dict) -> str:
        """Why an execution did not succeed: its failure events and each function's last errors."""
        events = self.client("stepfunctions").get_execution_history(
            executionArn=execution["executionArn"], reverseOrder=True, maxResults=50)["events"]
        failures = [e for e in events if e["type"].endswith(("Failed", "TimedOut", "Aborted"))]
        errors = {f.name: f.errors[-3:] for f in self.host.functions.values() if f.errors}
        return json.dumps({"status": execution["status"], "failures": failures, "functionErrors": errors}, default=str)[:6000]

    def get_json(self, key: str):
        return json.loads(self.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def exists(self, key: str) -> bool:
        return "Contents" in self.client("s3").list_objects_v2(Bucket=self.bucket, Prefix=key)

    def keys(self, prefix: str) -> list[str]:
        pages = self.client("s3").get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def summary_lines(self, binary: str) -> list[dict]:
        """The invocation summaries (EMF lines) a function printed, from every instance's log."""
        function = self.function_named(binary)
        lines = []
        for log in sorted(self.work.glob(f"{function.name}-*.log")):
            lines += [json.loads(line) for line in log.read_bytes().splitlines() if b'"CloudWatchMetrics"' in line]
        return lines

    def rejected(self, item: dict) -> list[dict]:
        """Every rejected record of a manifest's item: its list, or past the list's first 100 its
        rejected object (checked against the manifest's size and hash)."""
        entry = item.get("rejectedObject")
        if entry is None:
            return item["rejected"]
        body = self.client("s3").get_object(Bucket=self.bucket, Key=entry["key"])["Body"].read()
        assert len(body) == entry["bytes"] and hashlib.sha256(body).hexdigest() == entry["sha256"], entry
        records = [json.loads(line) for line in gzip.decompress(body).splitlines()]
        assert records[:len(item["rejected"])] == item["rejected"], entry["key"]
        return records

    def findings(self, manifest: dict) -> list[dict]:
        out = []
        s3 = self.client("s3")
        for item in manifest["items"]:
            for entry in item["objects"]:
                body = gzip.decompress(s3.get_object(Bucket=self.bucket, Key=entry["key"])["Body"].read())
                for line in body.splitlines():
                    record = json.loads(line)
                    for finding in record.get("findingGroup", {}).get("findings", []):
                        out.append({"item": item["item"], "engine": record.get("engine"),
                                    "asset": record.get("asset", {}), **finding})
        return out


def put_connection(account: Account, emulator: Emulator, connection_id: str, extra: dict | None = None,
                   map_file: pathlib.Path | None = None, scoring_file: pathlib.Path | None = None,
                   secret: str | None = None, vendor: dict | None = None,
                   check_ca_bundle: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    """`cxone-etm connection put`, as the README tells a user to run it against a deployed stack."""
    config = {
        "id": connection_id, "name": f"{connection_id} (emulator)", "kind": "sast", "secret": secret or account.secret_arn,
        "vendor": {"custom_api_url": emulator.url, "custom_iam_url": emulator.line["iam_url"],
                   "tenant": emulator.line["tenant"], "allow_insecure_local": True, **(vendor or {})},
        **(extra or {}),
    }
    path = account.work / f"{connection_id}.json"
    path.write_text(json.dumps(config))
    command = [str(BIN / "cxone-etm"), "connection", "put", "--store", f"s3://{account.bucket}/", "--config", str(path), "--json"]
    if map_file:
        command += ["--map", str(map_file)]
    if scoring_file:
        command += ["--scoring", str(scoring_file)]
    if check_ca_bundle:
        command += ["--check-ca-bundle", str(check_ca_bundle)]
    return subprocess.run(command, env=operator_env(account), capture_output=True, text=True)


def operator_env(account: Account) -> dict[str, str]:
    """The environment of a CLI an operator runs against the deployed stack's account."""
    env = {
        **os.environ, "AWS_ACCESS_KEY_ID": account.operator["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": account.operator["SecretAccessKey"], "AWS_REGION": stack.REGION,
        "AWS_ENDPOINT_URL": account.moto_url, "AWS_EC2_METADATA_DISABLED": "true",
    }
    env.pop("AWS_SESSION_TOKEN", None)
    return env


def sast_total(emulator: Emulator) -> int:
    return emulator.get("/_emulator/stats")["expected"]["totals"]["by_type"].get("sast", 0)


def committed(account: Account, run: dict) -> dict:
    base = f"connections/{run['connectionId']}/runs/{run['runId']}"
    assert account.exists(f"{base}/_COMMITTED"), f"{base} has no commit marker"
    return account.get_json(f"{base}/manifest.json")


# What moto answers for a PutObject refused as S3 does when it fails inside.
S3_INTERNAL_ERROR = (500, {}, b"<Error><Code>InternalError</Code></Error>")


def on_put_object(monkeypatch, hook) -> None:
    """moto's PutObject calls `hook(key, put)` for each object written, where `put()` writes it and
    answers moto's response; the hook answers the response to give (S3_INTERNAL_ERROR for one
    not written). Undone with `monkeypatch.undo()`."""
    from moto.s3.responses import S3Response
    original = S3Response._key_response_put
    monkeypatch.setattr(S3Response, "_key_response_put",
                        lambda self, query, key: hook(key, lambda: original(self, query, key)))


@pytest.fixture(scope="module")
def work():
    with tempfile.TemporaryDirectory(prefix="deployed-") as directory:
        yield pathlib.Path(directory)


@pytest.fixture(scope="module")
def emulator(work):
    # Every scenario carries the hostile ids through S3 keys, Step Functions payloads and the
    # work list.
    # Five environments: the fourth's latest scan failed, so its latest completed one is older.
    # The first project's record carries 3,000 tags (about 400 KiB): more than a child's input may be.
    emulator = Emulator(work, "--projects", "12", "--results-per-scan", "40", "--dast-environments", "5",
                        "--first-project-extra-tags", str(LARGE_RECORD_TAGS),
                        *(arg for id in HOSTILE_IDS for arg in ("--hostile-id", id)))
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def wide(work):
    """A tenant of WIDE_ITEMS projects of one result each, its key in the stack's second secret."""
    wide = Emulator(work, "--projects", str(WIDE_ITEMS), "--results-per-scan", "1", "--scans-per-project", "1",
                    "--dast-environments", "0")
    yield wide
    wide.stop()


@pytest.fixture(scope="module")
def account(work, emulator, wide):
    # The emulator stands for a private deployment: its host is one the stack is deployed to allow.
    account = Account(work, emulator.line["api_key"], wide.line["api_key"], Tenant=emulator.line["tenant"],
                      MaxConcurrency="16", VendorHosts="127.0.0.1")
    yield account
    account.host.stop()


def custom_map_and_scoring(work: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """The shipped SAST map and scoring, changed as a user would: HIGH becomes severity 5, scored 77."""
    exported = subprocess.run([str(BIN / "cxone-etm"), "export-map", "sast"], capture_output=True, text=True, check=True)
    transform_map = json.loads(exported.stdout)
    transform_map["name"] = "Custom SAST map"
    for entry in transform_map["entries"]:
        if entry["target"] == "findingGroup.findings[].severity":
            entry["valueMap"]["HIGH"] = 5
    scoring = json.loads(subprocess.run([str(BIN / "cxone-etm"), "export-scoring"], capture_output=True, text=True, check=True).stdout)
    for row in scoring["rows"]:
        if row["severity"] == "HIGH":
            row["qds"] = 77
    (work / "map.json").write_text(json.dumps(transform_map))
    (work / "scoring.json").write_text(json.dumps(scoring))
    return work / "map.json", work / "scoring.json"


def assert_unchanged(manifest: dict, first: dict) -> None:
    lifecycle, totals = manifest["totals"]["lifecycle"], manifest["totals"]
    assert lifecycle.get("NEW", 0) == 0 and lifecycle.get("REOPENED", 0) == 0, lifecycle
    assert lifecycle.get("FIXED", 0) == totals["fixed"], (lifecycle, totals["fixed"])
    # Every finding still open is the same finding as before.
    assert lifecycle.get("ACTIVE", 0) == totals["findingsOut"] - totals["fixed"], (lifecycle, totals["findingsOut"])
    assert totals["findingsOut"] == first["totals"]["findingsOut"]


def scheduled_run(account: Account, schedule: str = "SastRunSchedule") -> tuple[dict, dict]:
    """The schedule's own event → trigger → state machine; (started run, finished execution)."""
    started = account.tick(schedule)
    assert started["executionArn"].startswith(account.machine_arn.replace(":stateMachine:", ":execution:")), started
    execution = account.wait(started["executionArn"])
    assert execution["status"] == "SUCCEEDED", account.explain(execution)
    return started, execution


def api_run(account: Account, connection_id: str) -> tuple[dict, dict]:
    """`POST /connections/{id}/runs` → state machine; (started run, its complete committed manifest)."""
    status, started = account.http("POST", f"/connections/{connection_id}/runs")
    assert status == 202, started
    execution = account.wait(started["executionArn"])
    assert execution["status"] == "SUCCEEDED", account.explain(execution)
    manifest = committed(account, started["run"])
    assert manifest["complete"] is True, manifest["problems"]
    return started, manifest


def api_run_under_fault(account: Account, emulator: Emulator, connection_id: str, endpoint: str,
                        fault: dict) -> tuple[dict, dict]:
    """`POST /connections/{id}/runs` while the emulator's `endpoint` answers with `fault`; (started
    run, its committed manifest, whole or partial)."""
    emulator.fault(endpoint, fault)
    try:
        status, started = account.http("POST", f"/connections/{connection_id}/runs")
        assert status == 202, started
        execution = account.wait(started["executionArn"])
    finally:
        emulator.clear_faults()
    assert execution["status"] == "SUCCEEDED", account.explain(execution)
    return started, committed(account, started["run"])


def test_definition_passes_asl_validator_after_substitution(account):
    definition = json.loads(account.definition)
    assert "${" not in account.definition, "a DefinitionSubstitutions key the template does not define"
    items = definition["States"]["ProcessItems"]
    assert "MaxConcurrency" not in items or isinstance(items["MaxConcurrency"], int), items
    stack.asl_validate(account.definition, account.work)


def test_connection_put_refuses_a_broken_connection_and_stores_nothing(account, emulator):
    bad_map = account.work / "bad-map.json"
    bad_map.write_text(json.dumps({"version": 1, "name": "x", "kind": "sast", "entries": [{"source": "nope[]", "target": "asset.nowhere"}]}))
    result = put_connection(account, emulator, "broken", map_file=bad_map)
    assert result.returncode != 0 and "transform_map" in result.stderr, result
    result = put_connection(account, emulator, "broken", extra={"vendor": {
        "custom_api_url": emulator.url, "custom_iam_url": emulator.line["iam_url"], "tenant": "no-such-tenant",
        "allow_insecure_local": True}})
    # A tenant the key was not issued for: the five checks as a report, the credential check failing
    # and naming the tenant, and nothing stored.
    assert result.returncode == 1 and result.stdout.strip(), result.stderr[:1000]
    answer = json.loads(result.stdout)
    credential = answer["checks"]["checks"][2]
    assert answer["stored"] is False and credential["status"] == "fail", answer
    assert "no-such-tenant" in credential["detail"], answer
    assert not account.exists("connections/broken/config.json")
    # The credential is right but a check fails (the key may not list projects): nothing stored.
    emulator.fault("projects", {"forbidden_rate": 1.0})
    try:
        result = put_connection(account, emulator, "broken")
    finally:
        emulator.clear_faults()
    assert result.returncode == 1 and result.stdout.strip(), result.stderr[:1000]
    answer = json.loads(result.stdout)
    assert answer["stored"] is False and answer["checks"]["passed"] is False, answer
    assert not account.exists("connections/broken/config.json")


def test_a_connection_behind_a_private_ca_is_checked_with_a_copy_of_its_bundle_and_its_status_read(account, emulator):
    """A config whose `vendor.ca_bundle` is where the functions read it on AWS (a layer's /opt/...),
    put from an operator's machine that does not have that file: refused, naming the way out, until
    a copy is given; then checked over TLS with the copy (another CA fails the handshake) and
    stored with the /opt path; `status` reads the stored config without the file."""
    work = account.work
    private = Emulator(work, "--projects", "1", "--results-per-scan", "2", "--dast-environments", "0",
                       "--tls", "--tls-ca-out", str(work / "private-ca.pem"))
    other = Emulator(work, "--projects", "1", "--dast-environments", "0", "--tls", "--tls-ca-out", str(work / "other-ca.pem"))
    try:
        secret = account.client("secretsmanager").create_secret(
            Name="cxone/private", SecretString=json.dumps({"api_key": private.line["api_key"]}))["ARN"]
        vendor = {"custom_api_url": private.url, "custom_iam_url": private.line["iam_url"],
                  "tenant": private.line["tenant"], "ca_bundle": "/opt/cxone-etm-private/ca.pem"}
        config = "connections/private-ca/config.json"
        put = lambda copy=None: put_connection(account, emulator, "private-ca", secret=secret, vendor=vendor,
                                               check_ca_bundle=copy)
        refused = put()
        assert refused.returncode != 0 and "this machine does not have" in refused.stderr \
            and "--check-ca-bundle" in refused.stderr, refused.stderr[:1000]
        assert not account.exists(config)
        wrong = put(work / "other-ca.pem")
        assert wrong.returncode == 1 and wrong.stdout.strip(), wrong.stderr[:1000]
        answer = json.loads(wrong.stdout)
        assert answer["stored"] is False and answer["checks"]["checks"][1]["status"] == "fail", answer
        assert not account.exists(config)
        checked = put(work / "private-ca.pem")
        assert checked.returncode == 0, checked.stderr[:1000]
        answer = json.loads(checked.stdout)
        assert answer["stored"] is True and answer["checks"]["passed"] is True, answer
        assert account.get_json(config)["vendor"]["ca_bundle"] == "/opt/cxone-etm-private/ca.pem"
        status = subprocess.run([str(BIN / "cxone-etm"), "status", "private-ca", "--store", f"s3://{account.bucket}/",
                                 "--json"], env=operator_env(account), capture_output=True, text=True)
        assert status.returncode == 0, status.stderr[:1000]
        assert json.loads(status.stdout)["state"] == "Registered", status.stdout
    finally:
        private.stop()
        other.stop()


# Short vendor retries for the `sast` connection: the failing-item scenario waits them out on
# every attempt.
SAST_RETRY = {"retry": {"max_retries": 2, "base_delay_ms": 50, "max_delay_secs": 1, "max_total_wait_secs": 5}}


def put_sast_connection(account: Account, emulator: Emulator) -> tuple[pathlib.Path, pathlib.Path]:
    """The connection the template's SAST schedule runs, with a custom map and scoring; their files."""
    map_file, scoring_file = custom_map_and_scoring(account.work)
    result = put_connection(account, emulator, "sast", map_file=map_file, scoring_file=scoring_file, vendor=SAST_RETRY)
    assert result.returncode == 0, result.stderr
    return map_file, scoring_file


@pytest.fixture
def sast(account, emulator):
    """The `sast` connection with a committed run. The scheduled-run scenario makes it, and the
    scenarios after it go on from where it left off; a scenario run on its own (`-k`) gets it here."""
    state = "connections/sast/state.json"
    if not (account.exists(state) and account.get_json(state).get("lastCommittedRun")):
        put_sast_connection(account, emulator)
        scheduled_run(account)


def test_a_scheduled_run_commits_exactly_what_the_vendor_holds_and_keeps_the_users_config(account, emulator):
    map_file, scoring_file = put_sast_connection(account, emulator)
    stored = account.get_json("connections/sast/config.json")
    assert stored["transform_map"]["name"] == "Custom SAST map"
    runs = []
    for _ in range(3):
        started, execution = scheduled_run(account)
        output = json.loads(execution["output"])
        assert output["complete"] is True, output
        manifest = committed(account, started["run"])
        assert manifest["totals"]["findingsOut"] + manifest["totals"]["rejected"] == sast_total(emulator)
        assert account.get_json("connections/sast/config.json") == stored, "a schedule replaced the stored config"
        findings = account.findings(manifest)
        high = [f for f in findings if f.get("vendorSeverity") == "HIGH"]
        assert high and all(f["severity"] == 5 and f["qds"] == 77 for f in high), high[:2]
        runs.append(manifest)
    # Each hostile id is an item of its own, with objects of its own.
    for manifest in runs:
        vendor_ids = [item["vendorId"] for item in manifest["items"]]
        assert all(vendor_ids.count(id) == 1 for id in HOSTILE_IDS), vendor_ids
        keys = [o["key"] for item in manifest["items"] for o in item["objects"]]
        assert keys and len(keys) == len(set(keys)), "two items wrote one object"
        assert_seen_by_the_heartbeat(account, "SastStaleRunsAlarm", manifest["runId"])
    # The first project's record is larger than a child's input may be: the plan stored it beside
    # the work list, every child ran, and its asset kept every tag (its own two and the 3,000).
    assert moto_models.oversized_children == [], moto_models.oversized_children[:1]
    for manifest in runs:
        large = next(item["item"] for item in manifest["items"] if item["vendorId"] == HOSTILE_IDS[0])
        tags = {len(f["asset"]["tags"]) for f in account.findings(manifest) if f["item"] == large}
        assert tags == {LARGE_RECORD_TAGS + 2}, tags
    # Reconciliation against the last committed run, on an unchanged tenant: nothing new or
    # reopened, and the only FIXED findings are those the vendor itself reports fixed.
    for manifest in runs[1:]:
        assert_unchanged(manifest, runs[0])
    # A change put while the functions are warm is what the next run uses.
    scoring = json.loads(scoring_file.read_text())
    for row in scoring["rows"]:
        if row["severity"] == "HIGH":
            row["qds"] = 66
    scoring_file.write_text(json.dumps(scoring))
    result = put_connection(account, emulator, "sast", map_file=map_file, scoring_file=scoring_file, vendor=SAST_RETRY)
    assert result.returncode == 0, result.stderr
    started, _ = scheduled_run(account)
    high = [f for f in account.findings(committed(account, started["run"])) if f.get("vendorSeverity") == "HIGH"]
    assert high and all(f["qds"] == 66 for f in high), high[:2]
    # Each function ran under its own role: the host started every one of them.
    assert all(account.function_named(b).invocations > 0 for b in ("cxone-etm-trigger", "cxone-etm-collect", "cxone-etm-transform", "cxone-etm-finalize"))


def test_the_dast_schedule_commits_every_environments_latest_scan_and_reconciles_it(account, emulator):
    # The template's other schedule: a DAST connection (its environments' latest completed scans,
    # found by collect, their results paged by `page`/`per_page`), its environments' ids hostile.
    result = put_connection(account, emulator, "dast", extra={"kind": "dast"})
    assert result.returncode == 0, result.stderr
    expected = emulator.get("/_emulator/stats")["expected"]
    environments = {e["id"]: e for e in expected["environments"]}
    assert all(id in environments for id in HOSTILE_IDS[:len(environments)]), sorted(environments)
    # One environment's latest scan failed: its latest completed scan is an older one.
    assert any(e["latest_completed_scan"] not in (None, e["scans"][-1]["id"]) for e in environments.values())
    runs = []
    for _ in range(2):
        started, execution = scheduled_run(account, "DastRunSchedule")
        assert started["run"]["connectionId"] == "dast", started
        manifest = committed(account, started["run"])
        assert manifest["complete"] is True, manifest["problems"]
        assert manifest["totals"]["findingsOut"] + manifest["totals"]["rejected"] == expected["totals"]["dast_results"]
        vendor_ids = sorted(item["vendorId"] for item in manifest["items"])
        assert vendor_ids == sorted(environments), vendor_ids
        for item in manifest["items"]:
            latest = environments[item["vendorId"]]["latest_completed_scan"]
            assert (item["status"], item.get("scanId")) == (("complete", latest) if latest else ("no_scan", None)), item
        keys = [o["key"] for item in manifest["items"] for o in item["objects"]]
        assert keys and len(keys) == len(set(keys)), "two environments wrote one object"
        runs.append(manifest)
        assert_seen_by_the_heartbeat(account, "DastStaleRunsAlarm", started["run"]["runId"])
    assert_unchanged(runs[1], runs[0])
    # The environments with a login say their last login failed, and their scans answer what a
    # visitor without it sees: what those scans lack is held open, the run complete, and their
    # count reaches the template's alarm through finalize's summary line.
    with_login = [e for e in environments.values() if e["has_login"] and e["latest_completed_scan"]]
    assert with_login, sorted(environments)
    try:
        for endpoint in ("dast-environments", "dast-results"):
            emulator.fault(endpoint, {"login_failed": True})
        started, _ = scheduled_run(account, "DastRunSchedule")
    finally:
        emulator.clear_faults()
    manifest = committed(account, started["run"])
    failed = manifest["totals"]["failedLogins"]
    assert manifest["complete"] is True and failed == len(with_login), (manifest["totals"], len(with_login))
    assert manifest["totals"]["heldForFailedLogin"] > 0, manifest["totals"]
    assert manifest["totals"]["lifecycle"].get("FIXED", 0) == manifest["totals"]["fixed"], manifest["totals"]
    alarm = account.resolved.of_type("AWS::CloudWatch::Alarm")["FailedLoginAlarm"]["Properties"]
    (line,) = [line for line in account.summary_lines("cxone-etm-finalize")
               if line.get("RunId") == started["run"]["runId"] and alarm["MetricName"] in line]
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert line[alarm["MetricName"]] == failed and alarm["MetricName"] in [m["Name"] for m in directive["Metrics"]], line
    assert directive["Namespace"] == alarm["Namespace"]
    assert [{"Name": "Function", "Value": line["Function"]}] == alarm["Dimensions"] and ["Function"] in directive["Dimensions"]


def assert_seen_by_the_heartbeat(account: Account, alarm_name: str, run_id: str) -> None:
    """The template's alarm on a connection's runs committed (no sample of finalize's RunsPartial
    for the connection in its hours) counts this run: finalize's line for it carries the alarm's
    metric in its namespace, under its dimensions with their values."""
    alarm = account.resolved.of_type("AWS::CloudWatch::Alarm")[alarm_name]["Properties"]
    (line,) = [line for line in account.summary_lines("cxone-etm-finalize")
               if line.get("RunId") == run_id and alarm["MetricName"] in line]
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == alarm["Namespace"], directive
    assert alarm["MetricName"] in [m["Name"] for m in directive["Metrics"]], directive
    dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    assert sorted(dimensions) in [sorted(names) for names in directive["Dimensions"]], directive
    assert {name: line.get(name) for name in dimensions} == dimensions, line
    # Hours without a commit are missing data: read as breaching, else the alarm would go quiet.
    assert (alarm["Statistic"], alarm["TreatMissingData"], alarm["ComparisonOperator"], alarm["Threshold"]) == (
        "SampleCount", "breaching", "LessThanThreshold", 1), alarm


def test_a_schedule_in_another_connections_config_is_said_to_set_no_timer(account, emulator):
    # The stack's two schedules run only `sast` and `dast`: a config's own schedule, stored for
    # another connection, starts nothing on AWS, and `connection put` says so as it stores it.
    result = put_connection(account, emulator, "nightly", extra={"schedule": {"expression": "rate(1 day)", "timezone": "UTC", "start_date": "2026-12-01"}})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stored"] is True, result.stdout
    assert ("note: on AWS a config's schedule sets no timer" in result.stderr
            and "start `nightly` through the API" in result.stderr), result.stderr
    assert account.exists("connections/nightly/config.json")


def test_api_routes_start_show_test_and_refuse_a_second_run(account, emulator, sast):
    status, report = account.http("POST", "/connections/sast/test")
    assert status == 200 and report["passed"] is True, report
    status, started = account.http("POST", "/connections/sast/runs")
    assert status == 202, started
    status, refused = account.http("POST", "/connections/sast/runs")
    assert status == 409, refused
    execution = account.wait(started["executionArn"])
    assert execution["status"] == "SUCCEEDED", account.explain(execution)
    status, shown = account.http("GET", f"/connections/sast/runs/{started['run']['runId']}")
    assert status == 200 and shown["complete"] is True and shown["findings"] > 0, shown
    status, connection = account.http("GET", "/connections/sast")
    assert status == 200 and (connection["state"], connection["outcome"]) == ("Processed", "complete"), connection
    assert connection["lastCommittedRun"] == started["run"]["runId"], connection
    # The template's rate schedule, as the scheduled events carry it: the next run a day after
    # the last scheduled one began.
    began = datetime.datetime.fromisoformat(connection["lastScheduledRunAt"])
    assert datetime.datetime.fromisoformat(connection["nextRunAt"]) == began + datetime.timedelta(days=1), connection
    status, missing = account.http("GET", "/connections/sast/runs/20000101T000000Z-000000")
    assert status == 404, missing
    status, unknown = account.http("POST", "/connections/nobody/runs")
    assert status == 404, unknown


def test_starts_at_the_same_moment_make_one_run(account, emulator, sast):
    # Four API starts and the schedule's event reach the trigger at once, in function instances
    # started for them: exactly one takes the lock and starts an execution; the API's others
    # answer 409 and the schedule's is held (no failure: nothing for the failed-starts alarm;
    # the next tick is the retry). The run commits.
    trigger = account.function_named("cxone-etm-trigger")
    sfn = account.client("stepfunctions")
    executions = lambda: {e["executionArn"] for e in sfn.list_executions(
        stateMachineArn=account.machine_arn, maxResults=1000)["executions"]}
    before = executions()
    scheduled_event = json.dumps(account.scheduled_event()).encode()
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        api = [pool.submit(account.http, "POST", "/connections/sast/runs") for _ in range(4)]
        schedule = pool.submit(account.host.invoke_async, trigger.name, scheduled_event)
        answers = [a.result() for a in api]
        body, schedule_failed = schedule.result()
    assert all(status in (202, 409) for status, _ in answers), answers
    assert not schedule_failed and trigger.async_dropped == 0, body
    started = [answer for status, answer in answers if status == 202]
    tick = json.loads(body)
    if "held" in tick:
        assert "already running" in tick["held"] or "took the lock" in tick["held"], tick
    else:
        started.append(tick)
    assert len(started) == 1, (answers, body)
    assert executions() - before == {started[0]["executionArn"]}
    execution = account.wait(started[0]["executionArn"])
    assert execution["status"] == "SUCCEEDED", account.explain(execution)
    manifest = committed(account, started[0]["run"])
    assert manifest["complete"] is True, manifest["problems"]
    assert manifest["totals"]["findingsOut"] + manifest["totals"]["rejected"] == sast_total(emulator)


def test_a_connection_of_every_engine_commits_each_engine_and_reconciles_it(account, emulator):
    engines = ["sast", "sca", "kics", "containers"]
    result = put_connection(account, emulator, "engines", extra={"engines": engines})
    assert result.returncode == 0, result.stderr
    holds = emulator.get("/_emulator/stats")["expected"]["totals"]["by_engine"]
    manifests = []
    for _ in range(2):
        _, manifest = api_run(account, "engines")
        for engine in engines:
            totals = manifest["totalsByEngine"][engine]
            assert holds[engine] > 0 and totals["findingsOut"] + totals["rejected"] == holds[engine], (engine, totals)
        assert not manifest["totals"]["skippedByType"], manifest["totals"]["skippedByType"]
        by_line_engine = {}
        for finding in account.findings(manifest):
            by_line_engine[finding["engine"]] = by_line_engine.get(finding["engine"], 0) + 1
        assert set(by_line_engine) == set(engines), by_line_engine
        manifests.append(manifest)
    # The second run, on the same tenant, reconciles each engine: nothing new, reopened or closed
    # by absence.
    for engine in engines:
        lifecycle = manifests[1]["totalsByEngine"][engine]["lifecycle"]
        assert lifecycle.get("NEW", 0) == 0 and lifecycle.get("REOPENED", 0) == 0, (engine, lifecycle)
        assert lifecycle.get("FIXED", 0) == manifests[1]["totalsByEngine"][engine]["fixed"], (engine, lifecycle)


def test_a_large_scan_is_collected_in_parts_and_committed_whole(account, emulator):
    # Pages of 10 and parts of at most 20 results: the second run splits every project's scan of
    # 40 results into two parts, each a child execution of its own, joined by a transform.
    result = put_connection(account, emulator, "split", extra={"split_scans_above": 20},
                            vendor={"results_page_size": 10})
    assert result.returncode == 0, result.stderr
    manifests, work = [], []
    for _ in range(2):
        started, manifest = api_run(account, "split")
        assert manifest["totals"]["findingsOut"] + manifest["totals"]["rejected"] == sast_total(emulator)
        manifests.append(manifest)
        key = f"connections/split/runs/{started['run']['runId']}/plan/work.jsonl"
        body = account.client("s3").get_object(Bucket=account.bucket, Key=key)["Body"].read()
        work.append([json.loads(line) for line in body.splitlines()])
    assert all("part" not in item for group in work[0] for item in group["items"]), "the first run knows no size"
    split = [group for group in work[1] if any("part" in item for item in group["items"])]
    assert split and all(len(group["items"]) == 1 for group in split), "each part is a child of its own"
    parts = {}
    for group in split:
        (item,) = group["items"]
        parts.setdefault(item["item"], []).append((item["part"]["firstPage"], item["part"].get("pages")))
    assert all(sorted(ranges) == [(0, 2), (2, None)] for ranges in parts.values()), parts
    assert len(manifests[1]["items"]) == len(manifests[0]["items"]), "the parts are one asset each"
    assert_unchanged(manifests[1], manifests[0])
    assert sorted((f["item"], f["externalFindingId"]) for f in account.findings(manifests[1])) == sorted(
        (f["item"], f["externalFindingId"]) for f in account.findings(manifests[0]))


def test_a_process_killed_once_at_each_step_is_tried_again_and_the_run_commits_exactly(account, emulator, monkeypatch):
    # One run in which a process of each step dies (`Runtime.ExitError`) once, mid-write: the plan
    # just after it put the work list where the map reads it (its plan standing), a collect as it
    # writes a scan's third page, a transform as it writes an item's record (after its batch and
    # next ledger), finalize just after it wrote the manifest (before its commit marker). Each is tried once more in a new instance, and the
    # run commits exactly what a run without deaths committed. The collect goes on from its last
    # stored page: the run asks the vendor again for the scan's pages from the third on, not for
    # the two stored. (The dead attempt had asked for every page of the scan but the one past a
    # full last page: its pager reads up to the client's 8 connections ahead, so a scan of at most
    # 10 pages is all asked for by the time its third is stored. A retry starting over would ask
    # for every page again.)
    result = put_connection(account, emulator, "crashes", vendor={"results_page_size": 10})
    assert result.returncode == 0, result.stderr
    def results_requests() -> int:
        return emulator.get("/_emulator/stats")["traffic"]["requests"]["results"]

    before_clean = results_requests()
    _, clean = api_run(account, "crashes")
    assert clean["totals"]["findingsOut"] + clean["totals"]["rejected"] == sast_total(emulator)
    names = {step: account.function_named(f"cxone-etm-{binary}").name
             for step, binary in [("plan", "trigger"), ("collect", "collect"), ("transform", "transform"),
                                  ("finalize", "finalize")]}
    died_before = {step: sum(1 for e in account.host.functions[name].errors if e.get("errorType") == "Runtime.ExitError")
                   for step, name in names.items()}
    crashed, one_at_a_time = {}, threading.Lock()

    def crash_once(step: str, payload_holds: bytes, key: str) -> bool:
        with one_at_a_time:
            if step not in crashed and account.host.crash(names[step], payload_holds):
                crashed[step] = key
                return True
            return False

    def hook(key_name, put):
        parts = key_name.split("/")
        if parts[:3] != ["connections", "crashes", "runs"]:
            return put()
        run_id, rest = parts[3], parts[4:]
        if rest[:1] == ["raw"] and rest[2:] == ["2.json.zst"] and crash_once("collect", json.dumps(rest[1]).encode(), key_name):
            return S3_INTERNAL_ERROR
        if rest[:1] == ["etm"] and rest[2:] == ["transform.json"] and crash_once("transform", json.dumps(rest[1]).encode(), key_name):
            return S3_INTERNAL_ERROR
        answer = put()
        if rest == ["plan", "work.jsonl"]:
            crash_once("plan", b'"plan"', key_name)
        if rest == ["manifest.json"]:
            crash_once("finalize", json.dumps(run_id).encode(), key_name)
        return answer

    before_crashes = results_requests()
    on_put_object(monkeypatch, hook)
    try:
        started, manifest = api_run(account, "crashes")
    finally:
        monkeypatch.undo()
    assert sorted(crashed) == ["collect", "finalize", "plan", "transform"], crashed
    for step, name in names.items():
        died = sum(1 for e in account.host.functions[name].errors if e.get("errorType") == "Runtime.ExitError")
        assert died == died_before[step] + 1, (step, account.host.functions[name].errors[-3:])
    assert all(started["run"]["runId"] in key for key in crashed.values()), crashed
    assert_unchanged(manifest, clean)
    assert sorted((f["item"], f["externalFindingId"]) for f in account.findings(manifest)) == sorted(
        (f["item"], f["externalFindingId"]) for f in account.findings(clean))
    # The plan died after its plan stood (plan.json, before the work list's copy the map reads):
    # its retry went on with that plan without listing the tenant again, so one attempt's folder.
    plan_folder = f"connections/crashes/runs/{started['run']['runId']}/plan/"
    keys = [o["Key"][len(plan_folder):] for o in account.client("s3").list_objects_v2(
        Bucket=account.bucket, Prefix=plan_folder)["Contents"]]
    assert sorted(keys)[-1] == "work.jsonl" and len({k.split("/")[0] for k in keys if "/" in k}) == 1, keys
    collect_key = crashed["collect"]
    outcome = account.get_json(collect_key.rsplit("/", 1)[0] + "/collect.json")
    pages = outcome["pages"]
    assert 3 < pages <= 10, f"{collect_key}: {pages} pages"
    # A scan whose last page is full ends with the page after it, asked for once that last page
    # is in: not by the dead attempt.
    past_the_end = int(outcome["completeness"]["expected"] % 10 == 0)
    assert results_requests() - before_crashes == before_crashes - before_clean + (pages - 2 - past_the_end)


def test_an_item_that_keeps_failing_is_caught_and_closes_nothing(account, emulator, sast):
    previous = account.get_json("connections/sast/state.json")
    projects = emulator.get("/_emulator/stats")["expected"]["projects"]
    victim = next(p for p in projects if p.get("main_branch_sast_scan") and any(
        s["id"] == p["main_branch_sast_scan"] and s["by_type"].get("sast", 0) > 0 for s in p["scans"]))
    emulator.fault("results", {"server_error_rate": 1.0, "only_matching": victim["main_branch_sast_scan"]})
    try:
        started, execution = scheduled_run(account)
    finally:
        emulator.clear_faults()
    output = json.loads(execution["output"])
    assert output["complete"] is False, output
    # The execution succeeded, so the failed-runs alarm does not see it: finalize's summary line
    # counts the partial run in the metric the template's PartialRunsAlarm watches.
    alarm = account.resolved.of_type("AWS::CloudWatch::Alarm")["PartialRunsAlarm"]["Properties"]
    (line,) = [line for line in account.summary_lines("cxone-etm-finalize")
               if line.get("RunId") == started["run"]["runId"] and "RunsPartial" in line]
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert line["RunsPartial"] == 1 and alarm["MetricName"] in [m["Name"] for m in directive["Metrics"]], line
    assert directive["Namespace"] == alarm["Namespace"]
    assert [{"Name": "Function", "Value": line["Function"]}] == alarm["Dimensions"] and ["Function"] in directive["Dimensions"]
    manifest = committed(account, started["run"])
    (item,) = [i for i in manifest["items"] if i["vendorId"] == victim["id"]]
    assert item["status"] == "failed", item
    # The cause the state machine caught reaches the manifest (the transform records it for the
    # item its collect left without an outcome), not only that the collect did not finish.
    assert item["reason"].startswith("the group's collect failed (Retryable): "), item
    assert "503" in item["reason"] or "server error" in item["reason"], item
    assert item["carriedForward"] > 0, item
    # Nothing closed by absence: every FIXED finding is one the vendor reports fixed, and none is
    # the failed item's.
    assert manifest["totals"]["lifecycle"].get("FIXED", 0) == manifest["totals"]["fixed"], manifest["totals"]
    assert not [f for f in account.findings(manifest) if f["item"] == item["item"]]
    # Step Functions retried the item's group (Retry), then caught it (Catch → transform of the others).
    collect = account.function_named("cxone-etm-collect")
    assert sum(1 for e in collect.errors if e.get("errorType") == "Retryable") >= 4, collect.errors[-4:]
    # The next run sees the item again: it is complete, and nothing is new, fixed or reopened.
    started, execution = scheduled_run(account)
    assert json.loads(execution["output"])["complete"] is True
    assert [line["RunsPartial"] for line in account.summary_lines("cxone-etm-finalize")
            if line.get("RunId") == started["run"]["runId"] and "RunsPartial" in line] == [0]
    after = committed(account, started["run"])
    assert after["totals"]["lifecycle"].get("NEW", 0) == 0 and after["totals"]["lifecycle"].get("REOPENED", 0) == 0
    assert after["totals"]["lifecycle"].get("FIXED", 0) == after["totals"]["fixed"], after["totals"]
    assert previous["lastCommittedRun"] != account.get_json("connections/sast/state.json")["lastCommittedRun"]


def test_an_item_whose_transform_keeps_failing_is_caught_and_says_why(account, emulator, sast, monkeypatch):
    # Every batch object of one project's transform refused by S3 (500): the group's transform
    # fails Retryable, is retried, then caught; the template's TransformFailed records the caught
    # error as the item's reason, and finalize reports it, the item's findings carried.
    projects = emulator.get("/_emulator/stats")["expected"]["projects"]
    # A project whose id is its storage key (the tenant holds hostile ids too).
    victim = next(p for p in projects if p.get("main_branch_sast_scan") and re.fullmatch(r"[0-9a-f-]{36}", p["id"])
                  and any(s["id"] == p["main_branch_sast_scan"] and s["by_type"].get("sast", 0) > 0 for s in p["scans"]))

    def hook(key_name, put):
        parts = key_name.split("/")
        if parts[:3] == ["connections", "sast", "runs"] and parts[4:6] == ["etm", victim["id"]] \
                and parts[-1] != "transform.json":
            return S3_INTERNAL_ERROR
        return put()

    transform = account.function_named("cxone-etm-transform")
    failed_before = sum(1 for e in transform.errors if e.get("errorType") == "Retryable")
    on_put_object(monkeypatch, hook)
    try:
        started, execution = scheduled_run(account)
    finally:
        monkeypatch.undo()
    assert json.loads(execution["output"])["complete"] is False
    manifest = committed(account, started["run"])
    (item,) = [i for i in manifest["items"] if i["vendorId"] == victim["id"]]
    assert item["status"] == "failed", item
    # The cause the state machine caught, not only that the transform did not finish.
    assert item["reason"].startswith("transform failed: the group's transform failed (Retryable): "), item
    assert victim["id"] in item["reason"], item
    assert item["carriedForward"] > 0, item
    assert not [f for f in account.findings(manifest) if f["item"] == item["item"]]
    assert manifest["totals"]["lifecycle"].get("FIXED", 0) == manifest["totals"]["fixed"], manifest["totals"]
    # Retried by Step Functions, then caught (the reason above is TransformFailed's record).
    assert sum(1 for e in transform.errors if e.get("errorType") == "Retryable") - failed_before >= 4, transform.errors[-4:]
    # The next run transforms the item: complete, nothing new, fixed or reopened.
    started, execution = scheduled_run(account)
    assert json.loads(execution["output"])["complete"] is True
    after = committed(account, started["run"])
    assert after["totals"]["lifecycle"].get("NEW", 0) == 0 and after["totals"]["lifecycle"].get("REOPENED", 0) == 0
    assert after["totals"]["lifecycle"].get("FIXED", 0) == after["totals"]["fixed"], after["totals"]


@pytest.mark.parametrize("kind", ["sast", "dast"])
def test_a_vendor_that_answers_badly_in_every_way_closes_nothing_it_did_not_see(account, emulator, kind):
    # After a run with a vendor that answers well, one in which the results answer 429 and 503,
    # drop connections, cut bodies off halfway, and break one record of many pages (its id gone,
    # its severity a number) or (SAST, whose results mix engines) take its type away. Pages of 5
    # results (SAST) or 2 (DAST), so each kind of fault meets some of the run's 100 or more pages. The client and
    # the state machine retry what may be retried; a broken record is rejected with its reason,
    # and since it could be any of the item's findings, the item's absent findings are held open,
    # not closed. Every result is in exactly one place, nothing is FIXED but what the vendor says
    # is fixed, and the next run, the vendor well again, finds nothing new or reopened.
    # The client's waits shortened (its retries as many as by default), so the run takes seconds.
    retry = {"max_retries": 8, "base_delay_ms": 50, "max_delay_secs": 1, "max_total_wait_secs": 10}
    connection_id, endpoint, page_size = {"sast": ("faults", "results", "results_page_size"),
                                          "dast": ("dast-faults", "dast-results", "dast_page_size")}[kind]
    result = put_connection(account, emulator, connection_id, extra={"kind": kind},
                            vendor={page_size: 5 if kind == "sast" else 2, "retry": retry})
    assert result.returncode == 0, result.stderr
    _, before = api_run(account, connection_id)
    fired_before = emulator.get("/_emulator/stats")["traffic"]["faults_fired"]
    faults = {"rate_limit_rate": 0.15, "server_error_rate": 0.1, "reset_rate": 0.15, "truncate_rate": 0.15,
              "malformed_rate": 0.3, **({"untyped_rate": 0.15} if kind == "sast" else {})}
    emulator.fault(endpoint, faults)
    try:
        _, manifest = api_run(account, connection_id)
    finally:
        emulator.clear_faults()
    fired = emulator.get("/_emulator/stats")["traffic"]["faults_fired"]
    kinds = ["rate_limited", "server_errors", "resets", "truncated", "malformed"] + (["untyped"] if kind == "sast" else [])
    for fault in kinds:
        assert fired[fault].get(endpoint, 0) > fired_before[fault].get(endpoint, 0), (fault, fired)
    totals, lifecycle = manifest["totals"], manifest["totals"]["lifecycle"]
    expected = emulator.get("/_emulator/stats")["expected"]["totals"]
    # Every record the scans hold was read once, and is in exactly one place: a finding, a
    # rejection, or (SAST) another engine's: the results of a scan mix its engines.
    records = sum(expected["by_type"].values()) if kind == "sast" else expected["dast_results"]
    assert totals["recordsIn"] == records, (totals["recordsIn"], expected)
    for item in manifest["items"]:
        figures = item["figures"]
        placed = figures["findingsOut"] + figures["rejected"] + sum(figures["skippedByType"].values()) \
            + figures["skippedByFilter"] + figures["duplicates"] + figures["superseded"]
        assert placed == figures["recordsIn"] == item["recordsFetched"] == item["recordsExpected"], item
    rejected = [r for item in manifest["items"] for r in account.rejected(item)]
    assert len(rejected) == totals["rejected"], (len(rejected), totals["rejected"])
    untyped = sum(1 for r in rejected if "no `type`" in r["reason"])
    broken = sum(1 for r in rejected if "required value is missing" in r["reason"])
    assert broken > 0 and untyped + broken == len(rejected), [r["reason"] for r in rejected]
    if kind == "sast":
        # Each SAST result is a finding or rejected; a record whose type was taken away may have
        # been any engine's, and is rejected too.
        assert untyped > 0, [r["reason"] for r in rejected]
        total = sast_total(emulator)
        assert total <= totals["findingsOut"] + totals["rejected"] <= total + untyped, totals
    else:
        assert totals["findingsOut"] + totals["rejected"] == expected["dast_results"], totals
    assert lifecycle.get("NEW", 0) == 0 and lifecycle.get("REOPENED", 0) == 0, lifecycle
    # FIXED only where the vendor says fixed (a fixed finding rejected this time is held too).
    assert lifecycle.get("FIXED", 0) == totals["fixed"], (lifecycle, totals)
    assert totals["heldForRejectedRecords"] > 0, totals
    _, after = api_run(account, connection_id)
    assert_unchanged(after, before)


def test_a_project_a_broken_listing_leaves_out_is_never_closed_as_deleted(account, emulator):
    # A connection that closes the findings of deleted projects. In its second run the project
    # listing breaks one record (its id gone): that project is not in the work list, and the
    # listing is incomplete, so its absence says nothing. The plan (the trigger's role) writes
    # the listing's problem in the run's plan (plan.json), and finalize (its own role) reads it: the
    # project's ledger is carried, not closed, and no project is reported deleted. The run after,
    # the listing whole again, is unchanged from the first.
    result = put_connection(account, emulator, "deletions", extra={"close_deleted_items": True})
    assert result.returncode == 0, result.stderr
    _, first = api_run(account, "deletions")
    started, manifest = api_run_under_fault(account, emulator, "deletions", "projects", {"malformed_rate": 1.0})
    (missing,) = {i["item"] for i in first["items"]} - {i["item"] for i in manifest["items"]}
    assert manifest["complete"] is False and any(p.startswith("project record ") for p in manifest["problems"]), \
        manifest["problems"]
    assert manifest.get("deletedItems", []) == [], manifest["deletedItems"]
    carried = next(i for i in first["items"] if i["item"] == missing)
    assert manifest["carriedForward"] == carried["figures"]["findingsOut"] - carried["figures"]["fixed"] > 0, (
        manifest["carriedForward"], carried["figures"])
    lifecycle = manifest["totals"]["lifecycle"]
    assert lifecycle.get("FIXED", 0) == manifest["totals"]["fixed"], lifecycle
    assert account.exists(f"connections/deletions/runs/{started['run']['runId']}/ledger/{missing}.json.gz")
    _, after = api_run(account, "deletions")
    assert_unchanged(after, first)


def test_a_run_with_nothing_to_collect_skips_the_map_and_commits_empty(account, emulator):
    # Filters that take no project: the plan writes an empty work list, which the map is not given
    # (Step Functions' reading of a 0-byte JSONL object is not documented); finalize commits the
    # run, whole and empty, and the connection is free for its next run.
    result = put_connection(account, emulator, "nothing", extra={"filters": {"project_names": ["no-such-project-*"]}})
    assert result.returncode == 0, result.stderr
    started, manifest = api_run(account, "nothing")
    assert manifest["items"] == [] and manifest["totals"]["findingsOut"] == 0, manifest
    events = account.client("stepfunctions").get_execution_history(
        executionArn=started["executionArn"], maxResults=1000)["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")]
    assert entered == ["Plan", "AnyItems", "Finalize"], entered
    work_list = account.client("s3").get_object(
        Bucket=account.bucket, Key=f"connections/nothing/runs/{started['run']['runId']}/plan/work.jsonl")["Body"].read()
    assert work_list == b"", work_list
    api_run(account, "nothing")


def test_a_credential_that_loses_access_to_most_projects_closes_nothing(account, emulator):
    # A connection that closes the findings of deleted projects, on its own. Its credential is then
    # removed from the groups of all but the tenant's first 4 of 12 projects (emulator fault
    # `visible`): the API answers as it would for their deletion. More assets gone at once than
    # the connection's deletion_limit (by default 5, or 10%) read as access lost: finalize (its
    # own role) commits the run partial, naming the limit, reports nothing deleted and closes
    # nothing, and the partial-runs metric counts it. Access back, the run after is unchanged.
    result = put_connection(account, emulator, "access-loss", extra={"close_deleted_items": True})
    assert result.returncode == 0, result.stderr
    _, first = api_run(account, "access-loss")
    started, manifest = api_run_under_fault(account, emulator, "access-loss", "projects", {"visible": 4})
    assert len(manifest["items"]) == 4, [i["vendorId"] for i in manifest["items"]]
    gone = [i for i in first["items"] if i["figures"]["findingsOut"] > i["figures"]["fixed"]
            and i["item"] not in {m["item"] for m in manifest["items"]}]
    assert len(gone) > 5, gone
    said = f"the tenant no longer lists {len(gone)} assets whose findings run {first['runId']} left open"
    assert manifest["complete"] is False and any(
        p.startswith(said) and "deletion_limit.percent to 100" in p for p in manifest["problems"]), manifest["problems"]
    assert manifest.get("deletedItems", []) == [], manifest["deletedItems"]
    lifecycle = manifest["totals"]["lifecycle"]
    assert lifecycle.get("FIXED", 0) == manifest["totals"]["fixed"], lifecycle
    open_gone = sum(i["figures"]["findingsOut"] - i["figures"]["fixed"] for i in gone)
    assert manifest["carriedForward"] >= open_gone, (manifest["carriedForward"], open_gone)
    for item in gone:
        assert account.exists(f"connections/access-loss/runs/{started['run']['runId']}/ledger/{item['item']}.json.gz")
    assert [line["RunsPartial"] for line in account.summary_lines("cxone-etm-finalize")
            if line.get("RunId") == started["run"]["runId"] and "RunsPartial" in line] == [1]
    _, after = api_run(account, "access-loss")
    assert_unchanged(after, first)


def laptop_run(account: Account, emulator, connection_id: str, name: str, deployed: dict | None = None,
               succeeds: bool = True) -> subprocess.CompletedProcess:
    """`cxone-etm run` from an operator's laptop into the stack's bucket, for `connection_id`: the
    `deployed` config (a SAST config of the shipped map and scoring by default) with a name and a
    credential of its own (from the environment)."""
    config = {**(deployed or {"kind": "sast", "vendor": {
                  "custom_api_url": emulator.url, "custom_iam_url": emulator.line["iam_url"],
                  "tenant": emulator.line["tenant"], "allow_insecure_local": True}}),
              "id": connection_id, "name": name, "secret": "env:CX_LAPTOP_KEY"}
    path = account.work / f"{connection_id}.json"
    path.write_text(json.dumps(config))
    env = {**operator_env(account), "CX_LAPTOP_KEY": emulator.line["api_key"]}
    result = subprocess.run([str(BIN / "cxone-etm"), "run", "--store", f"s3://{account.bucket}/", "--config", str(path),
                             "--json"], env=env, capture_output=True, text=True)
    assert (result.returncode == 0) == succeeds, result.stderr
    return result


def test_a_local_run_against_the_bucket_leaves_the_deployed_config_alone(account, emulator, sast):
    # An operator runs the deployed `sast` connection from a laptop into the stack's bucket. With
    # the shipped map and scoring where the deployed config has its own, the run is refused before
    # it starts: it would become the scheduled runs' base, and each run after would send every
    # finding again with other severities and scores (or, for a map that names assets otherwise,
    # close them all and open them anew). With the deployed config, its own name and credential
    # (from the environment), the run commits, and the stored config, the one the functions run, is
    # left as it was. The next scheduled run still uses it (its custom scoring). Before,
    # `cxone-etm run` wrote its config over the stored one, and every scheduled run after failed on
    # its `env:` secret.
    stored = account.client("s3").get_object(Bucket=account.bucket, Key="connections/sast/config.json")["Body"].read()
    runs_before = account.keys("connections/sast/runs/")
    refused = laptop_run(account, emulator, "sast", "sast from a laptop", succeeds=False)
    assert "delivers otherwise than the deployed one at connections/sast/config.json (scoring, transform_maps)" in refused.stderr, \
        refused.stderr
    assert json.loads(refused.stdout)["error"].startswith("the config given delivers otherwise"), refused.stdout
    assert account.keys("connections/sast/runs/") == runs_before
    result = laptop_run(account, emulator, "sast", "sast from a laptop", deployed=json.loads(stored))
    assert "connections/sast/config.json is left as it is" in result.stderr, result.stderr
    after = account.client("s3").get_object(Bucket=account.bucket, Key="connections/sast/config.json")["Body"].read()
    assert after == stored
    # The run keeps the config it ran with.
    run_id = json.loads(result.stdout)["runId"]
    assert account.get_json(f"connections/sast/runs/{run_id}/config.json")["name"] == "sast from a laptop"
    started, _ = scheduled_run(account)
    manifest = committed(account, started["run"])
    assert manifest["complete"] is True, manifest["problems"]
    custom = next(row["qds"] for row in json.loads(stored)["scoring"]["rows"] if row["severity"] == "HIGH")
    high = [f for f in account.findings(manifest) if f.get("vendorSeverity") == "HIGH"]
    assert high and all(f["qds"] == custom for f in high), (custom, high[:2])


def test_a_local_run_of_a_connection_not_deployed_stores_no_config_in_the_bucket(account, emulator):
    # A laptop run into the bucket under an id the stack has no config for: it commits, says that
    # it stores no config there (and how one is stored), and stores none: the functions run only
    # a config `connection put` checked.
    result = laptop_run(account, emulator, "laptop-only", "laptop only")
    assert ("no config is stored at connections/laptop-only/config.json, and this run stores none there"
            in result.stderr), result.stderr
    assert not account.exists("connections/laptop-only/config.json")
    run_id = json.loads(result.stdout)["runId"]
    assert account.get_json(f"connections/laptop-only/runs/{run_id}/config.json")["id"] == "laptop-only"


def test_tokens_refused_to_warm_functions_are_replaced_and_the_run_commits_whole(account, emulator, sast):
    # A warm function keeps its connection, access token included, from one invocation to the
    # next, as Lambda keeps its instance. Every token the tenant gave is revoked after a run, and
    # in the next one tokens live 1 s (Checkmarx One's live 30 minutes; a large scan's pull and
    # a warm instance both outlast one): the instances that kept a token meet its refusal, replace
    # it, and the run commits exactly what the run before did.
    started, _ = scheduled_run(account)
    before = committed(account, started["run"])

    def refusals() -> int:
        return sum(path.read_text(errors="replace").count("access token refused; re-authenticating")
                   for path in account.work.glob("cxone-etm-*.log"))

    refused_before = refusals()
    urllib.request.urlopen(urllib.request.Request(f"{emulator.url}/_emulator/revoke-tokens", method="POST")).read()
    emulator.fault("token", {"expire_tokens_after_secs": 1})
    try:
        started, _ = scheduled_run(account)
    finally:
        emulator.clear_faults()
    assert refusals() > refused_before, "no function met a refused token"
    after = committed(account, started["run"])
    assert after["complete"] is True, after["problems"]
    assert after["totals"]["findingsOut"] + after["totals"]["rejected"] == sast_total(emulator)
    assert_unchanged(after, before)


def failed_item_left_alone(account: Account, run_id: str, item_key: str, manifest: dict, given_up: bool) -> None:
    """Of an item whose transform failed: only its record left under its `etm/` (finalize's
    `givenUp`, or the `failed` one TransformFailed wrote; either way an attempt still running
    commits nothing) and nothing of it sent; the next run is whole, with nothing new or reopened
    and nothing closed by absence."""
    base = f"connections/sast/runs/{run_id}"
    listed = account.client("s3").list_objects_v2(Bucket=account.bucket, Prefix=f"{base}/etm/{item_key}/")
    assert [o["Key"] for o in listed.get("Contents", [])] == [f"{base}/etm/{item_key}/transform.json"], listed
    record = account.get_json(f"{base}/etm/{item_key}/transform.json")
    if given_up:
        assert record.get("givenUp") is True, record
    else:
        assert record["failed"].startswith("the group's transform failed (Runtime.ExitError): "), record
    assert not [f for f in account.findings(manifest) if f["item"] == item_key]
    started, execution = scheduled_run(account)
    after = committed(account, started["run"])
    assert after["complete"] is True, after["problems"]
    lifecycle = after["totals"]["lifecycle"]
    assert lifecycle.get("NEW", 0) == 0 and lifecycle.get("REOPENED", 0) == 0, lifecycle
    assert lifecycle.get("FIXED", 0) == after["totals"]["fixed"], after["totals"]


def test_a_transform_that_dies_between_its_ledger_and_its_record_closes_nothing(account, emulator, sast, monkeypatch):
    # A transform's process dies (`Runtime.ExitError`) after it wrote an item's batch and next
    # ledger, at the moment it writes the item's transform record, and dies there again when it is
    # tried once more (a second death is not retried). The Catch's TransformFailed records the
    # death as the item's failure; finalize reports the item failed with it and deletes the batch
    # the dead transform wrote (its role may delete): nothing of it is sent or closed, and the next
    # run is whole, with nothing new or reopened. (The tenant does not change, so the dead
    # transform's ledger equals the one carried in its place: that it is not the run's is shown
    # by `a_ledger_left_by_a_transform_that_then_failed_is_not_the_runs`, shared/tests.)
    transform = account.function_named("cxone-etm-transform")
    crashed, one_at_a_time = [], threading.Lock()

    def hook(key_name, put):
        parts = key_name.split("/")
        is_record = len(parts) == 7 and parts[:3] == ["connections", "sast", "runs"] and parts[4] == "etm" \
            and parts[6] == "transform.json"
        with one_at_a_time:
            # An item the transform reconciled: its next ledger is written, its record not yet.
            item = (parts[3], parts[5]) if is_record else None
            reconciled = is_record and len(crashed) < 2 and all(c == item for c in crashed) and account.exists(
                f"connections/sast/runs/{parts[3]}/ledger/{parts[5]}.json.gz")
            if reconciled and account.host.crash(transform.name, json.dumps(parts[5]).encode()):
                crashed.append((parts[3], parts[5]))
                return S3_INTERNAL_ERROR
        return put()

    on_put_object(monkeypatch, hook)
    started, execution = scheduled_run(account)
    monkeypatch.undo()
    assert len(crashed) == 2 and crashed[0] == crashed[1], crashed
    (run_id, item_key) = crashed[0]
    assert run_id == started["run"]["runId"]
    assert sum(1 for e in transform.errors if e.get("errorType") == "Runtime.ExitError") >= 2, transform.errors[-3:]
    manifest = committed(account, started["run"])
    assert manifest["complete"] is False
    (item,) = [i for i in manifest["items"] if i["item"] == item_key]
    assert item["status"] == "failed", item
    assert item["reason"].startswith("transform failed: the group's transform failed (Runtime.ExitError): "), item
    assert item["carriedForward"] > 0 and not item["objects"], item
    assert manifest["totals"]["lifecycle"].get("FIXED", 0) == manifest["totals"]["fixed"], manifest["totals"]
    failed_item_left_alone(account, run_id, item_key, manifest, given_up=False)


def test_a_transform_that_overlaps_finalize_takes_back_what_it_wrote(account, emulator, sast, monkeypatch):
    # A transform's process dies twice as it records an item (as above), and so does the
    # TransformFailed that would record the deaths (twice: a second death is not retried), so
    # finalize finds no record and gives up on the item: it writes its `givenUp` record, then carries the item's
    # ledger. Just before that record, an attempt of the same transform that Step Functions no
    # longer waits for (one retried on a Lambda service error while it still ran) passes its
    # checks and writes its next ledger over the run's. When it records, it finds finalize's
    # record first: under the transform's own role, before finalize goes on, it puts the previous
    # run's ledger back and deletes its batch objects, and answers GivenUp. The run commits with the item carried, its
    # ledger the previous run's; the next run is whole, nothing new or reopened.
    transform = account.function_named("cxone-etm-transform")
    previous_run = account.get_json("connections/sast/state.json")["lastCommittedRun"]
    crashed, late, one_at_a_time = [], {}, threading.Lock()
    phase = {"at": "crashing"}
    late_ledger_written, given_up_written = threading.Event(), threading.Event()

    def late_attempt(run_id, item_key):
        key = f"connections/sast/runs/{run_id}/plan/work.jsonl"
        work_list = account.client("s3").get_object(Bucket=account.bucket, Key=key)["Body"].read()
        (group,) = [line for line in work_list.splitlines() if json.dumps(item_key).encode() in line]
        late["answer"] = account.host.invoke(transform.name, group)

    def hook(key_name, put):
        parts = key_name.split("/")
        in_run = len(parts) >= 6 and parts[:3] == ["connections", "sast", "runs"]
        is_record = in_run and len(parts) == 7 and parts[4] == "etm" and parts[6] == "transform.json"
        is_ledger = in_run and len(parts) == 6 and parts[4] == "ledger"
        with one_at_a_time:
            at = phase["at"]
            if at == "crashing" and is_record:
                item = (parts[3], parts[5])
                reconciled = len(crashed) < 4 and all(c == item for c in crashed) and account.exists(
                    f"connections/sast/runs/{parts[3]}/ledger/{parts[5]}.json.gz")
                if reconciled and account.host.crash(transform.name, json.dumps(parts[5]).encode()):
                    crashed.append(item)
                    phase["at"] = "crashing" if len(crashed) < 4 else "awaiting finalize"
                    return S3_INTERNAL_ERROR
                return put()
        target = crashed[-1] if len(crashed) == 4 else None
        of_target = target is not None and parts[3:4] == [target[0]] and (
            (is_record and parts[5] == target[1]) or (is_ledger and parts[5] == f"{target[1]}.json.gz"))
        if at == "awaiting finalize" and is_record and of_target:
            # Finalize's record that it gave up: the late attempt goes first, up to its ledger.
            with one_at_a_time:
                phase["at"] = "late attempt"
            late["thread"] = threading.Thread(target=late_attempt, args=target)
            late["thread"].start()
            assert late_ledger_written.wait(120), "the late attempt wrote no ledger"
            answer = put()
            given_up_written.set()
            # It takes back what it wrote before finalize goes on to delete and carry.
            late["thread"].join(180)
            return answer
        if at == "late attempt" and is_ledger and of_target and not late_ledger_written.is_set():
            answer = put()
            late_ledger_written.set()
            return answer
        if at == "late attempt" and is_record and of_target:
            # The late attempt's own record comes after finalize's.
            assert given_up_written.wait(120)
        return put()

    on_put_object(monkeypatch, hook)
    started, execution = scheduled_run(account)
    monkeypatch.undo()
    (run_id, item_key) = crashed[-1]
    assert run_id == started["run"]["runId"] and late_ledger_written.is_set() and given_up_written.is_set()
    body, failed = late["answer"]
    assert failed and b"finalize gave up waiting for its transform" in body, body
    manifest = committed(account, started["run"])
    (item,) = [i for i in manifest["items"] if i["item"] == item_key]
    assert item["status"] == "failed" and item["reason"] == "transform did not finish", item
    s3 = account.client("s3")
    ledger = lambda run: s3.get_object(Bucket=account.bucket, Key=f"connections/sast/runs/{run}/ledger/{item_key}.json.gz")["Body"].read()
    assert ledger(run_id) == ledger(previous_run), "the previous run's ledger is back"
    failed_item_left_alone(account, run_id, item_key, manifest, given_up=True)


@pytest.mark.parametrize("first_death", ["_COMMITTED", "commit claim"])
def test_a_finalize_that_dies_just_after_its_commit_leaves_the_run_committed(account, emulator, sast, monkeypatch, first_death):
    # Finalize's process dies (`Runtime.ExitError`) the moment its commit marker is written (or,
    # before it, its commit claim: the commit), before it marks the run Processed and releases the
    # lock; tried once more, it finds the marker (or the claim, and writes the marker from it) and
    # dies again as it writes the run record (a second death is not retried). The Catch's
    # `ReleaseRun` finds the marker and finishes what follows it: the run and the connection Processed, the crashed run the last
    # committed one, the lock released, the execution SUCCEEDED. Before, the execution FAILED and
    # the run and the connection said Processing until the next run. The next run reconciles
    # against it: nothing new or reopened.
    finalize = account.function_named("cxone-etm-finalize")
    crashed, one_at_a_time = [], threading.Lock()

    def hook(key_name, put):
        answer = put()
        parts = key_name.split("/")
        # The first attempt at its marker or claim, the second at the run record that follows.
        if len(crashed) == 0:
            dies_here = parts[:3] == ["connections", "sast", "commits"] if first_death == "commit claim" \
                else parts[-1] == "_COMMITTED"
        else:
            dies_here = len(crashed) == 1 and parts[2:3] == ["runs"] and parts[4:] == ["run.json"]
        # The one finalize call under way: the run's.
        with one_at_a_time:
            if dies_here and key_name.startswith("connections/sast/") \
                    and account.host.crash(finalize.name, b'"sast"'):
                crashed.append(key_name)
        return answer

    on_put_object(monkeypatch, hook)
    started = account.tick()
    execution = account.wait(started["executionArn"])
    monkeypatch.undo()
    run = started["run"]
    base = f"connections/sast/runs/{run['runId']}"
    assert crashed[1:] == [f"{base}/run.json"], crashed
    if first_death == "commit claim":
        assert crashed[0].startswith("connections/sast/commits/after-"), crashed
        assert account.get_json(crashed[0])["runId"] == run["runId"]
    else:
        assert crashed[0] == f"{base}/_COMMITTED", crashed
    assert sum(1 for e in finalize.errors if e.get("errorType") == "Runtime.ExitError") >= 2, finalize.errors[-3:]
    events = account.client("stepfunctions").get_execution_history(
        executionArn=execution["executionArn"], maxResults=1000)["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")]
    assert entered[-2:] == ["Finalize", "ReleaseRun"], entered
    finalize_tasks = [e for e in events if e["type"] == "TaskScheduled"
                      and finalize.name in e["taskScheduledEventDetails"]["parameters"]]
    assert len(finalize_tasks) == 3, "finalize, finalize again, ReleaseRun"
    assert execution["status"] == "SUCCEEDED", account.explain(execution)
    manifest = committed(account, run)
    assert manifest["complete"] is True, manifest["problems"]
    record = account.get_json(f"connections/sast/runs/{run['runId']}/run.json")
    assert record["state"] == "Processed", record
    status, connection = account.http("GET", "/connections/sast")
    assert status == 200 and connection["state"] == "Processed", connection
    assert connection["lastCommittedRun"] == run["runId"], connection
    assert not account.exists("connections/sast/lock")
    started, execution = scheduled_run(account)
    after = committed(account, started["run"])
    assert account.get_json(f"connections/sast/runs/{started['run']['runId']}/run.json")["previousRun"] == run["runId"]
    assert_unchanged(after, manifest)


def test_a_run_whose_every_item_is_refused_fails_commits_nothing_and_says_why(account, emulator, sast):
    before = account.get_json("connections/sast/state.json")
    emulator.fault("results", {"forbidden_rate": 1.0})
    try:
        started = account.tick()
        execution = account.wait(started["executionArn"])
    finally:
        emulator.clear_faults()
    # Finalize refuses to commit a run with nothing in it: the execution fails (the failed-runs
    # alarm's metric), the run and the connection are Failed with the reason.
    assert execution["status"] == "FAILED", account.explain(execution)
    run = started["run"]
    prefix = f"connections/sast/runs/{run['runId']}"
    assert not account.exists(f"{prefix}/_COMMITTED")
    assert account.get_json(f"{prefix}/manifest.json")["complete"] is False
    status, connection = account.http("GET", "/connections/sast")
    assert status == 200 and connection["state"] == "Failed", connection
    assert connection["reason"].startswith("nothing was committed: every item failed (") and "403" in connection["reason"], connection
    assert connection["lastCommittedRun"] == before["lastCommittedRun"], (connection, before)
    status, shown = account.http("GET", f"/connections/sast/runs/{run['runId']}")
    assert status == 200 and shown["run"]["state"] == "Failed", shown
    # The lock is free and the next run reconciles against the last committed one.
    started, execution = scheduled_run(account)
    after = committed(account, started["run"])
    assert after["totals"]["lifecycle"].get("NEW", 0) == 0, after["totals"]


def failed_and_released(account: Account, execution: dict, reason_starts: str, reason_holds: str) -> dict:
    """The execution FAILED with the run-wide step's error, the run marked Failed with the reason,
    the lock released: the next run starts at once and reconciles against the last committed one.
    Answers the connection's status as it was before that next run."""
    assert execution["status"] == "FAILED", account.explain(execution)
    events = account.client("stepfunctions").get_execution_history(
        executionArn=execution["executionArn"], reverseOrder=True, maxResults=20)["events"]
    failed = next(e for e in events if e["type"] == "ExecutionFailed")["executionFailedEventDetails"]
    assert "the run is marked Failed (unless it had committed) and its lock, if it still held it, released" in failed["cause"], failed
    assert not account.exists("connections/sast/lock")
    status, connection = account.http("GET", "/connections/sast")
    assert status == 200 and connection["state"] == "Failed", connection
    assert connection["reason"].startswith(reason_starts) and reason_holds in connection["reason"], connection
    started, _ = scheduled_run(account)
    after = committed(account, started["run"])
    assert after["totals"]["lifecycle"].get("NEW", 0) == 0, after["totals"]
    return connection


def test_a_finalize_that_fails_for_good_fails_the_run_and_releases_its_lock(account, emulator, sast):
    # The config the run began with (runs/<run>/config.json, which every step reads; a config a
    # user puts applies from the next run) is damaged at rest once the run has started: collect,
    # transform and finalize each read it, and finalize's error is fatal. Before finalize's Catch the
    # run stayed Processing and its lock held for the lease (6 h), every start refused meanwhile.
    s3 = account.client("s3")
    status, started = account.http("POST", "/connections/sast/runs")
    assert status == 202, started
    run = started["run"]
    # Once the plan has written the work list (the plan reads the config too).
    work_list = f"connections/sast/runs/{run['runId']}/plan/work.jsonl"
    deadline = time.time() + 300
    while not account.exists(work_list):
        assert time.time() < deadline, "the plan wrote no work list"
        time.sleep(0.05)
    s3.put_object(Bucket=account.bucket, Key=f"connections/sast/runs/{run['runId']}/config.json",
                  Body=b"{ not a config")
    execution = account.wait(started["executionArn"])
    assert not account.exists(f"connections/sast/runs/{run['runId']}/_COMMITTED")
    failed_and_released(account, execution, "finalize failed (Fatal): ", "config.json")


def test_the_api_answers_before_the_plan_and_a_plan_that_fails_releases_the_run(account, emulator, sast):
    # The tenant refuses the project listing. The API answers all the same: it starts the run and
    # calls no vendor (API Gateway waits at most 30 s; listing thousands of projects can take
    # longer), and the execution plans first. The plan fails for good; its Catch fails the run
    # and releases the lock.
    before = account.get_json("connections/sast/state.json")
    emulator.fault("projects", {"forbidden_rate": 1.0})
    try:
        status, started = account.http("POST", "/connections/sast/runs")
        assert status == 202 and "planned" not in started, started
        execution = account.wait(started["executionArn"])
    finally:
        emulator.clear_faults()
    events = account.client("stepfunctions").get_execution_history(
        executionArn=execution["executionArn"], maxResults=100)["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")]
    assert entered == ["Plan", "PlanFailed"], entered
    run = started["run"]
    assert not account.exists(f"connections/sast/runs/{run['runId']}/plan/work.jsonl")
    connection = failed_and_released(account, execution, "plan failed (Fatal): ", "403")
    assert connection["lastCommittedRun"] == before["lastCommittedRun"], (connection, before)


def test_a_plan_that_fails_once_is_retried_and_the_run_commits_whole(account, emulator, sast):
    # The project listing answers 503 until the plan's client has spent its attempts: the plan
    # fails Retryable, the state machine's Retry plans again (over what the first attempt wrote),
    # and the run commits whole.
    emulator.fault("projects", {"server_error_rate": 1.0, "max": 3})
    try:
        started, execution = scheduled_run(account)
    finally:
        emulator.clear_faults()
    events = account.client("stepfunctions").get_execution_history(
        executionArn=execution["executionArn"], maxResults=1000)["events"]
    failed = [e["taskFailedEventDetails"] for e in events if e["type"] == "TaskFailed"]
    assert len(failed) == 1 and failed[0]["error"] == "Retryable", failed
    assert "projects" in failed[0]["cause"] and "503" in failed[0]["cause"], failed
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if e["type"] == "TaskStateEntered"]
    assert entered[:1] == ["Plan"] and "PlanFailed" not in entered, entered
    manifest = committed(account, started["run"])
    assert manifest["complete"] is True, manifest["problems"]
    assert manifest["totals"]["findingsOut"] + manifest["totals"]["rejected"] == sast_total(emulator)


def test_a_start_whose_answer_is_lost_finds_its_execution_and_the_run_commits(account, emulator, sast):
    # The trigger reaches Step Functions through a network that loses every StartExecution's
    # answer. The execution started all the same: the trigger finds it by the run's execution name
    # (DescribeExecution, which its role allows) and answers 202 rather than fail a run under way.
    network = account.sfn_network
    lost_before, network.losing = network.lost, True
    began = time.monotonic()
    try:
        status, started = account.http("POST", "/connections/sast/runs")
    finally:
        network.losing = False
    answered_in = time.monotonic() - began
    assert network.lost > lost_before, "no StartExecution answer was lost"
    assert status == 202, started
    assert answered_in < 30, f"API Gateway gives up after 30 s; the trigger answered in {answered_in:.1f} s"
    executions = account.client("stepfunctions").list_executions(stateMachineArn=account.machine_arn)["executions"]
    assert sum(e["executionArn"] == started["executionArn"] for e in executions) == 1, executions
    execution = account.wait(started["executionArn"])
    assert execution["status"] == "SUCCEEDED", account.explain(execution)
    manifest = committed(account, started["run"])
    assert manifest["complete"] is True, manifest["problems"]
    status, connection = account.http("GET", "/connections/sast")
    assert status == 200 and connection["lastCommittedRun"] == started["run"]["runId"], connection
    assert connection["state"] == "Processed", connection


def test_a_stopped_execution_gives_its_lock_to_the_next_start(account, emulator, sast):
    # An operator stops a run's execution (StopExecution) while its items are collected: no Catch
    # runs then, so the run keeps its lock. The next start asks Step Functions about the holder's
    # execution (DescribeExecution and GetExecutionHistory, which the trigger's role allows), finds
    # it ABORTED with its last task (the plan) answered, takes the lock over and marks the stopped
    # run Failed. Before, every start was refused (409) until the
    # lock's lease ran out, 6 hours later.
    sfn = account.client("stepfunctions")
    emulator.fault("results", {"latency_ms": 2000})
    try:
        status, stopped = account.http("POST", "/connections/sast/runs")
        assert status == 202, stopped
        record_key = f"connections/sast/runs/{stopped['run']['runId']}/run.json"
        deadline = time.time() + 300
        # Once the plan's task has answered and the Map has begun.
        while not any(e["type"] in ("MapStateEntered", "MapRunStarted") for e in sfn.get_execution_history(
                executionArn=stopped["executionArn"], maxResults=1000)["events"]):
            assert time.time() < deadline, "the execution never entered its Map"
            time.sleep(0.05)
        sfn.stop_execution(executionArn=stopped["executionArn"], error="Operator", cause="stopped by hand")
        execution = account.wait(stopped["executionArn"])
        assert execution["status"] == "ABORTED", account.explain(execution)
        assert account.get_json("connections/sast/lock")["runId"] == stopped["run"]["runId"]
    finally:
        emulator.clear_faults()
    status, started = account.http("POST", "/connections/sast/runs")
    assert status == 202, started
    record = account.get_json(record_key)
    assert record["state"] == "Failed", record
    assert "its execution ended (ABORTED)" in record["reason"] and started["run"]["runId"] in record["reason"], record
    execution = account.wait(started["executionArn"])
    assert execution["status"] == "SUCCEEDED", account.explain(execution)
    manifest = committed(account, started["run"])
    assert manifest["complete"] is True, manifest["problems"]
    assert manifest["totals"]["findingsOut"] + manifest["totals"]["rejected"] == sast_total(emulator)
    status, connection = account.http("GET", "/connections/sast")
    assert status == 200 and connection["lastCommittedRun"] == started["run"]["runId"], connection


def test_a_trigger_that_dies_between_its_lock_and_its_start_frees_the_connection_once_it_cannot_start(
        account, emulator, sast, monkeypatch):
    # The schedule's trigger dies (`Runtime.ExitError`) just after it took the lock and wrote the
    # run record, before it started the execution: no execution and no Catch will ever release
    # that lock. A start while the trigger could still have been running (its lock is young) is
    # refused; once the lock is older than the longest invocation (16 minutes: the lock's time is
    # set back, as the clock would move), the next start finds no execution of the holder, takes
    # the lock over and marks the run Failed. Before, every start was refused for the lease, 6 hours.
    trigger = account.function_named("cxone-etm-trigger")
    crashed = []

    def hook(key_name, put):
        answer = put()
        parts = key_name.split("/")
        if len(parts) == 5 and parts[:3] == ["connections", "sast", "runs"] and parts[4] == "run.json" \
                and not crashed:
            # Named before the kill: the invocation answers as soon as its instance is killed.
            crashed.append(parts[3])
            if not account.host.crash(trigger.name, b'"sast"'):
                crashed.pop()
        return answer

    on_put_object(monkeypatch, hook)
    dropped = trigger.async_dropped
    body, failed = account.host.invoke_async(trigger.name, json.dumps(account.scheduled_event()).encode())
    monkeypatch.undo()
    assert failed and json.loads(body)["errorType"] == "Runtime.ExitError", body
    (dead,) = crashed
    # Not tried again (EventInvokeConfig): dropped, and Lambda counts it where the template's
    # failed-starts alarm looks, though the dead invocation wrote no summary line.
    assert trigger.async_dropped == dropped + 1
    alarm = account.resolved.of_type("AWS::CloudWatch::Alarm")["FailedStartsAlarm"]["Properties"]
    watched = {(q["MetricStat"]["Metric"]["Namespace"], q["MetricStat"]["Metric"]["MetricName"]): q["MetricStat"]
               for q in alarm["Metrics"] if "MetricStat" in q}
    assert watched[("AWS/Lambda", "AsyncEventsDropped")]["Metric"]["Dimensions"] == \
        [{"Name": "FunctionName", "Value": trigger.name}], alarm
    # A tick the scheduler could not hand to the trigger at all is Scheduler's to count, per group:
    # the stack's own, which both schedules are in.
    (group,) = {s["properties"]["GroupName"] for s in stack.schedule_inputs(account.resolved).values()}
    assert watched[("AWS/Scheduler", "InvocationDroppedCount")]["Metric"]["Dimensions"] == \
        [{"Name": "ScheduleGroup", "Value": group}], alarm
    sfn = account.client("stepfunctions")
    assert not [e for e in sfn.list_executions(stateMachineArn=account.machine_arn)["executions"] if dead in e["name"]]
    lock = account.get_json("connections/sast/lock")
    assert lock["runId"] == dead, lock
    status, refused = account.http("POST", "/connections/sast/runs")
    assert status == 409 and dead in json.dumps(refused), refused
    # A schedule's tick that starts no run runs no execution, so the failed-runs alarm cannot see
    # it: the trigger's summary line counts it in the metric the template's FailedStartsAlarm
    # watches (its namespace, name and dimension), and so does Lambda. One refused by design, as
    # here (a run holds the lock), is held: answered, counted by neither; one for a connection
    # with no config is a failed start, counted by both.
    failed_starts = lambda: sum(line.get("StartsFailed", 0) for line in account.summary_lines("cxone-etm-trigger"))
    before = failed_starts()
    body, failed = account.host.invoke_async(trigger.name, json.dumps(account.scheduled_event()).encode())
    assert not failed and dead in json.loads(body)["held"], body
    assert (failed_starts(), trigger.async_dropped) == (before, dropped + 1)
    body, failed = account.host.invoke_async(trigger.name, json.dumps({"connectionId": "unconfigured"}).encode())
    assert failed and "not configured" in json.loads(body)["errorMessage"], body
    assert (failed_starts(), trigger.async_dropped) == (before + 1, dropped + 2)
    (line,) = [line for line in account.summary_lines("cxone-etm-trigger") if line.get("StartsFailed") == 1][-1:]
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    own = watched[(directive["Namespace"], "StartsFailed")]["Metric"]
    assert "StartsFailed" in [m["Name"] for m in directive["Metrics"]]
    assert [{"Name": "Function", "Value": line["Function"]}] == own["Dimensions"] and ["Function"] in directive["Dimensions"]
    lock["acquiredAt"] = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=17)) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")
    account.client("s3").put_object(Bucket=account.bucket, Key="connections/sast/lock", Body=json.dumps(lock).encode())
    status, started = account.http("POST", "/connections/sast/runs")
    assert status == 202, started
    record = account.get_json(f"connections/sast/runs/{dead}/run.json")
    assert record["state"] == "Failed", record
    assert "the trigger that took its lock ended without starting its execution" in record["reason"] \
        and started["run"]["runId"] in record["reason"], record
    execution = account.wait(started["executionArn"])
    assert execution["status"] == "SUCCEEDED", account.explain(execution)
    manifest = committed(account, started["run"])
    assert manifest["complete"] is True, manifest["problems"]
    assert manifest["totals"]["findingsOut"] + manifest["totals"]["rejected"] == sast_total(emulator)


def test_a_wide_work_list_passes_the_map_within_limits(account, wide):
    result = put_connection(account, wide, "wide", secret=account.dast_secret_arn)
    assert result.returncode == 0, result.stderr
    event = {"connectionId": "wide"}
    collect, transform = account.function_named("cxone-etm-collect"), account.function_named("cxone-etm-transform")
    invoked = (collect.invocations, transform.invocations)
    finalize = account.function_named("cxone-etm-finalize")
    finalize_errors_before = len(finalize.errors)
    started = account.invoke_trigger(event)
    execution = account.wait(started["executionArn"], timeout=3600)
    assert execution["status"] == "SUCCEEDED", account.explain(execution)
    # The plan (the execution's first state) wrote the work list: the items go in groups, as many
    # as keep every child busy, at most 25 each: one child, one collect and one transform
    # invocation per group, not per item.
    runs = f"connections/wide/runs/{started['run']['runId']}"
    assert account.get_json(f"{runs}/run.json")["items"] == WIDE_ITEMS
    work = account.client("s3").get_object(Bucket=account.bucket, Key=f"{runs}/plan/work.jsonl")["Body"].read()
    groups = [json.loads(line) for line in work.splitlines() if line]
    per_group = min(25, -(-WIDE_ITEMS // 16))
    assert len(groups) == -(-WIDE_ITEMS // per_group) and sum(len(g["items"]) for g in groups) == WIDE_ITEMS
    assert (collect.invocations - invoked[0], transform.invocations - invoked[1]) == (len(groups),) * 2
    manifest = committed(account, started["run"])
    assert len(manifest["items"]) == WIDE_ITEMS
    assert manifest["totals"]["findingsOut"] + manifest["totals"]["rejected"] == sast_total(wide)
    # Every state's input and output stayed under the payload limit.
    sfn = account.client("stepfunctions")
    sizes, token = [], None
    while True:
        page = sfn.get_execution_history(executionArn=started["executionArn"], maxResults=1000, **({"nextToken": token} if token else {}))
        for event in page["events"]:
            for details in event.values():
                if isinstance(details, dict):
                    for field in ("input", "output"):
                        if isinstance(details.get(field), str):
                            sizes.append(len(details[field].encode()))
        token = page.get("nextToken")
        if not token:
            break
    assert max(sizes) < moto_models.STATE_PAYLOAD_LIMIT, max(sizes)
    # This run's finalize was neither cut off nor out of memory (earlier scenarios kill one on purpose).
    this_run = finalize.errors[finalize_errors_before:]
    assert not [e for e in this_run if e["errorType"].startswith(("Sandbox", "Runtime"))], this_run
    assert finalize.peak_rss_kib < finalize.memory_mb * 1024


def test_a_group_longer_than_its_invocations_goes_on_until_every_item_is_done(account, wide):
    """Lambda gives collect and transform 15 minutes an invocation; a group of items that take
    minutes each needs more invocations than the transient errors' few retries. The harness runs
    the two functions' clock 60 times fast (15 s an invocation: the first item, then too little
    for another), as a vendor 60 times slower would, and the run must still finish every item:
    each invocation that made progress fails OutOfTime and the next goes on at once."""
    result = put_connection(account, wide, "long-items", secret=account.dast_secret_arn,
                            extra={"filters": {"project_names": ["*-1??"]}})
    assert result.returncode == 0, result.stderr
    collect, transform = account.function_named("cxone-etm-collect"), account.function_named("cxone-etm-transform")
    errors_before = (len(collect.errors), len(transform.errors))
    collect.clock_rate = transform.clock_rate = 60
    try:
        started = account.invoke_trigger({"connectionId": "long-items"})
        execution = account.wait(started["executionArn"], timeout=1800)
    finally:
        collect.clock_rate = transform.clock_rate = 1
    assert execution["status"] == "SUCCEEDED", account.explain(execution)
    runs = f"connections/long-items/runs/{started['run']['runId']}"
    work = account.client("s3").get_object(Bucket=account.bucket, Key=f"{runs}/plan/work.jsonl")["Body"].read()
    groups = [json.loads(line) for line in work.splitlines() if line]
    items = sum(len(g["items"]) for g in groups)
    assert items == 100, items
    # More items in a group than the five invocations the transient retries allow (one and four
    # more) could finish, one an invocation.
    assert max(len(g["items"]) for g in groups) > 5, [len(g["items"]) for g in groups]
    manifest = committed(account, started["run"])
    assert manifest["complete"] is True, manifest["problems"]
    assert not [i for i in manifest["items"] if i["status"] not in ("complete", "no_scan")], manifest["items"]
    # One item an invocation: every invocation but a group's last ran out of time, and none failed otherwise.
    for function, before in zip((collect, transform), errors_before):
        types = [e.get("errorType") for e in function.errors[before:]]
        assert types == ["OutOfTime"] * (items - len(groups)), (function.name, types[:5], len(types))


def test_runs_that_share_a_reservation_wait_for_it_and_commit_whole(account, emulator, wide):
    """With ReserveConcurrency=true, collect and transform each run at most MaxConcurrency (16)
    invocations at once, and two connections' runs at once share them: Lambda refuses the
    invocations over the reservation (429, Lambda.TooManyRequestsException). Each refused child
    waits for a slot on the throttle retrier (a slot frees only when a running task ends), and
    both runs commit whole."""
    for connection_id, tenant, extra in (("long-items", wide, {"filters": {"project_names": ["*-1??"]}}),
                                         ("beside-long-items", emulator, None)):
        secret = account.dast_secret_arn if tenant is wide else None
        result = put_connection(account, tenant, connection_id, secret=secret, extra=extra)
        assert result.returncode == 0, result.stderr
    collect, transform = account.function_named("cxone-etm-collect"), account.function_named("cxone-etm-transform")
    before = {f.name: (f.throttled, len(f.errors)) for f in (collect, transform)}
    # Each of the 15 groups of 7 takes seconds: their slots stay taken while the other run's
    # children (one item each) start.
    wide.fault("results", {"latency_ms": 1000})
    try:
        account.update_stack(ReserveConcurrency="true")
        assert (collect.reserved, transform.reserved) == (16, 16), (collect.reserved, transform.reserved)
        started = [account.invoke_trigger({"connectionId": c}) for c in ("long-items", "beside-long-items")]
        executions = [account.wait(s["executionArn"], timeout=1800) for s in started]
    finally:
        wide.clear_faults()
        account.update_stack(ReserveConcurrency="false")
    for run, execution in zip(started, executions):
        assert execution["status"] == "SUCCEEDED", account.explain(execution)
        manifest = committed(account, run["run"])
        assert manifest["complete"] is True, manifest["problems"]
    assert collect.throttled > before[collect.name][0], "no invocation went over the reservation"
    # A refused invocation never reached the function: no error of its own.
    for function in (collect, transform):
        errors = function.errors[before[function.name][1]:]
        assert not errors, (function.name, errors[:3])


def test_the_harness_models_the_map_result_limit(account):
    """moto has no 256 KiB limit; the model must fail a Distributed Map whose children's results
    stay in its state past it, and pass the same map with a ResultWriter."""
    s3, sfn = account.client("s3"), account.client("stepfunctions")
    # Where the template's state machine role may read: a run's work lists.
    PROBE_ITEMS = "connections/probe/runs/probe/plan/items.json"
    items = [{"n": i, "pad": "x" * 100} for i in range(4000)]
    s3.put_object(Bucket=account.bucket, Key=PROBE_ITEMS, Body=json.dumps(items).encode())
    role = account.resolved.resources[account.machine_logical]["Properties"]["RoleArn"]

    def run(with_writer: bool) -> dict:
        state = {
            "Type": "Map", "MaxConcurrency": 50, "End": True,
            "ItemReader": {"Resource": "arn:aws:states:::s3:getObject", "ReaderConfig": {"InputType": "JSON"},
                           "Parameters": {"Bucket": account.bucket, "Key": PROBE_ITEMS}},
            "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                              "StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}},
            "ResultPath": None,
        }
        if with_writer:
            state["ResultWriter"] = {"Resource": "arn:aws:states:::s3:putObject",
                                     "Parameters": {"Bucket": account.bucket, "Prefix": "map-results"}}
        machine = sfn.create_state_machine(
            name=f"probe-{with_writer}", roleArn=role,
            definition=json.dumps({"StartAt": "Map", "States": {"Map": state}}),
        )["stateMachineArn"]
        execution = sfn.start_execution(stateMachineArn=machine, input="{}")["executionArn"]
        return account.wait(execution, timeout=300)

    failed = run(with_writer=False)
    assert failed["status"] == "FAILED", failed
    assert "DataLimitExceeded" in json.dumps(sfn.get_execution_history(executionArn=failed["executionArn"])["events"], default=str)
    assert moto_models.largest_map_result["bytes"] > moto_models.STATE_PAYLOAD_LIMIT
    assert run(with_writer=True)["status"] == "SUCCEEDED"


def test_the_templates_map_passes_ten_thousand_items_within_the_payload_limit(account):
    """The template's own Map state (reader, concurrency, tolerance, result writer, catch) over a
    work list of 10,000 items in groups of 25, each child standing in for collect and transform
    with a Pass state whose output (the whole group) is larger than transform's answer: the
    execution must not exceed the state payload limit. (The real functions run over a wide list
    in the test above.)"""
    s3, sfn = account.client("s3"), account.client("stepfunctions")
    definition = json.loads(account.definition)
    items_state = definition["States"]["ProcessItems"]
    items_state["ItemProcessor"]["States"] = {
        "Item": {"Type": "Pass", "End": True,
                 "Parameters": {"items.$": "$.items"}},
    }
    items_state["ItemProcessor"]["StartAt"] = "Item"
    definition["States"]["Finalize"] = {"Type": "Pass", "End": True}
    # The work list is written here, as the plan would write it.
    definition["States"]["Plan"] = {"Type": "Pass", "Result": {"childExecutions": 400}, "ResultPath": "$.planned",
                                    "Next": definition["States"]["Plan"]["Next"]}
    run = {"connectionId": "payload", "runId": "20261201T000000Z-000000"}
    base = f"connections/payload/runs/{run['runId']}"
    item = lambda n: {"run": run, "item": f"{n:036d}", "vendorId": f"{n:036d}", "record": {"name": "x" * 200}}
    lines = "".join(json.dumps({"items": [item(n) for n in range(g, g + 25)]}) + "\n" for g in range(0, 10_000, 25))
    s3.put_object(Bucket=account.bucket, Key=f"{base}/plan/work.jsonl", Body=lines.encode())
    role = account.resolved.resources[account.machine_logical]["Properties"]["RoleArn"]
    machine = sfn.create_state_machine(name="payload-probe", roleArn=role, definition=json.dumps(definition))["stateMachineArn"]
    started = {"run": run, "bucket": account.bucket, "workListKey": f"{base}/plan/work.jsonl", "maxConcurrency": 40}
    execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps(started))["executionArn"]
    finished = account.wait(execution, timeout=900)
    assert finished["status"] == "SUCCEEDED", account.explain(finished)
    assert len(finished["output"].encode()) < moto_models.STATE_PAYLOAD_LIMIT
