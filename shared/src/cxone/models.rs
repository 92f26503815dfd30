//! What the vendor sends, typed leniently: unknown fields are ignored, unknown enum values are kept
//! as their raw text (never dropped or guessed), ids that arrive as numbers or strings are both
//! accepted, and everything a real response may omit is optional.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// An enum the vendor may extend: known values by name (any case), anything else kept verbatim.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$meta])*
        /// Ordered as listed (most severe first for severities), then unknown values by text.
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($variant,)*
            /// A value this version does not know, as the vendor sent it.
            Other(String),
        }

        impl $name {
            /// The values this version knows, as the vendor spells them.
            pub const KNOWN: &'static [&'static str] = &[$($text),*];

            /// ASCII case and surrounding blanks aside, as the vendor's other words are read.
            pub fn parse(raw: &str) -> Self {
                let word = raw.trim();
                $(if word.eq_ignore_ascii_case($text) { return Self::$variant; })*
                Self::Other(raw.to_string())
            }

            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(raw) => raw,
                }
            }

            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Other(_))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok(Self::parse(&raw))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

open_enum!(
    /// Severity of SAST/SCA/KICS results (and DAST, whose casing is undocumented).
    Severity { Critical = "CRITICAL", High = "HIGH", Medium = "MEDIUM", Low = "LOW", Info = "INFO" }
);
open_enum!(
    /// Lifecycle status of a result in its scan.
    ResultStatus { New = "NEW", Recurrent = "RECURRENT", Fixed = "FIXED" }
);
open_enum!(
    /// Triage state; tenants can define custom states, which arrive as `Other`.
    TriageState {
        ToVerify = "TO_VERIFY",
        NotExploitable = "NOT_EXPLOITABLE",
        ProposedNotExploitable = "PROPOSED_NOT_EXPLOITABLE",
        Confirmed = "CONFIRMED",
        Urgent = "URGENT",
    }
);
impl TriageState {
    /// A state's name as Checkmarx One writes states, and as configs name them: upper case with
    /// `_` between words (`Not Exploitable` → `NOT_EXPLOITABLE`), custom states too.
    pub fn canonical_name(raw: &str) -> String {
        raw.trim().to_ascii_uppercase().replace(' ', "_")
    }

    /// A state as a result carries it, in any case or spacing; a custom state keeps its text.
    pub fn read(raw: &str) -> Self {
        // Most states arrive spelled as Checkmarx spells them: known without an allocation.
        let trimmed = raw.trim();
        if let Some(known) = Self::KNOWN.iter().find(|k| k.eq_ignore_ascii_case(trimmed)) {
            return Self::parse(known);
        }
        match Self::parse(&Self::canonical_name(raw)) {
            Self::Other(_) => Self::Other(raw.to_string()),
            known => known,
        }
    }

    /// Whether two states are the same state, however each was written.
    pub fn same_as(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Other(a), Self::Other(b)) => Self::canonical_name(a) == Self::canonical_name(b),
            _ => self == other,
        }
    }
}

open_enum!(
    /// The engine that produced a result in `/api/results`.
    ResultType { Sast = "sast", Kics = "kics", Sca = "sca", ScaContainer = "sca-container", Containers = "containers" }
);
open_enum!(
    /// Status of a DAST result.
    DastStatus { New = "New", Recurrent = "Recurrent", Fixed = "Fixed", Resurfaced = "Resurfaced", Active = "Active" }
);

/// A number that may exceed `i64` (SAST `queryId`) or a string (KICS `queryId`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(u64),
    Signed(i64),
    Text(String),
}

impl std::fmt::Display for NumberOrText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Signed(n) => write!(f, "{n}"),
            Self::Text(t) => f.write_str(t),
        }
    }
}

/// A list or map the vendor may send as `null` for none (as Go writes an empty slice), read as
/// empty: refused, it dropped the whole project or environment from the run.
fn null_as_empty<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `GET /api/projects` item.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub repo_url: Option<String>,
    #[serde(default)]
    pub main_branch: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub groups: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: BTreeMap<String, Value>,
    #[serde(default)]
    pub origin: Option<String>,
}

/// A value of the `GET /api/projects/last-scan` map.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastScan {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub engines: Vec<String>,
}

/// A scan's record (`GET /api/scans/{id}`), only what tells which scan it is and the engines it ran.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanRecord {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub engines: Option<Vec<String>>,
    #[serde(default)]
    pub status_details: Option<Vec<EngineStatus>>,
}

/// One of a scan's `statusDetails`: `general`, or an engine by name.
#[derive(Clone, Debug, Deserialize)]
pub struct EngineStatus {
    #[serde(default)]
    pub name: Option<String>,
}

