//! A connection config value that cannot be used: which field, what is wrong and how to fix it.
//! Every check of a config (the document, its schedule, filters, branch policy, triage map, vendor
//! settings, map and scoring) reports these, and all of them are listed at once.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path (`vendor.region`, `filters.severities`); `None` for the document as a whole.
    pub field: Option<String>,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            problem: problem.into(),
        }
    }

    /// A problem of the whole document (it is not JSON, say).
    pub fn document(problem: impl Into<String>) -> Self {
        Self {
            field: None,
            problem: problem.into(),
        }
    }

    /// The same problem in a document held by field `parent` of a larger one (a transform map
    /// inside a connection config: `entries[3]` becomes `transform_map.entries[3]`).
    pub fn under(self, parent: &str) -> Self {
        let field = match self.field {
            Some(field) if field.starts_with('[') => format!("{parent}{field}"),
            Some(field) => format!("{parent}.{field}"),
            None => parent.to_string(),
        };
        Self {
            field: Some(field),
            problem: self.problem,
        }
    }

    /// The problem as said of a document of its own (a map or scoring file): its field, if any,
    /// then what is wrong.
    pub fn in_document(&self) -> String {
        match &self.field {
            Some(field) => format!("field `{field}`: {}", self.problem),
            None => self.problem.clone(),
        }
    }
}

/// Every problem of a list, one per `separator`.
pub trait Described {
    fn described(&self, separator: &str) -> String;
}

impl Described for [FieldError] {
    fn described(&self, separator: &str) -> String {
        self.iter()
            .map(FieldError::to_string)
            .collect::<Vec<_>>()
            .join(separator)
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "config field `{field}`: {}", self.problem),
            None => write!(f, "connection config: {}", self.problem),
        }
    }
}

impl std::error::Error for FieldError {}

impl From<crate::cxone::ConfigError> for FieldError {
    /// A vendor setting's error, its field under `vendor.`.
    fn from(e: crate::cxone::ConfigError) -> Self {
        Self::new(
            format!("vendor.{}", e.field),
            format!("{}; fix: {}", e.problem, e.fix),
        )
    }
}
