//! The library every function uses: the Checkmarx One client (`cxone`), the credential types
//! (`secret`), the mapping of vendor records into ETM batches through transform maps and scoring
//! tables (`mapping`), the object store port and its adapters (`store`), the bucket layout
//! (`layout`), the pipeline steps (`pipeline`), the Lambda task logic (`lambda`) and what every
//! binary sets up first (`process`).

mod buffers;
pub mod cxone;
pub mod field_error;
pub mod fingerprint;
pub mod lambda;
pub mod layout;
pub mod mapping;
pub mod metrics;
pub mod packing;
pub mod pipeline;
pub mod process;
pub mod secret;
pub mod store;

use serde::{Deserialize, Serialize};

/// Which connector: SAST or SCA (projects and their scans' results, by default of that engine)
/// or DAST (environments and theirs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectorKind {
    Sast,
    Sca,
    Dast,
}

impl ConnectorKind {
    /// Whether its items are projects (SAST, SCA), not DAST environments.
    pub fn on_projects(self) -> bool {
        self != Self::Dast
    }

    /// The engine of ledger entries written before ledgers recorded engines.
    pub fn legacy_engine(self) -> Engine {
        if self.on_projects() {
            Engine::Sast
        } else {
            Engine::Dast
        }
    }

    /// The engines a connection of this kind delivers when its config names none.
    pub fn default_engines(self) -> Vec<Engine> {
        match self {
            Self::Sast => vec![Engine::Sast],
            Self::Sca => vec![Engine::Sca],
            Self::Dast => vec![Engine::Dast],
        }
    }
}

/// A Checkmarx One engine whose findings a connection delivers; each has its own transform map.
/// The first four are the engines of a project's scan, whose records `/api/results` mixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Static analysis of the source code.
    Sast,
    /// Open-source packages (software composition analysis).
    Sca,
    /// Infrastructure as code.
    Kics,
    /// Container images.
    Containers,
    /// The running web application (environments, not projects).
    Dast,
}

/// The bytes of a file a config names (a secret, a CA bundle), `None` where it holds more than
/// `limit`: a device or a file that grows would be read without end, so at most one byte past
/// the limit is read.
pub(crate) fn read_at_most(path: &std::path::Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

/// Whether a record's `type` is one of `types`, ASCII case and surrounding blanks aside, as the
/// vendor's other words are read: a record typed `SAST` is a SAST record, not one of an unknown
/// engine, skipped, whose absence would close every SAST finding as fixed.
pub fn is_record_type_among(types: &[&str], kind: &str) -> bool {
    let kind = kind.trim();
    types.iter().any(|t| t.eq_ignore_ascii_case(kind))
}

/// Record types Checkmarx One ships whose findings no engine here reads (ast-cli's engine types):
/// skipped as any other engine's, and not taken for an engine's type renamed.
pub const OTHER_ENGINES_RECORD_TYPES: [&str; 3] =
    ["apisec", "sscs-secret-detection", "sscs-scorecard"];

/// Whether a record's `type` is one Checkmarx One is known to send: an engine's here, or one of
/// [`OTHER_ENGINES_RECORD_TYPES`].
pub fn is_known_record_type(kind: &str) -> bool {
    is_record_type_among(&OTHER_ENGINES_RECORD_TYPES, kind)
        || Engine::PROJECT_ENGINES
            .iter()
            .any(|engine| is_record_type_among(engine.record_types(), kind))
}

impl Engine {
    pub const PROJECT_ENGINES: [Engine; 4] = [Self::Sast, Self::Sca, Self::Kics, Self::Containers];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sast => "sast",
            Self::Sca => "sca",
            Self::Kics => "kics",
            Self::Containers => "containers",
            Self::Dast => "dast",
        }
    }

    /// The `type` of its records in `/api/results` (`sca-container` is the containers engine's
    /// other spelling).
    pub fn record_types(self) -> &'static [&'static str] {
        match self {
            Self::Sast => &["sast"],
            Self::Sca => &["sca"],
            Self::Kics => &["kics"],
            Self::Containers => &["containers", "sca-container"],
            Self::Dast => &[],
        }
    }

    /// Whether its findings' ids are always sent with their identity suffix (`<CVE>#<hex>`): SCA
    /// and container ids are CVE ids, one CVE in many packages, so the id alone names no finding.
    pub fn ids_always_suffixed(self) -> bool {
        matches!(self, Self::Sca | Self::Containers)
    }

    /// The engine whose record `type` this is, among a project scan's engines.
    pub fn of_record_type(kind: &str) -> Option<Self> {
        Self::PROJECT_ENGINES
            .into_iter()
            .find(|e| is_record_type_among(e.record_types(), kind))
    }

    /// Whether its items are projects, not DAST environments.
    pub fn on_projects(self) -> bool {
        self != Self::Dast
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
