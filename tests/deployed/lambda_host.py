"""A local Lambda service for the real function binaries: the Invoke API
(`POST /2015-03-31/functions/<name or ARN>/invocations`) in front, the Runtime API behind.

Each function is configured from the resolved template: its environment, MemorySize and Timeout, and
the credentials of its own role. An invocation goes to an idle instance of the function, or starts a
new process (as Lambda scales out); an instance that overruns its Timeout is killed and the call
fails as Lambda's does (`Sandbox.Timedout`); an instance whose peak resident memory passes MemorySize
fails the call (`Runtime.OutOfMemory`) and is replaced; a test may kill the instance serving a call,
which then fails as a process that died (`Runtime.ExitError`). Peaks and invocation counts are kept
for the tests to assert on.

An asynchronous invocation (`invoke_async`, as EventBridge Scheduler invokes) that fails is tried
again up to the function's MaximumRetryAttempts (its EventInvokeConfig; Lambda's default 2) and then
dropped, counted as Lambda counts it in `AsyncEventsDropped`; here the attempts run at once, in the
caller's thread, without Lambda's minutes between them.

A function with reserved concurrency (`reserved`, the template's ReservedConcurrentExecutions) runs
at most that many invocations at once: one more is refused as Lambda refuses it (429,
`TooManyRequestsException`), which Step Functions names `Lambda.TooManyRequestsException`.

A test may give a function's invocations less time (`clock_rate`): each then has its Timeout
divided by the rate, in the deadline the function is told and before it is cut off, so that a
group outlasts its invocations without hours of vendor latency. The template's Timeout is not
changed, nor anything else (vendor timeouts, the run's deadlines, the functions' own floors: under
a minute left, a collect starts no other item and stores no other page).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto_models import free_port


@dataclass
class Function:
    name: str
    arn: str
    binary: str
    env: dict[str, str]
    memory_mb: int
    timeout_s: int
    reserved: int | None = None
    async_retries: int = 2
    async_dropped: int = 0
    clock_rate: float = 1.0
    in_flight: int = 0
    throttled: int = 0
    pending: queue.Queue = field(default_factory=queue.Queue)
    idle: int = 0
    instances: dict[str, subprocess.Popen] = field(default_factory=dict)
    invocations: int = 0
    errors: list[dict] = field(default_factory=list)
    peak_rss_kib: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Throttled(Exception):
    """An invocation over the function's reserved concurrency."""


@dataclass
class Call:
    request_id: str
    payload: bytes
    deadline: float
    done: threading.Event = field(default_factory=threading.Event)
    instance: str | None = None
    response: bytes | None = None
    error: dict | None = None


