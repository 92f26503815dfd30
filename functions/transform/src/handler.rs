//! The transform task over one collected item: the typed event in, the step's
//! typed output out. Errors carry `Retryable` or `Fatal` for the state machine's Retry and Catch.

use cxone_etm::lambda::{CollectTaskOutput, Runtime, TransformTaskOutput, transform_task};
use cxone_etm::store::BucketStore;
use lambda_runtime::{Diagnostic, LambdaEvent};

pub async fn handle(
    runtime: &Runtime<impl BucketStore>,
    event: LambdaEvent<CollectTaskOutput>,
) -> Result<TransformTaskOutput, Diagnostic> {
    Ok(transform_task(runtime, event.payload).await?)
}
