//! Which projects, environments and findings a connection takes: name patterns, tags and groups
//! for projects; tags and scan type for DAST environments; severities and triage states for
//! findings; and a look-back window on the scan date. Whatever a filter leaves out is reported and
//! never closed: its previous findings are carried forward. (A finding ETM holds open that the
//! vendor has since fixed or settled by triage is still sent so: see `State::record`.)

use serde::{Deserialize, Serialize};

use crate::cxone::{DastEnvironment, Project, Severity, TriageState};
use crate::field_error::FieldError;
use crate::mapping::AssetTypes;

/// `filters` of a connection; every list empty means "all".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    #[serde(default)]
    pub asset_types: AssetTypes,
    /// Project names to take, as glob patterns (`acme-web/*`), case-insensitive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub project_names: Vec<NamePattern>,
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
    pub severities: Vec<Severity>,
    /// Finding triage states to take (e.g. TO_VERIFY, CONFIRMED, URGENT, or a custom state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triage_states: Vec<TriageState>,
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

/// A project name pattern: a glob (`*` any run of characters, `/` included; `?` one character;
/// `[a-z]` a class; `{web,api}` alternatives), matched case-insensitively against the whole name.
/// Parsed when the config is read, so a bad pattern is refused there with its field named.
#[derive(Clone, Debug)]
pub struct NamePattern {
    text: String,
    matcher: globset::GlobMatcher,
}

impl NamePattern {
    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

impl std::str::FromStr for NamePattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().is_empty() {
            return Err(
                "an empty pattern matches no project; remove it or write one such as `acme-web/*`"
                    .into(),
            );
        }
        let glob = globset::GlobBuilder::new(text)
            .case_insensitive(true)
            .literal_separator(false)
            .build()
            .map_err(|e| format!("'{text}' is not a name pattern ({}); `*` matches any run of characters, `?` one, `[…]` a class", e.kind()))?;
        Ok(Self {
            text: text.to_string(),
            matcher: glob.compile_matcher(),
        })
    }
}

impl PartialEq for NamePattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for NamePattern {}

impl Serialize for NamePattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for NamePattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Filters {
    pub fn problems(&self) -> Vec<FieldError> {
        let mut problems = Vec::new();
        for s in self.severities.iter().filter(|s| !s.is_known()) {
            problems.push(FieldError::new(
                "filters.severities",
                format!(
                    "'{}' is not a severity; use {}",
                    s.as_str(),
                    Severity::KNOWN.join(", ")
                ),
            ));
        }
        for s in &self.triage_states {
            if s.as_str().is_empty() || TriageState::canonical_name(s.as_str()) != s.as_str() {
                problems.push(FieldError::new(
                    "filters.triage_states",
                    format!(
                        "'{}' is not written as Checkmarx One names states (e.g. TO_VERIFY)",
                        s.as_str()
                    ),
                ));
            }
        }
        if self.max_scan_age_days == Some(0) {
            problems.push(FieldError::new(
                "filters.max_scan_age_days",
                "0 would skip every item; leave it out for no window",
            ));
        }
        // A project tag `key:value` is empty where its key is: `:prod` names no tag.
        let tag_keys: Vec<String> = self
            .project_tags
            .iter()
            .map(|tag| {
                tag.split_once(':')
                    .map_or(tag.as_str(), |(key, _)| key)
                    .to_string()
            })
            .collect();
        for (field, values, what) in [
            ("filters.project_groups", &self.project_groups, "project"),
            ("filters.project_tags", &tag_keys, "project"),
            (
                "filters.environment_tags",
                &self.environment_tags,
                "environment",
            ),
            ("filters.scan_types", &self.scan_types, "environment"),
        ] {
            if values.iter().any(|v| v.trim().is_empty()) {
                problems.push(FieldError::new(
                    field,
                    format!("an empty entry matches no {what}, so every {what} would be left out; remove it"),
                ));
            }
        }
        problems
    }

    /// The filters set that a connection of this kind never reads (a project filter on a DAST
    /// connection, an environment filter on any other): set, they would silently filter nothing.
    pub fn unread_by(&self, on_projects: bool) -> Vec<FieldError> {
        let (unread, reads): (&[(&str, bool)], &str) = if on_projects {
            (
                &[
                    ("environment_tags", !self.environment_tags.is_empty()),
                    ("scan_types", !self.scan_types.is_empty()),
                ],
                "projects: use project_names, project_tags or project_groups",
            )
        } else {
            (
                &[
                    ("project_names", !self.project_names.is_empty()),
                    ("project_tags", !self.project_tags.is_empty()),
                    ("project_groups", !self.project_groups.is_empty()),
                    ("asset_types", self.asset_types != AssetTypes::default()),
                ],
                "DAST environments: use environment_tags or scan_types",
            )
        };
        unread
            .iter()
            .filter(|(_, set)| *set)
            .map(|(field, _)| {
                FieldError::new(
                    format!("filters.{field}"),
                    format!("this connection never reads it (it takes {reads}); remove it"),
                )
            })
            .collect()
    }

    /// Why a project is left out, or `None` when it is taken.
    pub fn project_excluded(&self, project: &Project) -> Option<String> {
        if !self.project_names.is_empty()
            && !self.project_names.iter().any(|p| p.matches(&project.name))
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
            project_names: vec!["acme-web/*".parse().unwrap(), "*-legacy".parse().unwrap()],
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
        let literal = Filters {
            project_names: vec![r"acme \[legacy\]".parse().unwrap()],
            ..Filters::default()
        };
        let legacy = project("acme [legacy]", &[], serde_json::json!({}));
        assert!(
            literal.project_excluded(&legacy).is_none(),
            "escaped brackets are literal"
        );
        let f = Filters {
            project_names: vec!["svc-?-{api,web}".parse().unwrap()],
            ..Filters::default()
        };
        for (name, taken) in [
            ("svc-1-api", true),
            ("SVC-2-WEB", true),
            ("svc-12-api", false),
            ("svc-1-api-old", false),
        ] {
            let excluded = f.project_excluded(&project(name, &[], serde_json::json!({})));
            assert_eq!(excluded.is_none(), taken, "{name}");
        }
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
            severities: vec![Severity::parse("SEVERE")],
            triage_states: vec![TriageState::parse("to verify")],
            max_scan_age_days: Some(0),
            ..Filters::default()
        };
        let problems = bad.problems().described("\n");
        for (pattern, expected) in [
            (
                "acme-[web",
                "'acme-[web' is not a name pattern (unclosed character class",
            ),
            ("  ", "an empty pattern matches no project"),
        ] {
            let refused = serde_json::from_value::<Filters>(
                serde_json::json!({"project_names": ["ok-*", pattern]}),
            )
            .unwrap_err()
            .to_string();
            assert!(refused.contains(expected), "{pattern}: {refused}");
        }
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
