"""The deployed shape on one machine: `infra/template.yaml` as CloudFormation would create it.

- The SAM template is translated by aws-sam-translator (the transform CloudFormation runs), after the
  one rewrite `sam package` makes (CodeUri becomes an S3 URI).
- Intrinsic functions are resolved as CloudFormation resolves them (a Ref to a Number parameter is a
  string), and DefinitionSubstitutions are applied to the definition's text as CloudFormation applies
  them: `${Key}` replaced by the value's string, wherever it stands.
- The definition is checked by asl-validator (npm), then created in moto's Step Functions, which
  executes it; every Lambda task is performed by the real function binary (see `lambda_host.py`)
  running with the credentials of its own role, created in moto's IAM from the template.

Where moto lacks an AWS behaviour the template relies on, `moto_models.py` models it; nothing here
edits the template.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import pathlib
import re
import subprocess
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
STACK = "cxone-etm"


def translate(parameters: dict[str, str]) -> dict:
    """SAM → CloudFormation, offline, as the `AWS::Serverless-2016-10-31` transform does."""
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    class NoManagedPolicies:
        # The template names managed policies by ARN only; nothing to look up.
        def load(self):
            return {}

    template = yaml_parse(TEMPLATE.read_text())
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            # What `sam package` does before the transform runs.
            resource["Properties"]["CodeUri"] = "s3://artifacts/code.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    return transform(template, dict(parameters), NoManagedPolicies())


def physical_id(logical: str, resource: dict) -> str:
    """The name CloudFormation gives a resource without an explicit one."""
    kind = resource["Type"]
    props = resource.get("Properties", {})
    if kind == "AWS::S3::Bucket":
        return props.get("BucketName") or f"{STACK}-{logical.lower()}-1a2b3c4d"
    if kind == "AWS::StepFunctions::StateMachine" and "StateMachineName" in props:
        return props["StateMachineName"]
    if kind == "AWS::Lambda::Function" and "FunctionName" in props:
        return props["FunctionName"]
    return f"{STACK}-{logical}-1A2B3C4D"


@dataclass
class Resolved:
    """The template after CloudFormation resolved it, for one set of parameter values."""

    parameters: dict[str, str]
    conditions: dict[str, bool]
    resources: dict[str, dict]
    names: dict[str, str] = field(default_factory=dict)

    def arn(self, logical: str) -> str:
        kind = self.resources[logical]["Type"]
        name = self.names[logical]
        return {
            "AWS::Lambda::Function": f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}",
            "AWS::IAM::Role": f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}",
            "AWS::S3::Bucket": f"arn:{PARTITION}:s3:::{name}",
            "AWS::StepFunctions::StateMachine": f"arn:{PARTITION}:states:{REGION}:{ACCOUNT}:stateMachine:{name}",
            "AWS::Logs::LogGroup": f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
            "AWS::SNS::Topic": f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{name}",
            "AWS::Scheduler::ScheduleGroup": f"arn:{PARTITION}:scheduler:{REGION}:{ACCOUNT}:schedule-group/{name}",
        }.get(kind, f"arn:{PARTITION}:unknown:{REGION}:{ACCOUNT}:{name}")

    def of_type(self, kind: str) -> dict[str, dict]:
        return {k: v for k, v in self.resources.items() if v["Type"] == kind}


NO_VALUE = object()


def resolve(cfn: dict, given: dict[str, str]) -> Resolved:
    """Parameters with their defaults and constraints, conditions, then every resource."""
    parameters = {}
    for name, spec in cfn.get("Parameters", {}).items():
        if name in given:
            value = str(given[name])
        elif "Default" in spec:
            value = str(spec["Default"])
        else:
            raise ValueError(f"parameter {name} has no default and no value")
        if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
            raise ValueError(f"parameter {name}={value!r} fails AllowedPattern {spec['AllowedPattern']}")
        if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
            raise ValueError(f"parameter {name}={value!r} is not one of {spec['AllowedValues']}")
        if spec.get("Type") == "Number":
            number = float(value)
            if "MinValue" in spec and number < float(spec["MinValue"]):
                raise ValueError(f"parameter {name}={value} is below MinValue {spec['MinValue']}")
            if "MaxValue" in spec and number > float(spec["MaxValue"]):
                raise ValueError(f"parameter {name}={value} is above MaxValue {spec['MaxValue']}")
        parameters[name] = value
    resolved = Resolved(parameters=parameters, conditions={}, resources={})
    resolved.resources = cfn["Resources"]
    # Explicit names may use intrinsics of their own (`!Sub "${AWS::StackName}-pipeline"`).
    resolved.names = {k: _evaluate(physical_id(k, v), resolved) for k, v in cfn["Resources"].items()}
    for name, body in cfn.get("Conditions", {}).items():
        resolved.conditions[name] = _evaluate(body, resolved)
    out = {}
    for logical, body in cfn["Resources"].items():
        if "Condition" in body and not resolved.conditions[body["Condition"]]:
            continue
        out[logical] = _evaluate(copy.deepcopy(body), resolved)
    resolved.resources = out
    return resolved


def _pseudo(name: str, resolved: Resolved):
    return {
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::Partition": PARTITION,
        "AWS::StackName": STACK,
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::NoValue": NO_VALUE,
    }.get(name)


def _ref(name: str, resolved: Resolved):
    pseudo = _pseudo(name, resolved)
    if pseudo is not None:
        return pseudo
    if name in resolved.parameters:
        return resolved.parameters[name]
    kind = resolved.resources[name]["Type"]
    if kind in ("AWS::StepFunctions::StateMachine", "AWS::SNS::Topic"):
        return resolved.arn(name)
    return resolved.names[name]


def _get_att(logical: str, attribute: str, resolved: Resolved):
    if attribute == "Arn":
        return resolved.arn(logical)
    if attribute == "Name":
        return resolved.names[logical]
    if attribute == "RoleId":
        return f"AROA{logical.upper()[:16]}"
    raise ValueError(f"Fn::GetAtt {logical}.{attribute} is not modelled")


def _sub(text: str, variables: dict, resolved: Resolved) -> str:
    def one(match: re.Match) -> str:
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name in variables:
            return str(variables[name])
        if "." in name:
            logical, attribute = name.split(".", 1)
            return str(_get_att(logical, attribute, resolved))
        return str(_ref(name, resolved))

    return re.sub(r"\$\{([^}]+)\}", one, text)


def _evaluate(node, resolved: Resolved):
    if isinstance(node, list):
        values = [_evaluate(v, resolved) for v in node]
        return [v for v in values if v is not NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (key, arg), = node.items()
        if key == "Ref":
            return _ref(arg, resolved)
        if key == "Fn::GetAtt":
            logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return _get_att(logical, attribute, resolved)
        if key == "Fn::Sub":
            if isinstance(arg, str):
                return _sub(arg, {}, resolved)
            text, variables = arg
            return _sub(text, {k: _evaluate(v, resolved) for k, v in variables.items()}, resolved)
        if key == "Fn::Join":
            separator, parts = arg
            return separator.join(str(p) for p in _evaluate(parts, resolved))
        if key == "Fn::If":
            name, yes, no = arg
            return _evaluate(yes if resolved.conditions[name] else no, resolved)
        if key == "Fn::Equals":
            left, right = (_evaluate(a, resolved) for a in arg)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not _evaluate(arg[0], resolved)
        if key == "Fn::And":
            return all(_evaluate(a, resolved) for a in arg)
        if key == "Fn::Or":
            return any(_evaluate(a, resolved) for a in arg)
        if key == "Condition":
            return resolved.conditions[arg]
        if key == "Fn::Select":
            index, values = arg
            return _evaluate(values, resolved)[int(index)]
        if key == "Fn::Split":
            separator, text = arg
            return _evaluate(text, resolved).split(separator)
        if key.startswith("Fn::"):
            raise ValueError(f"{key} is not modelled")
    out = {}
    for k, v in node.items():
        value = _evaluate(v, resolved)
        if value is not NO_VALUE:
            out[k] = value
    return out


def state_machine_definition(resolved: Resolved) -> tuple[str, str]:
    """(logical id, definition text) with DefinitionSubstitutions applied as CloudFormation does:
    each `${Key}` in the text replaced by the string of its value."""
    (logical, machine), = resolved.of_type("AWS::StepFunctions::StateMachine").items()
    props = machine["Properties"]
    text = props["DefinitionString"]
    for key, value in props.get("DefinitionSubstitutions", {}).items():
        text = text.replace("${" + key + "}", str(value))
    return logical, text


def asl_validate(definition: str, work: pathlib.Path) -> None:
    """The definition through asl-validator 4 (installed into the clone by scripts/deployed-test.sh)."""
    validator = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "asl-validator"
    path = work / "definition.asl.json"
    path.write_text(definition)
    result = subprocess.run(
        [str(validator), "--json-path", str(path)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise AssertionError(f"asl-validator refused the definition: {result.stdout}{result.stderr}")


def role_policies(resolved: Resolved, role_logical: str) -> list[dict]:
    """The role's inline policy documents (managed AWS policies are log and X-Ray grants; they are
    checked statically by check-infra.py and grant nothing on the bucket)."""
    role = resolved.resources[role_logical]["Properties"]
    return [p["PolicyDocument"] for p in role.get("Policies", [])]


def function_role(resolved: Resolved, function_logical: str) -> str:
    role_arn = resolved.resources[function_logical]["Properties"]["Role"]
    return next(k for k in resolved.of_type("AWS::IAM::Role") if resolved.arn(k) == role_arn)


def schedule_inputs(resolved: Resolved) -> dict[str, dict]:
    """Each enabled schedule's target input, parsed (what EventBridge Scheduler sends the trigger)."""
    out = {}
    for logical, schedule in resolved.of_type("AWS::Scheduler::Schedule").items():
        props = schedule["Properties"]
        out[logical] = {"properties": props, "input": json.loads(props["Target"]["Input"])}
    return out


def parameters_for(**overrides: str) -> dict[str, str]:
    today = datetime.datetime.now(datetime.timezone.utc).date()
    try:
        end = today.replace(year=today.year + 5)
    except ValueError:  # February 29th ends on February 28th
        end = today.replace(year=today.year + 5, day=28)
    base = {
        "Tenant": "acme",
        # As the README's deploy command gives them: from today, for five years.
        "ScheduleStartDate": today.isoformat(),
        "ScheduleEndDate": end.isoformat(),
        "SastSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:cxone/sast-AbCdEf",
    }
    base.update(overrides)
    return base
