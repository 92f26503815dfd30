//! The error every step returns: what failed, with its source, and whether another attempt may
//! succeed ([`StepError::is_retryable`], which Step Functions' Retry and the local runner follow).

use crate::cxone::VendorError;
use crate::field_error::{Described, FieldError};
use crate::mapping::TransformError;
use crate::secret::CredentialError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Checkmarx One refused or failed; retryable when the failure was transient.
    #[error(transparent)]
    Vendor(#[from] VendorError),
    /// The object store failed (a throttle, a lost connection): always retryable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The connection's credential could not be read or used.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// No `connections/<id>/config.json`.
    #[error(
        "connection '{connection_id}' is not configured ({key} is missing): store its config with `cxone-etm connection put --store <the bucket or directory> --config <file>`; on AWS, a schedule's first tick stores the `sast` and `dast` connections' from the stack's parameters, unless the config check refused them (the trigger's log names the field)"
    )]
    NotConfigured { connection_id: String, key: String },
    /// A connection config (stored, or carried by an event) that does not validate: every
    /// field that is wrong.
    #[error("{source_name}: {}", errors.described("; "))]
    BadConfig {
        source_name: String,
        errors: Vec<FieldError>,
    },
    /// Another run of the connection holds its lock.
    #[error(
        "connection {connection_id} is already running (run {run_id} since {since}); wait for it to finish. A run that stopped without releasing the lock (its execution stopped or timed out, its trigger cut off before it started the execution, its runner crashed) gives it up to a later start once it is known to run no more, at the latest when its 6-hour lease ends"
    )]
    AlreadyRunning {
        connection_id: String,
        run_id: String,
        since: String,
    },
    /// Another trigger won the race for the lock (`detail` says which race).
    #[error("connection {connection_id}: {detail}")]
    LockTaken {
        connection_id: String,
        detail: String,
    },
    /// A run that no longer holds its connection's lock when it would plan or commit: its lease
    /// ran out, or its execution ended, and another run took the lock over (or has finished
    /// since), or its start failed and released the lock. Two runs would reconcile against the same last committed run, so this
    /// one goes no further.
    #[error(
        "run {run_id} of connection {connection_id} no longer holds the connection's lock ({holder}): its lease ran out or its execution ended and another run took the lock over, or its start failed and released it; nothing of it is committed, and the next run reconciles against the last committed run"
    )]
    LostLock {
        connection_id: String,
        run_id: String,
        holder: String,
    },
    /// Another run committed after this one was planned (an attempt of its finalize that ran on
    /// after its lock was released, by a failed attempt's catch or a takeover): this run reconciled
    /// against an older run, and committing it would send again what that run sent, and leave
    /// open what that run made NEW and the vendor fixed since.
    #[error(
        "run {run_id} of connection {connection_id} reconciled against {}, but run {committed} committed since; nothing of this run is committed, and the next run reconciles against {committed}",
        previous.as_deref().map_or("no earlier run".to_string(), |p| format!("run {p}"))
    )]
    Superseded {
        connection_id: String,
        run_id: String,
        previous: Option<String>,
        committed: String,
    },
    /// A transform attempt that finished after finalize gave up waiting for it (the item is
    /// reported "transform did not finish", its ledger carried): it commits nothing.
    #[error(
        "item {item} of run {run_id}: finalize gave up waiting for its transform (the item is reported \"transform did not finish\" and its findings carried), so this late attempt commits nothing; the next run transforms it"
    )]
    GivenUp { run_id: String, item: String },
    /// A scheduled run outside the schedule's dates.
    #[error("connection {connection_id}: {problem}")]
    OutsideSchedule {
        connection_id: String,
        problem: String,
    },
    /// An object an earlier step writes is not there yet: that step has not finished.
    #[error("{key} is missing: {why}")]
    NotYetWritten { key: String, why: String },
    /// A part of a split scan has no outcome yet: the transform of the part collected last joins
    /// the parts, not this one.
    #[error(
        "{key} is missing: part {part} of {of} has not finished collecting; the transform of the part collected last joins them"
    )]
    WaitingForPart { key: String, part: u32, of: u32 },
    /// An object this step needs is missing or cannot be read.
    #[error("{key}: {problem}")]
    BadObject { key: String, problem: String },
    /// An item that cannot be transformed (its record does not fit the map).
    #[error("{at}: {source}")]
    Transform {
        at: String,
        #[source]
        source: TransformError,
    },
    /// Step Functions did not start the run's execution.
    #[error("starting the state machine: {0}")]
    StateMachine(String),
    /// A Lambda event that is not the step's input.
    #[error("{what} input: {problem}")]
    BadEvent { what: String, problem: String },
    /// The plan or finalize failed for good: the run was marked Failed with the reason (unless it
    /// had committed before the failure, or was Failed already) and its lock released (unless
    /// another run holds it: a plan refused for `LostLock`).
    #[error(
        "{0}; the run is marked Failed (unless it had committed) and its lock, if it still held it, released"
    )]
    RunFailed(String),
    /// Every item of the run failed: nothing was committed (the reason names the first).
    #[error("{0}")]
    NothingCommitted(String),
    /// An item's step stopped on a panic (a defect its data met) before it returned: the item
    /// fails alone, its findings carried.
    #[error(
        "the item's step stopped on a defect ({0}); nothing of it is committed and its findings are carried: report it with the run's log"
    )]
    TaskStopped(String),
    /// Too little of the invocation's time is left to start another item.
    #[error(
        "not started: the invocation had {left_secs} s left, too little for another item; the state machine's next attempt, if any is left, goes on from here"
    )]
    TimeShort { left_secs: u64 },
    /// The run's deadline for starting its items has passed (see `run::COLLECT_ITEMS_WITHIN`).
    #[error(
        "not started: the run's items start only until {deadline}, so that finalize commits what the run did within the execution's time; the item is reported and its findings carried, and the next run pulls it"
    )]
    RunTimeSpent { deadline: String },
    /// An item's collect stopped between two pages as its invocation's time ran short; what it
    /// stored is kept, with its progress.
    #[error(
        "collect stopped after {pages} pages with {left_secs} s of the invocation left; the state machine's next attempt, if any is left, goes on from page {pages}"
    )]
    CollectPaused {
        pages: u32,
        left_secs: u64,
        /// Whether this attempt started the pull over (the earlier progress unusable, or the
        /// scan's total moved): what it stored is then not counted as progress, as a total that
        /// moves at every attempt would start over every time.
        started_over: bool,
    },
    /// Items of a child execution's group that did not finish; the others did, and an attempt
    /// of the group again redoes only these. The message names each item's own error (items
    /// that failed alike share it), so a reason taken from it (a caught collect's) holds every
    /// item's cause.
    #[error("{} of the group's items did not finish ({}); {}", items.len(), items.join(", "), each_items_error(causes))]
    Unfinished {
        items: Vec<String>,
        /// Each error, with the items it stopped, in the order first met.
        causes: Vec<(Vec<String>, String)>,
        /// Whether another attempt may finish any of them.
        retryable: bool,
        /// Whether the invocation's time ran short after it made progress (see
        /// [`StepError::is_out_of_time`]).
        out_of_time: bool,
        /// Whether the vendor asked one of them to wait longer than the client waits (see
        /// [`StepError::is_rate_limited`]).
        rate_limited: bool,
    },
}

