//! What a run would cost on AWS: the template's own settings (each function's memory, the tasks
//! of a child execution) applied to what the run did, at published prices.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_yaml_ng::Value;

/// us-east-1 list prices, December 2026 (aws.amazon.com/lambda, /step-functions, /s3 pricing).
const LAMBDA_ARM_PER_GB_SECOND: f64 = 0.000_013_333_4;
const LAMBDA_PER_INVOCATION: f64 = 0.20 / 1e6;
const STANDARD_TRANSITION: f64 = 0.025 / 1e3;
const S3_PUT: f64 = 0.005 / 1e3;

/// The template's settings that a run's cost depends on.
#[derive(Debug)]
pub struct Deployment {
    /// MemorySize (MB) per function binary.
    memory_mb: BTreeMap<String, u64>,
    /// States a child execution enters when its items succeed (its tasks).
    child_states: u64,
    /// States the parent execution enters when the run succeeds (the plan, the choice, the Map,
    /// finalize).
    parent_states: u64,
    /// Those of them that invoke a function (the plan and finalize).
    parent_tasks: u64,
}

impl Deployment {
    pub fn from_template(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let template: Value = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        let resources = template["Resources"]
            .as_mapping()
            .context("the template has no Resources")?;
        let mut memory_mb = BTreeMap::new();
        for resource in resources.values() {
            let binary = &resource["Metadata"]["BuildProperties"]["Binary"];
            if let (Some(binary), Some(mb)) = (
                binary.as_str(),
                resource["Properties"]["MemorySize"].as_u64(),
            ) {
                memory_mb.insert(binary.to_string(), mb);
            }
        }
        let machine = resources
            .values()
            .find(|r| r["Type"].as_str() == Some("AWS::Serverless::StateMachine"))
            .context("the template has no state machine")?;
        let definition = &machine["Properties"]["Definition"];
        let map = definition["States"]
            .as_mapping()
            .and_then(|m| m.values().find(|s| s["Type"].as_str() == Some("Map")))
            .context("the state machine has no Map state")?;
        let parent = states_entered(definition);
        let deployment = Self {
            memory_mb,
            child_states: states_entered(&map["ItemProcessor"]).len() as u64,
            parent_states: parent.len() as u64,
            parent_tasks: parent
                .iter()
                .filter(|s| s["Type"].as_str() == Some("Task"))
                .count() as u64,
        };
        if deployment.child_states == 0 || deployment.memory_mb.len() < 4 {
            bail!("the template's functions or child tasks were not found: {deployment:?}");
        }
        Ok(deployment)
    }

    fn gb(&self, binary: &str) -> f64 {
        self.memory_mb.get(binary).copied().unwrap_or(0) as f64 / 1024.0
    }
}

/// The states a run that succeeds, with items, enters: from `StartAt`, each state's `Next` (a
/// choice's `Default`) until one ends (the states a `Catch` leads to are entered only on failure).
fn states_entered(machine: &Value) -> Vec<&Value> {
    let states = &machine["States"];
    let mut entered = Vec::new();
    let mut at = machine["StartAt"].as_str();
    while let Some(name) = at {
        let state = &states[name];
        if state.is_null() || entered.len() > states.as_mapping().map_or(0, |m| m.len()) {
            break;
        }
        entered.push(state);
        at = state["Next"].as_str().or(state["Default"].as_str());
    }
    entered
}