class LambdaHost:
    def __init__(self, log_dir):
        self.functions: dict[str, Function] = {}
        self.calls: dict[str, Call] = {}
        self.log_dir = log_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                host._runtime(self, "GET")

            def do_POST(self):
                if self.path.startswith("/2015-03-31/functions/"):
                    host._invoke(self)
                else:
                    host._runtime(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, function: Function) -> None:
        self.functions[function.name] = function

    def stop(self) -> None:
        for function in self.functions.values():
            for process in function.instances.values():
                process.kill()
        self.server.shutdown()

    # ------------------------------------------------------------------ Invoke API
    def _function(self, name_or_arn: str) -> Function | None:
        name = urllib.parse.unquote(name_or_arn)
        for function in self.functions.values():
            if name in (function.name, function.arn):
                return function
        return None

    def invoke(self, name_or_arn: str, payload: bytes) -> tuple[bytes, bool]:
        """(answer, failed) as the Invoke API gives them; `Throttled` over the reservation."""
        function = self._function(name_or_arn)
        if function is None:
            raise KeyError(name_or_arn)
        seconds = function.timeout_s / function.clock_rate
        call = Call(uuid.uuid4().hex, payload, time.time() + seconds)
        with function.lock:
            if function.reserved is not None and function.in_flight >= function.reserved:
                function.throttled += 1
                raise Throttled(function.name)
            function.in_flight += 1
        try:
            with function.lock:
                function.invocations += 1
                if function.idle == 0:
                    self._spawn(function)
                else:
                    function.idle -= 1
            self.calls[call.request_id] = call
            return self._await(function, call, seconds)
        finally:
            with function.lock:
                function.in_flight -= 1

    def invoke_async(self, name_or_arn: str, payload: bytes) -> tuple[bytes, bool]:
        """An event queued for the function (`InvocationType: Event`): attempts until one succeeds
        or the retries run out, then the event is dropped (`async_dropped`). The last attempt's
        (answer, failed), which Lambda keeps to itself (its caller gets 202)."""
        function = self._function(name_or_arn)
        if function is None:
            raise KeyError(name_or_arn)
        for _ in range(1 + function.async_retries):
            answer, failed = self.invoke(name_or_arn, payload)
            if not failed:
                return answer, False
        with function.lock:
            function.async_dropped += 1
        return answer, True

    def _await(self, function: Function, call: Call, seconds: float) -> tuple[bytes, bool]:
        function.pending.put(call)
        if not call.done.wait(seconds + 2):
            self._kill(function, call.instance)
            call.error = {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"Task timed out after {function.timeout_s:.2f} seconds",
            }
        self.calls.pop(call.request_id, None)
        if call.error is None and call.instance is not None:
            over = self._memory_check(function, call.instance)
            if over:
                call.error = over
        if call.error is not None:
            function.errors.append(call.error)
            return json.dumps(call.error).encode(), True
        return call.response or b"null", False

    def crash(self, name_or_arn: str, payload_holds: bytes) -> bool:
        """Kills the instance of the function serving the one call under way whose payload holds
        `payload_holds`, as a process that dies (Lambda answers `Runtime.ExitError`). Kills nothing
        when no call or several match; whether it killed."""
        function = self._function(name_or_arn)
        if function is None:
            raise KeyError(name_or_arn)
        # Under the function's lock, as an answer is taken: a call answered meanwhile is not killed.
        with function.lock:
            matching = [call for call in list(self.calls.values())
                        if call.instance in function.instances and payload_holds in call.payload
                        and not call.done.is_set()]
            if len(matching) != 1:
                return False
            call, = matching
            call.error = {"errorType": "Runtime.ExitError",
                          "errorMessage": f"RequestId: {call.request_id} Error: Runtime exited with error: signal: killed"}
            call.done.set()
        self._kill(function, call.instance)
        return True

    def _invoke(self, handler: BaseHTTPRequestHandler) -> None:
        name = handler.path.split("/")[3]
        length = int(handler.headers.get("content-length") or 0)
        payload = handler.rfile.read(length)
        try:
            body, failed = self.invoke(name, payload)
        except Throttled:
            body = json.dumps({"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded", "Type": "User",
                               "message": "Rate Exceeded."}).encode()
            handler.send_response(429)
            handler.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            handler.send_header("x-amzn-errortype", "TooManyRequestsException")
            handler.send_header("content-length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        except KeyError:
            body = json.dumps({"Type": "User", "message": f"Function not found: {name}"}).encode()
            handler.send_response(404)
            handler.send_header("x-amzn-errortype", "ResourceNotFoundException")
            handler.send_header("content-length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        handler.send_response(200)
        handler.send_header("content-type", "application/json")
        handler.send_header("x-amz-executed-version", "$LATEST")
        if failed:
            handler.send_header("x-amz-function-error", "Unhandled")
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    # ------------------------------------------------------------------ instances
    def _spawn(self, function: Function) -> None:
        instance = uuid.uuid4().hex[:8]
        env = {
            "PATH": os.environ.get("PATH", ""),
            **function.env,
            "AWS_LAMBDA_RUNTIME_API": f"{self.url}/rt/{function.name}/{instance}",
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": instance,
        }
        log = open(os.path.join(self.log_dir, f"{function.name}-{instance}.log"), "wb")
        function.instances[instance] = subprocess.Popen(
            [function.binary], env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def _kill(self, function: Function, instance: str | None) -> None:
        process = function.instances.pop(instance, None) if instance else None
        if process is not None:
            process.kill()
            process.wait()

    def _memory_check(self, function: Function, instance: str) -> dict | None:
        process = function.instances.get(instance)
        if process is None:
            return None
        try:
            status = open(f"/proc/{process.pid}/status").read()
        except OSError:
            return None
        peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        function.peak_rss_kib = max(function.peak_rss_kib, peak)
        if peak > function.memory_mb * 1024:
            self._kill(function, instance)
            with function.lock:
                function.idle = max(0, function.idle - 1)
            return {
                "errorType": "Runtime.OutOfMemory",
                "errorMessage": f"peak {peak // 1024} MiB over the function's {function.memory_mb} MB",
            }
        return None

    # ------------------------------------------------------------------ Runtime API
    def _runtime(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = handler.path.split("/")
        # /rt/<function>/<instance>/2018-06-01/runtime/...
        function = self.functions.get(parts[2]) if len(parts) > 6 else None
        if function is None:
            handler.send_error(404)
            return
        instance, tail = parts[3], parts[5:]
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        if method == "GET" and tail == ["runtime", "invocation", "next"]:
            call = function.pending.get()
            # A call that timed out before any instance took it is answered already: Lambda
            # runs it nowhere.
            while call.done.is_set() or call.request_id not in self.calls:
                call = function.pending.get()
            call.instance = instance
            handler.send_response(200)
            handler.send_header("lambda-runtime-aws-request-id", call.request_id)
            handler.send_header("lambda-runtime-deadline-ms", str(int(call.deadline * 1000)))
            handler.send_header("lambda-runtime-invoked-function-arn", function.arn)
            handler.send_header("lambda-runtime-trace-id", f"Root=1-{call.request_id[:8]}-{call.request_id[8:32]}")
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(call.payload)))
            handler.end_headers()
            handler.wfile.write(call.payload)
            return
        if method == "POST" and len(tail) == 4 and tail[:2] == ["runtime", "invocation"]:
            call = self.calls.get(tail[2])
            with function.lock:
                # A call already answered (its instance killed by `crash`) takes no answer.
                if call is not None and not call.done.is_set():
                    if tail[3] == "response":
                        call.response = body
                    else:
                        call.error = json.loads(body or b"{}")
                    function.idle += 1
                    call.done.set()
            handler.send_response(202)
            handler.send_header("content-length", "0")
            handler.end_headers()
            return
        if method == "POST" and tail[:2] == ["runtime", "init"]:
            handler.send_response(202)
            handler.send_header("content-length", "0")
            handler.end_headers()
            return
        handler.send_error(404)
