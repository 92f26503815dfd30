//! The trigger function: EventBridge Scheduler events, the HTTP API and the state machine's plan.
//! Only wiring; the handler is in handler.rs.

use cxone_etm::lambda::{FunctionEnv, Runtime, init_tracing, invoke};
use cxone_etm_trigger::handler;
use lambda_runtime::{Error, service_fn};

fn main() -> Result<(), Error> {
    cxone_etm::process::runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Error> {
    init_tracing();
    let env = FunctionEnv::from_vars(|name| std::env::var(name).ok())?;
    let runtime = Runtime::from_env(&env).await;
    lambda_runtime::run(service_fn(|event| {
        invoke("trigger", event, |event| handler::handle(&runtime, event))
    }))
    .await
}
