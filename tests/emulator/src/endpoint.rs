//! The endpoints the emulator counts requests for and injects faults into.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    Token,
    Projects,
    LastScan,
    Branches,
    Scans,
    Results,
    SastResults,
    DastEnvironments,
    DastScans,
    DastResults,
}

impl Endpoint {
    pub const ALL: [Endpoint; 10] = [
        Self::Token,
        Self::Projects,
        Self::LastScan,
        Self::Branches,
        Self::Scans,
        Self::Results,
        Self::SastResults,
        Self::DastEnvironments,
        Self::DastScans,
        Self::DastResults,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Projects => "projects",
            Self::LastScan => "last-scan",
            Self::Branches => "branches",
            Self::Scans => "scans",
            Self::Results => "results",
            Self::SastResults => "sast-results",
            Self::DastEnvironments => "dast-environments",
            Self::DastScans => "dast-scans",
            Self::DastResults => "dast-results",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}
