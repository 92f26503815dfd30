//! A child execution's items, one after another. Each item is collected (or transformed) unless
//! an earlier attempt of the same child already wrote its record, every item is tried whatever
//! happens to another, and one error at the end names the items that did not finish: the state
//! machine's retry then redoes only those.

use std::time::{Duration, Instant, SystemTime};

use super::access::VendorAccess;
use super::collect::{collect, record_collect_failure};
use super::config::Connection;
use super::documents::{CollectOutcome, ItemStatus, TaskFailure, TransformRecord, WorkItem};
use super::error::{StepError, unless_it_panics};
use super::objects::get_json;
use super::run::run_allows_start;
use super::transform::{record_transform, take_back, transform_until};
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
        let mut attempted = false;
        let outcome = match get_json::<CollectOutcome>(store, &key).await {
            Ok(Some(earlier)) => Ok(earlier),
            Ok(None) => match run_allows_start(time.items_before)
                .and_then(|()| time.left_for_another())
            {
                Err(short) => Err(short),
                Ok(()) => {
                    attempted = true;
                    let started = Instant::now();
                    let collected =
                        unless_it_panics(collect(store, vendor, connection, item, time.deadline))
                            .await;
                    time.spent(started.elapsed());
                    collected
                }
            },
            Err(error) => Err(error),
        };
        match outcome {
            Ok(outcome) => {
                unfinished.progressed |= attempted;
                done.push(outcome);
            }
            Err(error) if error.is_retryable() => {
                // A pause went on from the pages stored before; one after a start over did not.
                unfinished.progressed |= matches!(
                    error,
                    StepError::CollectPaused {
                        started_over: false,
                        ..
                    }
                );
                unfinished.add(&item.item, error);
            }
            Err(error) => {
                match record_collect_failure(store, item, &error.to_string(), Default::default())
                    .await
                {
                    Ok(recorded) => {
                        unfinished.progressed = true;
                        done.push(recorded);
                    }
                    Err(also) => {
                        tracing::error!(item = %item.item, error = %also, "could not record the item's failure")
                    }
                }
                unfinished.add(&item.item, error);
            }
        }
    }
    (done, unfinished.into_error())
}

/// Records, for each item of a group whose collect failed for good (`failure`, as the state
/// machine's `Catch` hands it on), that did not record an outcome, the group's failure as its
/// reason: finalize then names the cause, not only that the collect did not finish. An outcome
/// that lands first (an attempt still running) stands.
pub async fn record_uncollected(
    store: &impl ObjectStore,
    items: &[WorkItem],
    failure: &TaskFailure,
) -> Result<(), StepError> {
    let reason = failure.reason("the group's collect");
    each_item(items, |item| async {
        match get_json::<CollectOutcome>(store, &item.collect_outcome_key()).await {
            Ok(Some(_)) => {}
            // An outcome that does not read is written over, as collect writes over one.
            Ok(None) | Err(StepError::BadObject { .. }) => {
                record_collect_failure(store, item, &reason, Default::default()).await?;
            }
            Err(error) => return Err(error),
        }
        Ok(None::<()>)
    })
    .await
    .map(drop)
}

/// `record` for every item, whatever another's gives: one item that cannot be recorded is logged
/// (what finalize makes of it is its own), not a reason to leave the others unrecorded; an error a retry may mend is answered, after the others, for the
/// state machine's retry to record what is left. What each recorded.
async fn each_item<'a, T, F, Fut>(items: &'a [WorkItem], record: F) -> Result<Vec<T>, StepError>
where
    F: Fn(&'a WorkItem) -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, StepError>>,
{
    let (mut recorded, mut passing) = (Vec::new(), None);
    for item in items {
        match record(item).await {
            Ok(done) => recorded.extend(done),
            Err(error) if error.is_retryable() => {
                passing.get_or_insert(error);
            }
            Err(error) => {
                tracing::error!(item = %item.item, error = %error, "could not record the item's failure")
            }
        }
    }
    passing.map_or(Ok(recorded), Err)
}

/// Records, for each item of a group whose transform failed for good (`failure`, as the state
/// machine's `Catch` hands it on) that was collected whole and has no transform record, the
/// group's failure as its reason: finalize then names the cause (a transform out of memory, or
/// out of time every attempt), not only that the transform did not finish. A record that lands
/// first stands (an attempt still running); one that comes after is refused by this one, and its
/// attempt takes back what it wrote. A part of a split scan is left to finalize: the parts share
/// the item's transform, which another part's child may be running. The items recorded here.
pub async fn record_untransformed(
    store: &impl ObjectStore,
    items: &[WorkItem],
    failure: &TaskFailure,
) -> Result<Vec<TransformRecord>, StepError> {
    let reason = failure.reason("the group's transform");
    each_item(items, |item| async {
        let key = item.run.transform_record(&item.item);
        if item.part.is_some() || get_json::<TransformRecord>(store, &key).await?.is_some() {
            return Ok(None);
        }
        // An item not collected whole is reported for its collect.
        let collected = get_json::<CollectOutcome>(store, &item.collect_outcome_key())
            .await?
            .is_some_and(|outcome| outcome.status == ItemStatus::Complete);
        if !collected {
            return Ok(None);
        }
        let record = TransformRecord {
            item: item.item.clone(),
            failed: Some(reason.clone()),
            ..TransformRecord::default()
        };
        match record_transform(store, item, record).await {
            Ok(record) => Ok(Some(record)),
            // Finalize gave up on the item first: its record says so.
            Err(StepError::GivenUp { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    })
    .await
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
                    let transformed =
                        transform_until(store, connection, item, time.items_before).await;
                    time.spent(started.elapsed());
                    unfinished.progressed |= transformed.is_ok();
                    transformed
                }
            },
            Err(error) => Err(error),
        };
        match record {
            Ok(record) => done.push(record),
            Err(StepError::NotYetWritten { .. } | StepError::WaitingForPart { .. }) => {}
            Err(error) => unfinished.add(&item.item, error),
        }
    }
    (done, unfinished.into_error())
}

