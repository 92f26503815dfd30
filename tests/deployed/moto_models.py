"""moto (pinned in scripts/deployed-test.sh), started in this process, with the AWS behaviours the
template relies on and moto lacks modelled here. Each model says what AWS does; none of them touches
the template under test.

1. Step Functions executes definitions (moto's own switch, `execute_state_machine`).
2. Distributed Map `ItemReader` with `ReaderConfig.InputType: JSONL`: AWS reads one JSON value per
   line; moto knows only CSV and JSON.
3. `arn:aws:states:::lambda:invoke`: moto would run the function in Docker; here the call goes to the
   local Lambda host (the real function binaries), and every call the interpreter makes (Lambda, the
   ItemReader's and ResultWriter's S3 calls) is signed with the state machine role's credentials,
   as Step Functions acts as its role.
4. S3 answers 403, not 404, for a key that does not exist when the caller may not `s3:ListBucket` on
   the bucket (a GET of a missing key leaks nothing only when listing is allowed).
5. `ToleratedFailurePercentage` is a number from 0 to 100 in AWS; moto's parser takes only a
   decimal literal (`100.0`), so an integer is read as the same number before it parses.
6. A Distributed Map without a ResultWriter returns its children's results in its state, which
   fails the execution (`States.DataLimitExceeded`) past 256 KiB; moto has no such limit.
7. IAM is enforced on every call once the harness has set up the account. moto matches S3 requests
   against resource ARNs; for Secrets Manager and Step Functions it checks every action against `*`,
   so the resource each call names (the secret, the state machine, the execution) is given here.
8. A PutObject that carries tags (`x-amz-tagging`) needs `s3:PutObjectTagging` on the key as well as
   `s3:PutObject` (AWS's PutObject reference: "you must have the s3:PutObjectTagging permission");
   moto asks for `PutObjectTagging` only of the `?tagging` request.
9. A Distributed Map child whose input (one item the ItemReader read) is over 256 KiB does not
   run: Step Functions limits an execution's input to 256 KiB ("Maximum input or output size for a
   task, state, or execution"), and the child counts as failed (`States.DataLimitExceeded`); moto
   runs it. The milder of AWS's two possible answers (the other fails the whole map run): a test
   that needs every child to run fails either way.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading

import boto3
from botocore.config import Config

from stack import ACCOUNT, REGION

_state = {"lambda_endpoint": None, "sfn_credentials": None, "moto_url": None}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start() -> str:
    """Starts moto on a free port with the models above; answers its URL."""
    port = free_port()
    os.environ["MOTO_PORT"] = str(port)
    from moto import settings
    from moto.core.config import default_user_config
    from moto.server import ThreadedMotoServer

    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    # One log line per request would cost more than the request.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # No authorization while the harness creates the account; `enforce_iam()` switches it on.
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    _model_jsonl_item_reader()
    _route_interpreter_calls()
    _model_missing_key_403()
    _model_tagged_put_needs_tagging_permission()
    _model_atomic_conditional_put()
    _name_resources_for_iam()
    _model_integer_tolerated_failure()
    _cache_module_list()
    _model_map_result_limit()
    _model_child_input_limit()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _state["moto_url"] = f"http://127.0.0.1:{port}"
    return _state["moto_url"]


def enforce_iam() -> None:
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0


def route_lambda_to(endpoint: str, sfn_credentials: dict) -> None:
    _state["lambda_endpoint"] = endpoint
    _state["sfn_credentials"] = sfn_credentials


def _model_jsonl_item_reader() -> None:
    import moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.item_reader_decl as decl
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval.resource_output_transformer.transformer_json import (
        ResourceOutputTransformerJson,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.reader_config import (
        input_type,
    )

    class Jsonl(ResourceOutputTransformerJson):
        def _eval_body(self, env) -> None:
            reader_config = env.stack.pop()
            text = env.stack.pop()
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
            env.stack.append(items[: reader_config["MaxItemsValue"]])

    original_init = input_type.InputType.__init__

    def init(self, input_type: str):
        if input_type == "JSONL":
            self.input_type_value = "JSONL"
        else:
            original_init(self, input_type)

    input_type.InputType.__init__ = init
    original_factory = decl.resource_output_transformer_for

    def factory(input_type):
        if input_type.input_type_value == "JSONL":
            return Jsonl()
        return original_factory(input_type)

    decl.resource_output_transformer_for = factory


_clients: dict = {}


def _interpreter_client(region: str, service: str, state_credentials=None):
    # One client per service: boto3 clients are thread-safe and costly to create, and the
    # interpreter asks for one per call.
    key = (service, region)
    if key not in _clients:
        _clients[key] = _new_interpreter_client(region, service)
    return _clients[key]


def _new_interpreter_client(region: str, service: str):
    credentials = _state["sfn_credentials"]
    endpoint = _state["lambda_endpoint"] if service == "lambda" else _state["moto_url"]
    return boto3.client(
        service,
        region_name=region or REGION,
        endpoint_url=endpoint,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        config=Config(
            parameter_validation=False,
            retries={"max_attempts": 0, "total_max_attempts": 1},
            connect_timeout=10,
            # A task waits for its function as long as the function's Timeout allows (900 s).
            read_timeout=960,
            s3={"addressing_style": "path"},
        ),
    )


def _route_interpreter_calls() -> None:
    import moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval.resource_eval_s3 as reader
    import moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval.resource_eval_s3 as writer
    import moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils as lambda_utils

    for module in (reader, writer, lambda_utils):
        module.boto_client_for = _interpreter_client


def _require_s3_permission(response, action: str, resource: str) -> None:
    """Raises S3's AccessDenied (403) when the caller of the request `response` is answering may not
    take `action` on `resource`, once the harness enforces IAM."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import S3IAMRequest

    if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
        return
    S3IAMRequest(
        account_id=response.current_account,
        method=response.method,
        path=response.raw_path,
        data=response.data,
        body=response.raw_body,
        headers=response.headers,
        action=action,
    ).check_action_permitted(resource)


