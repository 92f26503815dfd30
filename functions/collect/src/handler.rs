//! Decodes the task input, runs the step, returns its typed output. Errors carry the type
//! `Retryable` or `Fatal` for the state machine's Retry and Catch.

use cxone_etm::lambda::{Runtime, collect_task, decode};
use lambda_runtime::Diagnostic;
use serde_json::Value;

pub async fn handle(runtime: &Runtime, payload: Value) -> Result<Value, Diagnostic> {
    let input = decode("work item", payload)?;
    let output = collect_task(runtime, input).await?;
    Ok(serde_json::to_value(output).expect("outputs serialize"))
}
