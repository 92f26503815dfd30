//! Which projects, environments and findings a connection takes: name patterns, tags and groups
//! for projects; tags and scan type for DAST environments; severities and triage states for
//! findings; and a look-back window on the scan date. Whatever a filter leaves out is reported and
//! never closed: its previous findings are carried forward.

use serde::{Deserialize, Serialize};

use crate::cxone::{DastEnvironment, Project, Severity};
use crate::field_error::FieldError;
use crate::mapping::AssetTypes;

/// `filters` of a connection; every list empty means "all".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    #[serde(default)]
    pub asset_types: AssetTypes,
    /// Project names to take; `*` matches any run of characters (`acme-web/*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub project_names: Vec<String>,
    /// Project tags to take: `key` (any value) or `key:value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub project_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub project_groups: Vec<String>,
    /// DAST environment tags to take.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_tags: Vec<String>,
    /// DAST environment scan types to take (e.g. `DAST`, `API`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scan_types: Vec<String>,
    /// Finding severities to take (CRITICAL, HIGH, MEDIUM, LOW, INFO).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severities: Vec<String>,
    /// Finding triage states to take (e.g. TO_VERIFY, CONFIRMED, URGENT).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triage_states: Vec<String>,
    /// Skip items whose latest completed scan is older than this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scan_age_days: Option<u32>,
}

/// Which SAST scan of a project is its latest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "policy")]
pub enum BranchPolicy {
    /// The latest completed SAST scan of any branch (the spec's `last-scan` call). Findings flap
    /// open and closed when feature-branch scans interleave with main's, so it is not the default.
    Any,
    /// The project's main branch (the default; a project that names no main branch takes its
    /// latest scan of any branch, as `use-main-branch` answers); with `fallback_to_any`, projects
    /// whose main branch has no completed scan take the latest of any branch.
    Main {
        #[serde(default)]
        fallback_to_any: bool,
    },
    /// One named branch in every project.
    Pinned { branch: String },
    /// Every branch with a completed SAST scan is its own asset (`<project id>@<branch>`).
    EachBranch,
}

impl Default for BranchPolicy {
    fn default() -> Self {
        Self::Main {
            fallback_to_any: false,
        }
    }
}

impl BranchPolicy {
    pub fn problems(&self) -> Vec<FieldError> {
        match self {
            Self::Pinned { branch } if branch.trim().is_empty() => {
                vec![FieldError::new(
                    "branches.branch",
                    "a pinned policy needs the branch name",
                )]
            }
            _ => Vec::new(),
        }
    }
}

