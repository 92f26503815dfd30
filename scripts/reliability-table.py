"""Renders the figures the reliability scenarios wrote (target/tmp/reliability/*.json) as the
Markdown table in docs/reliability.md. Run the scenarios first:
    cargo nextest run -p cxone-etm --test runs reliability::
    python3 scripts/reliability-table.py"""
import json
import pathlib

root = pathlib.Path(__file__).resolve().parent.parent
rows = [json.loads(p.read_text()) for p in sorted((root / "target/tmp/reliability").glob("*.json"))]
print("| Scenario | Injected | Faults that fired | Run | Results in | Results out (findings + rejected) | Outcome |")
print("|---|---|---|---|---|---|---|")
for row in rows:
    fired = ", ".join(
        f"{sum(v.values())} {k.replace('_', ' ')}" for k, v in row["faultsFired"].items() if sum(v.values())
    ) or "none (latency/expiry only)"
    fired += f"; {row['requests']} requests ({row['tokenRequests']} for tokens), peak {row['peakInFlight']} in flight"
    for run in row["runs"]:
        if run["complete"]:
            outcome = "complete, every result committed once"
        else:
            reasons = sorted({i["reason"].split(";")[0].split(" (")[0].split(" after ")[0] for i in run["incomplete"]})
            outcome = f"{len(run['incomplete'])} item(s) named incomplete/failed, marker complete:false: " + "; ".join(reasons)
        print(f"| {row['scenario']} | {row['injected']} | {fired} | {run['kind']} | {run['resultsIn']} | "
              f"{run['resultsOut']} ({run['findings']} + {run['rejected']}) | {outcome} |")