impl ScanRecord {
    /// `engines`, else the engines `statusDetails` names (all but `general`); `null` is none.
    pub fn engines_ran(self) -> Vec<String> {
        match self.engines {
            Some(engines) if !engines.is_empty() => engines,
            _ => self
                .status_details
                .unwrap_or_default()
                .into_iter()
                .filter_map(|status| status.name)
                .filter(|name| !name.is_empty() && !name.eq_ignore_ascii_case("general"))
                .collect(),
        }
    }
}

/// An `/api/results` item, every engine type.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanResult {
    #[serde(rename = "type")]
    pub kind: ResultType,
    pub id: String,
    #[serde(default)]
    pub similarity_id: Option<NumberOrText>,
    #[serde(default)]
    pub alternate_id: Option<String>,
    pub status: ResultStatus,
    pub state: TriageState,
    pub severity: Severity,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub first_found_at: Option<String>,
    #[serde(default)]
    pub found_at: Option<String>,
    #[serde(default)]
    pub first_scan_id: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub data: ResultData,
    #[serde(default)]
    pub vulnerability_details: VulnerabilityDetails,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultData {
    #[serde(default)]
    pub query_id: Option<NumberOrText>,
    #[serde(default)]
    pub query_name: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub result_hash: Option<String>,
    #[serde(default)]
    pub language_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub nodes: Vec<ResultNode>,
    #[serde(default)]
    pub package_identifier: Option<String>,
    #[serde(default)]
    pub package_name: Option<String>,
    #[serde(default)]
    pub package_version: Option<String>,
    #[serde(default)]
    pub image_name: Option<String>,
    #[serde(default)]
    pub platform: Option<String>,
    /// KICS spells it `filename`.
    #[serde(default, alias = "fileName")]
    pub filename: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultNode {
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub line: Option<i64>,
    #[serde(default)]
    pub column: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VulnerabilityDetails {
    /// An integer for SAST, a string (`"CWE-79"`, `"NVD-CWE-Other"`, `""`) for SCA and containers.
    #[serde(default)]
    pub cwe_id: Option<NumberOrText>,
    #[serde(default)]
    pub cvss_score: Option<f64>,
    #[serde(default)]
    pub cve_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub compliances: Vec<String>,
}

/// `GET /api/dast/scans/environments` item.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DastEnvironment {
    pub environment_id: String,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub scan_type: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<Value>,
    #[serde(default, rename = "lastScanID")]
    pub last_scan_id: Option<String>,
    #[serde(default)]
    pub last_status: Option<String>,
}

/// `GET /api/dast/scans/scans` item.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DastScan {
    pub scan_id: String,
    #[serde(default)]
    pub environment_id: Option<String>,
    #[serde(default)]
    pub last_status: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub update_time: Option<String>,
    #[serde(default)]
    pub scan_type: Option<String>,
}

/// Whether two vendor ids name the same scan or environment: letter case aside where both are
/// UUIDs (whose hex digits are one number in either case), exactly otherwise.
pub(crate) fn same_id(a: &str, b: &str) -> bool {
    a == b
        || (a.eq_ignore_ascii_case(b)
            && uuid::Uuid::try_parse(a).is_ok()
            && uuid::Uuid::try_parse(b).is_ok())
}

impl DastScan {
    /// The environment the scan names, where that is another than `asked` (a scan naming none
    /// passes).
    pub fn of_another_environment(&self, asked: &str) -> Option<&str> {
        self.environment_id
            .as_deref()
            .filter(|id| !same_id(id, asked))
    }

    /// Finished scans: the live API says `Completed`, older answers `Finished`.
    pub fn is_completed(&self) -> bool {
        self.last_status.as_deref().is_some_and(|s| {
            let s = s.split('@').next().unwrap_or(s).trim();
            s.eq_ignore_ascii_case("completed") || s.eq_ignore_ascii_case("finished")
        })
    }
}

/// `GET /api/dast/mfe-results/results/{scanId}` item (snake_case on the wire).
#[derive(Clone, Debug, Deserialize)]
pub struct DastResult {
    pub id: String,
    pub severity: Severity,
    #[serde(default)]
    pub state: Option<String>,
    pub status: DastStatus,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub solution: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub cwe_id: Option<NumberOrText>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub owasp: Vec<Value>,
    #[serde(default)]
    pub scan_type: Option<String>,
    #[serde(default)]
    pub environment_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The complete real page from the API reference (§12.5), one SAST result without a description.
    const REAL_PAGE: &str = include_str!("../../tests/fixtures/results_real_sample.json");