/// `*` matches any run of characters; everything else matches itself, case-insensitively.
fn matches(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.to_lowercase(), text.to_lowercase());
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text.as_str();
    for (n, part) in parts.iter().enumerate() {
        if n == 0 {
            let Some(after) = rest.strip_prefix(part) else {
                return false;
            };
            rest = after;
        } else if n == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

fn normalized_state(state: &str) -> String {
    state.trim().to_ascii_uppercase().replace(' ', "_")
}

impl Filters {
    pub fn problems(&self) -> Vec<FieldError> {
        let mut problems = Vec::new();
        for s in &self.severities {
            if !Severity::KNOWN.contains(&s.as_str()) {
                problems.push(FieldError::new(
                    "filters.severities",
                    format!(
                        "'{s}' is not a severity; use {}",
                        Severity::KNOWN.join(", ")
                    ),
                ));
            }
        }
        for s in &self.triage_states {
            if normalized_state(s) != *s || s.is_empty() {
                problems.push(FieldError::new(
                    "filters.triage_states",
                    format!("'{s}' is not written as Checkmarx One names states (e.g. TO_VERIFY)"),
                ));
            }
        }
        if self.max_scan_age_days == Some(0) {
            problems.push(FieldError::new(
                "filters.max_scan_age_days",
                "0 would skip every item; leave it out for no window",
            ));
        }
        for p in self.project_names.iter().chain(&self.project_groups) {
            if p.trim().is_empty() {
                problems.push(FieldError::new(
                    "filters.project_names`/`project_groups",
                    "an empty entry matches nothing",
                ));
            }
        }
        problems
    }

    /// Why a project is left out, or `None` when it is taken.
    pub fn project_excluded(&self, project: &Project) -> Option<String> {
        if !self.project_names.is_empty()
            && !self.project_names.iter().any(|p| matches(p, &project.name))
        {
            return Some("its name matches no `filters.project_names` pattern".into());
        }
        if !self.project_groups.is_empty()
            && !project
                .groups
                .iter()
                .any(|g| self.project_groups.contains(g))
        {
            return Some("it is in none of `filters.project_groups`".into());
        }
        if !self.project_tags.is_empty() {
            let tagged = self.project_tags.iter().any(|wanted| {
                let (key, value) = wanted
                    .split_once(':')
                    .map_or((wanted.as_str(), None), |(k, v)| (k, Some(v)));
                project
                    .tags
                    .get(key)
                    .is_some_and(|have| value.is_none_or(|v| have.as_str().is_some_and(|h| h == v)))
            });
            if !tagged {
                return Some("it carries none of `filters.project_tags`".into());
            }
        }
        None
    }

    /// Why a DAST environment is left out, or `None` when it is taken.
    pub fn environment_excluded(&self, environment: &DastEnvironment) -> Option<String> {
        if !self.scan_types.is_empty()
            && !environment
                .scan_type
                .as_ref()
                .is_some_and(|t| self.scan_types.iter().any(|w| w.eq_ignore_ascii_case(t)))
        {
            return Some("its scan type is none of `filters.scan_types`".into());
        }
        if !self.environment_tags.is_empty() {
            let tags: Vec<String> = environment
                .tags
                .iter()
                .filter_map(|t| {
                    t.as_str()
                        .map(str::to_string)
                        .or_else(|| t["name"].as_str().map(str::to_string))
                })
                .collect();
            if !self.environment_tags.iter().any(|w| tags.contains(w)) {
                return Some("it carries none of `filters.environment_tags`".into());
            }
        }
        None
    }

    /// Why a scan made at `created` (RFC 3339) is too old, or `None`.
    pub fn scan_too_old(&self, created: Option<&str>) -> Option<String> {
        let days = self.max_scan_age_days?;
        let created = created.and_then(|c| {
            time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok()
        })?;
        let age = time::OffsetDateTime::now_utc() - created;
        (age > time::Duration::days(i64::from(days))).then(|| {
            format!(
                "its latest completed scan ({}) is older than the look-back window of {days} days",
                created.date()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field_error::Described;

    fn project(name: &str, groups: &[&str], tags: serde_json::Value) -> Project {
        serde_json::from_value(
            serde_json::json!({"id": "p", "name": name, "groups": groups, "tags": tags}),
        )
        .unwrap()
    }

    #[test]
    fn projects_are_taken_by_name_pattern_group_and_tag() {
        let f = Filters {
            project_names: vec!["acme-web/*".into(), "*-legacy".into()],
            ..Filters::default()
        };
        assert!(
            f.project_excluded(&project("acme-web/shop", &[], serde_json::json!({})))
                .is_none()
        );
        assert!(
            f.project_excluded(&project("ACME-WEB/shop", &[], serde_json::json!({})))
                .is_none()
        );
        assert!(
            f.project_excluded(&project("billing-legacy", &[], serde_json::json!({})))
                .is_none()
        );
        assert!(
            f.project_excluded(&project("acme-data/shop", &[], serde_json::json!({})))
                .is_some()
        );
        let f = Filters {
            project_groups: vec!["g1".into()],
            project_tags: vec!["env:prod".into(), "pci".into()],
            ..Filters::default()
        };
        assert!(
            f.project_excluded(&project("x", &["g1"], serde_json::json!({"env": "prod"})))
                .is_none()
        );
        assert!(
            f.project_excluded(&project("x", &["g1"], serde_json::json!({"pci": ""})))
                .is_none()
        );
        assert!(
            f.project_excluded(&project("x", &["g1"], serde_json::json!({"env": "dev"})))
                .unwrap()
                .contains("project_tags")
        );
        assert!(
            f.project_excluded(&project("x", &["g2"], serde_json::json!({"env": "prod"})))
                .unwrap()
                .contains("project_groups")
        );
    }

    #[test]
    fn environments_are_taken_by_scan_type_and_tag() {
        let env = |scan_type: &str, tags: serde_json::Value| -> DastEnvironment {
            serde_json::from_value(
                serde_json::json!({"environmentId": "e", "scanType": scan_type, "tags": tags}),
            )
            .unwrap()
        };
        let f = Filters {
            scan_types: vec!["api".into()],
            environment_tags: vec!["prod".into()],
            ..Filters::default()
        };
        assert!(
            f.environment_excluded(&env("API", serde_json::json!(["prod"])))
                .is_none()
        );
        assert!(
            f.environment_excluded(&env("API", serde_json::json!([{"name": "prod"}])))
                .is_none()
        );
        assert!(
            f.environment_excluded(&env("DAST", serde_json::json!(["prod"])))
                .unwrap()
                .contains("scan_types")
        );
        assert!(
            f.environment_excluded(&env("API", serde_json::json!(["dev"])))
                .unwrap()
                .contains("environment_tags")
        );
    }

    #[test]
    fn old_scans_fall_outside_the_window_and_bad_filters_are_named() {
        let f = Filters {
            max_scan_age_days: Some(30),
            ..Filters::default()
        };
        assert!(
            f.scan_too_old(Some("2020-01-01T00:00:00Z"))
                .unwrap()
                .contains("30 days")
        );
        let recent = (time::OffsetDateTime::now_utc() - time::Duration::days(2))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        assert!(f.scan_too_old(Some(&recent)).is_none());
        let bad = Filters {
            severities: vec!["SEVERE".into()],
            triage_states: vec!["to verify".into()],
            max_scan_age_days: Some(0),
            ..Filters::default()
        };
        let problems = bad.problems().described("\n");
        assert!(
            problems.contains("`filters.severities`: 'SEVERE'"),
            "{problems}"
        );
        assert!(
            problems.contains("`filters.triage_states`: 'to verify'"),
            "{problems}"
        );
        assert!(
            problems.contains("`filters.max_scan_age_days`"),
            "{problems}"
        );
    }
}
