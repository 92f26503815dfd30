//! The Lambda functions' code against moto (S3, Secrets Manager) and the emulator: whole runs on
//! S3 with credentials from Secrets Manager, every sample event through its handler, and bad input
//! of every kind. One test binary (each links the whole library and the AWS SDK).

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

/// Calls a handler as the Lambda runtime does: the JSON event decoded into its typed payload (the
/// sample events must decode), the typed answer encoded back to JSON.
async fn call<I, O, F, Fut>(handler: F, event: Value) -> Result<Value, Diagnostic>
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnOnce(LambdaEvent<I>) -> Fut,
    Fut: Future<Output = Result<O, Diagnostic>>,
{
    let event = decoded(event).expect("the event decodes into the handler's payload type");
    handler(event)
        .await
        .map(|answer| serde_json::to_value(answer).expect("answers serialize"))
}