    /// Two environments `env-a` and `ENV-A` of a tenant are two; a UUID is one number in either
    /// case.
    #[test]
    fn ids_are_the_same_case_aside_only_where_both_are_uuids() {
        let uuid = "7f0c2a9e-1b2c-4d5e-8f90-a1b2c3d4e5f6";
        assert!(same_id(uuid, &uuid.to_ascii_uppercase()));
        assert!(same_id("env-a", "env-a"));
        assert!(!same_id("env-a", "ENV-A"));
        assert!(!same_id(uuid, "7f0c2a9e-1b2c-4d5e-8f90-a1b2c3d4e5f7"));
    }

    #[test]
    fn a_scans_engines_come_from_its_list_else_from_its_status_details() {
        let engines = |record: &str| {
            serde_json::from_str::<ScanRecord>(record)
                .unwrap()
                .engines_ran()
        };
        let details = r#""statusDetails":[{"name":"general"},{"name":"kics"},{"name":""}]"#;
        assert_eq!(
            engines(&format!(r#"{{"engines":["sast"],{details}}}"#)),
            ["sast"]
        );
        assert_eq!(engines(&format!("{{{details}}}")), ["kics"]);
        assert!(engines(r#"{"id":"s"}"#).is_empty());
        let nulls = r#"{"engines":null,"statusDetails":[{"name":null},{"name":"sca"}]}"#;
        assert_eq!(engines(nulls), ["sca"]);
        assert!(engines(r#"{"engines":[],"statusDetails":null}"#).is_empty());
    }

    #[test]
    fn the_real_sample_parses_with_u64_query_id_and_no_description() {
        #[derive(Deserialize)]
        struct Page {
            results: Vec<ScanResult>,
            #[serde(rename = "totalCount")]
            total_count: u64,
        }
        let page: Page = serde_json::from_str(REAL_PAGE).unwrap();
        assert_eq!(page.total_count, 1);
        let r = &page.results[0];
        assert_eq!(r.kind, ResultType::Sast);
        assert_eq!(
            r.data.query_id,
            Some(NumberOrText::Number(9_509_477_347_196_366_877))
        );
        assert!(r.description.is_none());
        assert_eq!(
            r.vulnerability_details.cwe_id,
            Some(NumberOrText::Number(522))
        );
        assert_eq!(r.severity, Severity::Low);
        assert_eq!(r.state, TriageState::ToVerify);
        assert_eq!(r.data.nodes.len(), 13);
    }

    #[test]
    fn triage_states_read_in_any_spelling_and_custom_ones_keep_their_text() {
        assert_eq!(
            TriageState::read(" Not Exploitable"),
            TriageState::NotExploitable
        );
        assert_eq!(TriageState::read("to_verify"), TriageState::ToVerify);
        let custom = TriageState::read("Risk Accepted");
        assert_eq!(custom.as_str(), "Risk Accepted");
        assert!(custom.same_as(&TriageState::Other("RISK_ACCEPTED".into())));
        assert!(!custom.same_as(&TriageState::Other("RISK".into())));
        assert!(!TriageState::Urgent.same_as(&TriageState::Confirmed));
        let mut severities = vec![
            Severity::parse("BLOCKER"),
            Severity::Info,
            Severity::Critical,
            Severity::Medium,
        ];
        severities.sort();
        assert_eq!(
            severities,
            [
                Severity::Critical,
                Severity::Medium,
                Severity::Info,
                Severity::Other("BLOCKER".into())
            ],
            "most severe first, unknown last"
        );
    }

    #[test]
    fn unknown_values_are_kept_not_dropped() {
        let r: ScanResult = serde_json::from_str(
            r#"{"type":"sscs-secret-detection","id":"x","status":"REOPENED","state":"Risk_Accepted","severity":"BLOCKER","newField":{"a":1},
                "vulnerabilityDetails":{"cweId":"CWE-79"}}"#,
        )
        .unwrap();
        assert_eq!(r.kind, ResultType::Other("sscs-secret-detection".into()));
        assert_eq!(r.status.as_str(), "REOPENED");
        assert_eq!(r.state, TriageState::Other("Risk_Accepted".into()));
        assert!(!r.severity.is_known() && r.severity.as_str() == "BLOCKER");
        assert_eq!(
            r.vulnerability_details.cwe_id,
            Some(NumberOrText::Text("CWE-79".into()))
        );
        assert_eq!(Severity::parse("critical"), Severity::Critical);
    }

    #[test]
    fn dast_results_use_snake_case_and_string_cwe() {
        let r: DastResult = serde_json::from_str(
            r#"{"id":"1","severity":"MEDIUM","state":"To Verify","status":"Resurfaced","cwe_id":"-1","environment_id":"e","owasp":["A05"],"scan_type":"DAST"}"#,
        )
        .unwrap();
        assert_eq!(r.status, DastStatus::Resurfaced);
        assert_eq!(r.cwe_id, Some(NumberOrText::Text("-1".into())));
    }
}