/// The time an invocation has for its group's items. A group shares one invocation's time (15
/// minutes at most on Lambda): after the first, no item is started unless twice the longest item
/// so far, and at least a minute, is left, so none is cut off midway; the items not started are left to the
/// state machine's next attempt, which skips the finished ones. No item starts after the run's
/// deadline for the step ([`ItemDeadlines`](super::documents::ItemDeadlines)), the first of an invocation neither (a transform
/// checks it once it knows the item needs one: see [`transform_until`]).
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

/// The items of a group that did not finish, and why.
#[derive(Default)]
struct Unfinished {
    items: Vec<String>,
    causes: Vec<(Vec<String>, String)>,
    retryable: bool,
    /// An item was left as the time ran short.
    out_of_time: bool,
    /// The vendor asked an item to wait longer than the client waits.
    rate_limited: bool,
    /// The invocation finished an item, recorded one's failure or stored pages a pull goes on
    /// from. Only then is the group out of time (retried as often as it needs); otherwise its
    /// errors decide, within the transient errors' few attempts: an attempt that made no progress
    /// would make none the next time either.
    progressed: bool,
}

impl Unfinished {
    fn add(&mut self, item: &str, error: StepError) {
        tracing::warn!(item, error = %error, "item did not finish");
        self.retryable |= error.is_retryable();
        self.out_of_time |= error.is_out_of_time();
        self.rate_limited |= error.is_rate_limited();
        self.items.push(item.to_string());
        let error = error.to_string();
        match self.causes.iter_mut().find(|(_, said)| *said == error) {
            Some((items, _)) => items.push(item.to_string()),
            None => self.causes.push((vec![item.to_string()], error)),
        }
    }

