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
#[serde(from = "WrittenTriageMap")]
pub struct TriageMap {
    pub states: BTreeMap<String, TriageOutcome>,
    /// States the map does not name (custom tenant states).
    pub unknown: TriageOutcome,
}

/// A triage map as a config writes it: `states` names what differs from the default; a built-in
/// state it leaves out keeps its default outcome (not `unknown`'s, which would send a TO_VERIFY
/// finding FIXED under `"unknown": "FIXED"`, or NOT_EXPLOITABLE open under a map of one custom
/// state).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenTriageMap {
    #[serde(default)]
    states: BTreeMap<String, TriageOutcome>,
    #[serde(default = "open")]
    unknown: TriageOutcome,
}

impl From<WrittenTriageMap> for TriageMap {
    fn from(written: WrittenTriageMap) -> Self {
        let mut states = TriageMap::default().states;
        states.extend(written.states);
        Self {
            states,
            unknown: written.unknown,
        }
    }
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

    /// A map naming some states leaves the built-in ones it does not name as they are by
    /// default: `unknown` is for custom states only. Before, the named states replaced the whole
    /// table, so NOT_EXPLOITABLE went open and, under `"unknown": "FIXED"`, every TO_VERIFY,
    /// CONFIRMED and URGENT finding went FIXED (closed in ETM).
    #[test]
    fn a_map_of_some_states_keeps_the_built_in_ones_it_does_not_name() {
        let partial: TriageMap = serde_json::from_str(
            r#"{"states": {"PROPOSED_NOT_EXPLOITABLE": "PROTECTED", "IGNORE_FOR_NOW": "PROTECTED"}, "unknown": "FIXED"}"#,
        )
        .unwrap();
        assert_eq!(partial.outcome("NOT_EXPLOITABLE"), TriageOutcome::Protected);
        assert_eq!(
            partial.outcome("PROPOSED_NOT_EXPLOITABLE"),
            TriageOutcome::Protected
        );
        for open in ["TO_VERIFY", "CONFIRMED", "URGENT"] {
            assert_eq!(partial.outcome(open), TriageOutcome::Open, "{open}");
        }
        assert_eq!(partial.outcome("Ignore for now"), TriageOutcome::Protected);
        assert_eq!(partial.outcome("Custom state"), TriageOutcome::Fixed);
        // A built-in state named is taken as named; the map stored reads back the same.
        let overridden: TriageMap =
            serde_json::from_str(r#"{"states": {"NOT_EXPLOITABLE": "OPEN"}}"#).unwrap();
        assert_eq!(overridden.outcome("NOT_EXPLOITABLE"), TriageOutcome::Open);
        let stored = serde_json::to_string(&partial).unwrap();
        assert_eq!(serde_json::from_str::<TriageMap>(&stored).unwrap(), partial);
    }
}
