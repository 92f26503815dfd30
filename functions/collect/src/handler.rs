//! The collect task over a child's group of projects or environments: the typed event in, the step's
//! typed output out. Errors carry their type (`StepError::error_type`) for the state machine's Retry
//! and Catch.

use cxone_etm::lambda::{CollectGroupOutput, Runtime, collect_task, time_budget};
use cxone_etm::pipeline::WorkGroup;
use cxone_etm::store::BucketStore;
use lambda_runtime::{Diagnostic, LambdaEvent};

pub async fn handle(
    runtime: &Runtime<impl BucketStore>,
    event: LambdaEvent<WorkGroup>,
) -> Result<CollectGroupOutput, Diagnostic> {
    let time = time_budget(&event.context);
    Ok(collect_task(runtime, event.payload, time).await?)
}
