//! What a user sees of a connection: its state as its runs left it (`state.json`) and, from its
//! schedule, when it runs next. The CLI's `status` and the API's connection and run routes show it.

use serde::Serialize;

use super::config::Connection;
use super::error::StepError;
use super::run::{RunOutcome, RunState, StateDocument, read_state};
use super::schedule::NextRun;
use crate::store::ObjectStore;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    pub connection_id: String,
    #[serde(flatten)]
    pub state: StateDocument,
    /// The next scheduled run the trigger will accept (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<String>,
    /// The same time in the schedule's time zone, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_local: Option<String>,
    /// Why there is no next run time: no schedule, a rate schedule before its first run, or a
    /// schedule that is over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_note: Option<String>,
}

/// The connection's status at `now`. Its schedule is the one its scheduled events carry (what
/// fires it), else its stored config's. A connection stored before states were recorded shows as
/// registered (or scheduled) until its first run.
pub async fn connection_status(
    store: &impl ObjectStore,
    connection: &Connection,
    now: jiff::Timestamp,
) -> Result<ConnectionStatus, StepError> {
    let id = &connection.config.id;
    let state = read_state(store, id).await?.unwrap_or_else(|| {
        StateDocument::fresh(if connection.schedule.is_some() {
            RunState::Scheduled
        } else {
            RunState::Registered
        })
    });
    let mut status = ConnectionStatus {
        connection_id: id.clone(),
        state,
        next_run_at: None,
        next_run_local: None,
        next_run_note: None,
    };
    let schedule = status
        .state
        .event_schedule
        .as_ref()
        .and_then(|s| s.parse().ok())
        .or_else(|| connection.schedule.clone());
    let Some(schedule) = &schedule else {
        status.next_run_note = Some("no schedule: runs start on demand".into());
        return Ok(status);
    };
    let last_scheduled = status
        .state
        .last_scheduled_run_at
        .as_deref()
        .and_then(|at| at.parse().ok());
    match schedule.next_run(now, last_scheduled) {
        NextRun::At(at) => {
            status.next_run_at = Some(at.to_string());
            status.next_run_local = Some(
                schedule.local(at).strftime("%Y-%m-%d %H:%M %Z").to_string()
                    + &format!(" ({})", schedule.zone_name()),
            );
        }
        NextRun::Unknown(why) | NextRun::Over(why) => status.next_run_note = Some(why),
    }
    Ok(status)
}

impl ConnectionStatus {
    /// The state in words: `Processed (partial): …`, `Failed: …`, `Scheduled`.
    pub fn headline(&self) -> String {
        let state = format!("{:?}", self.state.state);
        let outcome = match self.state.outcome {
            Some(RunOutcome::Complete) => " (complete)",
            Some(RunOutcome::Partial) => " (partial)",
            None => "",
        };
        match &self.state.reason {
            Some(reason) => format!("{state}{outcome}: {reason}"),
            None => format!("{state}{outcome}"),
        }
    }

    /// Lines for a terminal.
    pub fn to_text(&self) -> String {
        let mut text = format!("connection {}: {}\n", self.connection_id, self.headline());
        let or_none = |run: &Option<String>| run.clone().unwrap_or_else(|| "none".into());
        text += &format!(
            "  last run: {}; last committed run: {}\n",
            or_none(&self.state.last_run),
            or_none(&self.state.last_committed_run)
        );
        match (&self.next_run_local, &self.next_run_at, &self.next_run_note) {
            (Some(local), Some(utc), _) => text += &format!("  next run: {local}, {utc}\n"),
            (_, _, Some(note)) => text += &format!("  next run: none ({note})\n"),
            _ => {}
        }
        text
    }
}
