"""Checks that tie infra/template.yaml to the code: every crate under functions/ has a template
resource building its binary, the binary names are unique, every function is reached by the state
machine or an event source, and every function has sample events in events/."""
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
check(map_state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED", "the item map is not distributed")
check(map_state["MaxConcurrency"] == "${MaxConcurrency}", "MaxConcurrency does not come from the parameter")
check(map_state["Next"] == "Finalize" and map_state["Catch"][0]["Next"] == "Finalize", "finalize does not always run")
for state in map_state["ItemProcessor"]["States"].values():
    for retry in state.get("Retry", []):
        check(retry.get("JitterStrategy") == "FULL", "a retry without full jitter")
        check("States.ALL" not in retry["ErrorEquals"] and "Fatal" not in retry["ErrorEquals"], "a retry on non-retryable errors")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