    fn into_error(self) -> Option<StepError> {
        if self.items.is_empty() {
            return None;
        }
        Some(StepError::Unfinished {
            items: self.items,
            causes: self.causes,
            retryable: self.retryable,
            out_of_time: self.out_of_time && self.progressed,
            rate_limited: self.rate_limited,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group whose collect the state machine caught (its retries spent) carries the failure to
    /// the transform, which records it as the reason of each item the collect left without an
    /// outcome (or with one that does not read), the group's message naming each item's own
    /// error; an item collected before it keeps its own.
    #[tokio::test]
    async fn the_caught_collect_failure_is_each_uncollected_items_reason() {
        let item = |id: &str| {
            serde_json::json!({"run": {"connectionId": "c", "runId": "r"}, "item": id,
                "vendorId": id, "name": id, "kind": "sast", "scanId": "s", "record": {}})
        };
        let mut unfinished = Unfinished::default();
        unfinished.add("b", transient());
        unfinished.add("c", short());
        unfinished.add("d", transient());
        let error = unfinished.into_error().expect("items did not finish");
        let cause =
            serde_json::json!({"errorType": error.error_type(), "errorMessage": error.to_string()});
        let group: crate::pipeline::WorkGroup = serde_json::from_value(serde_json::json!({
            "items": [item("a"), item("b"), item("c"), item("d")],
            "collectError": {"Error": "Retryable", "Cause": cause.to_string()}
        }))
        .unwrap();
        let failure = group.collect_error.clone().expect("read beside the items");
        let store = crate::store::MemoryStore::default();
        record_collect_failure(
            &store,
            &group.items[0],
            "its own reason",
            Default::default(),
        )
        .await
        .unwrap();
        // An outcome that does not read (item d's) is written over, as collect writes over one.
        let unreadable = group.items[3].collect_outcome_key();
        store.put(&unreadable, b"{".to_vec().into()).await.unwrap();
        record_uncollected(&store, &group.items, &failure)
            .await
            .unwrap();
        let reasons: Vec<Option<String>> =
            futures_util::future::join_all(group.items.iter().map(|item| async {
                get_json::<CollectOutcome>(&store, &item.collect_outcome_key())
                    .await
                    .unwrap()
                    .unwrap()
                    .reason
            }))
            .await;
        let group_said = format!(
            "the group's collect failed (Retryable): 3 of the group's items did not finish (b, c, d); b, d: {}; c: {}",
            transient(),
            short()
        );
        assert_eq!(
            reasons,
            [
                Some("its own reason".to_string()),
                Some(group_said.clone()),
                Some(group_said.clone()),
                Some(group_said)
            ]
        );
    }

    /// Past eight distinct errors, the message counts the rest.
    #[test]
    fn a_groups_message_names_eight_errors_and_counts_the_rest() {
        let mut unfinished = Unfinished::default();
        for n in 0..10 {
            unfinished.add(&format!("item-{n}"), StepError::TimeShort { left_secs: n });
        }
        let said = unfinished.into_error().expect("an error").to_string();
        assert!(
            said.contains("item-7: not started: the invocation had 7 s left"),
            "{said}"
        );
        assert!(!said.contains("item-8:"), "{said}");
        assert!(said.ends_with("; and 2 other errors"), "{said}");
    }

    fn short() -> StepError {
        StepError::TimeShort { left_secs: 30 }
    }

    fn transient() -> StepError {
        StepError::NotYetWritten {
            key: "k".into(),
            why: "a store fault".into(),
        }
    }

    fn lost_lock() -> StepError {
        StepError::LostLock {
            connection_id: "c".into(),
            run_id: "r".into(),
            holder: "another run".into(),
        }
    }

    /// The group's error: OutOfTime only where the invocation made progress and time left items
    /// out; otherwise as its errors are.
    fn group_error(progressed: bool, errors: Vec<StepError>) -> (bool, bool) {
        let mut unfinished = Unfinished {
            progressed,
            ..Unfinished::default()
        };
        for (n, error) in errors.into_iter().enumerate() {
            unfinished.add(&format!("item-{n}"), error);
        }
        let error = unfinished.into_error().expect("an error");
        (error.is_out_of_time(), error.is_retryable())
    }

    /// A vendor that asks to wait past the client's budget names the step RateLimited (the state
    /// machine waits minutes), alone or in a group, unless the group is out of time after
    /// progress (it goes on at once: its next item may not be limited).
    #[test]
    fn a_long_wait_asked_names_the_step_rate_limited() {
        let limited = || {
            StepError::from(crate::cxone::VendorError::RetryAfterTooLong {
                endpoint: "results",
                asked: std::time::Duration::from_secs(600),
                budget: std::time::Duration::from_secs(300),
            })
        };
        assert_eq!(limited().error_type(), crate::pipeline::RATE_LIMITED);
        let group = |progressed: bool, errors: Vec<StepError>| {
            let mut unfinished = Unfinished {
                progressed,
                ..Unfinished::default()
            };
            for (n, error) in errors.into_iter().enumerate() {
                unfinished.add(&format!("item-{n}"), error);
            }
            unfinished.into_error().expect("an error").error_type()
        };
        assert_eq!(group(false, vec![transient(), limited()]), "RateLimited");
        assert_eq!(group(false, vec![limited(), short()]), "RateLimited");
        assert_eq!(group(true, vec![limited(), short()]), "OutOfTime");
        assert_eq!(group(false, vec![transient()]), "Retryable");
    }

    #[test]
    fn a_group_is_out_of_time_only_after_progress() {
        // Items finished, then the time ran short: go on as often as needed.
        assert_eq!(group_error(true, vec![short(), short()]), (true, true));
        // One item failed for a passing fault, another finished, the rest left for time:
        // progress all the same.
        assert_eq!(group_error(true, vec![transient(), short()]), (true, true));
        // The first item failed for a passing fault and took the time: no progress, retried as
        // that fault (a few attempts).
        assert_eq!(
            group_error(false, vec![transient(), short()]),
            (false, true)
        );
        // A refusal that is not recorded (the run lost its lock) took the time: not repeated as
        // if it had progressed.
        assert_eq!(
            group_error(false, vec![lost_lock(), short()]),
            (false, true)
        );
        // Nothing left for time: as the errors are.
        assert_eq!(group_error(true, vec![transient()]), (false, true));
        assert_eq!(group_error(true, vec![lost_lock()]), (false, false));
    }

    #[test]
    fn no_item_starts_past_the_runs_deadline_not_even_an_invocations_first() {
        let fresh = TimeBudget::until(Some(SystemTime::now() + Duration::from_secs(900)));
        assert!(fresh.left_for_another().is_ok() && run_allows_start(fresh.items_before).is_ok());
        let now = jiff::Timestamp::now();
        let ahead = fresh.items_before(Some(now + jiff::SignedDuration::from_secs(3600)));
        assert!(run_allows_start(ahead.items_before).is_ok());
        let spent = fresh.items_before(Some(now - jiff::SignedDuration::from_secs(1)));
        assert!(
            spent.left_for_another().is_ok(),
            "the invocation's own time is ample"
        );
        let refused = run_allows_start(spent.items_before).expect_err("past the run's deadline");
        assert!(
            matches!(refused, StepError::RunTimeSpent { .. }),
            "{refused}"
        );
        assert!(!refused.is_retryable() && !refused.is_out_of_time());
    }
}
