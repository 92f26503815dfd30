//! Scoring: five rows mapping the vendor's severities to a Qualys Detection Score (0–100), and the
//! severity whose score applies to values that match no row.

use serde::{Deserialize, Serialize};

use crate::cxone::Severity;
use crate::field_error::FieldError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scoring {
    pub version: u32,
    pub rows: Vec<ScoreRow>,
    pub default_severity: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRow {
    pub severity: String,
    pub qds: i64,
}

/// How many severities a scoring table covers.
const SEVERITIES: usize = Severity::KNOWN.len();

pub const DEFAULT_SCORING: &str = include_str!("../../maps/scoring-default.json");

#[derive(Clone, Debug)]
pub struct CompiledScoring {
    /// One score per known vendor severity ([`Severity::KNOWN`]), each covered once by the table.
    qds: [u8; SEVERITIES],
    default: usize,
}

impl Scoring {
    pub fn default_table() -> Self {
        serde_json::from_str(DEFAULT_SCORING).expect("the shipped scoring table parses")
    }

    /// Parses and validates; every problem is listed, each naming its row.
    pub fn parse(text: &str) -> Result<CompiledScoring, Vec<FieldError>> {
        let scoring: Scoring = super::map::parse_document(text, "scoring")?;
        scoring.compile()
    }

    pub fn compile(&self) -> Result<CompiledScoring, Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.version != 1 {
            errors.push(FieldError::new(
                "version",
                format!("version {} is not supported; use 1", self.version),
            ));
        }
        let mut qds: [Option<u8>; SEVERITIES] = [None; SEVERITIES];
        let mut named = [false; SEVERITIES];
        for (n, row) in self.rows.iter().enumerate() {
            let field = format!("rows[{n}]");
            let Some(index) = Severity::KNOWN
                .iter()
                .position(|s| s.eq_ignore_ascii_case(&row.severity))
            else {
                errors.push(FieldError::new(
                    &field,
                    format!(
                        "'{}' is not a severity; use one of {}",
                        row.severity,
                        Severity::KNOWN.join(", ")
                    ),
                ));
                continue;
            };
            named[index] = true;
            if !(0..=100).contains(&row.qds) {
                errors.push(FieldError::new(
                    &field,
                    format!("{}: QDS {} is outside 0–100", row.severity, row.qds),
                ));
                continue;
            }
            if qds[index].is_some() {
                errors.push(FieldError::new(
                    &field,
                    format!("{} appears more than once", Severity::KNOWN[index]),
                ));
            }
            qds[index] = Some(row.qds as u8);
        }
        for (index, missing) in qds.iter().enumerate() {
            if missing.is_none() && !named[index] {
                errors.push(FieldError::new(
                    "rows",
                    format!(
                        "no row for {}; the table needs one row per severity",
                        Severity::KNOWN[index]
                    ),
                ));
            }
        }
        let default = Severity::KNOWN
            .iter()
            .position(|s| s.eq_ignore_ascii_case(&self.default_severity));
        if default.is_none() {
            errors.push(FieldError::new(
                "defaultSeverity",
                format!(
                    "'{}' is not one of {}",
                    self.default_severity,
                    Severity::KNOWN.join(", ")
                ),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(CompiledScoring {
            qds: qds.map(|q| q.expect("checked above")),
            default: default.expect("checked above"),
        })
    }
}

impl CompiledScoring {
    /// The severity values no row matches are scored as (`defaultSeverity`).
    pub fn default_severity(&self) -> &'static str {
        Severity::KNOWN[self.default]
    }

    /// The QDS of a vendor severity, and whether the severity matched a row.
    pub fn score(&self, severity: &Severity) -> (u8, bool) {
        let row = severity
            .is_known()
            .then(|| Severity::KNOWN.iter().position(|s| *s == severity.as_str()))
            .flatten();
        match row {
            Some(index) => (self.qds[index], true),
            None => (self.qds[self.default], false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_error::Described;

    #[test]
    fn the_default_table_scores_each_severity_and_defaults_unknown_ones() {
        let scoring = Scoring::parse(DEFAULT_SCORING).unwrap();
        assert_eq!(scoring.score(&Severity::Critical), (95, true));
        assert_eq!(scoring.score(&Severity::parse("info")), (10, true));
        assert_eq!(scoring.score(&Severity::parse("BLOCKER")), (55, false));
    }

    #[test]
    fn each_problem_names_its_row() {
        let text = r#"{"version":1,"rows":[{"severity":"CRITICAL","qds":101},{"severity":"HIGH","qds":80},{"severity":"HIGH","qds":70},
            {"severity":"URGENT","qds":10},{"severity":"LOW","qds":30}],"defaultSeverity":"SEVERE"}"#;
        let errors = Scoring::parse(text).unwrap_err();
        let all = errors.described("\n");
        for expected in [
            "config field `rows[0]`: CRITICAL: QDS 101 is outside 0–100",
            "config field `rows[2]`: HIGH appears more than once",
            "config field `rows[3]`: 'URGENT' is not a severity",
            "config field `rows`: no row for MEDIUM",
            "config field `rows`: no row for INFO",
            "config field `defaultSeverity`: 'SEVERE' is not one of",
        ] {
            assert!(all.contains(expected), "{expected}: {all}");
        }
        assert!(
            Scoring::parse("{").unwrap_err()[0]
                .problem
                .contains("not a scoring document")
        );
        let wrong_type = Scoring::parse(
            r#"{"version":1,"rows":[{"severity":"HIGH","qds":"eighty"}],"defaultSeverity":"HIGH"}"#,
        )
        .unwrap_err();
        assert_eq!(
            wrong_type[0].field.as_deref(),
            Some("rows[0].qds"),
            "{wrong_type:?}"
        );
    }
}