def _model_missing_key_403() -> None:
    from moto.s3.exceptions import MissingKey
    from moto.s3.responses import S3Response

    original = S3Response._key_response_get

    def key_response_get(self, query, key_name):
        try:
            return original(self, query, key_name)
        except MissingKey:
            _require_s3_permission(self, "ListBucket", f"arn:aws:s3:::{self.bucket_name}")
            raise

    S3Response._key_response_get = key_response_get


def _model_tagged_put_needs_tagging_permission() -> None:
    from moto.s3.responses import S3Response

    original = S3Response._key_response_put

    def key_response_put(self, query, key_name):
        tagged = self.headers.get("x-amz-tagging") and "tagging" not in query and "uploadId" not in query
        if tagged:
            _require_s3_permission(self, "PutObjectTagging", f"arn:aws:s3:::{self.bucket_name}/{key_name}")
        return original(self, query, key_name)

    S3Response._key_response_put = key_response_put


def _model_atomic_conditional_put() -> None:
    """S3 checks a conditional PutObject (`If-None-Match`, `If-Match`) and writes it as one step;
    moto checks, then writes, on the request's own thread: two racing writers could both win."""
    from moto.s3.responses import S3Response

    original = S3Response._key_response_put
    one_at_a_time = threading.Lock()

    def key_response_put(self, query, key_name):
        if self.headers.get("If-None-Match") or self.headers.get("If-Match"):
            with one_at_a_time:
                return original(self, query, key_name)
        return original(self, query, key_name)

    S3Response._key_response_put = key_response_put


def _name_resources_for_iam() -> None:
    from moto.secretsmanager.responses import SecretsManagerResponse
    from moto.stepfunctions.responses import StepFunctionResponse

    def secret(self) -> str:
        secret_id = json.loads(self.body or "{}").get("SecretId", "*")
        if secret_id.startswith("arn:"):
            return secret_id
        return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret_id}"

    def machine(self) -> str:
        body = json.loads(self.body or "{}")
        return body.get("stateMachineArn") or body.get("executionArn") or "*"

    SecretsManagerResponse._determine_resource = secret
    StepFunctionResponse._determine_resource = machine


def _model_integer_tolerated_failure() -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    original = AmazonStateLanguageParser.parse

    def as_decimal(node):
        if isinstance(node, dict):
            return {
                k: float(v) if k == "ToleratedFailurePercentage" and isinstance(v, int) else as_decimal(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [as_decimal(v) for v in node]
        return node

    def parse(definition: str):
        return original(json.dumps(as_decimal(json.loads(definition))))

    AmazonStateLanguageParser.parse = staticmethod(parse)


def _cache_module_list() -> None:
    """moto's server lists its own package directory on every request to find the service; the
    list cannot change while it runs (a speed-up only: a 10,000-item run makes ~200,000 requests)."""
    from moto import backends

    modules = list(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules


STATE_PAYLOAD_LIMIT = 256 * 1024
# The largest result any Distributed Map of the run kept in its state (bytes), for the tests.
largest_map_result = {"bytes": 0}


def _model_map_result_limit() -> None:
    from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.state_map import StateMap

    original = StateMap._eval_execution

    def eval_execution(self, env) -> None:
        iteration = self.iteration_component
        original_eval = iteration.eval

        def measured(inner_env) -> None:
            original_eval(inner_env)
            if self.result_writer is None and inner_env.stack:
                size = len(json.dumps(inner_env.stack[-1], separators=(",", ":")).encode())
                largest_map_result["bytes"] = max(largest_map_result["bytes"], size)
                if size > STATE_PAYLOAD_LIMIT:
                    error = StatesErrorName(typ=StatesErrorNameType.StatesStatesDataLimitExceeded)
                    raise FailureEventException(
                        failure_event=FailureEvent(
                            env=inner_env,
                            error_name=error,
                            event_type=HistoryEventType.TaskFailed,
                            event_details=EventDetails(
                                mapRunFailedEventDetails=MapRunFailedEventDetails(
                                    error=error.error_name,
                                    cause=f"the map's result of {size} bytes exceeds the state payload limit of {STATE_PAYLOAD_LIMIT}",
                                )
                            ),
                        )
                    )

        iteration.eval = measured
        try:
            original(self, env)
        finally:
            del iteration.eval

    StateMap._eval_execution = eval_execution


# The children a Distributed Map did not run for their input's size, as (bytes, first 200 bytes).
oversized_children: list = []


def _model_child_input_limit() -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor.distributed_item_processor_worker import (
        DistributedItemProcessorWorker,
    )

    original = DistributedItemProcessorWorker._eval_job

    def eval_job(self, env, job) -> None:
        text = json.dumps(job.job_input, separators=(",", ":"))
        size = len(text.encode())
        if size <= STATE_PAYLOAD_LIMIT:
            return original(self, env, job)
        oversized_children.append((size, text[:200]))
        record = self._map_run_record
        for counter in (record.item_counter, record.execution_counter):
            counter.total.count()
            counter.failed.count()
        job.job_output = None

    DistributedItemProcessorWorker._eval_job = eval_job
