//! A child execution's items, one after another. Each item is collected (or transformed) unless
//! an earlier attempt of the same child already wrote its record, every item is tried whatever
//! happens to another, and one error at the end names the items that did not finish: the state
//! machine's retry then redoes only those.

use std::time::{Duration, Instant, SystemTime};

use super::access::VendorAccess;
use super::collect::{collect, record_collect_failure};
use super::config::Connection;
use super::documents::{CollectOutcome, ItemDeadlines, TransformRecord, WorkItem};
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

/// A run's items are collected only until this long after the trigger began the run, and
/// transformed only until [`TRANSFORM_ITEMS_WITHIN`]: a collect invocation started just before may
/// take its whole Timeout (15 minutes), the transform of its group after it, and finalize its own
/// with a retry, all before the execution's `TimeoutSeconds` (5 h 30 min from its start, which
/// comes after the run's). An execution cut off there runs no finalize: the run would commit
/// nothing. scripts/check-infra.py checks these sums against the template.
pub const COLLECT_ITEMS_WITHIN: Duration = Duration::from_secs(4 * 3600 + 30 * 60);
/// See [`COLLECT_ITEMS_WITHIN`].
pub const TRANSFORM_ITEMS_WITHIN: Duration = Duration::from_secs(4 * 3600 + 45 * 60);

impl ItemDeadlines {
    /// The deadlines of a run the trigger began at `started`.
    pub fn from_run_start(started: jiff::Timestamp) -> Self {
        let after = |within: Duration| started.checked_add(within).unwrap_or(jiff::Timestamp::MAX);
        Self {
            collect_before: after(COLLECT_ITEMS_WITHIN),
            transform_before: after(TRANSFORM_ITEMS_WITHIN),
        }
    }
}

/// The time an invocation has for its group's items. A group shares one invocation's time (15
/// minutes at most on Lambda): after the first, no item is started unless twice the longest item
/// so far, and at least a minute, is left, so none is cut off midway; the items not started are left to the
/// state machine's next attempt, which skips the finished ones. No item starts after the run's
/// deadline for the step ([`ItemDeadlines`]), the first of an invocation neither.
#[derive(Clone, Copy, Debug)]
pub struct TimeBudget {
    deadline: Option<SystemTime>,
    items_before: Option<jiff::Timestamp>,
    longest: Duration,
}

/// The least time left in which another item is started.
const LEAST_TIME_FOR_AN_ITEM: Duration = Duration::from_secs(60);

impl TimeBudget {
    /// Until `deadline` (the Lambda invocation's); `None`: no limit (the local runner).
    pub fn until(deadline: Option<SystemTime>) -> Self {
        Self {
            deadline,
            items_before: None,
            longest: Duration::ZERO,
        }
    }

    /// No item starts from `moment` on (the run's deadline for the step; `None`: none).
    pub fn items_before(self, moment: Option<jiff::Timestamp>) -> Self {
        Self {
            items_before: moment,
            ..self
        }
    }

    /// The first item of an invocation always starts within the run's deadline: a fresh
    /// invocation has all the time it will ever get, and a function with a Timeout under a
    /// minute must still make progress.
    fn left_for_another(&self) -> Result<(), StepError> {
        if let Some(moment) = self.items_before
            && jiff::Timestamp::now() >= moment
        {
            return Err(StepError::RunTimeSpent {
                deadline: moment.to_string(),
            });
        }
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
    /// An item was left as the time ran short.
    out_of_time: bool,
    /// An item failed for another reason a retry may mend (a vendor or store fault): the group
    /// is then retried as that error is, within the transient errors' few attempts.
    failed_for_another_reason: bool,
}

impl Unfinished {
    fn add(&mut self, item: &WorkItem, error: StepError) {
        tracing::warn!(item = %item.item, error = %error, "item did not finish");
        self.retryable |= error.is_retryable();
        self.out_of_time |= error.is_out_of_time();
        self.failed_for_another_reason |= error.is_retryable() && !error.is_out_of_time();
        self.items.push(item.item.clone());
        self.first.get_or_insert(error);
    }

    fn into_error(self) -> Option<StepError> {
        let first = self.first?;
        Some(StepError::Unfinished {
            items: self.items,
            first: Box::new(first),
            retryable: self.retryable,
            out_of_time: self.out_of_time && !self.failed_for_another_reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_item_starts_past_the_runs_deadline_not_even_an_invocations_first() {
        let fresh = TimeBudget::until(Some(SystemTime::now() + Duration::from_secs(900)));
        assert!(fresh.left_for_another().is_ok());
        let now = jiff::Timestamp::now();
        let ahead = fresh.items_before(Some(now + jiff::SignedDuration::from_secs(3600)));
        assert!(ahead.left_for_another().is_ok());
        let spent = fresh.items_before(Some(now - jiff::SignedDuration::from_secs(1)));
        let refused = spent
            .left_for_another()
            .expect_err("past the run's deadline");
        assert!(
            matches!(refused, StepError::RunTimeSpent { .. }),
            "{refused}"
        );
        assert!(!refused.is_retryable() && !refused.is_out_of_time());
    }
}