impl StepError {
    /// The failure of a step that panicked, saying what the panic said.
    pub fn from_panic(panic: Box<dyn std::any::Any + Send>) -> Self {
        Self::TaskStopped(panic_said(&*panic))
    }
}

/// `a panic: <its message>`.
pub fn panic_said(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(said), _) => format!("a panic: {said}"),
        (_, Some(said)) => format!("a panic: {said}"),
        _ => "a panic that said nothing".to_string(),
    }
}

// An aborting build would end the invocation, and the item's whole group, at the first panic.
#[cfg(panic = "abort")]
compile_error!(
    "an item's panic fails that item alone only when panics unwind: build with panic = \"unwind\" (the workspace's release profile says so; cargo-lambda's default is abort)"
);

/// `step`, a panic in it read as its failure ([`StepError::TaskStopped`]): a defect one item's
/// data meets fails that item alone, not the rest of its group with the invocation. What the
/// step held is left as a failed step leaves it (its writes are each whole, and the item's next
/// step reads its record).
pub async fn unless_it_panics<T>(
    step: impl std::future::Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(step)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(StepError::from_panic(panic)))
}

/// `a, b: <their error>; c: <its error>`; past [`CAUSES_NAMED`] errors, how many more.
fn each_items_error(causes: &[(Vec<String>, String)]) -> String {
    let mut said: Vec<String> = causes
        .iter()
        .take(CAUSES_NAMED)
        .map(|(items, error)| format!("{}: {error}", items.join(", ")))
        .collect();
    if causes.len() > CAUSES_NAMED {
        said.push(format!("and {} other errors", causes.len() - CAUSES_NAMED));
    }
    said.join("; ")
}

/// How many distinct errors a group's message names (a group holds up to 25 items; Step
/// Functions keeps 32,768 characters of an error's cause).
const CAUSES_NAMED: usize = 8;

