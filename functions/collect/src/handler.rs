//! The collect task over one project or environment of a run: the typed event in, the step's
//! typed output out. Errors carry `Retryable` or `Fatal` for the state machine's Retry and Catch.

use cxone_etm::lambda::{CollectTaskOutput, Runtime, collect_task};
use cxone_etm::pipeline::WorkItem;
use cxone_etm::store::BucketStore;
use lambda_runtime::{Diagnostic, LambdaEvent};

pub async fn handle(
    runtime: &Runtime<impl BucketStore>,
    event: LambdaEvent<WorkItem>,
) -> Result<CollectTaskOutput, Diagnostic> {
    Ok(collect_task(runtime, event.payload).await?)
}
