"""Checks that tie infra/template.yaml to the code: every crate under functions/ has a template
resource building its binary, the binary names are unique, every function is reached by the state
machine or an event source, and every function has sample events in events/. Then least privilege:
no wildcard action or resource on S3, Secrets Manager or KMS in any policy, wildcard resources only
for the log-delivery and X-Ray calls that have no resource-level permissions, and a bucket policy
that denies every request without TLS. The state machine's timeout ends a run inside its lock's
lease. With `--functions`, prints each function's logical id and
binary instead."""
import pathlib
import re
import sys

from cfnlint.decode import decode

root = pathlib.Path(__file__).resolve().parent.parent
template, matches = decode(str(root / "infra" / "template.yaml"))
assert template is not None, matches
resources = template["Resources"]

crates = {}
for manifest in sorted((root / "functions").glob("*/Cargo.toml")):
    name = re.search(r'^name = "([^"]+)"', manifest.read_text(), re.M).group(1)
    crates[name] = manifest.parent.name

functions = {
    logical: body for logical, body in resources.items() if body["Type"] == "AWS::Serverless::Function"
}
binaries = {}
for logical, body in functions.items():
    binary = body.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
    assert body.get("Metadata", {}).get("BuildMethod") == "rust-cargolambda", f"{logical} is not built with cargo-lambda"
    assert binary, f"{logical} names no binary"
    assert binary not in binaries, f"binary {binary} is built by {binaries[binary]} and {logical}"
    binaries[binary] = logical
    props = body["Properties"]
    assert props.get("Runtime", template["Globals"]["Function"]["Runtime"]) == "provided.al2023"
    assert template["Globals"]["Function"]["Architectures"] == ["arm64"]
    assert props["LoggingConfig"]["LogFormat"] == "JSON", f"{logical} does not log JSON"

if sys.argv[1:] == ["--functions"]:
    # For scripts/test.sh, which prebuilds and checks every function: "<logical id> <binary>" lines.
    for binary, logical in binaries.items():
        print(logical, binary)
    sys.exit(0)

passed = failed = 0


def check(condition, message):
    global passed, failed
    if condition:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {message}")


check(set(binaries) == set(crates), f"template binaries {sorted(binaries)} differ from crates {sorted(crates)}")

machine = next(body for body in resources.values() if body["Type"] == "AWS::Serverless::StateMachine")
substituted = str(machine["Properties"]["DefinitionSubstitutions"])
scheduled = str([body for body in resources.values() if body["Type"] == "AWS::Scheduler::Schedule"])
for binary, logical in binaries.items():
    events = functions[logical]["Properties"].get("Events", {})
    reached = logical in substituted or bool(events) or logical in scheduled
    check(reached, f"{logical} ({binary}) is reached by neither the state machine nor an event source")
    short = crates[binary]
    samples = list((root / "events").glob(f"{short}*.json"))
    check(bool(samples), f"{binary} has no sample event events/{short}*.json")

definition = machine["Properties"]["Definition"]
map_state = definition["States"]["ProcessItems"]
# Every ARN in the stack's own partition: Step Functions in China refuses arn:aws:states:::… tasks.
template_text = (root / "infra" / "template.yaml").read_text()
check("arn:aws:" not in template_text and machine["Properties"]["DefinitionSubstitutions"].get("Partition") == {"Ref": "AWS::Partition"},
      "an ARN names the aws partition, or the definition's ${Partition} is not the stack's AWS::Partition")
