//! The pipeline: a connection's run from trigger to commit, as plain async steps over the object
//! store port. The Lambda functions and the local runner call the same steps, one file each:
//! [`plan`], [`collect`], [`transform`], [`finalize`]. [`run`] alone moves a run through its
//! states (lock, run record, connection state); the stored documents are in `documents`, their
//! keys in [`crate::layout`].

mod access;
mod collect;
mod commits;
mod config;
mod documents;
mod error;
mod finalize;
mod group;
mod objects;
mod plan;
mod run;
mod runner;
mod schedule;
mod selection;
mod split;
mod status;
mod transform;

pub use access::VendorAccess;
pub use collect::{collect, record_collect_failure};
pub use config::{
    BranchPolicy, Connection, ConnectionConfig, DeletionLimit, Filters, check_key_segment,
};
pub(crate) use documents::is_zero_u64;
pub use documents::{
    CollectOutcome, DeletedItem, FilteredItem, ItemDeadlines, ItemStatus, ItemTraffic,
    LISTED_PER_ITEM, Manifest, ManifestItem, ObjectEntry, ScanPart, TaskFailure, TransformRecord,
    WorkGroup, WorkItem,
};
pub use error::{HELD, OUT_OF_TIME, RATE_LIMITED, StepError, panic_said};
pub use finalize::finalize;
pub use group::{
    TimeBudget, collect_group, record_uncollected, record_untransformed, transform_group,
};
pub use plan::{
    MAX_ITEMS_PER_GROUP, StandingGroups, group_items, plan, read_work_list, write_plan,
};
pub use run::{
    EndedHolder, HolderEnd, RunOutcome, RunRecord, RunState, StateDocument, Trigger, VendorScope,
    begin_run, begin_run_recovering, fail_run, last_committed_run, never_started_holder,
    read_state, record_event_schedule, record_registration,
};
pub use runner::{
    EngineSummary, LOCK_LEASE, RunSummary, StageTimes, run_connection, run_connection_until,
};
pub use schedule::{NextRun, ParsedSchedule, Schedule};
pub use status::{ConnectionStatus, connection_status};
pub use transform::transform;

pub use crate::layout::{RunRef, config_key, item_key, lock_key, schedule_config_key, state_key};

/// Now, RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