/// The error type of a collect or transform whose invocation's time ran short after progress:
/// the state machine retries it apart from the transient errors (see [`StepError::is_out_of_time`]).
pub const OUT_OF_TIME: &str = "OutOfTime";

/// The error type of a step the vendor asked to wait longer than the client waits within an
/// invocation (`Retry-After` past its retry budget): the state machine waits minutes before the
/// next attempt, not the transient errors' seconds, which would spend every attempt within the
/// wait the vendor asked for.
pub const RATE_LIMITED: &str = "RateLimited";

/// What a start refused by design is called: the connection's run is under way (or another
/// start took the lock at the same moment), or a schedule's tick falls outside its dates. Not a
/// failure of the connector: the trigger answers such a tick without an error (see
/// [`StepError::is_held`]), its summary line's outcome `Held`.
pub const HELD: &str = "Held";

impl StepError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Vendor(error) => error.is_transient(),
            Self::Store(_)
            | Self::NotYetWritten { .. }
            | Self::WaitingForPart { .. }
            | Self::StateMachine(_) => true,
            Self::Unfinished { retryable, .. } => *retryable,
            Self::TimeShort { .. } | Self::CollectPaused { .. } => true,
            Self::Credential(error) => error.may_pass(),
            Self::NotConfigured { .. }
            | Self::BadConfig { .. }
            | Self::AlreadyRunning { .. }
            | Self::LockTaken { .. }
            | Self::LostLock { .. }
            | Self::Superseded { .. }
            | Self::GivenUp { .. }
            | Self::OutsideSchedule { .. }
            | Self::BadObject { .. }
            | Self::Transform { .. }
            | Self::BadEvent { .. }
            | Self::TaskStopped(_)
            | Self::RunTimeSpent { .. }
            | Self::RunFailed(_)
            | Self::NothingCommitted(_) => false,
        }
    }

    /// Whether the step stopped because its invocation's time ran short: for a group, after it
    /// made progress (an item finished or recorded, or pages stored that the next attempt goes on
    /// from). The state machine retries these apart from the transient errors, as many times as
    /// a group needs, so that a group of long items is never cut short by the transient errors'
    /// few attempts; a group that made no progress is retried as its errors are.
    pub fn is_out_of_time(&self) -> bool {
        match self {
            Self::TimeShort { .. } | Self::CollectPaused { .. } => true,
            Self::Unfinished { out_of_time, .. } => *out_of_time,
            _ => false,
        }
    }

    /// A start refused by design ([`HELD`]): only the trigger's starts meet it, never a state of
    /// the state machine.
    pub fn is_held(&self) -> bool {
        matches!(
            self,
            Self::AlreadyRunning { .. } | Self::LockTaken { .. } | Self::OutsideSchedule { .. }
        )
    }

    /// Whether the vendor asked for a wait longer than the client's retry budget: a later
    /// attempt may pass, minutes later.
    pub fn is_rate_limited(&self) -> bool {
        match self {
            Self::Vendor(VendorError::RetryAfterTooLong { .. }) => true,
            Self::Unfinished { rate_limited, .. } => *rate_limited,
            _ => false,
        }
    }

    /// The error type Step Functions sees, which its Retry and Catch name: [`OUT_OF_TIME`],
    /// [`RATE_LIMITED`], `Retryable` (a later attempt may succeed), or `Fatal`.
    pub fn error_type(&self) -> &'static str {
        if self.is_out_of_time() {
            OUT_OF_TIME
        } else if self.is_rate_limited() {
            RATE_LIMITED
        } else if self.is_retryable() {
            "Retryable"
        } else {
            "Fatal"
        }
    }

    pub fn bad_object(key: &str, problem: impl std::fmt::Display) -> Self {
        Self::BadObject {
            key: key.to_string(),
            problem: problem.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_only_where_another_attempt_may_succeed() {
        let store = StepError::from(StoreError::Failed {
            location: "s3://b/k".into(),
            problem: "SlowDown".into(),
        });
        assert!(store.is_retryable());
        assert_eq!(store.to_string(), "store s3://b/k: SlowDown");
        let running = StepError::AlreadyRunning {
            connection_id: "c".into(),
            run_id: "r".into(),
            since: "t".into(),
        };
        assert!(!running.is_retryable());
        assert!(
            running
                .to_string()
                .contains("already running (run r since t)")
        );
        let refused = StepError::from(VendorError::Unauthorized {
            endpoint: "projects",
        });
        assert!(!refused.is_retryable());
    }
}
