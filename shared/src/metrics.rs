//! One line per function invocation: a structured summary that is also a CloudWatch Embedded
//! Metric Format document, so CloudWatch extracts the metrics (items, findings, rejected, retries,
//! duration) from the log without any API call or extra permission.

use std::time::Instant;

use serde_json::{Value, json};

use crate::pipeline::OUT_OF_TIME;

pub const NAMESPACE: &str = "CxoneEtm";

/// What an invocation did, for its summary line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub connection: String,
    pub run: Option<String>,
    pub item: Option<String>,
    /// `ok`, an item status (`complete`, `incomplete`, …), `Held` (a schedule's tick refused by
    /// design, no error), or the error type (`OutOfTime`, `Retryable`, `Fatal`).
    pub outcome: String,
    pub items: u64,
    pub findings: u64,
    pub rejected: u64,
    pub retries: u64,
    pub error: Option<String>,
    /// A schedule's tick: one that fails is a run that did not start, which no execution's
    /// alarm sees; its line carries `StartsFailed` (1 or 0), which the template alarms on (with
    /// the ticks Lambda counts dropped, which include those whose invocation died unsummarized).
    pub scheduled_start: bool,
    /// A run finalize committed: whether it is partial (some items not delivered whole, or a
    /// listing that could not be trusted; the findings concerned carried). Its line carries
    /// `RunsPartial` (1 or 0), which the template alarms on: the execution succeeded, so the
    /// failed-runs alarm does not see it.
    pub run_partial: Option<bool>,
    /// A run finalize committed: its DAST environments whose last login failed. Its line carries
    /// `FailedLogins`, which the template alarms on: their scans may have seen only what a visitor
    /// without the login sees, and a login that stays broken would hold their findings open, the
    /// run complete, with no one told.
    pub failed_logins: Option<u64>,
}

/// The EMF document for one invocation of `function` that took `duration_ms`.
pub fn emf_line(function: &str, summary: &Summary, duration_ms: u64, timestamp_ms: u64) -> Value {
    let metric = |name: &str, unit: &str| json!({"Name": name, "Unit": unit});
    let mut line = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function", "ConnectionId"], ["Function"]],
                "Metrics": [
                    metric("Items", "Count"),
                    metric("Findings", "Count"),
                    metric("Rejected", "Count"),
                    metric("Retries", "Count"),
                    metric("Errors", "Count"),
                    metric("Duration", "Milliseconds"),
                ],
            }],
        },
        "message": "invocation summary",
        "Function": function,
        "ConnectionId": summary.connection,
        "Outcome": summary.outcome,
        "Items": summary.items,
        "Findings": summary.findings,
        "Rejected": summary.rejected,
        "Retries": summary.retries,
        // A group that ran out of time after progress goes on in the next invocation: not an
        // error (a group of long items makes dozens), though its `Outcome` and `Error` say why.
        "Errors": u64::from(summary.error.is_some() && summary.outcome != OUT_OF_TIME),
        "Duration": duration_ms,
    });
    // A count only some lines carry: declared where it is set.
    let mut count = |name: &str, n: u64| {
        line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array_mut()
            .expect("declared above")
            .push(metric(name, "Count"));
        line[name] = json!(n);
    };
    if summary.scheduled_start {
        count("StartsFailed", u64::from(summary.error.is_some()));
    }
    if let Some(partial) = summary.run_partial {
        count("RunsPartial", u64::from(partial));
    }
    if let Some(failed) = summary.failed_logins {
        count("FailedLogins", failed);
    }
    if let Some(run) = &summary.run {
        line["RunId"] = json!(run);
    }
    if let Some(item) = &summary.item {
        line["Item"] = json!(item);
    }
    if let Some(error) = &summary.error {
        line["Error"] = json!(error);
    }
    line
}

/// Times an invocation and prints its summary line to stdout (where Lambda collects EMF).
pub struct Invocation {
    function: &'static str,
    started: Instant,
}

impl Invocation {
    pub fn start(function: &'static str) -> Self {
        Self {
            function,
            started: Instant::now(),
        }
    }

