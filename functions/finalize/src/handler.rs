//! The finalize task over a run whose items are done: the typed event in, the step's
//! typed output out. Errors carry their type (`StepError::error_type`) for the state machine's Retry
//! and Catch.

use cxone_etm::lambda::{FinalizeInput, FinalizeOutput, Runtime, finalize_task};
use cxone_etm::store::BucketStore;
use lambda_runtime::{Diagnostic, LambdaEvent};

pub async fn handle(
    runtime: &Runtime<impl BucketStore>,
    event: LambdaEvent<FinalizeInput>,
) -> Result<FinalizeOutput, Diagnostic> {
    Ok(finalize_task(runtime, event.payload).await?)
}
