//! The Lambda functions' code with the emulator: whole runs on S3 with credentials from Secrets
//! Manager (both moto), and every sample event and bad input of every kind through its handler over
//! memory ports (no AWS needed). One test binary (each links the whole library and the AWS SDK).

mod aws;
mod bad_input;
mod functions;

use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A JSON event decoded into a handler's payload type, as the Lambda runtime decodes it.
fn decoded<I: DeserializeOwned>(event: Value) -> Result<LambdaEvent<I>, serde_json::Error> {
    serde_json::from_value(event).map(|payload| LambdaEvent::new(payload, Context::default()))
}

/// How a handler met an event: the Lambda runtime refused it (it does not decode into the
/// handler's payload type; the handler never runs), or the handler answered or failed.
enum Met {
    Refused(serde_json::Error),
    Handled(Result<Value, Diagnostic>),
}

/// Sends a JSON event to a handler as the Lambda runtime does: decoded into its typed payload, the
/// typed answer encoded back to JSON.
async fn through<I, O, F, Fut>(handler: F, event: Value) -> Met
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnOnce(LambdaEvent<I>) -> Fut,
    Fut: Future<Output = Result<O, Diagnostic>>,
{
    match decoded(event) {
        Err(refused) => Met::Refused(refused),
        Ok(event) => Met::Handled(
            handler(event)
                .await
                .map(|answer| serde_json::to_value(answer).expect("answers serialize")),
        ),
    }
}

/// The trigger function's handler over `runtime`, for an event that must decode.
async fn trigger(
    runtime: &cxone_etm::lambda::Runtime<cxone_etm::store::MemoryStore>,
    event: Value,
) -> Result<Value, Diagnostic> {
    call(|e| cxone_etm_trigger::handler::handle(runtime, e), event).await
}

/// [`through`] for an event that must decode (the sample events do).
async fn call<I, O, F, Fut>(handler: F, event: Value) -> Result<Value, Diagnostic>
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnOnce(LambdaEvent<I>) -> Fut,
    Fut: Future<Output = Result<O, Diagnostic>>,
{
    match through(handler, event).await {
        Met::Refused(refused) => {
            panic!("the event does not decode into the payload type: {refused}")
        }
        Met::Handled(answer) => answer,
    }
}