/// What one run did, as the bench measured it.
#[derive(Clone, Copy)]
pub struct RunWork {
    pub findings: u64,
    pub child_executions: u64,
    /// Milliseconds per stage; collect and transform summed over items.
    pub plan_ms: u64,
    pub collect_ms: u64,
    pub transform_ms: u64,
    pub finalize_ms: u64,
    pub objects_written: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunCost {
    pub lambda_gb_seconds: f64,
    pub lambda_invocations: u64,
    pub state_transitions: u64,
    pub transitions_per_child: u64,
    pub s3_puts: u64,
    pub dollars: Dollars,
    pub dollars_per_million_findings: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dollars {
    pub lambda: f64,
    pub step_functions: f64,
    pub s3: f64,
    pub total: f64,
}

/// Each child execution is billed its start and each task it enters; the parent its start, the
/// plan, the Map state and finalize. The functions are invoked by the trigger's start and each
/// task. Lambda time is the in-process stage time at each function's memory (plan runs in the
/// trigger's function). S3 reads are left out: at $0.0004 per 1,000, reading every object
/// once costs under a tenth of writing it.
pub fn cost(deployment: &Deployment, work: &RunWork) -> RunCost {
    let transitions_per_child = 1 + deployment.child_states;
    let state_transitions =
        1 + deployment.parent_states + work.child_executions * transitions_per_child;
    let lambda_invocations =
        1 + deployment.parent_tasks + work.child_executions * deployment.child_states;
    let gb_ms = work.plan_ms as f64 * deployment.gb("cxone-etm-trigger")
        + work.collect_ms as f64 * deployment.gb("cxone-etm-collect")
        + work.transform_ms as f64 * deployment.gb("cxone-etm-transform")
        + work.finalize_ms as f64 * deployment.gb("cxone-etm-finalize");
    let lambda_gb_seconds = gb_ms / 1000.0;
    let lambda = lambda_gb_seconds * LAMBDA_ARM_PER_GB_SECOND
        + lambda_invocations as f64 * LAMBDA_PER_INVOCATION;
    let step_functions = state_transitions as f64 * STANDARD_TRANSITION;
    let s3 = work.objects_written as f64 * S3_PUT;
    let total = lambda + step_functions + s3;
    RunCost {
        lambda_gb_seconds,
        lambda_invocations,
        state_transitions,
        transitions_per_child,
        s3_puts: work.objects_written,
        dollars: Dollars {
            lambda,
            step_functions,
            s3,
            total,
        },
        dollars_per_million_findings: total * 1e6 / work.findings.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Deployment {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
        Deployment::from_template(&path).expect("the template reads")
    }

    #[test]
    fn the_template_gives_every_function_its_memory_and_the_child_its_tasks() {
        let d = template();
        assert_eq!(d.memory_mb.len(), 4, "{d:?}");
        assert_eq!(d.child_states, 2, "collect and transform");
        assert_eq!(
            d.parent_states, 4,
            "the plan, the choice of a run with items, the map and finalize, not the release after a failure"
        );
        assert_eq!(d.parent_tasks, 2, "the plan and finalize");
        assert!(d.gb("cxone-etm-collect") >= 0.25);
    }

    #[test]
    fn transitions_follow_child_executions_not_items() {
        let d = template();
        let work = |child_executions| RunWork {
            findings: 1_000_000,
            child_executions,
            plan_ms: 1_000,
            collect_ms: 60_000,
            transform_ms: 60_000,
            finalize_ms: 2_000,
            objects_written: 5_000,
        };
        let one_per_item = cost(&d, &work(1_000));
        let grouped = cost(&d, &work(40));
        // The parent's start, plan, choice, map and finalize; each child's start, collect and
        // transform.
        assert_eq!(one_per_item.state_transitions, 5 + 3 * 1_000);
        assert_eq!(grouped.state_transitions, 5 + 3 * 40);
        // The trigger's start, the plan, finalize; each child's collect and transform.
        assert_eq!(grouped.lambda_invocations, 3 + 2 * 40);
        assert!(grouped.dollars.step_functions * 10.0 < one_per_item.dollars.step_functions);
        // The same work in fewer invocations: the same GB-s.
        assert_eq!(grouped.lambda_gb_seconds, one_per_item.lambda_gb_seconds);
        assert!(grouped.dollars_per_million_findings < one_per_item.dollars_per_million_findings);
    }
}
