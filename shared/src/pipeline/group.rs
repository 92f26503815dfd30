//! A child execution's items, one after another. Each item is collected (or transformed) unless
//! an earlier attempt of the same child already wrote its record, every item is tried whatever
//! happens to another, and one error at the end names the items that did not finish: the state
//! machine's retry then redoes only those.

use std::time::{Duration, Instant, SystemTime};

use super::access::VendorAccess;
use super::collect::{collect, record_collect_failure};
use super::config::Connection;
use super::documents::{CollectOutcome, TransformRecord, WorkItem};
use super::error::StepError;
use super::objects::get_json;
use super::transform::{take_back, transform};
use crate::store::ObjectStore;

/// Collects each item that has no collect record yet. A refusal is recorded as the item's
/// Failed outcome by `collect`; any other error that no retry can mend is recorded too, with its
/// reason. Errors a retry may mend leave the item without a record, for the next attempt.
pub async fn collect_group(
    store: &impl ObjectStore,
    vendor: &VendorAccess,
    connection: &Connection,
    items: &[WorkItem],
    mut time: TimeBudget,
) -> (Vec<CollectOutcome>, Option<StepError>) {
    let mut done = Vec::with_capacity(items.len());
    let mut unfinished = Unfinished::default();
    for item in items {
        let key = item.collect_outcome_key();
        let outcome = match get_json::<CollectOutcome>(store, &key).await {
            Ok(Some(earlier)) => Ok(earlier),
            Ok(None) => match time.left_for_another() {
                Err(short) => Err(short),
                Ok(()) => {
                    let started = Instant::now();
                    let collected = collect(store, vendor, connection, item, time.deadline).await;
                    time.spent(started.elapsed());
                    collected
                }
            },
            Err(error) => Err(error),
        };
        match outcome {
            Ok(outcome) => done.push(outcome),
            Err(error) if error.is_retryable() => unfinished.add(item, error),
            Err(error) => {
                match record_collect_failure(store, item, &error.to_string(), Default::default())
                    .await
                {
                    Ok(recorded) => done.push(recorded),
                    Err(also) => {
                        tracing::error!(item = %item.item, error = %also, "could not record the item's failure")
                    }
                }
                unfinished.add(item, error);
            }
        }
    }
    (done, unfinished.into_error())
}

/// Transforms each collected item that has no transform record yet. An item that was not
/// collected is left to finalize, which reports it ("collect did not finish").
pub async fn transform_group(
    store: &impl ObjectStore,
    connection: &Connection,
    items: &[WorkItem],
    mut time: TimeBudget,
) -> (Vec<TransformRecord>, Option<StepError>) {
    let mut done = Vec::with_capacity(items.len());
    let mut unfinished = Unfinished::default();
    for item in items {
        let key = item.run.transform_record(&item.item);
        let record = match get_json::<TransformRecord>(store, &key).await {
            // A record that commits nothing (finalize gave up on the item, or an attempt failed):
            // what an attempt cut off while it took back its writes left goes now.
            Ok(Some(earlier)) if earlier.given_up || earlier.failed.is_some() => {
                match take_back(store, item).await {
                    Ok(()) if item.part.is_some() => continue,
                    taken => taken.map(|()| earlier),
                }
            }
            // A split scan's record is reported by the part whose transform wrote it.
            Ok(Some(_)) if item.part.is_some() => continue,
            Ok(Some(earlier)) => Ok(earlier),
            Ok(None) => match time.left_for_another() {
                Err(short) => Err(short),
                Ok(()) => {
                    let started = Instant::now();
                    let transformed = transform(store, connection, item).await;
                    time.spent(started.elapsed());
                    transformed
                }
            },
            Err(error) => Err(error),
        };
        match record {
            Ok(record) => done.push(record),
            Err(StepError::NotYetWritten { .. } | StepError::WaitingForPart { .. }) => {}
            Err(error) => unfinished.add(item, error),
        }
    }
    (done, unfinished.into_error())
}

/// The time an invocation has for its group's items. A group shares one invocation's time (15
/// minutes at most on Lambda): after the first, no item is started unless twice the longest item
/// so far, and at least a minute, is left, so none is cut off midway; the items not started are left to the
/// state machine's next attempt, which skips the finished ones.
#[derive(Clone, Copy, Debug)]
pub struct TimeBudget {
    deadline: Option<SystemTime>,
    longest: Duration,
}

/// The least time left in which another item is started.
const LEAST_TIME_FOR_AN_ITEM: Duration = Duration::from_secs(60);

impl TimeBudget {
    /// Until `deadline` (the Lambda invocation's); `None`: no limit (the local runner).
    pub fn until(deadline: Option<SystemTime>) -> Self {
        Self {
            deadline,
            longest: Duration::ZERO,
        }
    }

    /// The first item of an invocation always starts: a fresh invocation has all the time it
    /// will ever get, and a function with a Timeout under a minute must still make progress.
    fn left_for_another(&self) -> Result<(), StepError> {
        let (Some(deadline), false) = (self.deadline, self.longest.is_zero()) else {
            return Ok(());
        };
        let left = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if left >= LEAST_TIME_FOR_AN_ITEM.max(self.longest * 2) {
            return Ok(());
        }
        Err(StepError::TimeShort {
            left_secs: left.as_secs(),
        })
    }

    fn spent(&mut self, took: Duration) {
        self.longest = self.longest.max(took).max(Duration::from_nanos(1));
    }
}

/// The items of a group that did not finish, and why the first did not.
#[derive(Default)]
struct Unfinished {
    items: Vec<String>,
    first: Option<StepError>,
    retryable: bool,
}

impl Unfinished {
    fn add(&mut self, item: &WorkItem, error: StepError) {
        tracing::warn!(item = %item.item, error = %error, "item did not finish");
        self.retryable |= error.is_retryable();
        self.items.push(item.item.clone());
        self.first.get_or_insert(error);
    }

    fn into_error(self) -> Option<StepError> {
        let first = self.first?;
        Some(StepError::Unfinished {
            items: self.items,
            first: Box::new(first),
            retryable: self.retryable,
        })
    }
}