check(map_state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED", "the item map is not distributed")
# A substituted "${MaxConcurrency}" stays a JSON string, which Step Functions refuses: the value
# comes from the execution's input, set by the trigger from its MAX_CONCURRENCY.
check("MaxConcurrency" not in map_state and map_state.get("MaxConcurrencyPath") == "$.maxConcurrency",
      "the map's concurrency does not come from the execution input ($.maxConcurrency)")
trigger_env = functions["TriggerFunction"]["Properties"]["Environment"]["Variables"]
check(trigger_env.get("MAX_CONCURRENCY") == {"Ref": "MaxConcurrency"}, "the trigger does not get MAX_CONCURRENCY from the parameter")
writer = map_state.get("ResultWriter", {})
check(writer.get("Resource") == "arn:${Partition}:states:::s3:putObject",
      "the map keeps every child's result in its state (no ResultWriter): 10,000 items pass 256 KiB")
check(not any(k.endswith(".$") for k in writer.get("Parameters", {})),
      "the ResultWriter takes paths; keep it static (the bucket is known at deploy, and moto reads paths against the results)")
# Reserved concurrency is optional: an unconditional reservation fails the deploy on a new account.
# Where it is reserved, it is the fan-out: a reservation below MaxConcurrency throttles the run's
# own children, each of which waits out a slot that frees only when a task ends.
for logical, body in functions.items():
    reserved = body["Properties"].get("ReservedConcurrentExecutions")
    check(reserved is None
          or reserved == {"Fn::If": ["ReservesConcurrency", {"Ref": "MaxConcurrency"}, {"Ref": "AWS::NoValue"}]},
          f"{logical} reserves concurrency unconditionally, or other than MaxConcurrency ({reserved})")
for logical, body in resources.items():
    if body["Type"] == "AWS::Scheduler::Schedule":
        check("StartDate" not in body["Properties"],
              f"{logical} has a StartDate: Scheduler refuses one in the past, so a later stack update fails")
        check(body["Properties"].get("EndDate") == {"Fn::Sub": "${ScheduleEndDate}T23:59:59Z"},
              f"{logical} does not stop at ScheduleEndDate: a schedule would fire (and be refused) after its last day")
# The schedules' role is for the stack's own schedules: a schedule in another group of the account
# (another team's, or one made to run the trigger off its calendar) cannot take it.
trust = resources["SchedulerRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
check(len(trust) == 1 and trust[0]["Condition"] == {"StringEquals": {
          "aws:SourceAccount": {"Ref": "AWS::AccountId"},
          "aws:SourceArn": {"Fn::GetAtt": ["ScheduleGroup", "Arn"]}}},
      f"the scheduler role's trust is not held to the stack's own schedule group (aws:SourceArn): {trust}")
# A secret's ARN without the six characters Secrets Manager adds would find the secret but be
# denied it: IAM matches the full ARN against the grant.
for name in ("SastSecretArn", "DastSecretArn"):
    pattern = template["Parameters"][name]["AllowedPattern"]
    full = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cxone/sast-AbCdEf"
    check(re.fullmatch(pattern, full) and not re.fullmatch(pattern, full[:-7]),
          f"{name} must be a secret's full ARN, its six-character suffix included")
# The tenant is a path segment of the realm's URL: a dot segment would resolve away.
tenant = template["Parameters"]["Tenant"]["AllowedPattern"]
check(all(re.fullmatch(tenant, t) for t in ("acme", "acme-corp.eu", "a_b", ".a"))
      and not any(re.fullmatch(tenant, t) for t in ("", ".", "..", "a/b", "a b")),
      f"the Tenant parameter's pattern takes a dot segment or a slash, or refuses a tenant name: {tenant}")
# Every region name and alias the functions know (any case) and a region's URL deploy; an AWS
# region or a typo does not (it would deploy, and every tick would be refused).
region_source = (root / "shared/src/cxone/region.rs").read_text()
known_regions = re.findall(r'name: "([^"]+)"', region_source) + [
    alias for aliases in re.findall(r"aliases: &\[([^\]]*)\]", region_source)
    for alias in re.findall(r'"([^"]+)"', aliases)]
region = template["Parameters"]["VendorRegion"]["AllowedPattern"]
check(len(known_regions) >= 10
      and all(re.fullmatch(region, r) and re.fullmatch(region, r.lower()) for r in known_regions)
      and re.fullmatch(region, "https://eu.ast.checkmarx.net") and re.fullmatch(region, template["Parameters"]["VendorRegion"]["Default"])
      and not any(re.fullmatch(region, r) for r in ("", "eu-west-1", "EUROPE", "https://a/b", "http://eu.ast.checkmarx.net")),
      f"the VendorRegion parameter's pattern refuses a region the functions know, or takes one they refuse: {region} ({known_regions})")
# Scheduler invokes the trigger asynchronously: Lambda's own retries would repeat a refused or
# failed tick minutes later as a run of its own.
check(functions["TriggerFunction"]["Properties"].get("EventInvokeConfig", {}).get("MaximumRetryAttempts") == 0,
      "the trigger's asynchronous invocations (the schedules') are retried by Lambda; set EventInvokeConfig MaximumRetryAttempts 0")
check(map_state["Next"] == "Finalize" and map_state["Catch"][0]["Next"] == "Finalize", "finalize does not always run")
# The trigger answers before any vendor call (an HTTP API waits at most 30 s): the execution plans
# first, in the trigger's function, and a plan that fails for good releases the run.
plan_state = definition["States"].get(definition.get("StartAt"), {})
substitutions = machine["Properties"]["DefinitionSubstitutions"]
check(plan_state.get("Parameters", {}).get("FunctionName") == "${PlanArn}"
      and substitutions.get("PlanArn") == {"Fn::GetAtt": ["TriggerFunction", "Arn"]}
      and definition["States"].get(plan_state.get("Next"), {}).get("Default") == "ProcessItems",
      "the execution does not start with the plan (the trigger's function), then the item map")
# An empty work list is not handed to the map (Step Functions' reading of a 0-byte JSONL object is
# undocumented): the choice after the plan goes to Finalize on the plan's count of children.
any_items = definition["States"].get(plan_state.get("Next"), {})
check(any_items.get("Type") == "Choice"
      and any_items.get("Choices") == [{"Variable": "$.planned.childExecutions", "NumericEquals": 0, "Next": "Finalize"}]
      and plan_state.get("ResultSelector") == {"childExecutions.$": "$.Payload.childExecutions"},
      "a plan of no items is handed to the map instead of straight to Finalize")
check(plan_state.get("ResultPath") == "$.planned"
      and plan_state.get("Parameters", {}).get("Payload", {}).get("plan", {}).get("run.$") == "$.run",
      "the plan is not given the run, or its answer replaces the execution's input (the map reads its work list key there)")
plan_retried = [e for r in plan_state.get("Retry", []) for e in r.get("ErrorEquals", [])]
check("Retryable" in plan_retried and "Sandbox.Timedout" not in plan_retried,
      f"the plan is not retried on Retryable errors, or is retried after its Timeout (it starts over): {plan_retried}")
plan_catch = (plan_state.get("Catch") or [{}])[0]
plan_failed = definition["States"].get(plan_catch.get("Next"), {}).get("Parameters", {})
check(plan_catch.get("ErrorEquals") == ["States.ALL"]
      and plan_failed.get("FunctionName") == "${FinalizeArn}"
      and plan_failed.get("Payload", {}).get("failure.$") == plan_catch.get("ResultPath")
      and plan_failed.get("Payload", {}).get("failedStep") == "plan",
      "a plan that fails for good is not handed to finalize to fail the run and release its lock")
# A process that died or ran out of memory is tried once more in a new instance (every step may run
# again), and only once: a second death is caught as any failure.
# A handler's panic (lambda::PANICKED) is retried as a process that died.
panicked = re.search(r'pub const PANICKED: &str = "([^"]+)";', (root / "shared/src/lambda.rs").read_text())
check(panicked is not None, "shared/src/lambda.rs names no PANICKED error type")
CRASHES = {"Runtime.ExitError", "Runtime.OutOfMemory", "Lambda.Unknown", panicked.group(1) if panicked else "Panicked"}
lambda_tasks = {name: state for states in (definition["States"], map_state["ItemProcessor"]["States"])
                for name, state in states.items() if state.get("Resource") == "arn:${Partition}:states:::lambda:invoke"}
check(len(lambda_tasks) == 7, f"expected the seven Lambda tasks (plan, collect, transform and its record of a caught failure, finalize and the two releases): {sorted(lambda_tasks)}")
# A caught collect or transform hands its error to the transform under the name the group reads
# (WorkGroup's collectError and transformError).
child = map_state["ItemProcessor"]["States"]
documents_rs = (root / "shared/src/pipeline/documents.rs").read_text()
for state, path, then, field in (("Collect", "$.collectError", "Transform", "collect_error"),
                                 ("Transform", "$.transformError", "TransformFailed", "transform_error")):
    catch = child[state].get("Catch", [])
    check([c.get("ResultPath") for c in catch] == [path] and catch[0].get("Next") == then
          and f"pub {field}: Option<TaskFailure>" in documents_rs
          and child[then]["Parameters"].get("Payload.$") == "$",
          f"{state}'s caught error does not reach the transform as {path}: {catch}")
for name, state in lambda_tasks.items():
    crash_retries = [r for r in state.get("Retry", []) if CRASHES & set(r["ErrorEquals"])]
    check(len(crash_retries) == 1 and set(crash_retries[0]["ErrorEquals"]) == CRASHES
          and crash_retries[0].get("MaxAttempts") == 1,
          f"{name} does not retry a process that died exactly once ({sorted(CRASHES)}, MaxAttempts 1): {crash_retries}")
# A vendor that asks for a long wait (RateLimited, StepError::error_type) is waited out in
# minutes by every Lambda task, never in the transient errors' seconds: every wait at least the
# client's default retry budget (what it would have waited itself), so no jitter (full jitter
# draws waits from zero).
error_rs = (root / "shared/src/pipeline/error.rs").read_text()
client_budget = int(re.search(r"max_total_wait_secs: (\d+),", (root / "shared/src/cxone/config.rs").read_text()).group(1))
waits = {name: next((r for r in state.get("Retry", []) if "RateLimited" in r["ErrorEquals"]), None)
         for name, state in lambda_tasks.items()}
check('pub const RATE_LIMITED: &str = "RateLimited";' in error_rs
      and all(w and w["ErrorEquals"] == ["RateLimited"] and w["IntervalSeconds"] >= client_budget
              and w.get("JitterStrategy", "NONE") == "NONE" and w["MaxAttempts"] >= 3
              for w in waits.values()),
      f"a Lambda task does not wait out RateLimited for at least the client's budget ({client_budget} s) each attempt: {waits}")
# A throttled invocation waits for a running task to end (up to 15 minutes): it has a retrier of
# its own, first, long enough to wait that out on average (full jitter draws each wait between
# zero and its ceiling: half the ceilings' sum), and uses up no other retrier's attempts.
THROTTLED = "Lambda.TooManyRequestsException"
for name, state in lambda_tasks.items():
    retries = state.get("Retry", [])
    throttled = [r for r in retries if THROTTLED in r["ErrorEquals"]]
    waits = sum(min(r.get("IntervalSeconds", 1) * r.get("BackoffRate", 2) ** n, r.get("MaxDelaySeconds", 10**9))
                for r in throttled for n in range(r.get("MaxAttempts", 3)))
    check(len(throttled) == 1 and retries[0] is throttled[0] and throttled[0]["ErrorEquals"] == [THROTTLED]
          and waits / 2 >= 1800,
          f"{name}: {THROTTLED} is not retried first and alone for long enough to wait out a 15-minute task "
          f"(on average {waits / 2:.0f} s with full jitter, twice a task's 15 minutes wanted): {retries}")
# A group whose invocation's time ran short after progress (OutOfTime) goes on as often as it
# needs: a retrier of its own with at least an attempt for every item of the largest group, which
# uses up none of the transient errors' few attempts.
plan_source = (root / "shared" / "src" / "pipeline" / "plan.rs").read_text()
max_items = int(re.search(r"MAX_ITEMS_PER_GROUP: usize = (\d+);", plan_source).group(1))
for name in ("Collect", "Transform"):
    retries = map_state["ItemProcessor"]["States"][name].get("Retry", [])
    out_of_time = [r for r in retries if "OutOfTime" in r["ErrorEquals"]]
    check(len(out_of_time) == 1 and out_of_time[0]["ErrorEquals"] == ["OutOfTime"]
          and out_of_time[0].get("MaxAttempts", 3) >= max_items,
          f"{name}: OutOfTime is not retried alone at least {max_items} times (one item an invocation "
          f"finishes a group of {max_items}): {retries}")
# Children that fail together retry apart; RateLimited's waits are the vendor's (above).
for state in map_state["ItemProcessor"]["States"].values():
    for retry in state.get("Retry", []):
        check(retry.get("JitterStrategy") == "FULL" or retry["ErrorEquals"] == ["RateLimited"],
              f"a retry without full jitter: {retry}")
        check("States.ALL" not in retry["ErrorEquals"] and "Fatal" not in retry["ErrorEquals"], "a retry on non-retryable errors")



def as_list(value):
    """A policy field as a list, with both branches of an Fn::If."""
    if isinstance(value, dict) and "Fn::If" in value:
        return [v for branch in value["Fn::If"][1:] for v in as_list(branch)]
    return value if isinstance(value, list) else [value]


def policy_statements():
    """(resource, statement) for every inline policy statement in the template."""
    for logical, body in resources.items():
        props = body.get("Properties", {})
        for policy in props.get("Policies", []) if isinstance(props.get("Policies"), list) else []:
            document = policy.get("PolicyDocument", policy) if isinstance(policy, dict) else {}
            for statement in document.get("Statement", []):
                yield logical, statement


NO_RESOURCE_LEVEL = ("logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
                     "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy",
                     "logs:DescribeResourcePolicies", "logs:DescribeLogGroups", "xray:")
SENSITIVE = ("s3:", "secretsmanager:", "kms:")
# Every grant is an inline statement the walk reads: a SAM policy template (`S3CrudPolicy`), a
# managed policy, a role given to a function, or a policy or connector resource would grant
# outside what the checks below see.
for logical, body in resources.items():
    props = body.get("Properties", {})
    policies = props.get("Policies")
    if policies is not None:
        check(isinstance(policies, list) and all(
                  isinstance(p, dict) and isinstance(p.get("PolicyDocument", p), dict)
                  and isinstance(p.get("PolicyDocument", p).get("Statement"), list)
                  for p in policies),
              f"{logical}: a Policies entry that is not an inline statement document grants outside the checks")
    check("ManagedPolicyArns" not in props, f"{logical}: ManagedPolicyArns grant outside the checks")
    check(not (body["Type"].startswith("AWS::Serverless::") and "Role" in props),
          f"{logical}: a role of its own is granted outside the checks")
    check(body["Type"] not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::Serverless::Connector"),
          f"{logical}: a {body['Type']} grants outside the checks")
    check("Connectors" not in body, f"{logical}: SAM Connectors grant outside the checks")
    check(not (body["Type"] in ("AWS::Lambda::Function", "AWS::StepFunctions::StateMachine") and "Role" in props
               or body["Type"] == "AWS::StepFunctions::StateMachine" and "RoleArn" in props),
          f"{logical}: a role of its own is granted outside the checks")
globals_function = template.get("Globals", {}).get("Function", {})
check(not {"Policies", "Role"} & set(globals_function), "Globals grant every function outside the checks")
statements = list(policy_statements())
check(len(statements) >= 10, f"found only {len(statements)} policy statements; the walk missed some")
for logical, statement in statements:
    if statement.get("Effect") != "Allow":
        continue
    actions = [a for a in as_list(statement.get("Action", [])) if isinstance(a, str)]
    targets = as_list(statement.get("Resource", []))
    for action in actions:
        check("*" not in action, f"{logical}: wildcard action {action}")
        if action.lower().startswith(SENSITIVE):
            for target in targets:
                check(target != "*" and not (isinstance(target, str) and target.endswith(":*")),
                      f"{logical}: {action} on wildcard resource {target}")
    if "*" in targets:
        for action in actions:
            check(action.startswith(NO_RESOURCE_LEVEL),
                  f"{logical}: {action} on Resource '*' although it supports resource-level permissions")

# moto matches only S3 requests faithfully against resource ARNs; the other services each function
# calls are checked here: the action granted on exactly the resource the code names.
def grants(logical, action):
    return [as_list(st.get("Resource", [])) for owner, st in statements
            if owner == logical and st.get("Effect") == "Allow" and action in as_list(st.get("Action", []))]

# A schedule without a StartDate fires at once: it must wait for the state machine, which the
# trigger names by ARN (no Ref to order them).
for logical, body in resources.items():
    if body["Type"] == "AWS::Scheduler::Schedule":
        check("PipelineStateMachine" in as_list(body.get("DependsOn", [])),
              f"{logical} may fire before the state machine exists (DependsOn: PipelineStateMachine)")

secret_targets = [{"Ref": "SastSecretArn"}, {"Ref": "DastSecretArn"}]
# Transform and finalize call no vendor and read no credential (lambda::transform_task,
# finalize_task); the others do.
for logical in functions:
    granted = [r for rs in grants(logical, "secretsmanager:GetSecretValue") for r in rs]
    if logical in ("TransformFunction", "FinalizeFunction"):
        check(not granted, f"{logical} reads no credential but may read secrets: {granted}")
        continue
    check(granted and all(r in secret_targets for r in granted),
          f"{logical} loads connections (the vendor credential) but may not read exactly their secrets: {granted}")
# Collect writes only under its items' raw/ folders; the state machine reads only work lists.
raw_only = [{"Fn::Sub": "${DataBucket.Arn}/connections/*/runs/*/raw/*"}]
check(grants("CollectFunction", "s3:PutObject") == [raw_only],
      f"collect may write outside its items' raw/ folders: {grants('CollectFunction', 's3:PutObject')}")
# What each function writes and deletes, pinned, so a widening shows (the deployed-shape test
# proves them sufficient: moto enforces them there).
def run_folders(*names):
    return [{"Fn::Sub": f"${{DataBucket.Arn}}/connections/*/runs/*/{name}/*"} for name in names]
lock = {"Fn::Sub": "${DataBucket.Arn}/connections/*/lock"}
pinned = {
    ("TransformFunction", "s3:PutObject"): [run_folders("etm", "ledger", "raw")],
    ("TransformFunction", "s3:DeleteObject"): [run_folders("etm", "ledger")],
    ("TriggerFunction", "s3:DeleteObject"): [[lock, *run_folders("plan")]],
    ("FinalizeFunction", "s3:DeleteObject"): [[lock, *run_folders("etm", "ledger")]],
    ("FinalizeFunction", "s3:PutObject"): [[
        *[{"Fn::Sub": f"${{DataBucket.Arn}}/connections/*/{key}"} for key in ("state.json", "commits/*")],
        *[{"Fn::Sub": f"${{DataBucket.Arn}}/connections/*/runs/*/{key}"} for key in ("run.json", "manifest.json", "_COMMITTED")],
        *run_folders("etm", "ledger")]],
    ("CollectFunction", "s3:DeleteObject"): [],
}
for (logical, action), expected in pinned.items():
    check(grants(logical, action) == expected,
          f"{logical}'s {action} is not on exactly {expected}: {grants(logical, action)}")
check(grants("PipelineStateMachine", "s3:GetObject") == [[{"Fn::Sub": "${DataBucket.Arn}/connections/*/runs/*/plan/*"}],
                                                         [{"Fn::Sub": "${DataBucket.Arn}/map-results/*"}]],
      f"the state machine may read more than the runs' work lists (and its map results): {grants('PipelineStateMachine', 's3:GetObject')}")
machine_logs = resources["StateMachineLogs"]["Properties"].get("LogGroupName", {})
check(str(machine_logs.get("Fn::Sub", "") if isinstance(machine_logs, dict) else machine_logs).startswith("/aws/vendedlogs/"),
      "the state machine's log group is not named under /aws/vendedlogs/: each delivery then takes room in the account's 5,120-character Logs resource policy")
# The trigger names the state machine by its ARN built from its name (the state machine invokes
# the trigger for its plan: a Ref both ways would be a circular dependency).
machine_name = resources["PipelineStateMachine"]["Properties"].get("Name", {}).get("Fn::Sub")
machine_arn = {"Fn::Sub": f"arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:stateMachine:{machine_name}"}
check(machine_name is not None and grants("TriggerFunction", "states:StartExecution") == [[machine_arn]],
      f"the trigger may not start exactly the pipeline state machine ({machine_arn}): {grants('TriggerFunction', 'states:StartExecution')}")
execution_arns = {"Fn::Sub": f"arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:execution:{machine_name}:*"}
check(grants("TriggerFunction", "states:DescribeExecution") == [[execution_arns]],
      f"the trigger may not look up exactly the pipeline's executions ({execution_arns}), as it does when a start's answer is lost or a run holds the lock: {grants('TriggerFunction', 'states:DescribeExecution')}")
check(grants("TriggerFunction", "states:GetExecutionHistory") == [[execution_arns]],
      f"the trigger may not read exactly the pipeline's executions' histories ({execution_arns}), as it does for the ended run holding the lock: {grants('TriggerFunction', 'states:GetExecutionHistory')}")
check(trigger_env.get("STATE_MACHINE_ARN") == machine_arn,
      f"the trigger's STATE_MACHINE_ARN is not the pipeline state machine's ARN ({machine_arn}): {trigger_env.get('STATE_MACHINE_ARN')}")
invoked = [r for rs in grants("PipelineStateMachine", "lambda:InvokeFunction") for r in rs]
check(sorted(str(r) for r in invoked) == sorted(str({"Fn::GetAtt": [f, "Arn"]}) for f in ("TriggerFunction", "CollectFunction", "TransformFunction", "FinalizeFunction")),
      f"the state machine may not invoke exactly the trigger (its plan), collect, transform and finalize: {invoked}")

# A run's lock lease (shared/src/pipeline/runner.rs), taken by the trigger before it starts the
# execution, must outlast the trigger, the execution and a finalize still running when the
# execution stops: else another run can take the lock over and both commit.
lease_source = (root / "shared" / "src" / "pipeline" / "runner.rs").read_text()
lease = re.search(r"LOCK_LEASE: Duration = Duration::from_secs\(([\d\s*]+)\)", lease_source)
check(lease is not None, "pipeline::LOCK_LEASE is not a Duration::from_secs of whole seconds")
if lease:
    lease_secs = eval(lease.group(1))  # digits and `*` only (the pattern above)
    machine = resources["PipelineStateMachine"]["Properties"]["Definition"]
    execution_timeout = machine.get("TimeoutSeconds")
    finalize_timeout = functions["FinalizeFunction"]["Properties"]["Timeout"]
    trigger_timeout = functions["TriggerFunction"]["Properties"]["Timeout"]
    check(isinstance(execution_timeout, int)
          and trigger_timeout + execution_timeout + finalize_timeout < lease_secs,
          f"the trigger's Timeout ({trigger_timeout}), the state machine's TimeoutSeconds ({execution_timeout}) "
          f"and finalize's Timeout ({finalize_timeout}) must add up to less than the lock lease ({lease_secs} s)")

# The run's deadlines for starting items (shared/src/pipeline/run.rs) count from the run's start,
# which comes before the execution's: a collect started just before its deadline, the transform
# of its group after it and finalize with one retry must end before TimeoutSeconds, else the
# execution is cut off and no finalize commits what the run did. Margins for what the sums leave
# out: the transient retries' waits, children still queued, the map's result writer (not the
# throttle retrier's waits: docs/pipeline.md says so).
run_source = (root / "shared" / "src" / "pipeline" / "run.rs").read_text()
within = {name: re.search(rf"{name}: Duration = Duration::from_secs\(([\d\s*+]+)\)", run_source)
          for name in ("COLLECT_ITEMS_WITHIN", "TRANSFORM_ITEMS_WITHIN")}
check(all(within.values()), "run::COLLECT_ITEMS_WITHIN or TRANSFORM_ITEMS_WITHIN is not a Duration::from_secs of whole seconds")
if all(within.values()):
    collect_within, transform_within = (eval(m.group(1)) for m in within.values())  # digits, `*` and `+`
    execution_timeout = resources["PipelineStateMachine"]["Properties"]["Definition"].get("TimeoutSeconds")
    collect_timeout = functions["CollectFunction"]["Properties"]["Timeout"]
    transform_timeout = functions["TransformFunction"]["Properties"]["Timeout"]
    finalize_timeout = functions["FinalizeFunction"]["Properties"]["Timeout"]
    check(collect_within + collect_timeout + 300 <= transform_within,
          f"a collect started at its deadline ({collect_within} s) may run {collect_timeout} s: "
          f"less than 5 minutes before the transform's deadline ({transform_within} s)")
    check(isinstance(execution_timeout, int)
          and transform_within + transform_timeout + 2 * finalize_timeout + 600 <= execution_timeout,
          f"a transform started at its deadline ({transform_within} s) and finalize with one retry "
          f"({transform_timeout} + 2 x {finalize_timeout} s) leave less than 10 minutes before TimeoutSeconds ({execution_timeout})")

bucket_policy = next(body for body in resources.values() if body["Type"] == "AWS::S3::BucketPolicy")
tls_denials = [
    st for st in bucket_policy["Properties"]["PolicyDocument"]["Statement"]
    if st.get("Effect") == "Deny" and st.get("Principal") == "*"
    and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
    and "s3:*" in as_list(st.get("Action"))
]
# A schedule's tick that starts no run runs no execution: its own alarm watches the metric the
# trigger's summary line carries (src/metrics.rs) and Lambda's count of the trigger's asynchronous
# invocations dropped (failed, crashes included, or aged out), and notifies where the failed-runs
# alarm does.
alarms = {logical: body["Properties"] for logical, body in resources.items() if body["Type"] == "AWS::CloudWatch::Alarm"}
starts = alarms.get("FailedStartsAlarm", {})
metrics_rs = (root / "shared" / "src" / "metrics.rs").read_text()
namespace = re.search(r'pub const NAMESPACE: &str = "([^"]+)";', metrics_rs)
watched = {q["Id"]: q["MetricStat"] for q in starts.get("Metrics", []) if "MetricStat" in q}
returned = [q for q in starts.get("Metrics", []) if q.get("ReturnData", True)]
summed = [q["Id"] for q in returned if "Expression" in q]
by_metric = {(s["Metric"]["Namespace"], s["Metric"]["MetricName"]): (i, s) for i, s in watched.items()}
own = by_metric.get((namespace.group(1) if namespace else None, "StartsFailed"))
dropped = by_metric.get(("AWS/Lambda", "AsyncEventsDropped"))
undelivered = by_metric.get(("AWS/Scheduler", "InvocationDroppedCount"))
schedules = [body for body in resources.values() if body["Type"] == "AWS::Scheduler::Schedule"]
check(undelivered is not None and undelivered[1]["Metric"]["Dimensions"] == [{"Name": "ScheduleGroup", "Value": {"Ref": "ScheduleGroup"}}]
      and schedules and all(s["Properties"].get("GroupName") == {"Ref": "ScheduleGroup"} for s in schedules),
      "the failed-starts alarm does not watch Scheduler's InvocationDroppedCount of the stack's own schedule group, which every schedule is in")
check(own is not None and '"StartsFailed"' in metrics_rs
      and own[1]["Metric"]["Dimensions"] == [{"Name": "Function", "Value": "trigger"}] and own[1]["Stat"] == "Sum",
      "the failed-starts alarm does not watch the trigger's StartsFailed metric in the summary line's namespace")
check(dropped is not None and dropped[1]["Metric"]["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "TriggerFunction"}}]
      and dropped[1]["Stat"] == "Sum",
      "the failed-starts alarm does not watch Lambda's AsyncEventsDropped of the trigger (a tick whose invocation died)")
expression = returned[0].get("Expression", "") if len(returned) == 1 else ""
check(len(summed) == 1 and own is not None and dropped is not None
      and undelivered is not None
      and all(f"FILL({ident}, 0)" in expression for ident in (own[0], dropped[0], undelivered[0])) and "+" in expression
      and starts.get("Threshold") == 1 and starts.get("ComparisonOperator") == "GreaterThanOrEqualToThreshold"
      and starts.get("AlarmActions") == alarms.get("FailedRunsAlarm", {}).get("AlarmActions"),
      "the failed-starts alarm does not fire on one failed tick of either count, notifying where the failed-runs alarm does")
# A run committed partial succeeds as an execution: its own alarm watches finalize's RunsPartial.
partial = alarms.get("PartialRunsAlarm", {})
check(namespace is not None and partial.get("Namespace") == namespace.group(1) and partial.get("MetricName") == "RunsPartial"
      and '"RunsPartial"' in metrics_rs and partial.get("Dimensions") == [{"Name": "Function", "Value": "finalize"}]
      and partial.get("Statistic") == "Sum" and partial.get("Threshold") == 1
      and partial.get("AlarmActions") == alarms.get("FailedRunsAlarm", {}).get("AlarmActions"),
      "no alarm on finalize's RunsPartial metric (a run committed without some items), notifying where the failed-runs alarm does")
# A DAST login that stays broken holds its environment's findings on every run, each run complete.
login = alarms.get("FailedLoginAlarm", {})
check(namespace is not None and login.get("Namespace") == namespace.group(1) and login.get("MetricName") == "FailedLogins"
      and '"FailedLogins"' in metrics_rs and login.get("Dimensions") == [{"Name": "Function", "Value": "finalize"}]
      and login.get("Statistic") == "Sum" and login.get("Threshold") == 1
      and login.get("ComparisonOperator") == "GreaterThanOrEqualToThreshold"
      and login.get("AlarmActions") == alarms.get("FailedRunsAlarm", {}).get("AlarmActions"),
      "no alarm on finalize's FailedLogins metric (DAST environments whose login failed, their findings held), notifying where the failed-runs alarm does")
# The API's routes are exactly those the trigger dispatches on (its ROUTES, by route key and path
# parameters): a catch-all or `$default` route would hand it paths to read, decoded by API Gateway.
handler_rs = (root / "functions" / "trigger" / "src" / "handler.rs").read_text()
routes_block = re.search(r"const ROUTES: \[&str; \d+\] = \[(.*?)\];", handler_rs, re.S)
dispatched = set(re.findall(r'"([A-Z]+ /[^"]*)"', routes_block.group(1))) if routes_block else set()
api_events = [event["Properties"] for body in resources.values() if body["Type"] == "AWS::Serverless::Function"
              for event in body.get("Properties", {}).get("Events", {}).values() if event.get("Type") == "HttpApi"]
declared = {f"{e.get('Method', '').upper()} {e.get('Path', '')}" for e in api_events}
check(dispatched and declared == dispatched and len(api_events) == len(declared),
      f"the API's routes {sorted(declared)} are not exactly the trigger's {sorted(dispatched)} (no catch-all, no $default)")

# The heartbeat: a connection whose schedule is on and that commits no run for StaleRunAlarmHours.
# Every committed run's finalize line carries RunsPartial for its connection, so the sample count
# is the runs committed; hours without one must read as breaching, or the alarm would go quiet
# exactly when nothing runs.
hours = template["Parameters"].get("StaleRunAlarmHours", {})
hours_allowed = [str(n) for n in range(0, 169)]
hours_pattern = re.compile(hours.get("AllowedPattern", "^$"))
check(hours.get("Type") == "String" and [h for h in hours_allowed if hours_pattern.fullmatch(h)] == hours_allowed
      and not any(hours_pattern.fullmatch(h) for h in ("00", "01", "1.5", "169", "-1", "", " 1")),
      "StaleRunAlarmHours does not take exactly the whole numbers of hours from 0 (no alarm) to 168 (CloudWatch's seven days of hourly periods), written plainly")
for connection, schedule in (("sast", "SastRunSchedule"), ("dast", "DastRunSchedule")):
    logical = f"{connection.capitalize()}StaleRunsAlarm"
    stale = alarms.get(logical, {})
    condition = resources.get(logical, {}).get("Condition")
    enabled = resources.get(schedule, {}).get("Properties", {}).get("State", {}).get("Fn::If", [None])[0]
    check(namespace is not None and stale.get("Namespace") == namespace.group(1) and stale.get("MetricName") == "RunsPartial"
          and stale.get("Dimensions") == [{"Name": "Function", "Value": "finalize"}, {"Name": "ConnectionId", "Value": connection}]
          and re.search(r'\[\s*"Function"\s*,\s*"ConnectionId"\s*\]', metrics_rs)
          and stale.get("Statistic") == "SampleCount" and stale.get("Period") == 3600
          and stale.get("EvaluationPeriods") == {"Ref": "StaleRunAlarmHours"} and stale.get("DatapointsToAlarm") == {"Ref": "StaleRunAlarmHours"}
          and stale.get("Threshold") == 1 and stale.get("ComparisonOperator") == "LessThanThreshold"
          and stale.get("TreatMissingData") == "breaching"
          and stale.get("AlarmActions") == alarms.get("FailedRunsAlarm", {}).get("AlarmActions")
          and stale.get("OKActions") == stale.get("AlarmActions"),
          f"no alarm when the {connection} connection commits no run for StaleRunAlarmHours (finalize's RunsPartial samples for it, missing hours breaching), notifying where the failed-runs alarm does, and again when it is over")
    condition_body = template.get("Conditions", {}).get(condition or "", {})
    check(enabled is not None and {"Condition": enabled} in condition_body.get("Fn::And", [])
          and {"Condition": "StaleAlarmOn"} in condition_body.get("Fn::And", []),
          f"{logical} is not on exactly when {schedule} is enabled and StaleRunAlarmHours is not 0")

# Vendor data goes within a day of its retention: in the versioned bucket an expired object's
# version would otherwise stay as long as other objects' old versions.
bucket = next(body for body in resources.values() if body["Type"] == "AWS::S3::Bucket")
rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
raw_rules = [r for r in rules if r.get("ExpirationInDays") == {"Ref": "RawRetentionDays"}]
check(len(raw_rules) == 2 and all(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 1 for r in raw_rules),
      "the raw pages' and map results' rules do not remove their noncurrent versions a day after they expire")
check(len(tls_denials) == 1, "the bucket policy does not deny every request without TLS")
if tls_denials:
    covered = [str(r) for r in as_list(tls_denials[0]["Resource"])]
    check(any("/*" in r for r in covered) and any("/*" not in r for r in covered),
          f"the TLS denial does not cover both the bucket and its objects: {covered}")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
