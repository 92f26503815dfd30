//! What a triage state means for ETM: a finding a person marked NOT_EXPLOITABLE is reported as
//! PROTECTED instead of open; the states that still need work keep the status the scan gives them.
//! Unknown (custom) states are kept open — the safe default — and flagged on the finding.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cxone::TriageState;
use crate::field_error::FieldError;

/// The ETM status a triage state leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TriageOutcome {
    /// Keep the status from the scan (NEW, ACTIVE, REOPENED, FIXED).
    Open,
    /// Reported as PROTECTED: the risk was judged not exploitable.
    Protected,
    /// Reported as FIXED.
    Fixed,
}

/// Triage state (as Checkmarx One names it, upper case with underscores) → outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriageMap {
    pub states: BTreeMap<String, TriageOutcome>,
    /// States the map does not name (custom tenant states).
    #[serde(default = "open")]
    pub unknown: TriageOutcome,
}

fn open() -> TriageOutcome {
    TriageOutcome::Open
}

impl Default for TriageMap {
    fn default() -> Self {
        let states = [
            ("TO_VERIFY", TriageOutcome::Open),
            ("PROPOSED_NOT_EXPLOITABLE", TriageOutcome::Open),
            ("CONFIRMED", TriageOutcome::Open),
            ("URGENT", TriageOutcome::Open),
            ("NOT_EXPLOITABLE", TriageOutcome::Protected),
        ]
        .into_iter()
        .map(|(s, o)| (s.to_string(), o))
        .collect();
        Self {
            states,
            unknown: TriageOutcome::Open,
        }
    }
}

impl TriageMap {
    /// The outcome for a state as the vendor sent it (`Not Exploitable` and `NOT_EXPLOITABLE`
    /// alike).
    pub fn outcome(&self, state: &str) -> TriageOutcome {
        self.states
            .get(&TriageState::canonical_name(state))
            .copied()
            .unwrap_or(self.unknown)
    }

    /// The ETM `findingStatus` this outcome forces, if any.
    pub fn forced_status(outcome: TriageOutcome) -> Option<&'static str> {
        match outcome {
            TriageOutcome::Open => None,
            TriageOutcome::Protected => Some("PROTECTED"),
            TriageOutcome::Fixed => Some("FIXED"),
        }
    }

    /// Problems with the map's state names, each naming the entry.
    pub fn problems(&self) -> Vec<FieldError> {
        self.states
            .keys()
            .filter(|s| s.is_empty() || TriageState::canonical_name(s) != **s)
            .map(|s| FieldError::new("triage.states", format!("'{s}' is not written as Checkmarx One names states (upper case, '_' between words, e.g. NOT_EXPLOITABLE)")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_states_map_and_custom_states_stay_open() {
        let map = TriageMap::default();
        assert_eq!(map.outcome("Not Exploitable"), TriageOutcome::Protected);
        assert_eq!(map.outcome("NOT_EXPLOITABLE"), TriageOutcome::Protected);
        assert_eq!(map.outcome("URGENT"), TriageOutcome::Open);
        assert_eq!(map.outcome("Ignore for now"), TriageOutcome::Open);
        assert_eq!(TriageMap::forced_status(TriageOutcome::Open), None);
        let custom: TriageMap = serde_json::from_str(
            r#"{"states": {"IGNORE_FOR_NOW": "PROTECTED", "Bad name": "OPEN"}, "unknown": "OPEN"}"#,
        )
        .unwrap();
        assert_eq!(custom.outcome("Ignore for now"), TriageOutcome::Protected);
        assert_eq!(custom.problems().len(), 1);
        assert!(custom.problems()[0].to_string().contains("'Bad name'"));
    }
}