    pub fn finish(self, summary: &Summary) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let line = emf_line(
            self.function,
            summary,
            self.started.elapsed().as_millis() as u64,
            now_ms,
        );
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_metric_has_a_value_and_every_dimension_a_key() {
        let summary = Summary {
            connection: "cx-sast".into(),
            run: Some("r1".into()),
            item: Some("p1".into()),
            outcome: "complete".into(),
            items: 1,
            findings: 42,
            rejected: 2,
            retries: 3,
            error: None,
            scheduled_start: true,
            run_partial: Some(true),
            failed_logins: Some(3),
        };
        let line = emf_line("collect", &summary, 1234, 1_700_000_000_000);
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_u64(), "metric {name} has no value");
        }
        for set in directive["Dimensions"].as_array().unwrap() {
            for key in set.as_array().unwrap() {
                assert!(line[key.as_str().unwrap()].is_string(), "{key}");
            }
        }
        assert_eq!(
            (&line["Findings"], &line["Duration"], &line["Errors"]),
            (&json!(42), &json!(1234), &json!(0))
        );
        let failed = emf_line(
            "collect",
            &Summary {
                error: Some("boom".into()),
                outcome: "Fatal".into(),
                ..summary
            },
            5,
            0,
        );
        assert_eq!(
            (&failed["Errors"], &failed["Error"]),
            (&json!(1), &json!("boom"))
        );
        let going_on = emf_line(
            "collect",
            &Summary {
                error: Some("not started: the invocation had 30 s left".into()),
                outcome: OUT_OF_TIME.into(),
                ..Summary::default()
            },
            5,
            0,
        );
        assert_eq!(
            (&going_on["Errors"], &going_on["Outcome"]),
            (&json!(0), &json!("OutOfTime"))
        );
    }

    /// Finalize's line of a committed run counts whether it was partial; no other line declares it.
    #[test]
    fn only_a_committed_run_counts_whether_it_was_partial() {
        let line = |run_partial| {
            emf_line(
                "finalize",
                &Summary {
                    run_partial,
                    ..Summary::default()
                },
                5,
                0,
            )
        };
        let declared = |line: &Value| {
            line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["Name"] == "RunsPartial")
        };
        let (partial, whole, other) = (line(Some(true)), line(Some(false)), line(None));
        assert!(declared(&partial) && declared(&whole) && !declared(&other));
        assert_eq!(
            (&partial["RunsPartial"], &whole["RunsPartial"]),
            (&json!(1), &json!(0))
        );
        assert!(other.get("RunsPartial").is_none());
    }

    /// Finalize's line of a committed run counts its DAST environments whose login failed, as a
    /// metric the template alarms on; no other line declares it.
    #[test]
    fn a_committed_run_counts_its_failed_dast_logins() {
        let line = |failed| {
            emf_line(
                "finalize",
                &Summary {
                    failed_logins: failed,
                    ..Summary::default()
                },
                5,
                0,
            )
        };
        let declared = |line: &Value| {
            line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .contains(&json!({"Name": "FailedLogins", "Unit": "Count"}))
        };
        let (held, none, other) = (line(Some(7)), line(Some(0)), line(None));
        assert!(declared(&held) && declared(&none) && !declared(&other));
        assert_eq!(
            (&held["FailedLogins"], &none["FailedLogins"]),
            (&json!(7), &json!(0))
        );
        assert!(other.get("FailedLogins").is_none());
    }

    #[test]
    fn only_a_schedules_tick_counts_a_start_that_failed() {
        let declared = |line: &Value| {
            line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["Name"] == "StartsFailed")
        };
        let refused = Summary {
            outcome: "Fatal".into(),
            error: Some("connection sast: the secret cannot be read".into()),
            ..Summary::default()
        };
        let tick = |summary: &Summary| {
            emf_line(
                "trigger",
                &Summary {
                    scheduled_start: true,
                    ..summary.clone()
                },
                5,
                0,
            )
        };
        let failed = tick(&refused);
        assert!(declared(&failed));
        assert_eq!(
            (&failed["StartsFailed"], &failed["Errors"]),
            (&json!(1), &json!(1))
        );
        let started = tick(&Summary::default());
        assert!(declared(&started));
        assert_eq!(started["StartsFailed"], json!(0));
        let plan = emf_line("trigger", &refused, 5, 0);
        assert!(!declared(&plan) && plan.get("StartsFailed").is_none());
    }
}
